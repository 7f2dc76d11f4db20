"""OpenRouter video: whatever video models OpenRouter lists today, behind one async API.

The facts of the API are in ../shared/contracts.md (OpenRouter part). The model list is read
from GET /videos/models (studio.catalogue caches it); nothing about a model is hard-coded
here, so a model that appears tomorrow with options never seen before works without a code
change. HTTP itself is `HostedProvider.request`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import mimetypes
import re
import time
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit

import httpx
from django.conf import settings

from .base import ImageInput, KeyCheck, ModelSpec, ProviderError, RemoteStatus, Submission, WebhookRefused
from .http import HostedProvider, clamped_seconds, decimal_or_none, retry_after, text

log = logging.getLogger(__name__)

NAME = "openrouter"
USER_AGENT = "LastframeStudio/1.0"
# Names the app on OpenRouter's side (optional headers of the API).
APP_TITLE = "Lastframe Studio"

# The list states nothing about reference images. Models that take no frame images are
# offered up to this many references (OpenRouter passes `input_references` on to the
# model; 3 is the common limit of the services behind it, e.g. Veo). Models that take
# frames are not: when both are sent the frames win (contracts.md), so references there
# would be silently ignored. A model that refuses them answers 400, shown on the form.
MAX_REFERENCE_IMAGES = 3
# Longest value the studio stores for an option (Clip.aspect_ratio / resolution columns).
MAX_OPTION_LENGTH = 10
MAX_MODELS = 500
MAX_DESCRIPTION = 400
# Downloads are retried in place on 429/5xx (502 happens, says the contract), as long as
# the wait asked for is short; a longer one is left to the next finishing attempt.
DOWNLOAD_TRIES = 3
MAX_INLINE_WAIT = 10.0
# Webhook signatures older (or further in the future) than this are refused.
SIGNATURE_WINDOW_SECONDS = 300

RUNNING_STATUSES = {"pending", "in_progress"}
FAILED_STATUSES = {"failed", "cancelled", "expired"}
FAILED_DEFAULT = {
    "failed": "OpenRouter could not make this clip.",
    "cancelled": "The job was cancelled at OpenRouter.",
    "expired": "The job expired at OpenRouter before it finished.",
}

KEY_REFUSED = "OpenRouter refused the API key (check OPENROUTER_API_KEY)."
NO_CREDITS = "Not enough credits on OpenRouter: add credits to your OpenRouter account, then try again."
NO_SUCH_JOB = "OpenRouter has no record of this job."

# Names in a 400's message or metadata, and the Submission fields they concern.
SUBMISSION_FIELDS = {
    "aspect_ratio": "aspect_ratio",
    "resolution": "resolution",
    "duration": "duration",
    "generate_audio": "generate_audio",
    "seed": "seed",
    "prompt": "prompt",
    "model": "model",
    "last_frame": "last_frame",
    "first_frame": "first_frame",
    "frame_images": "first_frame",
    "input_references": "reference_images",
}


class OpenRouterProvider(HostedProvider):
    name = NAME
    label = "OpenRouter"
    vendor = "OpenRouter"
    key_setting = "OPENROUTER_API_KEY"
    base_url_setting = "OPENROUTER_API_BASE_URL"
    timeout_setting = "OPENROUTER_TIMEOUT_SECONDS"
    user_agent = USER_AGENT
    # Images go by our public URL when there is one, otherwise inline as data: URLs.
    needs_public_urls = False
    publishes_models = True

    def __init__(self):
        super().__init__()
        self.secret_settings = (self.key_setting, "OPENROUTER_WEBHOOK_SECRET")

    @property
    def poll_interval(self) -> float:
        """OPENROUTER_POLL_SECONDS (the docs say about 30) kept within 1 to 120 s. Values under
        10 only make sense against a test server standing in for OpenRouter."""
        return clamped_seconds(settings.OPENROUTER_POLL_SECONDS, 30.0, 1.0, 120.0)

    @property
    def refresh_minutes(self) -> float:
        return float(settings.OPENROUTER_MODELS_REFRESH_MINUTES)

    @property
    def origin(self) -> str:
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"

    def setup_help(self) -> str:
        return (
            "Generates with the video models OpenRouter offers (the list is read from OpenRouter, so "
            "new models appear by themselves). Create a key on the Keys page of your OpenRouter "
            "account and paste it here, or set OPENROUTER_API_KEY in the studio's environment."
        )

    # --- The model list ---------------------------------------------------------------

    def fetch_model_entries(self, timeout: float | None = None) -> list[dict]:
        # Reference: https://openrouter.ai/docs/api/api-reference/video-generation/list-video-models
        body = self.request(
            "GET",
            "/videos/models",
            timeout=timeout,
            not_found="OpenRouter has no video model list here (check OPENROUTER_API_BASE_URL).",
        )
        return model_entries(body)

    def specs_from(self, entries: list[dict]) -> list[ModelSpec]:
        return specs_from(entries)

    # --- HTTP -------------------------------------------------------------------------

    def auth_headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.api_key}", "X-OpenRouter-Title": APP_TITLE}
        if settings.PUBLIC_BASE_URL:
            headers["HTTP-Referer"] = settings.PUBLIC_BASE_URL
        return headers

    def api_error(self, response: httpx.Response, *, download: bool, not_found: str) -> ProviderError:
        """The documented error body {"error": {"code", "message", "metadata"}} in our words."""
        status = response.status_code
        not_found = not_found or NO_SUCH_JOB
        try:
            body = response.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        message = text(error.get("message")) or text(body.get("message")) or text(body.get("error"))
        metadata = error.get("metadata") if isinstance(error.get("metadata"), dict) else {}
        if status == 429 or status == 408 or status >= 500:
            what = "OpenRouter's file download" if download else "OpenRouter"
            detail = "asked us to slow down" if status == 429 else "had a problem on its side"
            return ProviderError(
                f"{what} {detail} ({status}).", retry_after=retry_after(response), status_code=status
            )
        if download:
            if status == 401:
                return ProviderError(KEY_REFUSED, permanent=True, status_code=status)
            return ProviderError(
                f"The video file at OpenRouter could not be downloaded ({status}).",
                permanent=True,
                status_code=status,
            )
        if status == 400:
            return ProviderError(
                "OpenRouter did not accept these settings.",
                permanent=True,
                field_errors=field_errors(message, metadata),
                status_code=status,
            )
        if status == 401:
            return ProviderError(KEY_REFUSED, permanent=True, status_code=status)
        if status == 402:
            return ProviderError(NO_CREDITS, permanent=True, status_code=status)
        if status == 403:
            reasons = metadata.get("reasons")
            if isinstance(reasons, list) and reasons and not message:
                message = ", ".join(text(r) for r in reasons if text(r))
            return ProviderError(
                f"Refused by moderation: {message or 'no reason was given.'}",
                permanent=True,
                status_code=status,
            )
        if status == 404:
            return ProviderError(not_found, permanent=True, status_code=status)
        return ProviderError(
            f"OpenRouter refused the request ({status}" + (f": {message})" if message else ")"),
            permanent=True,
            status_code=status,
        )

    # --- The calls --------------------------------------------------------------------

    def submit(self, submission: Submission) -> str:
        # Reference: https://openrouter.ai/docs/api/api-reference/video-generation/create-video
        body = request_body(submission)
        answer = self.request(
            "POST", "/videos", json=body, not_found="OpenRouter does not offer this model any more."
        )
        job_id = text(answer.get("id"))
        if not job_id:
            raise ProviderError(
                "OpenRouter answered without a job id, so this clip cannot be followed. "
                "Check your OpenRouter activity before trying again.",
                permanent=True,
            )
        return self._remote_id(job_id, text(answer.get("polling_url")))

    def _remote_id(self, job_id: str, polling_url: str) -> str:
        """The job id, with the polling URL after a "|" when it is not the usual one (the
        clip keeps one string). A polling URL off OpenRouter's origin is not followed: the
        key would go with it; GET /videos/{id} says the same."""
        if not polling_url:
            return job_id
        resolved = urljoin(self.origin + "/", polling_url)
        if resolved == self._job_url(job_id) or "|" in job_id:
            return job_id
        if not self.is_api(resolved):
            log.warning("OpenRouter gave a polling URL on another host; polling /videos/%s instead", job_id)
            return job_id
        combined = f"{job_id}|{resolved}"
        return combined if len(combined) <= 200 else job_id

    def _job_url(self, job_id: str) -> str:
        return f"{self.base_url}/videos/{quote(job_id, safe='')}"

    def poll(self, remote_id: str) -> RemoteStatus:
        # Reference: https://openrouter.ai/docs/api/api-reference/video-generation/get-video
        job_id, _, polling_url = remote_id.partition("|")
        body = self.request("GET", polling_url or self._job_url(job_id))
        return remote_status(body, job_id, self._job_url(job_id))

    def download(self, url: str, destination: Path) -> None:
        # Reference: https://openrouter.ai/docs/api/api-reference/video-generation/get-video-content
        if not url.startswith(("http://", "https://")):
            raise ProviderError("OpenRouter sent a file address we cannot download.", permanent=True)
        for attempt in range(1, DOWNLOAD_TRIES + 1):
            try:
                self.request("GET", url, stream_to=destination)
                return
            except ProviderError as exc:
                wait = exc.retry_after if exc.retry_after is not None else float(attempt)
                if (
                    exc.permanent
                    or exc.outcome_unknown
                    or attempt == DOWNLOAD_TRIES
                    or wait > MAX_INLINE_WAIT
                ):
                    raise
                log.info("OpenRouter download failed (%s); trying again in %.0f s", exc.message, wait)
                time.sleep(wait)

    def test_key(self, key: str) -> KeyCheck:
        return self.try_key(key, self._describe_key)

    def _describe_key(self) -> str:
        """GET /key: the key's spending limit and what is left of it (spends nothing)."""
        # Reference: https://openrouter.ai/docs/api/api-reference/api-keys/get-current-key
        body = self.request("GET", "/key")
        data = body.get("data") if isinstance(body.get("data"), dict) else {}
        remaining, limit = decimal_or_none(data.get("limit_remaining")), decimal_or_none(data.get("limit"))
        usage = decimal_or_none(data.get("usage"))
        if remaining is not None:
            of = f" of its {limit.normalize():f} USD limit" if limit is not None else ""
            return f"OpenRouter accepted the key: {remaining.normalize():f} USD of credit left{of}."
        if usage is not None:
            return f"OpenRouter accepted the key. It has no spending limit; {usage.normalize():f} USD used so far."
        return "OpenRouter accepted the key."

    # --- Webhooks ---------------------------------------------------------------------

    def check_webhook(self, request) -> str:
        """OpenRouter signs its calls when a secret is configured: check that first (a refused
        call changes nothing). Repeats are named by X-OpenRouter-Idempotency-Key."""
        # Reference: https://openrouter.ai/docs/guides/features/webhooks
        secret = settings.OPENROUTER_WEBHOOK_SECRET
        if secret:
            header = request.headers.get("X-OpenRouter-Signature", "")
            problem = signature_problem(header, request.body, secret)
            if problem is not None:
                raise WebhookRefused(*problem)
        return request.headers.get("X-OpenRouter-Idempotency-Key", "").strip()


# --- Mapping between our words and OpenRouter's ----------------------------------------------


def model_entries(body: dict) -> list[dict]:
    """The raw entries of a /videos/models answer worth keeping (each with an id)."""
    data = body.get("data")
    if not isinstance(data, list):
        raise ProviderError("OpenRouter sent a model list the studio cannot read.")
    return [entry for entry in data if isinstance(entry, dict) and text(entry.get("id"))][:MAX_MODELS]


def specs_from(entries) -> list[ModelSpec]:
    specs, seen = [], set()
    for entry in entries if isinstance(entries, list) else []:
        spec = spec_from(entry)
        if spec is not None and spec.key not in seen:
            seen.add(spec.key)
            specs.append(spec)
    return specs


def spec_from(entry) -> ModelSpec | None:
    """One model entry as a ModelSpec. A list that is null or empty means the model decides:
    the form leaves the field out and nothing is sent. Values never seen before (a ratio
    "5:4", durations [3, 7]) are taken as they come."""
    if not isinstance(entry, dict):
        return None
    key = text(entry.get("id"))
    if not key or len(key) > 200:
        return None
    frames = set(_strings(entry.get("supported_frame_images"), 40))
    resolutions = _strings(entry.get("supported_resolutions"), MAX_OPTION_LENGTH)
    cost_per_second, second_prices = pricing(entry.get("pricing_skus"), resolutions)
    description = text(entry.get("description"))
    if len(description) > MAX_DESCRIPTION:
        description = description[: MAX_DESCRIPTION - 1].rsplit(" ", 1)[0] + "…"
    return ModelSpec(
        provider=NAME,
        key=key,
        label=f"{text(entry.get('name')) or key} · OpenRouter"[:300],
        aspect_ratios=tuple(_strings(entry.get("supported_aspect_ratios"), MAX_OPTION_LENGTH)),
        durations=_durations(entry.get("supported_durations")),
        resolutions=tuple(resolutions),
        generate_audio=entry.get("generate_audio") is True,
        seed=entry.get("seed") is True,
        first_frame="first_frame" in frames,
        last_frame="last_frame" in frames,
        max_reference_images=0 if frames else MAX_REFERENCE_IMAGES,
        cost_per_second=cost_per_second,
        cost_unit="USD",
        second_prices=second_prices,
        description=description,
    )


def _strings(value, max_length: int) -> list[str]:
    if not isinstance(value, list):
        return []
    found = []
    for item in value:
        if isinstance(item, str) and item.strip() and len(item.strip()) <= max_length:
            if item.strip() not in found:
                found.append(item.strip())
    return found


def _durations(value) -> tuple[int, ...]:
    """Whole seconds, sorted (the list comes unordered): 8, "8" and 8.0 are all 8."""
    found = set()
    for item in value if isinstance(value, list) else []:
        if isinstance(item, bool):
            continue
        amount = decimal_or_none(item)
        if amount is not None and amount == amount.to_integral_value() and 0 < amount <= 3600:
            found.add(int(amount))
    return tuple(sorted(found))


_RESOLUTION_TOKEN = re.compile(r"^\d+(p|k)$", re.IGNORECASE)


def pricing(skus, resolutions: list[str]) -> tuple[Decimal | None, tuple]:
    """Per-second prices in USD from `pricing_skus`, where their names allow it.

    SKU names differ by model and are not documented one by one; a per-second price is
    recognised by "second" in its name ("duration_seconds_720p", "cents_per_second_output",
    values in cents when the name says "cents"), with an optional resolution and
    "with_audio"/"without_audio". Anything else (tokens, megapixels, per video) cannot be
    turned into an estimate: then there is none, and the form says the price is not known
    in advance. Returns (one price for every option, or None; prices by options)."""
    if not isinstance(skus, dict):
        return None, ()
    by_lower = {r.lower(): r for r in resolutions}
    prices = []
    for name, value in skus.items():
        lname = str(name).lower()
        amount = decimal_or_none(value)
        if amount is None or "second" not in lname:
            continue
        if any(word in lname for word in ("token", "pixel", "image", "character")):
            continue
        if "cent" in lname:
            amount = amount / 100
        tokens = re.split(r"[^a-z0-9]+", lname)
        resolution = next((by_lower.get(t, t) for t in tokens if _RESOLUTION_TOKEN.match(t)), "")
        if "without_audio" in lname or "no_audio" in lname:
            audio = False
        elif "audio" in lname:
            audio = True
        else:
            audio = None
        prices.append((resolution, audio, amount.normalize()))
    if not prices:
        return None, ()
    if len({price for _, _, price in prices}) == 1:
        return prices[0][2], ()
    return None, tuple(prices)


def _image_url(item: ImageInput) -> str:
    """Our image as a URL OpenRouter can fetch: the public one when the studio has one,
    otherwise the file itself as a data: URL (said to work, not promised: README)."""
    if item.remote_url or item.public_url:
        return item.remote_url or item.public_url
    content_type = mimetypes.guess_type(item.name)[0] or "image/png"
    try:
        payload = base64.b64encode(item.read_bytes()).decode("ascii")
    except OSError as exc:
        raise ProviderError(
            f"The image {item.name} could not be read: {exc.strerror or exc}.", permanent=True
        )
    return f"data:{content_type};base64,{payload}"


def request_body(submission: Submission) -> dict:
    """The JSON of a create request: only the documented fields, only what the model lists
    (a field the model leaves to itself is not sent), frames before references."""
    spec = submission.model
    if submission.extend_video is not None:
        raise ProviderError(
            "OpenRouter cannot extend a video; continue from its last frame instead.", permanent=True
        )
    body: dict = {"model": spec.key, "prompt": submission.prompt}
    if submission.duration:
        body["duration"] = int(submission.duration)
    if submission.resolution:
        body["resolution"] = submission.resolution
    if submission.aspect_ratio:
        body["aspect_ratio"] = submission.aspect_ratio
    if spec.generate_audio and submission.generate_audio is not None:
        body["generate_audio"] = bool(submission.generate_audio)
    if spec.seed and submission.seed is not None:
        body["seed"] = int(submission.seed)
    frames = []
    for item, frame_type in ((submission.first_frame, "first_frame"), (submission.last_frame, "last_frame")):
        if item is not None:
            frames.append(
                {"type": "image_url", "image_url": {"url": _image_url(item)}, "frame_type": frame_type}
            )
    if frames:
        # With both, OpenRouter uses the frames: references would only be ignored.
        body["frame_images"] = frames
    elif submission.reference_images:
        body["input_references"] = [
            {"type": "image_url", "image_url": {"url": _image_url(item)}}
            for item in submission.reference_images
        ]
    if submission.webhook_url.startswith("https://"):
        body["callback_url"] = submission.webhook_url
    return body


def remote_status(body: dict, job_id: str, job_url: str) -> RemoteStatus:
    """A poll answer in our words; an unknown status is still running."""
    status = text(body.get("status")).lower()
    if status == "completed":
        urls = body.get("unsigned_urls")
        first = text(urls[0]) if isinstance(urls, list) and urls else ""
        video_url = first if first.startswith(("http://", "https://")) else f"{job_url}/content?index=0"
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        cost = decimal_or_none(usage.get("cost"))
        return RemoteStatus(
            RemoteStatus.SUCCEEDED,
            video_url=video_url,
            cost=cost,
            cost_unit="USD" if cost is not None else "",
            raw=body,
        )
    if status in FAILED_STATUSES:
        error = body.get("error")
        message = text(error.get("message")) if isinstance(error, dict) else text(error)
        return RemoteStatus(RemoteStatus.FAILED, error=message or FAILED_DEFAULT[status], raw=body)
    if status and status not in RUNNING_STATUSES:
        log.info("OpenRouter job %s has an unknown status %r; still waiting", job_id, status)
    return RemoteStatus(RemoteStatus.RUNNING, raw=body)


def field_errors(message: str, metadata: dict) -> dict[str, list[str]]:
    """A 400's message under the Submission field it names (from the metadata when it
    says, else from the message), or for the request as a whole."""
    if not message:
        message = "OpenRouter did not accept these settings."
    named = ""
    for key in ("param", "parameter", "field", "path"):
        if isinstance(metadata.get(key), str):
            named = metadata[key]
            break
    haystack = named or message
    for name in sorted(SUBMISSION_FIELDS, key=len, reverse=True):
        if re.search(rf"(?<![a-z_]){re.escape(name)}(?![a-z_])", haystack, re.IGNORECASE):
            return {SUBMISSION_FIELDS[name]: [message]}
    return {"__all__": [message]}


# --- Webhooks --------------------------------------------------------------------------------


def signature_problem(
    header: str, raw_body: bytes, secret: str, now: float | None = None
) -> tuple[int, str] | None:
    """None when `X-OpenRouter-Signature` (t=<unix>,v1=<hex HMAC-SHA256 of "<t>,<body>">)
    is right and recent; otherwise (HTTP status, reason) to refuse the call with."""
    # Reference: https://openrouter.ai/docs/guides/features/webhooks (signature verification)
    if not header:
        return 401, "The call is not signed."
    stamp, candidates = "", []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            stamp = value.strip()
        elif name == "v1" and value.strip():
            candidates.append(value.strip().lower())
    if not stamp.isdigit() or not candidates:
        return 400, "The signature header cannot be read."
    now = time.time() if now is None else now
    if abs(now - int(stamp)) > SIGNATURE_WINDOW_SECONDS:
        return 401, "The signature is too old (or from the future)."
    expected = hmac.new(secret.encode(), stamp.encode() + b"," + raw_body, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        return 401, "The signature does not match."
    return None
