"""A loopback Pictory AI Studio that follows ../shared/contracts.md (Pictory part) to the letter.

It runs a stdlib HTTP server in a thread on 127.0.0.1 (a random port), checks every request
as the real service would (raw key, no "Bearer", an explicit User-Agent, JSON body with the
documented fields, each model's ratios and durations, the three exclusive inputs), records
every request for assertions, answers polls from a script, and serves the result files
(a real MP4 rendered by the simulator, a PNG last frame, a JPEG thumbnail), which a test can
make expire.
"""

from __future__ import annotations

import io
import json
import random
import re
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from .server import LoopbackServer, send

API = "/pictoryapis"
KEY = "pictai_fake_0123456789abcdef"

# The catalogue of contracts.md: ratios, durations (first = default), credits per second.
MODELS = {
    "veo3.1": (("16:9", "9:16"), ("4s", "6s", "8s"), 20),
    "veo3.1_fast": (("16:9", "9:16"), ("4s", "6s", "8s"), 10),
    "pixverse5.5": (("16:9", "9:16", "1:1", "3:4", "4:3"), ("5s", "8s", "10s"), 1.6),
}
FIELDS = {
    "prompt",
    "model",
    "aspectRatio",
    "duration",
    "firstFrameImageUrl",
    "extendVideoUrl",
    "referenceImageUrls",
    "webhook",
}
EXCLUSIVE = ("firstFrameImageUrl", "extendVideoUrl", "referenceImageUrls")
URI = re.compile(r"^https?://[^\s/]+(/\S*)?$")

# Rendering is the slow part of a test: one small clip per aspect ratio is enough.
_RENDERS: dict[tuple[str, int], tuple[bytes, bytes, bytes]] = {}
_RENDER_LOCK = threading.Lock()


def rendered(aspect_ratio: str) -> tuple[bytes, bytes, bytes]:
    """(MP4, PNG last frame, JPEG thumbnail) of a 1 s clip at `aspect_ratio`."""
    with _RENDER_LOCK:
        key = (aspect_ratio, settings.SIMULATOR_HEIGHT)
        if key not in _RENDERS:
            from studio import media
            from studio.providers.simulator import render

            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "clip.mp4"
                render(path, "A fake Pictory clip", aspect_ratio, 1, None, audio=True)
                last = media.last_frame(path)
                png = io.BytesIO()
                last.save(png, "PNG")
                thumb = media.thumbnail_jpeg(media.first_frame(path))
                _RENDERS[key] = (path.read_bytes(), png.getvalue(), thumb)
        return _RENDERS[key]


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict  # lower-case names
    json: object = None
    raw: bytes = b""


@dataclass
class Job:
    id: str
    body: dict
    polls: int = 0
    files: dict = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    # How many completed answers handed out links (each a fresh set: signed URLs expire),
    # and the issue number of the first set (its URLs carry no number).
    links: int = 0
    first_issue: int | None = None


# The bot protection's refusal (Cloudflare error 1010), on any endpoint: HTML, not JSON.
EDGE_PAGE = (
    "<!DOCTYPE html><html><head><title>Access denied | api.pictory.ai used Cloudflare to restrict "
    "access</title></head><body><h1>Error 1010</h1><p>The owner of this website has banned your "
    "access based on your browser's signature.</p></body></html>"
)


class FakePictory(LoopbackServer):
    def __init__(self, key: str = KEY):
        self.key = key
        self.requests: list[Recorded] = []
        self.jobs: dict[str, Job] = {}
        # Scripted answers to the next creates: "ok", "timeout", or (status, body, headers).
        self.create_replies: deque = deque()
        # Scripted answers to the next polls of any job; when empty: "in-progress".
        self.poll_replies: deque = deque()
        # How a 400 lists its fields: "field" ({"field","message"}), "name" ({"name",
        # "errors": [...]}) or "name-str" ({"name","errors": "..."}); the docs show both.
        self.fields_shape = "field"
        # A status (403, 404, 410) that every result file answers with: the URLs expired.
        self.file_status: int | None = None
        # How long a "timeout" reply waits before answering (past the client's timeout).
        self.slow_seconds = 3.0
        self.lock = threading.Lock()
        # Chaos: this share of calls fails (500, 429, a late answer; damaged files).
        self.chaos_rate = 0.0
        self.rng = random.Random(0)
        # With no scripted poll answers, a job completes at this poll (None: never).
        self.complete_after: int | None = None
        # GET /v1/quota: the subscription's use this billing term (contracts.md; the four
        # entries of Pictory's docs). None: this key may not read it (403, JSON).
        self.quota: dict | None = {
            "videoMinutes": {"used": 98, "limit": 14400},
            "transcriptionMinutes": {"used": 0, "limit": 14400},
            "elevenLabsVoiceOverMinutes": {"used": 33, "limit": 480},
            "aiCredits": {"used": 690, "limit": 22000},
        }
        # True: every API call answers 401, as for a key that was revoked (jobs run on).
        self.key_refused = False
        # The next this-many API calls are refused by the bot protection (an HTML 403).
        self.edge_refusals = 0
        # Seconds every API answer takes (a real service is not instant).
        self.latency = 0.0
        # True: a poll of a job id this fake never made answers "in-progress" (a benchmark
        # seeds thousands of running clips without creating each job first).
        self.accept_unknown_jobs = False
        # True: error bodies echo the Authorization header they were sent, as some services
        # do in debug messages (the studio must never show, log or store it).
        self.echo_key = False
        # How the list of generated videos is shaped (undocumented): "items" ({"success",
        # "data": {"items": [...]}}), "list" (a bare list) or "videos-ms" ({"videos": [...]}
        # with "id" and creation times in epoch milliseconds).
        self.list_shape = "items"
        # Result links issued up to this count are expired (403), later ones work.
        self.links_expired_upto = 0
        self.links_issued = 0

    # --- Running ----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self.origin + API

    # --- Scripting --------------------------------------------------------------------

    def reply_to_create(self, *replies) -> None:
        self.create_replies.extend(replies)

    def script_polls(self, *steps) -> None:
        """Answers to the next polls: "in-progress", "completed" (and its variants, see
        _completed), "failed", "success-false", "unknown", "job-not-found", "404", "429",
        "500", "timeout", or a (status, body, headers) tuple."""
        self.poll_replies.extend(steps)

    def chaos(self, rate: float, seed: int, complete_after: int = 2) -> None:
        """Make `rate` of all calls fail at random (deterministic for a seed), and let jobs
        complete by themselves after `complete_after` polls."""
        self.chaos_rate = rate
        self.rng = random.Random(seed)
        self.complete_after = complete_after

    def _fault(self, choices: tuple[str, ...]) -> str | None:
        with self.lock:
            if self.chaos_rate and self.rng.random() < self.chaos_rate:
                return self.rng.choice(choices)
        return None

    def expire_files(self, status: int = 404) -> None:
        self.file_status = status

    def expire_links(self) -> None:
        """Every result link handed out so far stops working (403); a later completed answer
        hands out fresh ones, as signed URLs do."""
        self.links_expired_upto = self.links_issued

    def list_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "GET" and r.path == f"{API}/v1/aistudio/videos"]

    # --- Reading what happened --------------------------------------------------------

    def creates(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.path == f"{API}/v1/aistudio/videos"]

    def polls(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "GET" and r.path.startswith(f"{API}/v1/jobs/")]

    def quota_reads(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "GET" and r.path == f"{API}/v1/quota"]

    def file_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.startswith("/files/")]

    # --- Answers ----------------------------------------------------------------------

    def handle(self, handler, method: str) -> None:
        raw = b""
        if method == "POST":
            length = int(handler.headers.get("Content-Length") or 0)
            raw = handler.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in handler.headers.items()}
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = ValueError
        path, _, query = handler.path.partition("?")
        with self.lock:
            self.requests.append(Recorded(method, path, headers, None if body is ValueError else body, raw))

        if path.startswith("/files/") and method == "GET":
            fault = self._fault(("500", "truncated", "corrupt"))
            if fault:
                return self._damaged_file(handler, path, fault)
            return self._file(handler, path, query)
        if not path.startswith(API + "/"):
            return send(handler, 404, {"message": "Not Found"})
        if self.latency:
            time.sleep(self.latency)
        refusal = self._refuse(headers)
        if refusal:
            return send(handler, *refusal)
        fault = self._fault(("500", "429", "timeout"))
        if fault == "500":
            return send(handler, 500, {"message": "Internal Server Error"})
        if fault == "429":
            return send(handler, 429, {"message": "Too Many Requests"}, {"Retry-After": "20"})
        if fault == "timeout":
            time.sleep(self.slow_seconds)  # then answer, too late for the client
        if method == "POST" and path == f"{API}/v1/aistudio/videos":
            return self._create(handler, headers, body)
        if method == "GET" and path == f"{API}/v1/quota":
            if self.quota is None:
                return send(handler, 403, {"message": "Forbidden"})
            return send(handler, 200, self.quota)
        if method == "GET" and path == f"{API}/v1/aistudio/videos":
            return send(handler, 200, self._list())
        match = re.fullmatch(rf"{API}/v1/jobs/([^/]+)", path)
        if method == "GET" and match:
            return self._poll(handler, match.group(1), headers)
        return send(handler, 404, {"message": "Not Found"})

    def _refuse(self, headers: dict):
        agent = headers.get("user-agent", "")
        edge = (403, EDGE_PAGE, {"Content-Type": "text/html; charset=UTF-8"})
        # The bot protection in front of the service refuses library agents (error 1010).
        if not agent or agent.lower().startswith(("python-httpx", "python-requests", "python-urllib")):
            return edge
        with self.lock:
            if self.edge_refusals > 0:
                self.edge_refusals -= 1
                return edge
        auth = headers.get("authorization", "")
        if self.key_refused or auth != self.key:  # the raw key; "Bearer <key>" is refused too
            message = f"Unauthorized: the key {auth} is not valid" if self.echo_key else "Unauthorized"
            return 401, {"message": message}
        return None

    def _list(self) -> object:
        """The account's generated videos, newest first, in the shape chosen by list_shape."""
        with self.lock:
            jobs = sorted(self.jobs.values(), key=lambda job: job.created, reverse=True)
        if self.list_shape == "videos-ms":
            return {
                "videos": [
                    {
                        "id": job.id,
                        "prompt": job.body.get("prompt"),
                        "status": "completed" if job.files else "in-progress",
                        "created_at": int(job.created * 1000),
                    }
                    for job in jobs
                ]
            }
        items = [
            {
                "jobId": job.id,
                "prompt": job.body.get("prompt"),
                "model": job.body.get("model", "pixverse5.5"),
                "status": "completed" if job.files else "in-progress",
                "createdAt": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(job.created))
                + f".{int(job.created % 1 * 1000):03d}Z",
            }
            for job in jobs
        ]
        return items if self.list_shape == "list" else {"success": True, "data": {"items": items}}

    def _invalid(self, handler, problems: list[tuple[str, str]], message="Request body is invalid"):
        if self.fields_shape == "field":
            fields = [{"field": name, "message": text} for name, text in problems]
        elif self.fields_shape == "name-str":
            fields = [{"name": name, "errors": text} for name, text in problems]
        else:
            fields = [{"name": name, "errors": [text]} for name, text in problems]
        return send(handler, 400, {"code": "INVALID_REQUEST_BODY", "message": message, "fields": fields})

    def validate(self, headers: dict, body) -> list[tuple[str, str]]:
        if not headers.get("content-type", "").startswith("application/json"):
            return [("body", "Content-Type must be application/json")]
        if not isinstance(body, dict):
            return [("body", "The body must be a JSON object")]
        problems = [(name, "is not a known field") for name in body if name not in FIELDS]
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not 5 <= len(prompt) <= 5000:
            problems.append(("prompt", "prompt must be between 5 and 5000 characters"))
        model = body.get("model", "pixverse5.5")
        if model not in MODELS:
            problems.append(("model", f"model must be one of {', '.join(MODELS)}"))
            return problems
        ratios, durations, _ = MODELS[model]
        if "aspectRatio" in body and body["aspectRatio"] not in ratios:
            problems.append(("aspectRatio", f"aspectRatio must be one of {', '.join(ratios)} for {model}"))
        if "duration" in body and body["duration"] not in durations:
            problems.append(("duration", f"duration must be one of {', '.join(durations)} for {model}"))
        for name in ("firstFrameImageUrl", "extendVideoUrl", "webhook"):
            if name in body and not (isinstance(body[name], str) and URI.match(body[name])):
                problems.append((name, f"{name} must be a URI"))
        if "referenceImageUrls" in body:
            urls = body["referenceImageUrls"]
            if not isinstance(urls, list) or not 1 <= len(urls) <= 3:
                problems.append(("referenceImageUrls", "referenceImageUrls must have 1 to 3 items"))
            elif not all(isinstance(u, str) and URI.match(u) for u in urls):
                problems.append(("referenceImageUrls", "referenceImageUrls must be URIs"))
        given = [name for name in EXCLUSIVE if name in body]
        if len(given) > 1:
            problems.append((given[1], f"{' and '.join(given)} are mutually exclusive"))
        return problems

    def _create(self, handler, headers, body):
        reply = self.create_replies.popleft() if self.create_replies else "ok"
        if isinstance(reply, tuple):  # a scripted refusal: nothing is created
            return send(handler, *reply)
        problems = self.validate(headers, body)
        if problems:
            if self.echo_key:
                problems.append(("prompt", f"rejected for key {headers.get('authorization', '')}"))
            return self._invalid(handler, problems)
        job = Job(id=str(uuid.uuid4()), body=body)
        with self.lock:
            self.jobs[job.id] = job
        if reply == "timeout":
            # Created, but the answer comes too late for the client: the outcome is unknown.
            time.sleep(self.slow_seconds)
        if reply == "500-after-create":
            # The job was queued, then the server failed: its docs still say "retry".
            return send(handler, 500, {"message": "Internal Server Error"})
        if reply == "drop-after-create":
            # Created, then the connection closes without an answer.
            handler.close_connection = True
            handler.wfile.flush()
            handler.connection.shutdown(2)
            return None
        return send(handler, 200, {"success": True, "data": {"jobId": job.id}})

    def _poll(self, handler, job_id, headers=None):
        job = self.jobs.get(job_id)
        if job is None and self.accept_unknown_jobs:
            return send(handler, 200, {"job_id": job_id, "success": True, "data": {"status": "in-progress"}})
        if self.poll_replies:
            step = self.poll_replies.popleft()
        elif job is not None and self.complete_after is not None and job.polls + 1 >= self.complete_after:
            step = "completed"
        else:
            step = "in-progress"
        if isinstance(step, tuple):
            return send(handler, *step)
        # The documented unknown-job answer (Pictory's own skill); its HTTP status is not
        # documented, so the fake gives it with 404 for an unknown id and 200 when scripted.
        not_found = {"success": False, "error_code": "5000", "error_message": "JOB_NOT_FOUND"}
        if job is None or step == "404":
            return send(handler, 404, not_found)
        if step == "job-not-found-200":
            return send(handler, 200, not_found)
        job.polls += 1
        if step == "timeout":
            time.sleep(self.slow_seconds)
            step = "in-progress"
        answers = {
            "in-progress": lambda: {"job_id": job.id, "success": True, "data": {"status": "in-progress"}},
            "unknown": lambda: {"job_id": job.id, "success": True, "data": {"status": "queued-on-gpu"}},
            "failed": lambda: {
                "job_id": job.id,
                "success": False,
                "data": {
                    "status": "failed",
                    "error_code": "CONTENT_REJECTED",
                    "error_message": "The prompt was rejected by the content policy.",
                },
            },
            "success-false": lambda: {
                "job_id": job.id,
                "success": False,
                "data": {
                    "error_code": "GENERATION_FAILED",
                    "error_message": "The model could not render this prompt.",
                },
            },
            "job-not-found": lambda: {"success": False, "code": "JOB_NOT_FOUND", "message": "Job not found"},
        }
        if step == "429":
            return send(handler, 429, {"message": "Too Many Requests"}, {"Retry-After": "7"})
        if step == "500":
            return send(handler, 500, {"message": "Internal Server Error"})
        if step.startswith("completed"):
            return send(handler, 200, self._completed(job, step))
        answer = answers[step]()
        if self.echo_key and step == "failed":
            answer["data"]["error_message"] += (
                f" Request authorised by {(headers or {}).get('authorization')}."
            )
        return send(handler, 200, answer)

    def _completed(self, job: Job, step: str) -> dict:
        """ "completed": every field, optional ones included; "completed-documented": only
        the fields documented for this endpoint; "completed-bare": status and url only;
        "completed-preview": previewImageUrl instead of thumbnailImageUrl."""
        model = job.body.get("model", "pixverse5.5")
        ratios, durations, rate = MODELS[model]
        ratio = job.body.get("aspectRatio", ratios[0])
        duration = job.body.get("duration", durations[0])
        video, png, jpeg = rendered(ratio)
        base = f"{self.origin}/files/{job.id}"
        with self.lock:
            self.links_issued += 1
            issued = self.links_issued
            job.links += 1
            if job.first_issue is None:
                job.first_issue = issued
        # Links after the first of a job carry their issue number, as fresh signed URLs would.
        suffix = "" if job.links == 1 else f"?issued={issued}"
        job.files = {
            "video.mp4": (video, "video/mp4"),
            "last.png": (png, "image/png"),
            "thumb.jpg": (jpeg, "image/jpeg"),
        }
        data = {"status": "completed", "url": f"{base}/video.mp4{suffix}"}
        if step != "completed-bare":
            data.update(
                duration=duration, width=1280, height=720, lastFrameImageUrl=f"{base}/last.png{suffix}"
            )
        if step in ("completed", "completed-preview"):
            key = "thumbnailImageUrl" if step == "completed" else "previewImageUrl"
            data[key] = f"{base}/thumb.jpg{suffix}"
            data["aiCreditsUsed"] = rate * int(duration.rstrip("s"))
        return {"job_id": job.id, "success": True, "data": data}

    def _file(self, handler, path, query=""):
        issued = int(query.removeprefix("issued=")) if query.startswith("issued=") else None
        job = self.jobs.get(path.split("/")[2]) if path.count("/") >= 3 else None
        # A job's first links count as issued when it first completed (its first issue).
        if job is not None and issued is None:
            issued = job.first_issue
        if issued is not None and issued <= self.links_expired_upto:
            return send(
                handler,
                403,
                "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
                {"Content-Type": "application/xml"},
            )
        if self.file_status:
            return send(
                handler,
                self.file_status,
                "<Error><Code>AccessDenied</Code></Error>",
                {"Content-Type": "application/xml"},
            )
        _, _, job_id, name = path.split("/", 3)
        job = self.jobs.get(job_id)
        if job is None or name not in job.files:
            return send(handler, 404, {"message": "Not Found"})
        content, ctype = job.files[name]
        return send(handler, 200, content, {"Content-Type": ctype})

    def _damaged_file(self, handler, path, fault):
        if fault == "500":
            return send(
                handler, 500, "<Error><Code>InternalError</Code></Error>", {"Content-Type": "application/xml"}
            )
        _, _, job_id, name = path.split("/", 3)
        job = self.jobs.get(job_id)
        if job is None or name not in job.files:
            return send(handler, 404, {"message": "Not Found"})
        content, ctype = job.files[name]
        if fault == "corrupt":  # complete, but not a video any more
            return send(handler, 200, bytes(b ^ 0x5A for b in content), {"Content-Type": ctype})
        # Truncated: the full length announced, half of it sent, then the connection closes.
        handler.send_response(200)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(content)))
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(content[: len(content) // 2])
        handler.close_connection = True
