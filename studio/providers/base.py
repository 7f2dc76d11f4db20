"""The small vocabulary every provider speaks, so jobs and forms never see a vendor's API.

A provider module only builds requests and maps answers onto these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import NamedTuple

from .redact import redact, redact_field_errors


class SecondPrice(NamedTuple):
    """A price per second that applies to some options only: a resolution ("" for any),
    with or without audio (None for either), and how the clip starts ("text", "image", or
    "" for either; a model's list prices text-to-video and image-to-video apart)."""

    resolution: str
    audio: bool | None
    start: str
    price: Decimal


# How a clip starts (Clip.start_mode, the form's modes) → the start a price is keyed by.
# Reference images are neither a plain text-to-video nor an image-to-video start: when a
# model prices the two apart, the higher price is assumed.
PRICE_START = {"text": "text", "first_frame": "image", "reference_images": "", "extend_video": ""}


@dataclass(frozen=True)
class Estimate:
    """What a clip is expected to cost, and how that figure is made (for the form)."""

    amount: Decimal
    unit: str
    seconds: int
    rate: Decimal
    fees: tuple[tuple[int, str, Decimal], ...] = ()  # (count, "reference image", fee each)
    minimum: Decimal | None = None  # the floor, when it is what applies

    @property
    def breakdown(self) -> str:
        """ "4 s × 0.2 USD/s", "+ 2 reference images × 0.05 USD", or the minimum that applies."""
        unit = self.unit
        parts = [f"{self.seconds} s × {_plain(self.rate)} {unit}/s"]
        for count, what, fee in self.fees:
            parts.append(f"{count} {what}{'s' if count != 1 else ''} × {_plain(fee)} {unit}")
        text = " + ".join(parts)
        if self.minimum is not None:
            return f"the minimum per clip; {text} comes to less"
        return text


def _plain(amount: Decimal) -> str:
    return f"{amount.normalize():f}"


@dataclass(frozen=True)
class ModelSpec:
    """What one model can do. The form shows exactly these options and validates
    against them; nothing else about a model is known anywhere else."""

    provider: str
    key: str
    label: str
    aspect_ratios: tuple[str, ...] = ()
    durations: tuple[int, ...] = ()  # seconds, in display order; first = default
    resolutions: tuple[str, ...] = ()
    generate_audio: bool = False
    seed: bool = False
    first_frame: bool = False
    last_frame: bool = False
    max_reference_images: int = 0
    extend_video: bool = False
    # Price per second of video, in `cost_unit`. None: no estimate can be made.
    cost_per_second: Decimal | None = None
    cost_unit: str = ""  # "credits", "USD", or "" for free
    description: str = ""
    # Prices per second that depend on the options (SecondPrice). When one applies it wins
    # over cost_per_second.
    second_prices: tuple[SecondPrice, ...] = ()
    # Fees on top of the seconds: per reference image, per input image (frames and
    # references alike), and the least one clip costs. In `cost_unit`; None: no such fee.
    reference_fee: Decimal | None = None
    image_fee: Decimal | None = None
    minimum_charge: Decimal | None = None
    # What the form says of a free model, e.g. where it renders ("" : just "Free.").
    free_note: str = ""
    # A last frame may be sent without a first frame (known for this model); otherwise a
    # last frame goes only together with a first frame.
    last_frame_alone: bool = False
    # The model works on a video it is given (an upscaler, an editor): it cannot make a
    # clip from text or pictures, and the studio does not offer it yet.
    needs_video_input: bool = False

    @property
    def ref(self) -> str:
        """The value that names this model in forms and on clips: "provider:key"."""
        return f"{self.provider}:{self.key}"

    @property
    def is_free(self) -> bool:
        return self.cost_per_second == 0

    @property
    def price_summary(self) -> str:
        """The price in words ("20 credits per second", "0.1 to 0.4 USD per second, plus
        0.05 USD per reference image"), or "" when it is not known in advance."""
        prices = [p.price for p in self.second_prices]
        if not prices and self.cost_per_second:
            prices = [self.cost_per_second]
        if not prices:
            return ""
        low, high = (_plain(p) for p in (min(prices), max(prices)))
        amount = low if low == high else f"{low} to {high}"
        text = f"{amount} {self.cost_unit} per second".replace("  ", " ")
        extras = [
            f"{_plain(fee)} {self.cost_unit} per {what}"
            for fee, what in ((self.reference_fee, "reference image"), (self.image_fee, "input image"))
            if fee
        ]
        if extras:
            text += ", plus " + " and ".join(extras)
        if self.minimum_charge:
            text += f"; at least {_plain(self.minimum_charge)} {self.cost_unit} per clip"
        return text

    def rate_for(
        self, resolution: str = "", generate_audio: bool | None = None, start_mode: str = ""
    ) -> Decimal | None:
        """The price per second of these options. When several prices could apply (the
        options do not decide between them) the highest is taken: an estimate should not
        promise less than the bill. A price for the exact resolution wins over one for any."""
        start = PRICE_START.get(start_mode, "")
        fitting = [
            p
            for p in self.second_prices
            if (not p.resolution or not resolution or p.resolution == resolution)
            and (p.audio is None or generate_audio is None or p.audio == bool(generate_audio))
            and (not p.start or not start or p.start == start)
        ]
        exact = [p.price for p in fitting if p.resolution and p.resolution == resolution]
        candidates = exact or [p.price for p in fitting]
        if candidates:
            return max(candidates)
        if self.second_prices:
            return None  # priced by options, and none of the prices fits these
        return self.cost_per_second

    def estimate(
        self,
        seconds: int | None,
        resolution: str = "",
        generate_audio: bool | None = None,
        start_mode: str = "",
        frames: int = 0,
        references: int = 0,
    ) -> Estimate | None:
        """The expected cost of one clip with these options: seconds × the fitting rate, the
        fees per image, and the minimum charge when the rest comes to less. None when the
        price is not known in advance (priced by tokens, or no price fits)."""
        rate = self.rate_for(resolution, generate_audio, start_mode)
        if rate is None or not seconds:
            return None
        fees = []
        if self.reference_fee and references:
            fees.append((references, "reference image", self.reference_fee))
        if self.image_fee and (frames + references):
            fees.append((frames + references, "input image", self.image_fee))
        amount = rate * seconds + sum((count * fee for count, _, fee in fees), Decimal(0))
        minimum = None
        if self.minimum_charge is not None and amount < self.minimum_charge:
            amount = minimum = self.minimum_charge
        amount = amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
        return Estimate(amount, self.cost_unit, int(seconds), rate, tuple(fees), minimum)

    def estimate_cost(
        self, seconds: int | None, resolution: str = "", generate_audio: bool | None = None, **options
    ) -> Decimal | None:
        found = self.estimate(seconds, resolution, generate_audio, **options)
        return None if found is None else found.amount


@dataclass
class ImageInput:
    """An image of ours to send: a stored file (`storage` and `storage_name`; the studio's
    media may live in a bucket, so no local path is assumed) or a plain local file (`path`),
    and, when the studio publishes files, the public address a provider can fetch it from."""

    path: Path | None = None
    public_url: str = ""
    # A provider's own (still fresh) URL for the same picture, preferred when present.
    remote_url: str = ""
    storage: object = None
    storage_name: str = ""

    @property
    def name(self) -> str:
        """The file's name, for its content type and messages."""
        return Path(self.storage_name or self.path or "").name

    def read_bytes(self) -> bytes:
        """The file's bytes, read through its storage (OSError when they cannot be read)."""
        if self.storage is not None:
            with self.storage.open(self.storage_name, "rb") as fh:
                return fh.read()
        return Path(self.path).read_bytes()


@dataclass
class Submission:
    model: ModelSpec
    prompt: str
    aspect_ratio: str = ""
    duration: int | None = None
    resolution: str = ""
    generate_audio: bool | None = None
    seed: int | None = None
    first_frame: ImageInput | None = None
    last_frame: ImageInput | None = None
    reference_images: list[ImageInput] = field(default_factory=list)
    extend_video: ImageInput | None = None
    webhook_url: str = ""


@dataclass
class RemoteStatus:
    """A provider's answer to "how is this job?", in our words.

    state is "running", "succeeded" or "failed"."""

    state: str
    video_url: str = ""
    thumbnail_url: str = ""
    last_frame_url: str = ""
    error: str = ""
    cost: Decimal | None = None
    cost_unit: str = ""
    raw: dict = field(default_factory=dict)
    # Where else the video can be fetched when `video_url` no longer answers (a signed URL
    # that expired): e.g. the provider's own content endpoint, with the key.
    fallback_video_url: str = ""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    def __post_init__(self):
        # A provider's own words are shown and stored: never with a secret it echoed.
        self.error = redact(self.error)


class ProviderError(Exception):
    """A call to a provider did not work.

    permanent: the request itself is wrong (bad input, refused key): show the message, do
    not retry. Otherwise it is transient (rate limit, server error, network): try later,
    after retry_after seconds when the provider said so.
    outcome_unknown: the request may have reached the provider (a timeout after sending, a
    dropped connection, a 5xx to a create): resubmitting could create a second paid job.
    resend_documented: the provider's documentation asks for the request to be sent again
    after this answer (Pictory's 500), even though its outcome is not proven.
    kind: what the answer says about our access, for work already running at the provider:
    "auth" (the key was refused), "edge" (a firewall in front of the API refused us), or
    "expired" (a result file's link no longer works); "" otherwise.

    The message and field errors are redacted on the way in: a provider that echoes a key
    in its error body never gets it shown, logged or stored."""

    AUTH = "auth"
    EDGE = "edge"
    EXPIRED = "expired"

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        field_errors: dict[str, list[str]] | None = None,
        retry_after: float | None = None,
        outcome_unknown: bool = False,
        status_code: int | None = None,
        resend_documented: bool = False,
        kind: str = "",
    ):
        message = redact(message)
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.field_errors = redact_field_errors(field_errors)
        self.retry_after = retry_after
        self.outcome_unknown = outcome_unknown
        self.status_code = status_code
        self.resend_documented = resend_documented
        self.kind = kind


@dataclass(frozen=True)
class FoundJob:
    """A job found in a provider's list of recent jobs (a create whose answer was lost)."""

    remote_id: str
    created_at: datetime | None = None


@dataclass
class KeyCheck:
    """What "Test" on the Providers page found out about a pasted key: `accepted` True
    (the provider took it), False (it refused it) or None (it could not be asked), and
    what to tell the admin, in plain words (the remaining credit, when the provider says)."""

    accepted: bool | None
    message: str


class WebhookRefused(Exception):
    """A webhook call the provider's own check refused (bad or stale signature): answered
    with `status` and a short reason, and nothing changes."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Provider:
    """Base of every provider: one module each, listed in providers.REGISTRY.

    A subclass sets `name` and `label`, says when it is enabled and how to set it up, lists
    its models (or fetches them, for providers that publish a list), and implements submit,
    poll and download. Everything else (claims, polling rhythm, deadlines, storage, the
    model-list cache) is shared code outside the provider."""

    name = ""
    label = ""
    # The provider's short name inside a sentence ("sent to Pictory", "Waiting for a working
    # Pictory key"); "" : the label.
    vendor = ""
    # Seconds between two polls of one job.
    poll_interval = 15.0
    # True when the service fetches our images and videos by URL, so they must be published
    # at PUBLIC_BASE_URL first (the simulator reads them from disk).
    needs_public_urls = False
    # True when the model list is read from the service (cached by studio.catalogue and
    # refreshed on a schedule and by "Refresh models"); False: `models()` is the list.
    publishes_models = False
    # How old a published list may get before the schedule reads it again.
    refresh_minutes = 60.0
    # The settings that hold this provider's secrets, so pages, logs and tests can keep
    # their values out of sight.
    secret_settings: tuple[str, ...] = ()
    # The setting of its API key, for a provider that needs one: an admin can also paste
    # the key on the Providers page (studio.keys). "": no key needed.
    key_setting = ""
    # Whether a job the provider has accepted can be stopped (`cancel`). Only where its API
    # documents a cancel; otherwise the studio says the job will finish and be billed.
    can_cancel = False
    # About how long a job takes once accepted, in seconds: what a generating card says
    # until the studio has finished clips of the model to go by. Hosted video models take
    # one to three minutes.
    typical_seconds: float = 120.0
    # True when the service lists recent jobs, so a create whose answer was lost can be
    # looked for (find_jobs) before anything is sent again.
    can_find_jobs = False

    @property
    def deadline_minutes(self) -> float:
        """How long after accepting a job the provider may take before the studio stops
        waiting for it (CLIP_DEADLINE_MINUTES unless the provider has its own setting)."""
        from django.conf import settings

        return float(settings.CLIP_DEADLINE_MINUTES)

    def is_enabled(self) -> bool:
        """Whether the studio offers this provider now (from its own settings)."""
        return True

    def waiting_label(self) -> str:
        """What a clip made by this provider shows while the provider cannot be reached
        from the studio (switched off, or its key refused) and the clip waits for it."""
        return f"Waiting for {self.label} to be switched on"

    def setup_help(self) -> str:
        """What the Providers page says about connecting this provider (plain words)."""
        return ""

    def models(self) -> list[ModelSpec]:
        """The fixed model list of a provider that does not publish one."""
        return []

    def fetch_model_entries(self, timeout: float | None = None) -> list[dict]:
        """Read the raw model list from the service (providers that publish one)."""
        raise NotImplementedError

    def specs_from(self, entries: list[dict]) -> list[ModelSpec]:
        """The raw entries of `fetch_model_entries` as ModelSpecs."""
        raise NotImplementedError

    def submit(self, submission: Submission) -> str:
        """Start a job; return the provider's job id."""
        raise NotImplementedError

    def poll(self, remote_id: str) -> RemoteStatus:
        raise NotImplementedError

    def find_jobs(self, submission: Submission, since: datetime) -> list[FoundJob]:
        """Jobs made since `since` that a create with this submission may have made, found
        in the provider's list of recent jobs (only when `can_find_jobs`), oldest first.
        Raises ProviderError when the list cannot be read."""
        return []

    def download(self, url: str, destination: Path) -> None:
        """Copy a result file (video, image) to `destination`."""
        raise NotImplementedError

    def cancel(self, remote_id: str) -> None:
        """Stop an accepted job (only when `can_cancel`); ProviderError when it cannot."""
        raise NotImplementedError

    def forget(self, remote_id: str) -> None:
        """A deleted clip's job: drop what this provider keeps of it where the studio can
        (the simulator's own copies on this machine). Hosted services offer no deletion of
        a finished job; the default does nothing."""

    def test_key(self, key: str) -> KeyCheck:
        """Make one cheap authenticated call with `key` that spends nothing, and say what
        came of it (providers with a `key_setting`)."""
        raise NotImplementedError

    def check_webhook(self, request) -> str:
        """Authenticate a webhook call beyond the unguessable token in its URL. Return the
        provider's delivery key ("" when it names none) so repeats change nothing; raise
        WebhookRefused to refuse it. The body is never trusted: the next poll fetches the
        truth. The default (a provider that signs nothing) takes the token alone."""
        return ""
