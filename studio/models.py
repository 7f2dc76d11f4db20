"""What the studio keeps: clips, the files they use, chain exports, and a few bookkeeping rows.

Models hold fields, reading properties and state transitions. Every transition that two
processes could race on is one conditional UPDATE (`claim`): only the process whose UPDATE
matched a row goes on. That keeps a clip from being submitted twice, polled twice in one
interval, or finished twice. The work that calls providers or decodes video is in jobs.py.
"""

from __future__ import annotations

import secrets
import statistics
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from .providers.base import ImageInput

# How long a provider's own result URLs (e.g. a last-frame image) are trusted after we
# received them. Undocumented; after this the studio's own published copy is sent instead.
REMOTE_URL_FRESH_FOR = timedelta(minutes=30)

# The fields of a request as a creator knows them (Submission names), for messages that
# name a field.
FIELD_LABELS = {
    "prompt": "Prompt",
    "model": "Model",
    "aspect_ratio": "Aspect ratio",
    "duration": "Duration",
    "resolution": "Resolution",
    "first_frame": "First frame",
    "last_frame": "Last frame",
    "generate_audio": "Generate audio",
    "seed": "Seed",
    "reference_images": "Reference images",
    "extend_video": "Video to extend",
}


def _token() -> str:
    return secrets.token_urlsafe(24)


def _storage_folder() -> str:
    return uuid.uuid4().hex


def asset_upload_to(asset: Asset, filename: str) -> str:
    return f"assets/{asset.storage_key}/{Path(filename).name}"


def clip_upload_to(clip: Clip, filename: str) -> str:
    return f"clips/{clip.storage_key}/{Path(filename).name}"


def export_upload_to(export: ChainExport, filename: str) -> str:
    return f"exports/{export.storage_key}/{Path(filename).name}"


class Claimable(models.Model):
    """The one claim helper: a state change applied only if the row still matches."""

    class Meta:
        abstract = True

    def claim(self, expected: dict, **changes) -> bool:
        """Apply `changes` only if the row still matches `expected` (one conditional
        UPDATE); refresh this instance when it did. True if this process won."""
        if any(f.name == "updated_at" for f in self._meta.concrete_fields):
            changes.setdefault("updated_at", timezone.now())
        updated = type(self).objects.filter(pk=self.pk, **expected).update(**changes)
        if updated:
            self.refresh_from_db()
        return bool(updated)


class Asset(Claimable):
    """An image or video the studio holds for a creator: an upload, a link's copy, or a
    clip's last frame. Stored under an unguessable folder; `public_token` names it when
    published for a provider to fetch."""

    class Kind(models.TextChoices):
        IMAGE = "image", "Image"
        VIDEO = "video", "Video"

    class Source(models.TextChoices):
        UPLOAD = "upload", "Upload"
        LAST_FRAME = "last_frame", "Last frame of a clip"
        # The video of one of the creator's clips, published to be extended (same file).
        CLIP_VIDEO = "clip_video", "Video of a clip"

    class Status(models.TextChoices):
        # A brought video is checked (and re-encoded when needed) by the worker first.
        PREPARING = "preparing", "Preparing"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assets")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.IMAGE)
    source = models.CharField(max_length=20, choices=Source.choices, default=Source.UPLOAD)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.READY)
    error = models.TextField(blank=True)
    storage_key = models.CharField(max_length=32, default=_storage_folder, editable=False)
    file = models.FileField(upload_to=asset_upload_to, max_length=300)
    original_name = models.CharField(max_length=255, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    # Seconds, for videos.
    duration = models.FloatField(null=True, blank=True)
    public_token = models.CharField(max_length=64, unique=True, default=_token, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return self.original_name or Path(self.file.name).name

    def get_absolute_url(self):
        return reverse("asset_file", args=[self.pk])

    @property
    def is_ready(self) -> bool:
        return self.status == self.Status.READY

    @property
    def aspect(self) -> float | None:
        return self.width / self.height if self.width and self.height else None

    def image_input(self) -> ImageInput:
        """This file as a provider input (an image, or a video to extend), read through the
        storage (which may be a bucket: no local path is assumed)."""
        return ImageInput(
            storage=self.file.storage, storage_name=self.file.name, public_url=self.public_url()
        )

    def public_url(self) -> str:
        if not settings.PUBLIC_BASE_URL:
            return ""
        name = Path(self.file.name).name
        return settings.PUBLIC_BASE_URL + reverse("published_file", args=[self.public_token, name])


class ClipQuerySet(models.QuerySet):
    def unfinished(self):
        return self.exclude(status__in=Clip.FINAL_STATES)

    def visible_to(self, user):
        return self.filter(owner=user)

    def recent_generation_seconds(self, provider: str, model_key: str, limit: int = 10) -> list[float]:
        """How long the studio's last `limit` finished clips of this model took, from the
        provider accepting each to its video being in our storage (any creator's: only
        durations are read). A retried clip counts from its last submission."""
        rows = (
            self.filter(provider=provider, model_key=model_key, status=Clip.Status.READY)
            .exclude(submitted_at=None)
            .exclude(finished_at=None)
            .order_by("-finished_at")
            .values_list("submitted_at", "finished_at")[:limit]
        )
        return [max(0.0, (finished - submitted).total_seconds()) for submitted, finished in rows]

    def typical_generation_seconds(self, provider: str, model_key: str) -> tuple[float, int] | None:
        """The median of those durations and how many clips it rests on; None when no clip
        of this model has finished here yet. A median, so one clip stuck behind a provider
        outage does not move the estimate of every other."""
        seconds = self.recent_generation_seconds(provider, model_key)
        if not seconds:
            return None
        return statistics.median(seconds), len(seconds)


class Clip(Claimable):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        SUBMITTING = "submitting", "Queued"
        RUNNING = "running", "Generating"
        FINISHING = "finishing", "Generating"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"
        # Stopped by the creator: before it was sent (nothing spent), or at a provider that
        # can stop a job.
        CANCELLED = "cancelled", "Cancelled"

    FINAL_STATES = (Status.READY, Status.FAILED, Status.CANCELLED)

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="clips")
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    # Among this clip's children (alternative takes of the next step), the one its chain
    # continues with; None: the newest ready take (Clip.next_take).
    chosen_take = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # What was asked for.
    provider = models.CharField(max_length=40)
    model_key = models.CharField(max_length=200)
    model_label = models.CharField(max_length=300)
    prompt = models.TextField()
    aspect_ratio = models.CharField(max_length=10, blank=True)
    duration = models.PositiveIntegerField(null=True, blank=True)
    resolution = models.CharField(max_length=10, blank=True)
    first_frame = models.ForeignKey(
        Asset, null=True, blank=True, on_delete=models.SET_NULL, related_name="first_frame_of"
    )
    # The other two ways to start a clip (a provider takes one of the three at most).
    reference_images = models.ManyToManyField(Asset, blank=True, related_name="reference_image_of")
    extend_video = models.ForeignKey(
        Asset, null=True, blank=True, on_delete=models.SET_NULL, related_name="extend_video_of"
    )
    # The picture the clip should end on, sent with (or without) a first frame. Not
    # `last_frame`, which is the clip's own last frame once it is made.
    end_frame = models.ForeignKey(
        Asset, null=True, blank=True, on_delete=models.SET_NULL, related_name="end_frame_of"
    )
    # Only for models that offer them; None: not asked, nothing sent.
    generate_audio = models.BooleanField(null=True, blank=True)
    seed = models.BigIntegerField(null=True, blank=True)
    cost_estimate = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    cost_unit = models.CharField(max_length=20, blank=True)

    # Where the job stands.
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED, db_index=True)
    error = models.TextField(blank=True)
    # A provider's objections per request field ({"prompt": ["..."]}, Submission names), to
    # show beside the form's fields when the creator tries again.
    field_errors = models.JSONField(default=dict, blank=True)
    remote_id = models.CharField(max_length=200, blank=True)
    remote_result = models.JSONField(default=dict, blank=True)
    # For queued clips: when a (re)submission may be tried; for running clips: next poll.
    next_poll_at = models.DateTimeField(null=True, blank=True, db_index=True)
    poll_failures = models.PositiveIntegerField(default=0)
    submit_attempts = models.PositiveIntegerField(default=0)
    submitting_since = models.DateTimeField(null=True, blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)
    finish_attempts = models.PositiveIntegerField(default=0)
    finish_claimed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Indexed: a provider's webhook call finds its clip by this token alone.
    webhook_token = models.CharField(max_length=64, default=_token, editable=False, db_index=True)

    # What came back, copied into our storage.
    storage_key = models.CharField(max_length=32, default=_storage_folder, editable=False)
    video = models.FileField(upload_to=clip_upload_to, blank=True, max_length=300)
    thumbnail = models.FileField(upload_to=clip_upload_to, blank=True, max_length=300)
    last_frame = models.ForeignKey(
        Asset, null=True, blank=True, on_delete=models.SET_NULL, related_name="last_frame_of"
    )
    video_width = models.PositiveIntegerField(null=True, blank=True)
    video_height = models.PositiveIntegerField(null=True, blank=True)
    video_duration = models.FloatField(null=True, blank=True)
    cost_actual = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ClipQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["owner", "-created_at"]),
            # The time estimate of a generating card reads the last finished clips of its
            # model: a short range of this index, however many clips the studio holds.
            models.Index(
                fields=["provider", "model_key", "-finished_at"],
                condition=Q(status="ready"),
                name="clip_ready_by_model",
            ),
        ]

    def __str__(self):
        return f"Clip {self.pk}: {self.prompt[:40]}"

    def get_absolute_url(self):
        return reverse("clip_detail", args=[self.pk])

    # --- Reading ------------------------------------------------------------------------

    @property
    def status_label(self) -> str:
        return self.get_status_display()

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINAL_STATES

    @property
    def is_ready(self) -> bool:
        return self.status == self.Status.READY

    @property
    def ended_without_video(self) -> bool:
        """Failed or cancelled: finished, and nothing to play, join or continue."""
        return self.status in (self.Status.FAILED, self.Status.CANCELLED)

    @property
    def model_ref(self) -> str:
        return f"{self.provider}:{self.model_key}"

    @property
    def css_ratio(self) -> str:
        """The clip's shape for CSS aspect-ratio, so a card keeps its size while loading."""
        if self.video_width and self.video_height:
            return f"{self.video_width} / {self.video_height}"
        w, _, h = (self.aspect_ratio or "16:9").partition(":")
        return f"{w} / {h}" if w.isdigit() and h.isdigit() else "16 / 9"

    @property
    def cost_text(self) -> str:
        if self.cost_actual is not None:
            amount, prefix = self.cost_actual, ""
        elif self.cost_estimate is not None:
            amount, prefix = self.cost_estimate, "≈ "
        else:
            return ""
        if amount == 0 and not self.cost_unit:
            return "Free"
        return f"{prefix}{amount.normalize():f} {self.cost_unit}".strip()

    @property
    def start_mode(self) -> str:
        """How the clip starts: "text", "first_frame", "reference_images" or "extend_video"."""
        if self.first_frame_id or self.end_frame_id:
            return "first_frame"
        if self.extend_video_id:
            return "extend_video"
        if self.pk and self.reference_images.exists():
            return "reference_images"
        return "text"

    def fresh_remote_last_frame_url(self) -> str:
        """The provider's own URL of this clip's last frame while it can still be trusted to
        work, else "". Sending it saves publishing our copy (and works without
        PUBLIC_BASE_URL)."""
        result = self.remote_result or {}
        url = result.get("last_frame_url") or ""
        received = parse_datetime(result.get("received_at") or "")
        if not url.startswith(("https://", "http://")) or received is None:
            return ""
        return url if timezone.now() - received < REMOTE_URL_FRESH_FOR else ""

    def error_with_fields(self, message: str, field_errors: dict | None) -> str:
        """A failure message with the provider's objections per field appended."""
        if not field_errors:
            return message
        details = "; ".join(
            f"{FIELD_LABELS[name]}: {' '.join(msgs)}" if name in FIELD_LABELS else " ".join(msgs)
            for name, msgs in field_errors.items()
        )
        return f"{message} ({details})"

    # --- Chains and takes ---------------------------------------------------------------
    # A chain is the path of parents. Several children of one clip are alternative takes of
    # the next step; the sequence a chain plays (and joins) runs from the root through the
    # chosen take of each step.

    def chain(self) -> list[Clip]:
        """The clips from the root of this clip's chain down to this one."""
        path = [self]
        seen = {self.pk}
        node = self
        while node.parent_id and node.parent_id not in seen:
            node = Clip.objects.select_related("last_frame").get(pk=node.parent_id)
            seen.add(node.pk)
            path.append(node)
        return list(reversed(path))

    def takes(self) -> list[Clip]:
        """The clips that continue this one, oldest first."""
        return list(self.children.select_related("last_frame").order_by("pk"))

    def next_take(self, takes: list[Clip] | None = None) -> Clip | None:
        """The take the sequence goes on with after this clip: the chosen one, else the
        newest ready take, else the newest still generating (a failed one never)."""
        takes = self.takes() if takes is None else takes
        for take in takes:
            if take.pk == self.chosen_take_id:
                return take
        ready = [t for t in takes if t.is_ready]
        if ready:
            return ready[-1]
        unfinished = [t for t in takes if not t.is_finished]
        return unfinished[-1] if unfinished else None

    def chain_steps(self) -> list[tuple[Clip, list[Clip]]]:
        """The sequence through this clip: from the root down to it, then on through the
        chosen takes below it. Each step comes with its takes (the clip and its siblings)."""
        path = self.chain()
        steps = [(path[0], [path[0]])]
        for parent, clip in zip(path, path[1:]):
            steps.append((clip, parent.takes()))
        seen = {c.pk for c in path}
        node = path[-1]
        while True:
            takes = node.takes()
            following = node.next_take(takes)
            if following is None or following.pk in seen:
                break
            steps.append((following, takes))
            seen.add(following.pk)
            node = following
        return steps

    def sequence(self) -> list[Clip]:
        return [clip for clip, _ in self.chain_steps()]

    def continues_seamlessly(self, previous: Clip) -> bool:
        """True when this clip starts on `previous`'s last frame, so its frame 0 repeats it."""
        return bool(
            self.parent_id == previous.pk
            and self.first_frame_id
            and self.first_frame_id == previous.last_frame_id
        )

    def use_as_take(self) -> None:
        """Make this clip the take its parent's sequence uses, and each ancestor's choice the
        path down to it, so the chain from its root runs through it."""
        node, seen = self, set()
        while node.parent_id and node.pk not in seen:
            seen.add(node.pk)
            Clip.objects.filter(pk=node.parent_id).update(chosen_take=node)
            node = Clip.objects.only("pk", "parent_id").get(pk=node.parent_id)
        if self.parent_id:
            self.parent = None  # drop a cached parent that still has the old choice

    def descendants(self) -> list[Clip]:
        """Every clip that continues this one, at any depth."""
        found, level, seen = [], [self.pk], {self.pk}
        while level:
            children = [c for c in Clip.objects.filter(parent_id__in=level) if c.pk not in seen]
            found += children
            seen.update(c.pk for c in children)
            level = [c.pk for c in children]
        return found

    # --- State transitions --------------------------------------------------------------

    def fail(
        self, message: str, field_errors: dict | None = None, expected_status: str | None = None
    ) -> bool:
        """Mark failed (only from `expected_status` when given, never from a final state)."""
        expected = {"status": expected_status} if expected_status else {}
        now = timezone.now()
        changed = (
            Clip.objects.filter(pk=self.pk, **expected)
            .exclude(status__in=self.FINAL_STATES)
            .update(
                status=self.Status.FAILED,
                error=self.error_with_fields(message, field_errors),
                finished_at=now,
                next_poll_at=None,
                updated_at=now,
                field_errors=field_errors or {},
            )
        )
        self.refresh_from_db()
        return bool(changed)

    def reset_for_retry(self, grace: timedelta, deadline: timedelta) -> bool:
        """Failed (or cancelled) → queued with the same settings, as the same clip (its card
        shows it queued again). Claimed, so a double click sends it once."""
        now = timezone.now()
        return self.claim(
            {"status__in": (self.Status.FAILED, self.Status.CANCELLED)},
            status=self.Status.QUEUED,
            error="",
            field_errors={},
            remote_id="",
            remote_result={},
            next_poll_at=now + grace,
            deadline_at=now + deadline,
            poll_failures=0,
            submit_attempts=0,
            submitting_since=None,
            submitted_at=None,
            finish_attempts=0,
            finish_claimed_at=None,
            finished_at=None,
            cost_actual=None,
        )

    def cancel(self, expected_status: str, message: str) -> bool:
        """`expected_status` → cancelled, only if the clip is still there: a clip the
        worker has just sent (or the provider has just finished) is not cancelled, so
        nothing is sent after a cancel and no paid result is dropped. A clip stopped
        before it was sent cost nothing, and says so."""
        changes = {
            "status": self.Status.CANCELLED,
            "error": message,
            "field_errors": {},
            "next_poll_at": None,
            "finished_at": timezone.now(),
        }
        if expected_status == self.Status.QUEUED:
            changes["cost_actual"] = Decimal(0)
        return self.claim({"status": expected_status}, **changes)

    def make_due(self) -> bool:
        """Poll this clip as soon as possible (a webhook said something happened). True when
        that moved the next poll earlier; a clip already due is left as it is."""
        now = timezone.now()
        return bool(
            Clip.objects.filter(pk=self.pk, status=self.Status.RUNNING, next_poll_at__gt=now).update(
                next_poll_at=now
            )
        )


class Lease(models.Model):
    """A named lease one process holds at a time (the poll sweep), taken by conditional
    UPDATE so it works the same on SQLite and PostgreSQL, across machines."""

    name = models.CharField(max_length=50, primary_key=True)
    holder = models.CharField(max_length=64, blank=True)
    expires_at = models.DateTimeField()

    def __str__(self):
        return f"Lease {self.name} ({self.holder or 'free'})"

    @classmethod
    def acquire(cls, name: str, holder: str, seconds: float) -> bool:
        now = timezone.now()
        until = now + timedelta(seconds=seconds)
        cls.objects.get_or_create(name=name, defaults={"expires_at": now - timedelta(seconds=1)})
        return bool(
            cls.objects.filter(Q(expires_at__lte=now) | Q(holder=holder), name=name).update(
                holder=holder, expires_at=until
            )
        )

    @classmethod
    def release(cls, name: str, holder: str) -> None:
        cls.objects.filter(name=name, holder=holder).update(holder="", expires_at=timezone.now())


class ProviderModelCache(models.Model):
    """A provider's model list as it last answered (the raw entries), so pages never wait
    on the network for it. `fetched_at` is the last good read; `checked_at` the last try."""

    provider = models.CharField(max_length=40, primary_key=True)
    data = models.JSONField(default=list, blank=True)
    fetched_at = models.DateTimeField(null=True, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    def __str__(self):
        return f"Models of {self.provider}"


class WebhookDelivery(models.Model):
    """Webhook deliveries already acted on, by the provider's idempotency key. The unique
    key makes "first time?" one INSERT that only one process can win; old rows are pruned."""

    KEEP_FOR = timedelta(days=2)

    key = models.CharField(max_length=255, unique=True)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self):
        return self.key

    @classmethod
    def first_time(cls, provider: str, key: str) -> bool:
        """Record this delivery; False when it was recorded before (a repeat)."""
        cls.objects.filter(received_at__lt=timezone.now() - cls.KEEP_FOR).delete()
        try:
            with transaction.atomic():
                cls.objects.create(key=f"{provider}:{key}"[:255])
        except IntegrityError:
            return False
        return True


class ChainExport(Claimable):
    """One MP4 of a chain's sequence, joined in the background (jobs.export_chain).

    Claimed like a clip (queued → running by conditional UPDATE), so running the task twice
    joins once; a join whose worker died is handed out again by the sweep."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Waiting to start"
        RUNNING = "running", "Joining"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chain_exports"
    )
    # The last clip of the sequence; the ids below are what was joined, in order.
    clip = models.ForeignKey(Clip, null=True, blank=True, on_delete=models.SET_NULL, related_name="exports")
    clip_ids = models.JSONField(default=list)
    sequence_key = models.CharField(max_length=2000, db_index=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED, db_index=True)
    progress = models.PositiveSmallIntegerField(default=0)  # percent
    error = models.TextField(blank=True)
    method = models.CharField(max_length=20, blank=True)  # "copy" or "reencode"
    method_reason = models.CharField(max_length=200, blank=True)
    storage_key = models.CharField(max_length=32, default=_storage_folder, editable=False)
    file = models.FileField(upload_to=export_upload_to, blank=True, max_length=300)
    duration = models.FloatField(null=True, blank=True)
    dropped_frames = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-pk"]

    def __str__(self):
        return f"Chain export {self.pk} ({len(self.clip_ids)} clips)"

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.READY, self.Status.FAILED)

    @property
    def download_name(self) -> str:
        return f"lastframe-chain-{'-'.join(map(str, self.clip_ids[:1] + self.clip_ids[-1:]))}.mp4"

    @staticmethod
    def key_for(clips) -> str:
        return ",".join(str(c.pk) for c in clips)

    @classmethod
    def latest_for(cls, owner, clips) -> ChainExport | None:
        return cls.objects.filter(owner=owner, sequence_key=cls.key_for(clips)).first()

    def file_exists(self) -> bool:
        return bool(self.file) and self.file.storage.exists(self.file.name)


class ProviderKey(models.Model):
    """A provider's API key pasted on the Providers page, encrypted with Fernet
    (studio.keys); the plain key is never stored. An environment variable, when set, wins."""

    provider = models.CharField(max_length=40, primary_key=True)
    encrypted = models.TextField()
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    def __str__(self):
        return f"Key of {self.provider}"
