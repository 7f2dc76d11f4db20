"""A loopback OpenRouter video API that follows ../shared/contracts.md (OpenRouter part).

A stdlib HTTP server in a thread on 127.0.0.1 (a random port). It checks every request as
the real service would (Bearer key, the documented fields and shapes, each model's lists),
answers errors in the documented shape {"error": {"code", "message", "metadata"}}, records
every request, answers polls from a script, hands out relative or absolute polling URLs,
and serves real MP4s (rendered by the simulator) from a content endpoint that needs the
Bearer key, or from a "storage" host path that refuses one.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from django.conf import settings

from .server import LoopbackServer, send

API = "/api/v1"
KEY = "sk-or-v1-fake-0123456789abcdef"

MODELS = [
    {
        "id": "google/veo-3.1",
        "name": "Google: Veo 3.1",
        "description": "Veo 3.1 with sound.",
        "supported_durations": [8, 4, 6],
        "supported_resolutions": ["720p", "1080p"],
        "supported_aspect_ratios": ["16:9", "9:16"],
        "supported_sizes": None,
        "supported_frame_images": ["first_frame", "last_frame"],
        "generate_audio": True,
        "seed": True,
        "pricing_skus": {
            "duration_seconds_with_audio_720p": "0.40",
            "duration_seconds_without_audio_720p": "0.20",
            "duration_seconds_with_audio_1080p": "0.60",
            "duration_seconds_without_audio_1080p": "0.30",
        },
        "allowed_passthrough_parameters": [],
    },
    {
        "id": "acme/first-frame",
        "name": "Acme: First Frame",
        "description": "Starts from a picture.",
        "supported_durations": [10, 5],
        "supported_resolutions": ["720p"],
        "supported_aspect_ratios": ["16:9", "1:1"],
        "supported_sizes": None,
        "supported_frame_images": ["first_frame"],
        "generate_audio": False,
        "seed": False,
        "pricing_skus": {"cents_per_second_output": "12"},
        "allowed_passthrough_parameters": None,
    },
    {
        "id": "acme/references",
        "name": "Acme: References",
        "description": "Keeps faces from reference images (reference-to-video).",
        "supported_durations": [4],
        "supported_resolutions": None,
        "supported_aspect_ratios": None,
        "supported_sizes": None,
        "supported_frame_images": None,
        "generate_audio": None,
        "seed": None,
        "pricing_skus": {"video_tokens": "0.0000025"},
        "allowed_passthrough_parameters": None,
    },
]
# A model with options nothing else has: the studio must show exactly these.
UNUSUAL = {
    "id": "odd/model-x",
    "name": "Odd: Model X",
    "description": "Unusual options.",
    "supported_durations": [7, 3],
    "supported_resolutions": None,
    "supported_aspect_ratios": ["21:9"],
    "supported_sizes": None,
    "supported_frame_images": [],
    "generate_audio": False,
    "seed": False,
    "pricing_skus": None,
    "allowed_passthrough_parameters": [],
}
FIELDS = {
    "model",
    "prompt",
    "duration",
    "resolution",
    "aspect_ratio",
    "size",
    "generate_audio",
    "seed",
    "frame_images",
    "input_references",
    "callback_url",
    "provider",
}

_RENDERS: dict[tuple[str, int] | None, bytes] = {}
_RENDER_LOCK = threading.Lock()


def render_clip(aspect_ratio: str, first_frame: bytes | None = None) -> bytes:
    """A 1 s MP4 at `aspect_ratio`, starting from `first_frame` (image bytes) when given."""
    from studio.providers.simulator import render

    cache_key = (aspect_ratio, settings.SIMULATOR_HEIGHT) if first_frame is None else None
    with _RENDER_LOCK:
        if cache_key in _RENDERS:
            return _RENDERS[cache_key]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "clip.mp4"
            start = None
            if first_frame is not None:
                start = Path(tmp) / "first"
                start.write_bytes(first_frame)
            render(path, "A fake OpenRouter clip", aspect_ratio, 1, start, audio=True)
            content = path.read_bytes()
        if cache_key is not None:
            _RENDERS[cache_key] = content
        return content


def decode_data_url(url: str) -> tuple[str, bytes]:
    """("image/png", bytes) of a data: URL."""
    head, _, payload = url.partition(",")
    assert head.startswith("data:") and head.endswith(";base64"), head[:40]
    return head[5:-7], base64.b64decode(payload)


def sign(secret: str, body: bytes, stamp: int | None = None) -> str:
    """The X-OpenRouter-Signature header for `body`, as OpenRouter computes it."""
    stamp = int(time.time()) if stamp is None else stamp
    digest = hmac.new(secret.encode(), f"{stamp},".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


def error(status: int, message: str, metadata: dict | None = None, headers: dict | None = None):
    return status, {"error": {"code": status, "message": message, "metadata": metadata or {}}}, headers or {}


# How the fake tells what a model of its list accepts, from the same signs the list gives
# (contracts.md): references from a pricing key or the description; a video input from the
# upscaler/editor options or description.
def takes_references(model: dict) -> bool:
    skus = model.get("pricing_skus") or {}
    description = (model.get("description") or "").lower()
    return any("reference" in name for name in skus) or "reference" in description


def needs_video(model: dict) -> bool:
    options = set(model.get("allowed_passthrough_parameters") or [])
    description = (model.get("description") or "").lower()
    return (
        bool(options & {"upscale_factor", "creativity"})
        or "upscal" in description
        or "video editing" in description
    )


@dataclass
class Recorded:
    method: str
    path: str
    query: dict
    headers: dict  # lower-case names
    json: object = None


@dataclass
class Job:
    id: str
    body: dict
    polls: int = 0
    video: bytes = b""
    extra: dict = field(default_factory=dict)


class FakeOpenRouter(LoopbackServer):
    def __init__(self, key: str = KEY, models: list | None = None):
        self.key = key
        self.models = copy.deepcopy(MODELS if models is None else models)
        self.requests: list[Recorded] = []
        self.jobs: dict[str, Job] = {}
        # Scripted answers: (status, body, headers) tuples, or "timeout" for creates.
        self.models_replies: deque = deque()
        self.create_replies: deque = deque()
        self.content_replies: deque = deque()
        # Answers to the next polls of any job (see _poll); when empty: "in_progress".
        self.poll_replies: deque = deque()
        # The polling_url a create returns: "relative", "absolute", "standard", "foreign"
        # or "missing".
        self.polling = "relative"
        # When no poll is scripted: "completed" from this many polls of a job on (None:
        # "in_progress" for ever). For tests that run the studio's own worker.
        self.complete_after: int | None = None
        self.slow_seconds = 3.0
        self.lock = threading.Lock()
        # What GET /key says of the key (contracts.md: {"data": {"label", "limit", "usage",
        # "limit_remaining", ...}}); limit and limit_remaining are null for a key with no
        # spending limit. The label is OpenRouter's masked form of the key.
        self.key_info = {
            "label": f"{key[:11]}...{key[-3:]}",
            "limit": 10,
            "usage": 2.5,
            "limit_remaining": 7.5,
            "is_free_tier": False,
        }
        # True: every API call answers 401 (a revoked key; the jobs run on regardless).
        self.key_refused = False
        # Seconds every API answer takes.
        self.latency = 0.0
        # True: error bodies echo the Authorization header they were sent.
        self.echo_key = False
        # How long a signed storage URL ("completed-signed") works after it was handed out.
        self.signed_ttl = 3600.0
        # Models known to take a last frame alone although they list a first frame too.
        self.lone_last_frame_ok: set[str] = set()

    # --- Running ----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self.origin + API

    # --- Scripting and reading ----------------------------------------------------------

    def script_polls(self, *steps) -> None:
        self.poll_replies.extend(steps)

    def of(self, method: str, prefix: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.startswith(prefix)]

    def creates(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.path == f"{API}/videos"]

    def key_reads(self) -> list[Recorded]:
        return self.of("GET", f"{API}/key")

    def model_reads(self) -> list[Recorded]:
        return self.of("GET", f"{API}/videos/models")

    def polls(self) -> list[Recorded]:
        return [
            r
            for r in self.requests
            if r.method == "GET"
            and (
                r.path.startswith(f"{API}/jobs/")
                or (
                    r.path.startswith(f"{API}/videos/")
                    and r.path.count("/") == 4
                    and not r.path.endswith("/models")
                )
            )
        ]

    def downloads(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/content") or r.path.startswith("/storage/")]

    # --- Answers ----------------------------------------------------------------------

    def handle(self, handler, method: str) -> None:
        raw = b""
        if method == "POST":
            length = int(handler.headers.get("Content-Length") or 0)
            raw = handler.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in handler.headers.items()}
        parts = urlsplit(handler.path)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = ValueError
        with self.lock:
            self.requests.append(
                Recorded(
                    method, parts.path, parse_qs(parts.query), headers, None if body is ValueError else body
                )
            )
        path = parts.path
        if path.startswith("/storage/") and method == "GET":
            return self._storage(handler, headers, path, parse_qs(parts.query))
        if not path.startswith(API + "/"):
            return send(handler, *error(404, "Not Found"))
        if self.latency:
            time.sleep(self.latency)
        if self.key_refused or headers.get("authorization") != f"Bearer {self.key}":
            said = f" (got {headers.get('authorization')})" if self.echo_key else ""
            return send(handler, *error(401, f"No auth credentials found{said}"))
        if method == "GET" and path == f"{API}/key":
            return send(handler, 200, {"data": self.key_info})
        if method == "GET" and path == f"{API}/videos/models":
            if self.models_replies:
                return send(handler, *self.models_replies.popleft())
            return send(handler, 200, {"data": self.models})
        if method == "POST" and path == f"{API}/videos":
            return self._create(handler, headers, body)
        pieces = path[len(API) + 1 :].split("/")
        if method == "GET" and len(pieces) == 3 and pieces[0] == "videos" and pieces[2] == "content":
            return self._content(handler, pieces[1], parse_qs(parts.query))
        if method == "GET" and (
            len(pieces) == 2
            and pieces[0] == "videos"
            or len(pieces) == 3
            and pieces[0] == "jobs"
            and pieces[2] == "status"
        ):
            return self._poll(handler, pieces[1], headers)
        return send(handler, *error(404, "Not Found"))

    def model(self, model_id):
        return next((m for m in self.models if m["id"] == model_id), None)

    def validate(self, headers: dict, body) -> str:
        """The first problem with a create request, in OpenRouter's words, or ""."""
        if not headers.get("content-type", "").startswith("application/json"):
            return "Content-Type must be application/json"
        if not isinstance(body, dict):
            return "The body must be a JSON object"
        unknown = sorted(set(body) - FIELDS)
        if unknown:
            return f"Unknown parameter: {unknown[0]}"
        model = self.model(body.get("model"))
        if model is None:
            return f"model {body.get('model')!r} is not a video model"
        if "duration" in body:
            if not isinstance(body["duration"], int) or isinstance(body["duration"], bool):
                return "duration must be an integer"
            if model["supported_durations"] and body["duration"] not in model["supported_durations"]:
                return f"duration must be one of {model['supported_durations']}"
        for name, listed in (
            ("resolution", "supported_resolutions"),
            ("aspect_ratio", "supported_aspect_ratios"),
        ):
            if name in body and model[listed] and body[name] not in model[listed]:
                return f"{name} {body[name]!r} is not supported by {model['id']}"
        if "generate_audio" in body and not isinstance(body["generate_audio"], bool):
            return "generate_audio must be a boolean"
        if "seed" in body and not isinstance(body["seed"], int):
            return "seed must be an integer"
        for frame in body.get("frame_images") or []:
            if (
                not isinstance(frame, dict)
                or frame.get("type") != "image_url"
                or not isinstance((frame.get("image_url") or {}).get("url"), str)
            ):
                return "frame_images entries must be {type: image_url, image_url: {url}, frame_type}"
            if frame.get("frame_type") not in (model["supported_frame_images"] or []):
                return f"frame_images: {frame.get('frame_type')} is not supported by {model['id']}"
        frame_types = [frame.get("frame_type") for frame in body.get("frame_images") or []]
        if "last_frame" in frame_types and "first_frame" not in frame_types:
            listed = model["supported_frame_images"] or []
            if "first_frame" in listed and model["id"] not in self.lone_last_frame_ok:
                # a gateway's 400 for a last frame alone
                return "frame_images: a last_frame requires a first_frame"
        for ref in body.get("input_references") or []:
            if (
                not isinstance(ref, dict)
                or ref.get("type") != "image_url"
                or "url" not in (ref.get("image_url") or {})
            ):
                return "input_references entries must be {type: image_url, image_url: {url}}"
        if body.get("input_references") and not takes_references(model):
            return f"input_references: {model['id']} does not take reference images"
        if needs_video(model):
            return f"{model['id']} needs a video input (input_references with a video part)"
        if "callback_url" in body and not str(body["callback_url"]).startswith("https://"):
            return "callback_url must be an HTTPS URL"
        return ""

    def _create(self, handler, headers, body):
        reply = self.create_replies.popleft() if self.create_replies else "ok"
        if isinstance(reply, tuple):
            return send(handler, *reply)
        problem = self.validate(headers, body)
        if problem:
            if self.echo_key:
                problem += f"; request was {headers.get('authorization')}"
            return send(handler, *error(400, problem))
        job = Job(id=f"vid-{uuid.uuid4().hex[:12]}", body=body)
        if body.get("frame_images") and body.get("input_references"):
            # Documented: the frames win and the references are dropped without a word.
            job.extra["references_ignored"] = True
        with self.lock:
            self.jobs[job.id] = job
        if reply == "timeout":
            time.sleep(self.slow_seconds)
        polling = {
            "relative": f"{API}/jobs/{job.id}/status",
            "absolute": f"{self.origin}{API}/jobs/{job.id}/status",
            "standard": f"{self.origin}{API}/videos/{job.id}",
            "foreign": f"http://elsewhere.invalid/jobs/{job.id}",
        }.get(self.polling)
        answer = {"id": job.id, "status": "pending"}
        if polling:
            answer["polling_url"] = polling
        return send(handler, 202, answer)

    def _poll(self, handler, job_id, headers=None):
        job = self.jobs.get(job_id)
        if self.poll_replies:
            step = self.poll_replies.popleft()
        elif job is not None and self.complete_after is not None and job.polls + 1 >= self.complete_after:
            step = "completed"
        else:
            step = "in_progress"
        if isinstance(step, tuple):
            return send(handler, *step)
        if job is None or step == "404":
            return send(handler, *error(404, "Video generation not found"))
        job.polls += 1
        if step == "429":
            return send(handler, *error(429, "Rate limited", headers={"Retry-After": "7"}))
        if step == "502":
            return send(handler, *error(502, "Provider returned error"))
        answer = {"id": job.id, "polling_url": f"{API}/videos/{job.id}"}
        if step in ("failed", "cancelled", "expired"):
            answer.update(status=step, error=f"The job was {step}: the provider gave up on it.")
            if self.echo_key:
                answer["error"] += f" Authorization: {(headers or {}).get('authorization')}"
        elif step.startswith("completed"):
            answer.update(self._completed(job, step))
        else:  # "pending", "in_progress" or anything else, e.g. "mystery"
            answer["status"] = step
        return send(handler, 200, answer)

    def _completed(self, job: Job, step: str) -> dict:
        """ "completed": unsigned_urls point back at the API (the content endpoint);
        "completed-no-urls": none (the studio uses the content endpoint); "completed-storage":
        a storage URL that refuses a key; "completed-free": usage.cost null."""
        if not job.video:
            first = None
            for frame in job.body.get("frame_images") or []:
                url = frame["image_url"]["url"]
                if frame["frame_type"] == "first_frame" and url.startswith("data:"):
                    first = decode_data_url(url)[1]
            ratio = job.body.get("aspect_ratio") or "16:9"
            job.video = render_clip(ratio, first)
        answer = {"status": "completed", "usage": {"cost": 0.5, "is_byok": False}}
        if step == "completed":
            answer["unsigned_urls"] = [f"{self.origin}{API}/videos/{job.id}/content?index=0"]
        elif step == "completed-storage":
            answer["unsigned_urls"] = [f"{self.origin}/storage/{job.id}.mp4"]
        elif step == "completed-free":
            answer["usage"] = {"cost": None, "is_byok": True}
        elif step == "completed-signed":
            # A signed storage URL that expires (then 403), not the API: no key with it.
            expires = int(time.time() + self.signed_ttl)
            signature = hmac.new(b"storage", f"{job.id}:{expires}".encode(), hashlib.sha256).hexdigest()
            answer["unsigned_urls"] = [
                f"{self.origin}/storage/{job.id}.mp4?expires={expires}&signature={signature}"
            ]
        return answer

    def _content(self, handler, job_id, query):
        if self.content_replies:
            return send(handler, *self.content_replies.popleft())
        job = self.jobs.get(job_id)
        if job is None or not job.video or query.get("index") != ["0"]:
            return send(handler, *error(404, "Content not found"))
        return send(handler, 200, job.video, {"Content-Type": "video/mp4"})

    def _storage(self, handler, headers, path, query=None):
        if "authorization" in headers:  # signed storage refuses a foreign credential
            return send(
                handler,
                400,
                "<Error>Only one auth mechanism allowed</Error>",
                {"Content-Type": "application/xml"},
            )
        job_id = path.removeprefix("/storage/").removesuffix(".mp4")
        expires = (query or {}).get("expires")
        if expires and float(expires[0]) < time.time():
            return send(
                handler,
                403,
                "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
                {"Content-Type": "application/xml"},
            )
        job = self.jobs.get(job_id)
        if job is None or not job.video:
            return send(handler, 404, "not found")
        return send(handler, 200, job.video, {"Content-Type": "video/mp4"})
