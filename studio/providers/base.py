"""The small vocabulary every provider speaks, so jobs and forms never see a vendor's API.

A provider module only builds requests and maps answers onto these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path


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
    # Prices per second that depend on the options: (resolution or "", audio True/False or
    # None for either, price). When one applies it wins over cost_per_second.
    second_prices: tuple[tuple[str, bool | None, Decimal], ...] = ()
    # What the form says of a free model, e.g. where it renders ("" : just "Free.").
    free_note: str = ""

    @property
    def ref(self) -> str:
        """The value that names this model in forms and on clips: "provider:key"."""
        return f"{self.provider}:{self.key}"

    @property
    def is_free(self) -> bool:
        return self.cost_per_second == 0

    @property
    def price_summary(self) -> str:
        """The price per second in words ("20 credits per second", "0.1 to 0.4 USD per
        second"), or "" when it is not known in advance."""
        prices = [price for _, _, price in self.second_prices]
        if not prices and self.cost_per_second:
            prices = [self.cost_per_second]
        if not prices:
            return ""
        low, high = (f"{p.normalize():f}" for p in (min(prices), max(prices)))
        amount = low if low == high else f"{low} to {high}"
        return f"{amount} {self.cost_unit} per second".replace("  ", " ")

    def rate_for(self, resolution: str = "", generate_audio: bool | None = None) -> Decimal | None:
        """The price per second of these options. When several prices could apply (the
        options do not decide between them) the highest is taken: an estimate should not
        promise less than the bill."""
        fitting = [
            (res, price)
            for res, audio, price in self.second_prices
            if (not res or not resolution or res == resolution)
            and (audio is None or generate_audio is None or audio == bool(generate_audio))
        ]
        exact = [price for res, price in fitting if res and res == resolution]
        candidates = exact or [price for _, price in fitting]
        if candidates:
            return max(candidates)
        return self.cost_per_second

    def estimate_cost(
        self, seconds: int | None, resolution: str = "", generate_audio: bool | None = None
    ) -> Decimal | None:
        rate = self.rate_for(resolution, generate_audio)
        if rate is None or not seconds:
            return None
        return (rate * seconds).quantize(Decimal("0.01"))


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

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ProviderError(Exception):
    """A call to a provider did not work.

    permanent: the request itself is wrong (bad input, refused key): show the message, do
    not retry. Otherwise it is transient (rate limit, server error, network): try later,
    after retry_after seconds when the provider said so.
    outcome_unknown: the request may have reached the provider (e.g. a timeout after
    sending): resubmitting could create a second job."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        field_errors: dict[str, list[str]] | None = None,
        retry_after: float | None = None,
        outcome_unknown: bool = False,
        status_code: int | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.field_errors = field_errors or {}
        self.retry_after = retry_after
        self.outcome_unknown = outcome_unknown
        self.status_code = status_code


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
    # The provider's short name inside a sentence ("sent to Pictory"); "" : the label.
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

    def is_enabled(self) -> bool:
        """Whether the studio offers this provider now (from its own settings)."""
        return True

    def setup_help(self) -> str:
        """What the Providers page says about connecting this provider (plain words)."""
        return ""

    def status_note(self) -> str:
        """A line for the Providers page about something an admin should know, or ""."""
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

    def download(self, url: str, destination: Path) -> None:
        """Copy a result file (video, image) to `destination`."""
        raise NotImplementedError

    def cancel(self, remote_id: str) -> None:
        """Stop an accepted job (only when `can_cancel`); ProviderError when it cannot."""
        raise NotImplementedError

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
