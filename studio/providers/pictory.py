"""Pictory AI Studio: Veo 3.1, Veo 3.1 Fast and PixVerse 5.5 behind one REST API.

The facts of the API are in ../shared/contracts.md (Pictory part). This module only builds
requests and maps answers onto our vocabulary; HTTP itself is `HostedProvider.request`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

import httpx
from django.conf import settings
from django.utils.dateparse import parse_datetime

from .base import FoundJob, ImageInput, KeyCheck, ModelSpec, ProviderError, RemoteStatus, Submission
from .http import HostedProvider, error_body, retry_after
from .http import decimal_or_none as _decimal
from .http import text as _text

log = logging.getLogger(__name__)

NAME = "pictory"
# The service sits behind bot protection that refuses library agents with an HTML 403
# (Cloudflare error 1010). Pictory's own helper script sends a full browser User-Agent, so
# that is the default; PICTORY_USER_AGENT replaces it.
USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
# A job in the list of generated videos counts as made by a lost create when it was made
# no earlier than this before the clip was first sent (the two clocks differ a little).
CLOCK_SKEW = timedelta(minutes=2)

# There is no models endpoint: the table in the documentation is the catalogue.
MODELS = [
    ModelSpec(
        provider=NAME,
        key="veo3.1",
        label="Veo 3.1 · Pictory",
        aspect_ratios=("16:9", "9:16"),
        durations=(4, 6, 8),
        first_frame=True,
        max_reference_images=3,
        extend_video=True,
        cost_per_second=Decimal("20"),
        cost_unit="credits",
        description="Google Veo 3.1 through Pictory AI Studio: the highest quality, 20 AI credits per second.",
    ),
    ModelSpec(
        provider=NAME,
        key="veo3.1_fast",
        label="Veo 3.1 Fast · Pictory",
        aspect_ratios=("16:9", "9:16"),
        durations=(4, 6, 8),
        first_frame=True,
        max_reference_images=3,
        extend_video=True,
        cost_per_second=Decimal("10"),
        cost_unit="credits",
        description="Google Veo 3.1 Fast through Pictory AI Studio: quicker and half the price, 10 AI credits per second.",
    ),
    ModelSpec(
        provider=NAME,
        key="pixverse5.5",
        label="PixVerse 5.5 · Pictory",
        aspect_ratios=("16:9", "9:16", "1:1", "3:4", "4:3"),
        durations=(5, 8, 10),
        first_frame=True,
        max_reference_images=3,
        extend_video=True,
        cost_per_second=Decimal("1.6"),
        cost_unit="credits",
        description="PixVerse 5.5 through Pictory AI Studio: five shapes, up to 10 seconds, 1.6 AI credits per second.",
    ),
]

# Pictory's names for the inputs of a request, and the Submission fields they carry, so a
# 400 can show each message beside the right field.
SUBMISSION_FIELDS = {
    "prompt": "prompt",
    "model": "model",
    "aspectRatio": "aspect_ratio",
    "duration": "duration",
    "firstFrameImageUrl": "first_frame",
    "referenceImageUrls": "reference_images",
    "extendVideoUrl": "extend_video",
}

KEY_REFUSED = "Pictory refused the API key (check PICTORY_API_KEY)."
FIREWALL = (
    "Pictory's firewall refused the request (403). This is Pictory's bot protection, not a "
    "refused key; the studio tries again. If it keeps happening, set PICTORY_USER_AGENT to a "
    "browser's User-Agent."
)
NO_SUCH_JOB = "Pictory has no record of this job."
NO_PUBLIC_URL = (
    "Pictory fetches this file from the studio's public address, and none is set "
    "(PUBLIC_BASE_URL). Choose “Text only”, or ask whoever runs the studio to set it."
)


class PictoryProvider(HostedProvider):
    name = NAME
    label = "Pictory AI Studio"
    vendor = "Pictory"
    key_setting = "PICTORY_API_KEY"
    base_url_setting = "PICTORY_API_BASE_URL"
    timeout_setting = "PICTORY_TIMEOUT_SECONDS"
    deadline_setting = "PICTORY_DEADLINE_MINUTES"
    # Its documentation: poll every 10 to 30 s.
    poll_setting = "PICTORY_POLL_SECONDS"
    poll_default = 15.0
    poll_bounds = (10.0, 30.0)
    # Pictory fetches images and videos by URL: files of ours must be published first.
    needs_public_urls = True
    # GET /v1/aistudio/videos lists the account's generated videos (contracts.md).
    can_find_jobs = True

    @property
    def user_agent(self) -> str:
        return settings.PICTORY_USER_AGENT or USER_AGENT

    def setup_help(self) -> str:
        return (
            "Generates with Veo 3.1, Veo 3.1 Fast and PixVerse 5.5. Copy your API key from the API "
            "Access page of your Pictory dashboard (it starts with pictai_) and paste it here, or set "
            "PICTORY_API_KEY in the studio's environment."
        )

    def models(self) -> list[ModelSpec]:
        return list(MODELS)

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": self.api_key}  # the raw key: Pictory refuses "Bearer"

    def api_error(self, response: httpx.Response, *, download: bool, not_found: str) -> ProviderError:
        status = response.status_code
        if status == 403 and not download and _is_html(response):
            # The bot protection in front of every endpoint, not Pictory's JSON: nothing
            # reached Pictory, so it made nothing and says nothing about the key.
            return ProviderError(
                FIREWALL, retry_after=retry_after(response), status_code=status, kind=ProviderError.EDGE
            )
        if download:
            if status in (401, 403, 404, 410):
                # Signed result URLs answer 403 or 404 once they expire; a fresh poll gives new ones.
                return ProviderError(
                    f"The file at Pictory is no longer available ({status}); its link has expired.",
                    permanent=True,
                    status_code=status,
                    kind=ProviderError.EXPIRED,
                )
            if status == 429 or status >= 500 or status == 408:
                return ProviderError(
                    f"Pictory's file storage had a problem ({status}).",
                    retry_after=retry_after(response),
                    status_code=status,
                )
            return ProviderError(
                f"Pictory's file storage refused the download ({status}).", permanent=True, status_code=status
            )
        body = error_body(response)
        vendor_message = _text(body.get("message"))
        if status == 400:
            return ProviderError(
                "Pictory did not accept these settings" + (f": {vendor_message}" if vendor_message else "."),
                permanent=True,
                field_errors=field_errors(body.get("fields")),
                status_code=status,
            )
        if status == 401:
            return ProviderError(KEY_REFUSED, permanent=True, status_code=status, kind=ProviderError.AUTH)
        if status == 429:
            return ProviderError(
                "Pictory asked us to slow down (429).", retry_after=retry_after(response), status_code=status
            )
        if status >= 500 or status == 408:
            return ProviderError(
                f"Pictory had a problem on its side ({status}).",
                retry_after=retry_after(response),
                status_code=status,
                # Its documentation: after a 500, "retry the request after a brief delay".
                resend_documented=status == 500,
            )
        if status == 404 or _mentions_not_found(body):
            return ProviderError(NO_SUCH_JOB, permanent=True, status_code=status)
        if status == 403:
            # Pictory's own JSON 403: this key may not do this.
            return ProviderError(
                "Pictory refused the API key for this request (403 Forbidden; check PICTORY_API_KEY"
                " and the plan it belongs to).",
                permanent=True,
                status_code=status,
                kind=ProviderError.AUTH,
            )
        return ProviderError(
            f"Pictory refused the request ({status}" + (f": {vendor_message})" if vendor_message else ")"),
            permanent=True,
            status_code=status,
        )

    # --- The calls ----------------------------------------------------------------------

    def submit(self, submission: Submission) -> str:
        # Reference: https://docs.pictory.ai/api-reference/ai-studio/generate-video
        body = request_body(submission)
        answer = self.request("POST", "/v1/aistudio/videos", json=body)
        data = answer.get("data")
        job_id = _text(data.get("jobId")) if isinstance(data, dict) else ""
        if answer.get("success") is False or not job_id:
            # A 2xx without a job id: something may have been created that we cannot follow.
            raise ProviderError(
                "Pictory answered without a job id, so this clip cannot be followed.", outcome_unknown=True
            )
        return job_id

    def poll(self, remote_id: str) -> RemoteStatus:
        # Reference: https://docs.pictory.ai/api-reference/ai-studio/get-video-job
        body = self.request("GET", f"/v1/jobs/{quote(remote_id, safe='')}")
        return remote_status(body)

    def test_key(self, key: str) -> KeyCheck:
        return self.try_key(key, self._describe_key)

    def _describe_key(self) -> str:
        """The credits left, from the quota endpoint; a key that may not read its quota is
        checked with a lookup of a job that cannot exist (401 for a bad key, "not found"
        for a good one). Neither spends anything."""
        # Reference: https://docs.pictory.ai/api-reference/account/get-quota
        try:
            body = self.request("GET", "/v1/quota")
        except ProviderError as exc:
            if exc.status_code in (401, 429) or exc.status_code is None or exc.status_code >= 500:
                raise
            return self._describe_without_quota()
        data = body.get("data") if isinstance(body.get("data"), dict) else body
        credits = data.get("aiCredits") if isinstance(data.get("aiCredits"), dict) else {}
        used, limit = _decimal(credits.get("used")), _decimal(credits.get("limit"))
        if used is None or limit is None:
            return "Pictory accepted the key."
        left = max(limit - used, 0)
        return (
            f"Pictory accepted the key: {left.normalize():f} of {limit.normalize():f} AI credits "
            "left this billing term."
        )

    def _describe_without_quota(self) -> str:
        # Reference: https://docs.pictory.ai/api-reference/ai-studio/get-video-job
        try:
            self.request("GET", "/v1/jobs/00000000-0000-0000-0000-000000000000")
        except ProviderError as exc:
            if exc.status_code != 404:
                raise
        return "Pictory accepted the key (it may not read its credit quota)."

    def find_jobs(self, submission: Submission, since: datetime) -> list[FoundJob]:
        """Jobs in the account's list of generated videos that a create of this submission,
        sent since `since`, may have made: same prompt (and model, when listed), made after
        `since` (less a little clock skew). Newest requests are looked for by their prompt
        because the list's shape is not documented: it is read defensively, and an entry
        without a readable creation time is never taken (it could be an older clip with the
        same prompt)."""
        # Reference: https://docs.pictory.ai/api-reference/ai-studio/list-videos (contracts.md:
        # "GET /v1/aistudio/videos lists the account's generated AI Studio videos")
        body = self.request("GET", "/v1/aistudio/videos", allow_list=True)
        return matching_jobs(list_entries(body), submission, since - CLOCK_SKEW)

    def download(self, url: str, destination: Path) -> None:
        # Reference: https://docs.pictory.ai/api-reference/ai-studio/get-video-job
        # (result URLs are direct downloads and are not kept for ever: contracts.md)
        if not url.startswith(("http://", "https://")):
            raise ProviderError("Pictory sent a file address we cannot download.", permanent=True)
        self.request("GET", url, stream_to=destination)


# --- Mapping between our words and Pictory's ------------------------------------------------


def _public_url(item: ImageInput, field: str) -> str:
    url = item.remote_url or item.public_url
    if not url:
        raise ProviderError(NO_PUBLIC_URL, permanent=True, field_errors={field: [NO_PUBLIC_URL]})
    return url


def request_body(submission: Submission) -> dict:
    """The JSON of a create request: the documented field names only, and at most one of
    the three mutually exclusive inputs."""
    exclusive = [
        bool(submission.first_frame),
        bool(submission.reference_images),
        bool(submission.extend_video),
    ]
    if sum(exclusive) > 1:
        raise ProviderError(
            "Pictory takes a first frame, reference images or a video to extend, not several at once.",
            permanent=True,
        )
    body: dict = {"prompt": submission.prompt, "model": submission.model.key}
    if submission.aspect_ratio:
        body["aspectRatio"] = submission.aspect_ratio
    if submission.duration:
        body["duration"] = f"{submission.duration}s"
    if submission.first_frame:
        body["firstFrameImageUrl"] = _public_url(submission.first_frame, "first_frame")
    elif submission.reference_images:
        if len(submission.reference_images) > 3:
            raise ProviderError("Pictory takes 1 to 3 reference images.", permanent=True)
        body["referenceImageUrls"] = [_public_url(i, "reference_images") for i in submission.reference_images]
    elif submission.extend_video:
        body["extendVideoUrl"] = _public_url(submission.extend_video, "extend_video")
    if submission.webhook_url:
        body["webhook"] = submission.webhook_url
    return body


def remote_status(body: dict) -> RemoteStatus:
    """A poll answer in our words. Failure wins over everything (success:false even with no
    status); an unknown status is still running; the optional fields are used when present."""
    data = body.get("data") if isinstance(body.get("data"), dict) else {}
    status = _text(data.get("status")).lower()
    if _mentions_not_found(body) or _mentions_not_found(data):
        raise ProviderError(NO_SUCH_JOB, permanent=True)
    if body.get("success") is False or data.get("success") is False or status == "failed":
        message = (
            _text(data.get("error_message"))
            or _text(body.get("error_message"))
            or _text(body.get("message"))
            or _text(data.get("error_code"))
            or "Pictory could not make this clip."
        )
        return RemoteStatus(RemoteStatus.FAILED, error=message, raw=body)
    if status == "completed":
        video_url = _text(data.get("url"))
        if not video_url:
            # Completed with nothing to fetch: ask again rather than fail a paid clip; the
            # deadline ends it if the answer never changes.
            log.warning("Pictory reported a completed job without a video URL")
            return RemoteStatus(RemoteStatus.RUNNING, raw=body)
        return RemoteStatus(
            RemoteStatus.SUCCEEDED,
            video_url=video_url,
            thumbnail_url=_text(data.get("thumbnailImageUrl")) or _text(data.get("previewImageUrl")),
            last_frame_url=_text(data.get("lastFrameImageUrl")),
            cost=_decimal(data.get("aiCreditsUsed")),
            cost_unit="credits",
            raw=body,
        )
    return RemoteStatus(RemoteStatus.RUNNING, raw=body)


def field_errors(fields) -> dict[str, list[str]]:
    """The `fields` of a 400 mapped to Submission fields. Both documented shapes are accepted:
    {"field", "message"} and {"name", "errors"} (errors a string or a list). Names we do not
    know go to the request as a whole ("__all__")."""
    found: dict[str, list[str]] = {}
    if isinstance(fields, dict):  # {"prompt": "too short"} would be a third shape; cheap to accept
        fields = [{"field": k, "message": v} for k, v in fields.items()]
    if not isinstance(fields, list):
        return found
    for entry in fields:
        if not isinstance(entry, dict):
            continue
        name = _text(entry.get("field") or entry.get("name") or entry.get("path"))
        raw = entry.get("message", entry.get("errors", entry.get("error")))
        messages = [_text(m) for m in raw] if isinstance(raw, list) else [_text(raw)]
        messages = [m for m in messages if m]
        if not messages:
            continue
        target = SUBMISSION_FIELDS.get(_bare_name(name))
        if target is None:
            target = "__all__"
            messages = [f"{name}: {m}" if name else m for m in messages]
        found.setdefault(target, []).extend(messages)
    return found


def _bare_name(name: str) -> str:
    """ "body.referenceImageUrls[1]" → "referenceImageUrls": validators name fields in
    several ways."""
    name = name.rsplit(".", 1)[-1]
    return name.split("[", 1)[0].strip()


def _mentions_not_found(body) -> bool:
    """The unknown-job answer: {"success": false, "error_code": "5000", "error_message":
    "JOB_NOT_FOUND"} (Pictory's own skill), or JOB_NOT_FOUND under another of its keys."""
    if not isinstance(body, dict):
        return False
    keys = ("code", "error_code", "errorCode", "error_message", "errorMessage", "message")
    return any(_text(body.get(k)).upper() == "JOB_NOT_FOUND" for k in keys)


def _is_html(response: httpx.Response) -> bool:
    """An HTML page (a bot-protection refusal), not Pictory's JSON."""
    ctype = response.headers.get("Content-Type", "").lower()
    start = response.content.lstrip()[:15].lower()
    return "text/html" in ctype or start.startswith((b"<!doctype html", b"<html"))


# --- The list of generated videos (shape undocumented: read defensively) ------------------

_LIST_KEYS = ("items", "videos", "results", "jobs", "data", "records")
_ID_KEYS = ("jobId", "job_id", "jobID", "id", "videoId", "video_id")
_CREATED_KEYS = ("createdAt", "created_at", "createdDate", "creationTime", "created", "createdOn")


def list_entries(body) -> list[dict]:
    """The entries of a list answer, wherever they sit: the body itself, or under `data`,
    `items`, `videos`... one or two levels down."""
    for _ in range(3):
        if isinstance(body, list):
            return [entry for entry in body if isinstance(entry, dict)]
        if not isinstance(body, dict):
            return []
        body = next((body[k] for k in _LIST_KEYS if isinstance(body.get(k), (list, dict))), None)
    return []


def _entry_time(entry: dict) -> datetime | None:
    for key in _CREATED_KEYS:
        value = entry.get(key)
        if isinstance(value, bool) or value in (None, ""):
            continue
        if isinstance(value, (int, float)) or _text(value).replace(".", "", 1).isdigit():
            stamp = float(value)
            stamp = stamp / 1000 if stamp > 1e11 else stamp  # milliseconds
            try:
                return datetime.fromtimestamp(stamp, tz=UTC)
            except (OverflowError, OSError, ValueError):
                return None
        parsed = parse_datetime(_text(value).replace("Z", "+00:00"))
        if parsed is not None:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _entry_prompt(entry: dict) -> str:
    for holder in (entry, entry.get("request"), entry.get("input"), entry.get("data")):
        if isinstance(holder, dict) and _text(holder.get("prompt")):
            return _text(holder.get("prompt"))
    return ""


def matching_jobs(entries: list[dict], submission: Submission, since: datetime) -> list[FoundJob]:
    found = []
    for entry in entries:
        job_id = next((_text(entry.get(k)) for k in _ID_KEYS if _text(entry.get(k))), "")
        created = _entry_time(entry)
        model = _text(entry.get("model"))
        if not job_id or created is None or created < since:
            continue
        if _entry_prompt(entry) != submission.prompt.strip()[:2000]:
            continue
        if model and model != submission.model.key:
            continue
        if _text(entry.get("status")).lower() == "failed":
            continue  # a failed job delivers nothing: sending again is the right thing
        found.append(FoundJob(job_id, created))
    return sorted(found, key=lambda job: job.created_at)
