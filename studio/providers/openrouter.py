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
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit

import httpx
from django.conf import settings

from .base import (
    ImageInput,
    KeyCheck,
    ModelSpec,
    ProviderError,
    RemoteStatus,
    SecondPrice,
    Submission,
    WebhookRefused,
)
from .http import HostedProvider, decimal_or_none, error_body, retry_after, text
from .redact import redact

log = logging.getLogger(__name__)

NAME = "openrouter"
# Names the app on OpenRouter's side (optional headers of the API).
APP_TITLE = "Lastframe Studio"

# The list has no structured field for reference images (contracts.md): a model is taken
# to accept them when the list gives a sign of it, a pricing key for references or a
# description that speaks of reference images / reference-to-video, whether or not it also
# takes frames. Up to this many (3 is the common limit of the services behind OpenRouter,
# e.g. Veo) unless the description names another number. The studio's admin can override
# this per model (Model overrides in the admin).
MAX_REFERENCE_IMAGES = 3
REFERENCE_SIGNS = re.compile(
    r"reference[- ]to[- ]video|reference[- ]image|reference[- ]based|image references|"
    r"input[_ ]references|subject reference|character reference|(?:up to|with) \d+ references?",
    re.IGNORECASE,
)
REFERENCE_COUNT = re.compile(r"up to (\d+) (?:reference|ref)", re.IGNORECASE)
# Models that work on a video they are given (upscalers, editors) appear in the same list:
# they cannot make a clip from text or pictures. Signs: options "for video upscaling models
# only" (upscale_factor, creativity) and descriptions that say so.
VIDEO_INPUT_PARAMETERS = {"upscale_factor", "creativity", "video", "video_url", "input_video", "source_video"}
VIDEO_INPUT_SIGNS = re.compile(
    r"upscal|video[- ]editing|video editor|edits? (?:an? |your |existing |the )?(?:input )?videos?|"
    r"video[- ]to[- ]video|restyl\w* (?:an? |your |existing )?videos?|video inpainting|requires? an? (?:input )?video",
    re.IGNORECASE,
)
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
MODEL_GONE = "OpenRouter does not offer this model any more: choose another model."
DATA_POLICY = (
    "OpenRouter has no provider for this model that your account's data policy allows (for "
    "example zero data retention, or not allowing training on prompts). Change the privacy "
    "settings of your OpenRouter account (openrouter.ai/settings/privacy), or choose another model."
)
CONSTRAINTS = (
    "No provider for this model meets the restrictions set on your OpenRouter account or key "
    "(allowed providers, price or region limits). Relax them on OpenRouter, or choose another model."
)
# A 404's metadata or message names why no provider serves the model (contracts.md).
DATA_POLICY_SIGNS = (
    "privacy_restricted",
    "data policy",
    "data-policy",
    "zero data retention",
    "zdr",
    "privacy",
)
CONSTRAINT_SIGNS = ("constraint_filtered", "constraint")

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
    deadline_setting = "OPENROUTER_DEADLINE_MINUTES"
    # Its documentation: poll about every 30 s, never faster than every 10 s.
    poll_setting = "OPENROUTER_POLL_SECONDS"
    poll_default = 30.0
    poll_bounds = (10.0, 120.0)
    # Images go by our public URL when there is one, otherwise inline as data: URLs.
    needs_public_urls = False
    publishes_models = True

    def __init__(self):
        super().__init__()
        self.secret_settings = (self.key_setting, "OPENROUTER_WEBHOOK_SECRET")

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
        body = error_body(response)
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
            if not self.is_api(str(response.request.url)) and status in (401, 403, 404, 410):
                # A signed storage URL that expired: the content endpoint still has the video.
                return ProviderError(
                    f"The video's download link at OpenRouter has expired ({status}).",
                    permanent=True,
                    status_code=status,
                    kind=ProviderError.EXPIRED,
                )
            if status == 401:
                return ProviderError(KEY_REFUSED, permanent=True, status_code=status, kind=ProviderError.AUTH)
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
            return ProviderError(KEY_REFUSED, permanent=True, status_code=status, kind=ProviderError.AUTH)
        if status == 402:
            return ProviderError(NO_CREDITS, permanent=True, status_code=status)
        if status == 403:
            return forbidden(message, metadata, status)
        if status == 404:
            return ProviderError(
                no_provider(message, metadata) or not_found, permanent=True, status_code=status
            )
        return ProviderError(
            f"OpenRouter refused the request ({status}" + (f": {message})" if message else ")"),
            permanent=True,
            status_code=status,
        )

    # --- The calls --------------------------------------------------------------------

    def submit(self, submission: Submission) -> str:
        # Reference: https://openrouter.ai/docs/api/api-reference/video-generation/create-video
        body = request_body(submission)
        answer = self.request("POST", "/videos", json=body, not_found=MODEL_GONE)
        job_id = text(answer.get("id"))
        if not job_id:
            # Accepted (2xx) without an id: a paid job may exist that we cannot follow.
            raise ProviderError(
                "OpenRouter answered without a job id, so this clip cannot be followed.",
                outcome_unknown=True,
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
    "5:4", durations [3, 7]) are taken as they come. Names and descriptions are provider
    text: redacted like any other."""
    if not isinstance(entry, dict):
        return None
    key = text(entry.get("id"))
    if not key or len(key) > 200:
        return None
    frames = set(_strings(entry.get("supported_frame_images"), 40))
    resolutions = _strings(entry.get("supported_resolutions"), MAX_OPTION_LENGTH)
    skus = entry.get("pricing_skus") if isinstance(entry.get("pricing_skus"), dict) else {}
    prices = pricing(skus, resolutions)
    description = redact(text(entry.get("description")))
    if len(description) > MAX_DESCRIPTION:
        description = description[: MAX_DESCRIPTION - 1].rsplit(" ", 1)[0] + "…"
    full_description = text(entry.get("description"))
    return ModelSpec(
        provider=NAME,
        key=key,
        label=redact(f"{text(entry.get('name')) or key} · OpenRouter"[:300]),
        aspect_ratios=tuple(_strings(entry.get("supported_aspect_ratios"), MAX_OPTION_LENGTH)),
        durations=_durations(entry.get("supported_durations")),
        resolutions=tuple(resolutions),
        generate_audio=entry.get("generate_audio") is True,
        seed=entry.get("seed") is True,
        first_frame="first_frame" in frames,
        last_frame="last_frame" in frames,
        # A model that lists a last frame but no first frame can only take it alone.
        last_frame_alone="last_frame" in frames and "first_frame" not in frames,
        max_reference_images=reference_limit(full_description, skus),
        needs_video_input=needs_video_input(
            key, full_description, entry.get("allowed_passthrough_parameters")
        ),
        cost_unit="USD",
        description=description,
        **prices,
    )


def reference_limit(description: str, skus: dict) -> int:
    """How many reference images the model is taken to accept, from the signs the list
    gives (a pricing key for references, the description); 0 when there is none."""
    priced = any("reference" in str(name).lower() for name in skus)
    if not priced and not REFERENCE_SIGNS.search(description):
        return 0
    stated = REFERENCE_COUNT.search(description)
    return max(1, min(9, int(stated.group(1)))) if stated else MAX_REFERENCE_IMAGES


def needs_video_input(key: str, description: str, passthrough) -> bool:
    """Whether the model works on a given video (an upscaler or an editor)."""
    options = {str(p).lower() for p in passthrough} if isinstance(passthrough, list) else set()
    if options & VIDEO_INPUT_PARAMETERS:
        return True
    return bool(VIDEO_INPUT_SIGNS.search(description) or VIDEO_INPUT_SIGNS.search(key))


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


def pricing(skus, resolutions: list[str]) -> dict:
    """The ModelSpec price fields from `pricing_skus`, by the key families the live list
    uses (contracts.md). Values are strings in USD, or US cents when the name starts with
    (or carries) "cents":

    - per second of video: `duration_seconds`, `cents_per_second_output`, each maybe with a
      resolution (`_720p`), `_with_audio` / `_without_audio`, and a `text_to_video_` or
      `image_to_video_` prefix (the price depends on how the clip starts);
    - `cents_per_second_video_continuation_<res>`: the price of continuing a given video,
      not of making a clip, so never part of an estimate here;
    - `reference_images` (per reference image) and `cents_per_image_input` (per input image);
    - `minimum_cents_per_generation`: the least one clip costs;
    - `video_tokens`, `video_tokens_without_audio`: priced by tokens, known only afterwards.

    Names outside these families cannot be turned into an estimate and are left out; a model
    with no per-second price has no estimate ("known after the clip is made")."""
    fields: dict = {"cost_per_second": None, "second_prices": ()}
    if not isinstance(skus, dict):
        return fields
    by_lower = {r.lower(): r for r in resolutions}
    prices = []
    for name, value in skus.items():
        lname = str(name).lower()
        amount = decimal_or_none(value)
        if amount is None or "token" in lname:
            continue
        if "cent" in lname:
            amount = amount / 100
        amount = amount.normalize()
        if "continuation" in lname or "extend" in lname:
            continue
        if "minimum" in lname:
            fields["minimum_charge"] = max(amount, fields.get("minimum_charge") or amount)
        elif "reference" in lname:
            fields["reference_fee"] = amount
        elif any(word in lname for word in ("image_input", "input_image", "per_image")):
            fields["image_fee"] = amount
        elif "second" in lname and not any(word in lname for word in ("pixel", "character")):
            tokens = re.split(r"[^a-z0-9]+", lname)
            resolution = next((by_lower.get(t, t) for t in tokens if _RESOLUTION_TOKEN.match(t)), "")
            if "without_audio" in lname or "no_audio" in lname:
                audio = False
            elif "audio" in lname:
                audio = True
            else:
                audio = None
            start = "text" if "text_to_video" in lname else "image" if "image_to_video" in lname else ""
            prices.append(SecondPrice(resolution, audio, start, amount))
    if len({p.price for p in prices}) == 1:
        fields["cost_per_second"] = prices[0].price
    elif prices:
        fields["second_prices"] = tuple(prices)
    return fields


def forbidden(message: str, metadata: dict, status: int) -> ProviderError:
    """A 403: moderation (the prompt or an image was flagged: metadata names reasons or the
    flagged input) or, otherwise, what this key, account or region may not do."""
    reasons = metadata.get("reasons")
    flagged = isinstance(reasons, list) and reasons or metadata.get("flagged_input")
    if flagged and not message:
        message = ", ".join(text(r) for r in reasons if text(r)) if isinstance(reasons, list) else ""
    if flagged or "moderat" in message.lower() or "flagged" in message.lower():
        return ProviderError(
            f"Refused by moderation: {message or 'no reason was given.'} Change the prompt or the images.",
            permanent=True,
            status_code=status,
        )
    return ProviderError(
        "OpenRouter does not allow this request for your key or region (403)"
        + (f": {message}" if message else "."),
        permanent=True,
        status_code=status,
    )


def no_provider(message: str, metadata: dict) -> str:
    """Why a 404 says no provider serves the model, in plain words ("" : the model is gone
    or the job unknown)."""
    haystack = " ".join([message, *(f"{k} {v}" for k, v in metadata.items() if isinstance(v, (str, bool)))])
    haystack = haystack.lower()
    if any(sign in haystack for sign in DATA_POLICY_SIGNS):
        return DATA_POLICY
    if any(sign in haystack for sign in CONSTRAINT_SIGNS):
        return CONSTRAINTS
    if "no_endpoints" in haystack or "no endpoints" in haystack:
        return (
            "No OpenRouter provider serves this model at the moment (no endpoints). Try again later, "
            "or choose another model."
        )
    return ""


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
    if (submission.first_frame or submission.last_frame) and submission.reference_images:
        # With both, OpenRouter uses the frames and silently drops the references: a creator's
        # pictures must never vanish on a paid clip. The form never sends both.
        raise ProviderError(
            "OpenRouter takes frames or reference images, not both: send one or the other.",
            permanent=True,
            field_errors={"reference_images": ["Send frames or reference images, not both."]},
        )
    if submission.last_frame and not submission.first_frame and not spec.last_frame_alone:
        # Its docs show a last frame only with a first frame; a gateway answers 400 to one alone.
        raise ProviderError(
            f"{spec.label} takes a last frame only together with a first frame.",
            permanent=True,
            field_errors={
                "first_frame": ["Add a first frame: a last frame alone is not sent to this model."]
            },
        )
    frames = []
    for item, frame_type in ((submission.first_frame, "first_frame"), (submission.last_frame, "last_frame")):
        if item is not None:
            frames.append(
                {"type": "image_url", "image_url": {"url": _image_url(item)}, "frame_type": frame_type}
            )
    if frames:
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
        # Reference: https://openrouter.ai/docs/api/api-reference/video-generation/get-video-content
        content = f"{job_url}/content?index=0"
        video_url = first if first.startswith(("http://", "https://")) else content
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        cost = decimal_or_none(usage.get("cost"))
        return RemoteStatus(
            RemoteStatus.SUCCEEDED,
            video_url=video_url,
            # A signed storage URL expires (401/403/404): the content endpoint, with the key, does not.
            fallback_video_url=content if video_url != content else "",
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
    # ASCII only: "١٢".isdigit() is true, int("²") fails, and compare_digest refuses
    # non-ASCII text; anyone can send this header, unauthenticated.
    readable = 0 < len(stamp) <= 12 and stamp.isascii() and stamp.isdigit()
    if not readable or not candidates or not all(_is_hex(c) for c in candidates):
        return 400, "The signature header cannot be read."
    now = time.time() if now is None else now
    if abs(now - int(stamp)) > SIGNATURE_WINDOW_SECONDS:
        return 401, "The signature is too old (or from the future)."
    expected = hmac.new(secret.encode(), stamp.encode() + b"," + raw_body, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        return 401, "The signature does not match."
    return None


def _is_hex(text: str) -> bool:
    return 0 < len(text) <= 128 and text.isascii() and all(c in "0123456789abcdef" for c in text)
