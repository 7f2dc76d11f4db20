"""What the studio keeps: clips, the files they use, chain exports, and a few bookkeeping rows.

Models hold fields, reading properties and state transitions. Every transition that two
processes could race on is one conditional UPDATE (`claim`): only the process whose UPDATE
matched a row goes on. That keeps a clip from being submitted twice, polled twice in one
interval, or finished twice. The work that calls providers or decodes video is in jobs.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
import statistics
import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, connection, models, transaction
from django.db.models import Q
from django.db.models.expressions import RawSQL
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from . import media

# How long a provider's own result URLs (e.g. a last-frame image) are trusted after we
# received them. Undocumented; after this the studio's own published copy is sent instead.
REMOTE_URL_FRESH_FOR = timedelta(minutes=30)
# A clip that timed out (or whose copy kept failing, or that may have started) is looked
# for again this often while CLIP_LATE_DELIVERY_HOURS last, and whenever a webhook calls.
LATE_LOOK_EVERY = timedelta(minutes=5)

# How long the chain view keeps asking for seam figures the worker was asked to measure
# (a worker that is down must not keep every open page polling for ever).
MEDIA_POLL_FOR = timedelta(minutes=10)

# The frame rate assumed for a clip whose frame count is unknown (made before it was kept).
DEFAULT_FPS = 24.0

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

    def claim(self, expected: dict | Q, **changes) -> bool:
        """Apply `changes` only if the row still matches `expected` (field lookups, or a Q
        for a condition they cannot say), in one conditional UPDATE; refresh this instance
        when it did. True if this process won."""
        if any(f.name == "updated_at" for f in self._meta.concrete_fields):
            changes.setdefault("updated_at", timezone.now())
        condition = expected if isinstance(expected, Q) else Q(**expected)
        updated = type(self).objects.filter(condition, pk=self.pk).update(**changes)
        if updated:
            self.refresh_from_db()
        return bool(updated)


def _stored_size(field) -> int:
    """Bytes a file field holds in the storage (0: none, or gone). On this machine a stat;
    in a bucket one HEAD request, made only when the row is saved."""
    if not field:
        return 0
    path = media.local_path(field.storage, field.name)
    try:
        return path.stat().st_size if path is not None else field.storage.size(field.name)
    except Exception:  # gone, or a bucket that does not answer: counted as nothing
        return 0


class StoredFiles(models.Model):
    """A row whose files count towards its owner's storage (storage_used, the quota). The
    size is taken whenever the row is saved, which every change of its files goes through,
    so the account page and the quota read one sum instead of a file system walk."""

    FILE_FIELDS: tuple[str, ...] = ()

    stored_bytes = models.PositiveBigIntegerField(default=0, editable=False)

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        self.stored_bytes = sum(_stored_size(f) for f in self.counted_files())
        if kwargs.get("update_fields") is not None:
            kwargs["update_fields"] = {*kwargs["update_fields"], "stored_bytes"}
        super().save(*args, **kwargs)

    def counted_files(self):
        return [getattr(self, name) for name in self.FILE_FIELDS]


def storage_by_kind(owner) -> dict[str, int]:
    """Bytes the owner keeps in clips (video, thumbnail), uploads and frames, joined films."""
    kinds = {"clips": Clip, "assets": Asset, "exports": ChainExport}
    return {
        kind: model.objects.filter(owner=owner).aggregate(n=models.Sum("stored_bytes"))["n"] or 0
        for kind, model in kinds.items()
    }


def storage_used(owner) -> int:
    return sum(storage_by_kind(owner).values())


def megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):,.1f} MB"


def quota_problem(owner, adding: int = 0) -> str:
    """Why the owner may not keep `adding` more bytes (STUDIO_USER_QUOTA_MB), or ""."""
    quota = settings.STUDIO_USER_QUOTA_BYTES
    if not quota:
        return ""
    used = storage_used(owner)
    if used + adding <= quota and used < quota:
        return ""
    return (
        f"Your storage is full: {megabytes(used)} of {megabytes(quota)} used. Delete clips or uploads "
        "you no longer need (your Account page shows what is kept), then try again."
    )


class Asset(Claimable, StoredFiles):
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
        # A frame of one of the creator's clips picked as the hand-off (Clip.handoff_frame),
        # extracted by the worker: the next clip's first frame.
        HANDOFF_FRAME = "handoff_frame", "Hand-off frame of a clip"

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
    # A brought video's first frame as a small JPEG, made by the worker when it checks the
    # video (jobs.prepare_video): the held-file card shows it, and no web request decodes.
    poster = models.FileField(upload_to=asset_upload_to, max_length=300, blank=True)
    original_name = models.CharField(max_length=255, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    # Seconds, for videos.
    duration = models.FloatField(null=True, blank=True)
    public_token = models.CharField(max_length=64, unique=True, default=_token, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    FILE_FIELDS = ("file", "poster")

    def __str__(self):
        return self.original_name or Path(self.file.name).name

    def get_absolute_url(self):
        return reverse("asset_file", args=[self.pk])

    def counted_files(self):
        # A clip's video published to be extended is that clip's file: counted there.
        return [] if self.source == self.Source.CLIP_VIDEO else [self.file, self.poster]

    def own_file_names(self) -> list[str]:
        """The stored files that go with this asset when it is deleted."""
        return [f.name for f in self.counted_files() if f]

    @classmethod
    def unused(cls):
        """Assets no clip uses in any way (first, last or end frame, reference, video to
        extend)."""
        return cls.objects.filter(
            first_frame_of__isnull=True,
            end_frame_of__isnull=True,
            last_frame_of__isnull=True,
            extend_video_of__isnull=True,
            reference_image_of__isnull=True,
        )

    @property
    def is_ready(self) -> bool:
        return self.status == self.Status.READY

    @property
    def aspect(self) -> float | None:
        return self.width / self.height if self.width and self.height else None

    def public_url(self) -> str:
        if not settings.PUBLIC_BASE_URL:
            return ""
        name = Path(self.file.name).name
        return settings.PUBLIC_BASE_URL + reverse("published_file", args=[self.public_token, name])


def estimate_cache_key(provider: str, model_key: str) -> str:
    """Where the typical generation time of a model is cached (studio.progress); forgotten
    when a clip of that model becomes ready (jobs)."""
    digest = hashlib.blake2s(f"{provider}:{model_key}".encode(), digest_size=8).hexdigest()
    return f"estimate:{digest}"


class ClipQuerySet(models.QuerySet):
    def unfinished(self):
        # By name, not NOT IN: an (owner, status) index then answers the count in the title
        # from a few short ranges instead of every row of the creator (NOTES.md).
        return self.filter(status__in=Clip.UNFINISHED_STATES)

    def models_used(self, owner_id: int) -> list[tuple[str, str, str]]:
        """(provider, model key, label) of every model the owner has clips of, ordered by
        provider and key. A loose index scan: one seek per model on the (owner, provider,
        model_key, model_label) index, however many clips there are. SELECT DISTINCT would
        read all of the owner's index entries (30 ms at 100,000 clips); SQLite skips
        through an index like this only with statistics nobody gathers here."""
        t = connection.ops.quote_name(Clip._meta.db_table)
        # From one model to the next: the next key of the same provider, else the first key
        # of the next provider. Each is one seek (an OR of the two would scan a provider).
        same = (
            f"FROM {t} c WHERE c.owner_id = %(owner)s AND c.provider = u.provider "
            "AND c.model_key > u.model_key ORDER BY c.model_key LIMIT 1"
        )
        next_provider = (
            f"(SELECT c.provider FROM {t} c WHERE c.owner_id = %(owner)s AND c.provider > u.provider "
            "ORDER BY c.provider LIMIT 1)"
        )
        sql = f"""
            WITH RECURSIVE used(provider, model_key) AS (
                SELECT provider, model_key FROM (
                    SELECT provider, model_key FROM {t} WHERE owner_id = %(owner)s
                    ORDER BY provider, model_key LIMIT 1
                ) AS first_model
                UNION ALL
                SELECT
                    COALESCE((SELECT c.provider {same}), {next_provider}),
                    COALESCE((SELECT c.model_key {same}), (
                        SELECT c.model_key FROM {t} c WHERE c.owner_id = %(owner)s
                        AND c.provider = {next_provider} ORDER BY c.model_key LIMIT 1
                    ))
                FROM used u WHERE u.provider IS NOT NULL
            )
            SELECT u.provider, u.model_key, (
                SELECT c.model_label FROM {t} c
                WHERE c.owner_id = %(owner)s AND c.provider = u.provider AND c.model_key = u.model_key
                ORDER BY c.model_label LIMIT 1
            )
            FROM used u WHERE u.provider IS NOT NULL"""
        with connection.cursor() as cursor:
            cursor.execute(sql, {"owner": owner_id})
            return [tuple(row) for row in cursor.fetchall()]

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


class ColourState(models.TextChoices):
    """Where a clip's colour-matched copy stands."""

    NONE = "", "Not matched"
    QUEUED = "queued", "Waiting to match the colour"
    MATCHING = "matching", "Matching the colour"
    READY = "ready", "Colour matched"
    FAILED = "failed", "Colour match failed"


class Clip(Claimable, StoredFiles):
    ColourState = ColourState
    FILE_FIELDS = ("video", "thumbnail", "matched_video")

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
    # Every other state, named: what "generating" means in the gallery and the title
    # (tests/test_views.py checks that the two lists hold every state once).
    UNFINISHED_STATES = (Status.QUEUED, Status.SUBMITTING, Status.RUNNING, Status.FINISHING)

    class Failure(models.TextChoices):
        """Why a failed clip failed, where it matters for what comes next: a paid job may
        exist (it is looked for again, and sending again warns that it may bill twice)."""

        NONE = "", "Failed"
        # Accepted by the provider, not finished within its deadline.
        TIMED_OUT = "timed_out", "Timed out"
        # The answer to the create was lost: the provider may have started it.
        UNCERTAIN = "uncertain", "May have started"
        # Made by the provider, but its files could not be copied into the studio.
        COPY = "copy", "Made, not copied"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="clips")
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    # Among this clip's children (alternative takes of the next step), the one its chain
    # continues with; None: the rule in ChainTree.next_take.
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
    failure_kind = models.CharField(max_length=20, choices=Failure.choices, blank=True, default="")
    # A job running at the provider while the provider refuses our key: the clip waits (it is
    # paid for and still being made) and carries on once a call goes through again.
    paused_at = models.DateTimeField(null=True, blank=True)
    pause_label = models.CharField(max_length=120, blank=True)
    # What the card says about an unfinished clip ("Waiting to retry: ...", what to do).
    notice = models.TextField(blank=True)
    # Set after an answer that may have made a job (a 500 the provider's docs ask us to
    # resend): before anything is sent again, the provider's list of recent jobs is searched.
    look_before_send = models.BooleanField(default=False)
    # The batch of polls that claimed this clip last (one sweep, one interval).
    poll_token = models.CharField(max_length=32, blank=True)
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
    # Frames in the video (the sequence player turns frame cuts into times with it).
    video_frames = models.PositiveIntegerField(null=True, blank=True)

    # --- Seams (issue 12) ---------------------------------------------------------------
    # Recorded on the child, not the parent: several takes of one step may start from
    # different frames of the same parent, and a parent is never changed by its children.
    # The frame of the parent (its number, 0 = first shown) this clip starts from: its
    # picture is this clip's frame 0, and the chain cuts the parent right after it. None:
    # not started from a frame of its parent, or made before hand-offs were recorded (then
    # a first frame that is the parent's last frame means the last).
    handoff_frame = models.PositiveIntegerField(null=True, blank=True)
    # Leading frames of an extend result that repeat its source clip (found when it was
    # finished, media.repeated_source_frames): the chain shows the source once.
    repeated_frames = models.PositiveIntegerField(default=0)
    # The last second as hand-off candidates: [{"index", "time", "sharpness"}], each with
    # a JPEG beside the video (strip_name), made by the worker when the clip was finished.
    strip = models.JSONField(default=list, blank=True)
    # The seam into this clip and its drift, measured by the worker on what the sequence
    # plays (jobs.measure_clip): difference, colour_shift, drift (against the root's first
    # frame), and the same before colour matching ("original"). `figures_for` names what
    # they were measured on; when it no longer matches (a colour match was made) they are
    # measured again. `media_due_at`: measuring was asked for and has not been done yet.
    figures = models.JSONField(default=dict, blank=True)
    figures_for = models.CharField(max_length=300, blank=True)
    media_due_at = models.DateTimeField(null=True, blank=True)
    # "Match colour to the previous clip": the worker renders a corrected copy (jobs.
    # match_colour) that the sequence player and the join use instead of `video`.
    colour_match = models.BooleanField(default=False)
    colour_state = models.CharField(max_length=20, choices=ColourState.choices, blank=True, default="")
    colour_error = models.TextField(blank=True)
    colour_claimed_at = models.DateTimeField(null=True, blank=True)
    matched_video = models.FileField(upload_to=clip_upload_to, blank=True, max_length=300)
    # What the copy was corrected towards (the parent's played video and hand-off frame).
    matched_for = models.CharField(max_length=300, blank=True)
    cost_actual = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ClipQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["owner", "-created_at"]),
            # The "generating" count (UNFINISHED_STATES) and the status filter.
            models.Index(fields=["owner", "status"], name="clip_owner_status"),
            # The gallery's model filter: its list (models_used) and its pages.
            models.Index(fields=["owner", "provider", "model_key", "model_label"], name="clip_owner_model"),
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
        if self.paused_at and not self.is_finished:
            return self.pause_label or "Waiting for the provider"
        if self.status == self.Status.FAILED and self.failure_kind:
            return self.get_failure_kind_display()
        return self.get_status_display()

    @property
    def may_bill_twice(self) -> bool:
        """Sending this failed clip again could start a second paid job: the provider
        accepted it (and may still deliver it), or may have started it."""
        return self.status == self.Status.FAILED and self.failure_kind in (
            self.Failure.TIMED_OUT,
            self.Failure.UNCERTAIN,
        )

    @property
    def still_looking_until(self):
        """Until when the studio keeps looking for this failed clip's job, or None."""
        if self.status != self.Status.FAILED or self.next_poll_at is None or self.deadline_at is None:
            return None
        until = self.deadline_at + self.late_delivery_window()
        return until if until > timezone.now() else None

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
        if self.first_frame_id or self.end_frame_id or self.handoff_frame is not None:
            return "first_frame"
        if self.extend_video_id:
            return "extend_video"
        if self.pk and self.reference_images.exists():
            return "reference_images"
        return "text"

    def estimate_with(self, spec):
        """What this clip's settings cost with `spec`, a provider's ModelSpec (its
        estimate_cost: the computation the form shows), or None when the price is only
        known afterwards."""
        return spec.estimate_cost(
            self.duration,
            self.resolution,
            self.generate_audio,
            start_mode=self.start_mode,
            frames=int(bool(self.first_frame_id or self.handoff_frame is not None))
            + int(bool(self.end_frame_id)),
            references=self.reference_images.count() if self.pk else 0,
        )

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
    # A chain is the tree of clips under one root. Several children of one clip are
    # alternative takes of the next step. The chain has one current sequence, read by
    # ChainTree (one query for the whole tree): see there for the rule.

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

    def sequence(self) -> list[Clip]:
        """The current sequence of this clip's chain (the same from any clip of it)."""
        return ChainTree.of(self).sequence

    def continues_seamlessly(self, previous: Clip) -> bool:
        """True when this clip starts on a frame of `previous` (its hand-off frame, or for a
        clip made before those were recorded, its last frame), so its frame 0 repeats it."""
        if self.parent_id != previous.pk or self.repeated_frames:
            return False
        if self.handoff_frame is not None:
            return True
        return bool(self.first_frame_id and self.first_frame_id == previous.last_frame_id)

    def handoff_of(self, previous: Clip) -> int | None:
        """The number of the frame of `previous` this clip starts from, when it continues it
        from a frame and that frame is known; None otherwise (an old clip started on a last
        frame whose number was never counted is cut nowhere but at the end)."""
        if not self.continues_seamlessly(previous):
            return None
        if self.handoff_frame is not None:
            return self.handoff_frame
        return previous.last_index

    @property
    def last_index(self) -> int | None:
        """The number of the clip's last frame (None until its frames are counted)."""
        return self.video_frames - 1 if self.video_frames else None

    def handoff_error(self, index) -> str:
        """Why frame `index` cannot be this clip's hand-off frame ("" when it can)."""
        if not self.is_ready or not self.video_frames:
            return f"Clip #{self.pk} is not ready, so none of its frames can be chosen yet."
        if not isinstance(index, int) or not 0 <= index < self.video_frames:
            return (
                f"Frame {index} is not in clip #{self.pk}: it has {self.video_frames} frames, "
                f"numbered 0 to {self.video_frames - 1}."
            )
        return ""

    # --- What plays: the colour-matched copy when there is one ---------------------------

    @property
    def plays_matched(self) -> bool:
        return bool(self.colour_match and self.colour_state == ColourState.READY and self.matched_video)

    @property
    def played_video(self):
        """The file the sequence player and the join use: the colour-matched copy when it is
        ready, else the clip's own video."""
        return self.matched_video if self.plays_matched else self.video

    @property
    def colour_pending(self) -> bool:
        """A colour match was asked for and its copy is not made yet."""
        return self.colour_match and self.colour_state in (ColourState.QUEUED, ColourState.MATCHING)

    def match_reference_key(self) -> str:
        """What this clip's colour-matched copy must be corrected towards: the parent's
        played video at the hand-off frame. A copy made for another key is out of date."""
        parent = self.parent
        if parent is None:
            return ""
        handoff = self.handoff_of(parent)
        return f"{parent.played_video.name}#{'last' if handoff is None else handoff}"

    # --- The strip of hand-off candidates -------------------------------------------------

    def strip_name(self, index: int) -> str:
        """The stored JPEG of strip frame `index`, beside the clip's video."""
        return f"clips/{self.storage_key}/strip/{index}.jpg"

    @property
    def strip_frames(self) -> list[StripChoice]:
        """The strip as the picker shows it: oldest first, the true last frame preselected,
        the sharpest one marked."""
        entries = [e for e in self.strip or [] if isinstance(e, dict) and "index" in e]
        if not entries:
            return []
        sharpest = max(entries, key=lambda e: e.get("sharpness") or 0)["index"]
        last = entries[-1]["index"]
        return [
            StripChoice(
                index=e["index"],
                time=float(e.get("time") or 0),
                sharpness=float(e.get("sharpness") or 0),
                is_last=e["index"] == last,
                is_sharpest=e["index"] == sharpest,
            )
            for e in entries
        ]

    def media_names(self) -> list[str]:
        """Stored files made from the clip's video (the strip, the seam pictures, the
        corrected copy), to remove with it."""
        names = [e.get("name") for e in self.strip or [] if isinstance(e, dict)]
        names += [(self.figures or {}).get(k) for k in ("before_image", "after_image")]
        names.append(self.matched_video.name)
        return [n for n in names if n]

    @property
    def seam(self) -> SeamView | None:
        """The figures of the seam into this clip as the chain view shows them, or None
        while they are not measured (or this clip starts no seam)."""
        figures = self.figures or {}
        if "difference" not in figures:
            return None
        return SeamView(figures)

    @property
    def frames_per_second(self) -> float:
        """The clip's frame rate as measured when it was made; DEFAULT_FPS for clips made
        before the frame count was kept (most models deliver 24 fps)."""
        if self.video_frames and self.video_duration:
            return self.video_frames / self.video_duration
        return DEFAULT_FPS

    def use_as_take(self) -> None:
        """Make this clip the take its parent's sequence uses, and each ancestor's choice the
        path down to it, so the chain from its root runs through it. One transaction: with
        two tabs choosing at once, each path is written whole and the last one wins."""
        with transaction.atomic():
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
        self,
        message: str,
        field_errors: dict | None = None,
        expected_status: str | None = None,
        kind: str = "",
        keep_looking: bool = False,
    ) -> bool:
        """Mark failed (only from `expected_status` when given, never from a final state).
        `kind` says why when a paid job may exist; with `keep_looking` the studio goes on
        looking for the job (LATE_LOOK_EVERY, for CLIP_LATE_DELIVERY_HOURS)."""
        expected = Q(status=expected_status) if expected_status else Q()
        now = timezone.now()
        changed = self.claim(
            expected & ~Q(status__in=self.FINAL_STATES),
            status=self.Status.FAILED,
            error=self.error_with_fields(message, field_errors),
            finished_at=now,
            next_poll_at=now + LATE_LOOK_EVERY if keep_looking else None,
            updated_at=now,
            field_errors=field_errors or {},
            failure_kind=kind,
            paused_at=None,
            pause_label="",
            notice="",
            look_before_send=False,
        )
        if not changed:
            self.refresh_from_db()  # what happened instead, for the caller to read
        return changed

    def pause(self, label: str, notice: str, retry_at) -> bool:
        """The provider refuses our key (or its edge refuses us) while it makes this clip:
        wait, showing `label` and what to do, and call again at `retry_at`. Only a running
        or finishing clip pauses; the job at the provider goes on and is billed."""
        return self.claim(
            {"status__in": [self.Status.RUNNING, self.Status.FINISHING]},
            paused_at=self.paused_at or timezone.now(),
            pause_label=label,
            notice=notice,
            next_poll_at=retry_at,
        )

    def resume(self) -> bool:
        """A call went through again: the clip is no longer waiting."""
        if not self.paused_at:
            return False
        return self.claim(
            {"paused_at__isnull": False, "status__in": [self.Status.RUNNING, self.Status.FINISHING]},
            paused_at=None,
            pause_label="",
            notice="",
        )

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
            failure_kind="",
            paused_at=None,
            pause_label="",
            notice="",
            look_before_send=False,
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
        """Poll this clip as soon as possible (a webhook said something happened): a running
        clip, or a failed one the studio is still looking for (a late delivery). True when
        that moved the next poll earlier; a clip already due is left as it is."""
        now = timezone.now()
        looked_for = Q(status=self.Status.FAILED, deadline_at__gte=now - self.late_delivery_window())
        return self.claim(
            (Q(status=self.Status.RUNNING) | looked_for) & Q(next_poll_at__gt=now), next_poll_at=now
        )

    @staticmethod
    def late_delivery_window() -> timedelta:
        return timedelta(hours=settings.CLIP_LATE_DELIVERY_HOURS)


class OverrideChoice(models.TextChoices):
    AUTO = "", "As the model list suggests"
    YES = "yes", "Yes"
    NO = "no", "No"


def _override_field(help_text: str) -> models.CharField:
    return models.CharField(
        max_length=3, choices=OverrideChoice.choices, blank=True, default="", help_text=help_text
    )


class ModelOverride(models.Model):
    """What the studio's admin knows about one model better than its provider's list: the
    list has no structured field for reference images, and does not say whether a last
    frame works alone. Set in the admin; applied wherever the model is offered."""

    Choice = OverrideChoice

    provider = models.CharField(max_length=40)
    model_key = models.CharField(max_length=200)
    reference_images = _override_field("Whether the model takes reference images (input_references).")
    max_reference_images = models.PositiveSmallIntegerField(
        default=3, help_text="How many reference images, when it takes them."
    )
    last_frame_alone = _override_field("Whether a last frame may be sent without a first frame.")
    note = models.CharField(max_length=300, blank=True, help_text="Why (for the next admin).")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "model_key"], name="one_override_per_model")
        ]

    def __str__(self):
        return f"{self.provider}:{self.model_key}"

    def apply(self, spec):
        """`spec` (a provider's ModelSpec, a dataclass) with what this override knows."""
        changes = {}
        if self.reference_images == self.Choice.YES:
            changes["max_reference_images"] = max(1, self.max_reference_images)
        elif self.reference_images == self.Choice.NO:
            changes["max_reference_images"] = 0
        if self.last_frame_alone and spec.last_frame:
            changes["last_frame_alone"] = self.last_frame_alone == self.Choice.YES
        return dataclasses.replace(spec, **changes) if changes else spec


# --- Chains: one current sequence, takes, branches, cuts and costs -----------------------


def default_title(prompt: str) -> str:
    """A chain's title until the creator gives one: the first words of its first prompt (its
    first clause when that is short, else six words)."""
    text = " ".join((prompt or "").split())
    clause = re.split(r"[,.;:!?\u2014]", text, maxsplit=1)[0].strip()
    if clause and len(clause.split()) <= 8 and len(clause) <= 60:
        return clause
    words = text.split()
    short = " ".join(words[:6])[:60].rstrip(" ,.;:")
    return short + ("…" if len(words) > 6 or len(text) > len(short) else "") if short else "Untitled chain"


def file_name_for(title: str) -> str:
    """A download's file name from a chain's title: the title itself (accents kept), with
    what no file system takes left out."""
    name = re.sub(r'[\\/:*?"<>|\x00-\x1f\x7f]+', " ", title or "")
    # A default title ends in "…" where the prompt went on: a file is named without it.
    name = " ".join(name.split()).strip(". …")[:100].strip(". …")
    return f"{name or 'lastframe-chain'}.mp4"


class Chain(models.Model):
    """A creator's name for the chain under one root clip. The row exists once a title is
    set; until then the title is the first words of the first prompt (default_title)."""

    TITLE_MAX = 200

    root = models.OneToOneField(Clip, on_delete=models.CASCADE, primary_key=True, related_name="chain_row")
    title = models.CharField(max_length=TITLE_MAX)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return self.title

    @classmethod
    def set_title(cls, root: Clip, title: str) -> None:
        cls.objects.update_or_create(root=root, defaults={"title": title})

    @staticmethod
    def title_of(root: Clip) -> str:
        """The title of the chain under `root` (its row read with it when select_related)."""
        try:
            return root.chain_row.title
        except Chain.DoesNotExist:
            return default_title(root.prompt)


# A drift figure (media.drift, against step 1) warns from this step on: the look of a
# faithful chain wanders a little with every hop (bench/RESULTS.md, "DRIFT_WARN").
DRIFT_WARN_FROM_STEP = 3


@dataclass(frozen=True)
class StripChoice:
    """One frame of a clip's strip, as the hand-off picker offers it."""

    index: int
    time: float
    sharpness: float
    is_last: bool
    is_sharpest: bool


class SeamView:
    """The measured seam into a clip (Clip.figures), in the words the chain view uses."""

    def __init__(self, figures: dict):
        self.figures = figures
        self.difference = float(figures.get("difference") or 0)
        self.colour_shift = float(figures.get("colour_shift") or 0)
        self.drift = figures.get("drift")
        self.parent_frame = figures.get("parent_frame")
        self.original = figures.get("original") or None
        self.before_image = figures.get("before_image") or ""
        self.after_image = figures.get("after_image") or ""

    @property
    def jumps_picture(self) -> bool:
        return self.difference > media.SEAM_JUMP_DIFFERENCE

    @property
    def jumps_colour(self) -> bool:
        return self.colour_shift > media.SEAM_JUMP_COLOUR

    @property
    def jumps(self) -> bool:
        return self.jumps_picture or self.jumps_colour

    @property
    def verdict(self) -> str:
        if self.jumps_picture and self.jumps_colour:
            return "Visible jump: the picture and its colour change at the cut"
        if self.jumps_picture:
            return "Visible jump: the picture changes at the cut"
        if self.jumps_colour:
            return "Visible jump: the colour shifts at the cut"
        return "Smooth"

    def drift_warns(self, step: int) -> bool:
        return step >= DRIFT_WARN_FROM_STEP and self.drift is not None and self.drift > media.DRIFT_WARN


@dataclass(frozen=True)
class Cut:
    """Where one step of a sequence starts and ends. The sequence player plays exactly this
    and the join keeps exactly this, so both cut in the same places (sequence_cuts is the one
    place the rule lives).

    Frames are counted from the clip's frame 0: `skip_frames` leading frames are left out,
    and only frames before `keep_frames` are kept (None: to the end). `repeats_previous`: the
    first of the skipped frames is the same picture as the previous step's last kept frame
    (the clip was continued from it)."""

    clip: Clip
    skip_frames: int = 0
    keep_frames: int | None = None
    repeats_previous: bool = False

    @property
    def fps(self) -> float:
        return self.clip.frames_per_second

    @property
    def length(self) -> float:
        """The clip's whole length: measured once made, else what was asked for."""
        return self.clip.video_duration or float(self.clip.duration or 0)

    @property
    def start(self) -> float:
        return self.skip_frames / self.fps

    @property
    def end(self) -> float:
        if self.keep_frames is not None:
            return min(self.length, self.keep_frames / self.fps)
        return self.length

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)

    def join_part(self, path: Path) -> media.JoinPart:
        """This step as the join takes it. A lone repeated picture is left to the join to drop
        (drop_seam): it may leave out either copy, whichever re-encodes less, and the picture
        shows once either way, so the film is as long as what the player plays."""
        if self.repeats_previous and self.skip_frames == 1:
            return media.JoinPart(path, keep_frames=self.keep_frames, drop_seam=True)
        return media.JoinPart(path, keep_frames=self.keep_frames, skip_frames=self.skip_frames)


def sequence_cuts(clips: list[Clip]) -> list[Cut]:
    """The cut of each step of a sequence (clips in order), the one rule the sequence player,
    the seam figures and the join follow:
    - a clip continued from a frame of the previous one (its hand-off frame) repeats that
      picture as its own frame 0: the previous clip is cut right after the hand-off frame
      (keep_frames = hand-off + 1) and the picture is shown once;
    - an extend result that holds its source clip (repeated_frames) leaves those frames
      out, so the source plays once."""
    cuts = []
    for index, clip in enumerate(clips):
        previous = clips[index - 1] if index else None
        following = clips[index + 1] if index + 1 < len(clips) else None
        skip, repeats = 0, False
        if previous is not None and clip.parent_id == previous.pk and clip.repeated_frames:
            skip = clip.repeated_frames
        elif previous is not None and clip.continues_seamlessly(previous):
            skip, repeats = 1, True
        keep = None
        handoff = following.handoff_of(clip) if following is not None else None
        if handoff is not None and clip.video_frames and handoff < clip.video_frames - 1:
            keep = handoff + 1
        cuts.append(Cut(clip, skip_frames=skip, keep_frames=keep, repeats_previous=repeats))
    return cuts


@dataclass(frozen=True)
class Estimate:
    """What one more clip will cost, before it is made (None: not known in advance)."""

    amount: Decimal | None
    unit: str = ""

    def __str__(self):
        if self.amount is None:
            return "price known once it is made"
        if self.amount == 0:
            return "Free"
        return f"≈ {_money(self.amount, self.unit)}"


@dataclass(frozen=True)
class Addition:
    """One more clip before it is made: what it adds, and the cost so far with it."""

    estimate: Estimate
    total: Costs

    def __str__(self):
        if self.estimate.amount == 0:
            return f"Free: the cost so far stays {self.total}"
        if self.estimate.amount is None:
            return f"Adds a price known once it is made · cost so far: {self.total}"
        return f"Adds {self.estimate} · cost so far becomes {self.total}"


def _money(amount: Decimal, unit: str) -> str:
    return f"{amount.normalize():f} {unit}".strip()


class Costs:
    """Money spent on clips, by unit: credits and dollars are never added together, and
    what a provider reported is kept apart from the studio's estimates."""

    def __init__(self):
        self.reported: dict[str, Decimal] = {}
        self.estimated: dict[str, Decimal] = {}
        self.unknown = 0  # clips whose price is not known yet

    @classmethod
    def of(cls, clips) -> Costs:
        costs = cls()
        for clip in clips:
            costs.add_clip(clip)
        return costs

    def add_clip(self, clip: Clip) -> None:
        if clip.cost_actual is not None:
            self._add(self.reported, clip.cost_unit, clip.cost_actual)
        elif clip.status == Clip.Status.FAILED:
            return  # nothing reported: a job that failed is not charged
        elif clip.cost_estimate is not None:
            self._add(self.estimated, clip.cost_unit, clip.cost_estimate)
        else:
            self.unknown += 1

    def adding(self, estimate: Estimate) -> Addition:
        return Addition(estimate, self.plus(estimate))

    def plus(self, estimate: Estimate) -> Costs:
        """These costs with one more clip at `estimate`."""
        more = Costs()
        more.reported, more.estimated, more.unknown = dict(self.reported), dict(self.estimated), self.unknown
        if estimate.amount is None:
            more.unknown += 1
        else:
            more._add(more.estimated, estimate.unit, estimate.amount)
        return more

    @staticmethod
    def _add(bucket: dict, unit: str, amount: Decimal) -> None:
        bucket[unit] = bucket.get(unit, Decimal(0)) + amount

    @property
    def is_free(self) -> bool:
        return not self.unknown and not any((*self.reported.values(), *self.estimated.values()))

    @property
    def has_estimates(self) -> bool:
        return any(self.estimated.values())

    def parts(self) -> list[str]:
        """One text per unit ("18 credits", "≈ 0.4 USD (estimated)"), then what is unknown."""
        if self.is_free:
            return ["Free"]
        parts = []
        for unit in sorted(set(self.reported) | set(self.estimated)):
            reported = self.reported.get(unit, Decimal(0))
            estimated = self.estimated.get(unit, Decimal(0))
            if not estimated:
                if reported:
                    parts.append(_money(reported, unit))
            elif not reported:
                parts.append(f"≈ {_money(estimated, unit)} (estimated)")
            else:
                parts.append(
                    f"≈ {_money(reported + estimated, unit)} ({reported.normalize():f} reported, "
                    f"{estimated.normalize():f} estimated)"
                )
        if self.unknown:
            parts.append(f"price unknown for {self.unknown} clip{'s' if self.unknown != 1 else ''}")
        return parts or ["Free"]

    def __str__(self):
        return " · ".join(self.parts())


@dataclass
class Step:
    """One step of the current sequence: the take in use, beside every take of the step."""

    number: int
    clip: Clip
    takes: list[Clip]
    cut: Cut

    @property
    def take_number(self) -> int:
        return next(i for i, take in enumerate(self.takes, 1) if take.pk == self.clip.pk)

    @property
    def ready_takes(self) -> list[Clip]:
        return [take for take in self.takes if take.is_ready]


@dataclass
class Branch:
    """Steps made from a take the sequence does not use now: kept, and one choice away."""

    take: Clip  # the take it goes on from, at its step
    path: list[Clip]  # the whole sequence it would become, root to tip
    from_step: int  # the first step where it differs from the current sequence (1-based)
    take_number: int

    @property
    def clips(self) -> list[Clip]:
        return self.path[self.from_step - 1 :]

    @property
    def steps_text(self) -> str:
        last = len(self.path)
        return f"Step {last}" if last == self.from_step else f"Steps {self.from_step}–{last}"

    @property
    def seconds(self) -> float:
        return sum(cut.seconds for cut in sequence_cuts(self.path)[self.from_step - 1 :])

    @property
    def switch_to(self) -> Clip:
        """The clip to choose to bring the branch back: its deepest ready step."""
        return [clip for clip in self.path if clip.is_ready][-1]


@dataclass(frozen=True)
class Displaced:
    """The later steps that choosing another take would move to a branch."""

    first: int
    last: int
    take_number: int

    def __str__(self):
        if self.first == self.last:
            return (
                f"Step {self.first} continues from take {self.take_number}. "
                "It stays as a branch you can return to."
            )
        return (
            f"Steps {self.first}–{self.last} continue from take {self.take_number}. "
            "They stay as a branch you can return to."
        )


class ChainTree:
    """One chain, read whole with one recursive query, whatever clip it is reached from.

    The rule of its one current sequence: from the root, at each step, the take chosen with
    "Use this take"; without a choice, the take that later steps continue (the oldest such,
    so a new branch never takes over by itself), else the newest ready take, else the newest
    still generating. A failed take is never used. Takes never chosen and the steps made from
    them are never dropped: they are the takes and branches of the chain view."""

    # Up from the clip to its root, then down to every clip under that root. UNION (not
    # UNION ALL) stops at a row already seen, so even a broken loop of parents ends.
    TREE_SQL = """
        WITH RECURSIVE up(id, parent_id) AS (
            SELECT id, parent_id FROM {table} WHERE id = %s
            UNION
            SELECT c.id, c.parent_id FROM {table} c JOIN up ON c.id = up.parent_id
        ),
        down(id) AS (
            SELECT id FROM up WHERE parent_id IS NULL
            UNION
            SELECT c.id FROM {table} c JOIN down ON c.parent_id = down.id
        )
        SELECT id FROM down"""
    ROOTS_SQL = """
        WITH RECURSIVE down(id) AS (
            SELECT id FROM {table} WHERE id IN ({marks})
            UNION
            SELECT c.id FROM {table} c JOIN down ON c.parent_id = down.id
        )
        SELECT id FROM down"""

    def __init__(self, clips: list[Clip], root: Clip):
        self.root = root
        self.clips = sorted(clips, key=lambda c: c.pk)
        self.by_pk = {c.pk: c for c in self.clips}
        self.children: dict[int, list[Clip]] = {}
        for clip in self.clips:
            if clip.pk != root.pk and clip.parent_id in self.by_pk:
                self.children.setdefault(clip.parent_id, []).append(clip)
        self.sequence = self.follow(root)
        self._in_sequence = {c.pk for c in self.sequence}

    @staticmethod
    def _clips(owner_id: int, sql: str, params: list) -> list[Clip]:
        sql = sql.replace("{table}", connection.ops.quote_name(Clip._meta.db_table))
        rows = Clip.objects.filter(owner_id=owner_id, pk__in=RawSQL(sql, params))
        return list(rows.select_related("chain_row").order_by("pk"))

    @classmethod
    def of(cls, clip: Clip) -> ChainTree:
        return cls.of_pk(clip.owner_id, clip.pk) or cls([clip], clip)

    @classmethod
    def of_pk(cls, owner_id: int, pk: int) -> ChainTree | None:
        """The chain of the owner's clip `pk`, or None when it is not theirs (or, in a loop
        of parents with no root, has no chain to read)."""
        clips = cls._clips(owner_id, cls.TREE_SQL, [pk])
        roots = [c for c in clips if c.parent_id is None]
        return cls(clips, roots[0]) if roots else None

    @classmethod
    def of_roots(cls, roots: list[Clip]) -> dict[int, ChainTree]:
        """The chains under several roots at once (a gallery page), by root pk."""
        if not roots:
            return {}
        sql = cls.ROOTS_SQL.replace("{marks}", ", ".join(["%s"] * len(roots)))
        clips = cls._clips(roots[0].owner_id, sql, [r.pk for r in roots])
        by_pk = {c.pk: c for c in clips}
        groups: dict[int, list[Clip]] = {r.pk: [] for r in roots}
        for clip in clips:
            node, seen = clip, set()
            while node.pk not in groups and node.parent_id in by_pk and node.pk not in seen:
                seen.add(node.pk)
                node = by_pk[node.parent_id]
            if node.pk in groups:
                groups[node.pk].append(clip)
        return {pk: cls(members, by_pk[pk]) for pk, members in groups.items() if pk in by_pk}

    # --- The rule -----------------------------------------------------------------------

    def takes_of(self, clip: Clip) -> list[Clip]:
        """The takes of the clip's step, oldest first (itself among them)."""
        if clip.pk == self.root.pk or clip.parent_id not in self.by_pk:
            return [clip]
        return self.children[clip.parent_id]

    def _live_children(self, clip: Clip) -> list[Clip]:
        return [c for c in self.children.get(clip.pk, []) if c.status != Clip.Status.FAILED]

    def next_take(self, clip: Clip) -> Clip | None:
        """The take the sequence goes on with after `clip` (the rule in the class comment)."""
        takes = self._live_children(clip)
        for take in takes:
            if take.pk == clip.chosen_take_id:
                return take
        continued = [t for t in takes if self.children.get(t.pk)]
        if continued:
            return continued[0]
        ready = [t for t in takes if t.is_ready]
        if ready:
            return ready[-1]
        return takes[-1] if takes else None

    def follow(self, start: Clip) -> list[Clip]:
        """The clips from the root to `start`, then on by the rule to the end."""
        path = self.path_to(start)
        seen = {c.pk for c in path}
        node = self.next_take(start)
        while node is not None and node.pk not in seen:
            path.append(node)
            seen.add(node.pk)
            node = self.next_take(node)
        return path

    def path_to(self, clip: Clip) -> list[Clip]:
        path, seen = [clip], {clip.pk}
        while path[-1].parent_id in self.by_pk and path[-1].pk != self.root.pk:
            parent = self.by_pk[path[-1].parent_id]
            if parent.pk in seen:
                break
            path.append(parent)
            seen.add(parent.pk)
        return list(reversed(path))

    # --- Reading ------------------------------------------------------------------------

    def in_sequence(self, clip: Clip) -> bool:
        return clip.pk in self._in_sequence

    @property
    def title(self) -> str:
        return Chain.title_of(self.root)

    @property
    def cuts(self) -> list[Cut]:
        return sequence_cuts(self.sequence)

    @property
    def steps(self) -> list[Step]:
        return [
            Step(number, cut.clip, self.takes_of(cut.clip), cut) for number, cut in enumerate(self.cuts, 1)
        ]

    @property
    def seconds(self) -> float:
        return sum(cut.seconds for cut in self.cuts)

    @property
    def last(self) -> Clip:
        return self.sequence[-1]

    @property
    def latest_thumbnail(self) -> Clip | None:
        """The last step of the sequence that has a picture (for the gallery's chain card)."""
        return next((c for c in reversed(self.sequence) if c.thumbnail), None)

    @property
    def unfinished(self) -> bool:
        return any(not c.is_finished for c in self.clips)

    @property
    def media_pending(self) -> bool:
        """The worker is still making something the chain view shows of a finished clip: a
        colour-matched copy, or the seam figures (asked for within MEDIA_POLL_FOR)."""
        recent = timezone.now() - MEDIA_POLL_FOR
        return any(
            c.colour_pending or (c.is_ready and c.media_due_at is not None and c.media_due_at > recent)
            for c in self.clips
        )

    @property
    def generating(self) -> int:
        return sum(1 for c in self.clips if not c.is_finished)

    def costs(self) -> Costs:
        """The cost so far: every clip of the chain, takes and branches included (each was
        paid for, whether the sequence uses it or not)."""
        return Costs.of(self.clips)

    def signature(self) -> str:
        """Changes whenever anything the chain view shows of its clips changes (a status, a
        choice, a new or deleted take, a reported cost), so a poll can answer "no change"."""
        state = [
            (c.pk, c.parent_id, c.status, c.chosen_take_id, c.error, str(c.cost_actual))
            + (c.colour_match, c.colour_state, c.figures_for, bool(c.figures), bool(c.strip), c.media_due_at)
            for c in self.clips
        ]
        return hashlib.blake2s(repr(state).encode(), digest_size=8).hexdigest()

    def branches(self) -> list[Branch]:
        """Every take with later steps that the sequence does not go through, as the whole
        sequence it would become: the way back to steps made from it."""
        found = []
        for clip in self.clips:
            if self.in_sequence(clip) or clip.pk == self.root.pk or clip.parent_id not in self.by_pk:
                continue
            parent = self.by_pk[clip.parent_id]
            if not self._live_children(clip) or self.next_take(parent) is clip:
                continue  # a take with nothing after it, or a step inside another branch
            path = self.follow(clip)
            step = self._first_difference(path)
            found.append(Branch(clip, path, step, self._take_number(path[step - 1])))
        return found

    def branch_of(self, clip: Clip) -> Branch | None:
        """The branch a clip outside the sequence is on (None: it is only an unused take)."""
        for branch in self.branches():
            if any(c.pk == clip.pk for c in branch.clips):
                return branch
        return None

    def displaced_by(self, take: Clip) -> Displaced | None:
        """What choosing `take` would move off the sequence: the steps after the one where
        the sequence would change, which continue from the take in use there."""
        step = self._first_difference(self.follow(take))
        if step > len(self.sequence) or step == len(self.sequence):
            return None
        return Displaced(step + 1, len(self.sequence), self._take_number(self.sequence[step - 1]))

    def _first_difference(self, path: list[Clip]) -> int:
        """The first step (1-based) where `path` and the current sequence differ."""
        for index, clip in enumerate(path):
            if index >= len(self.sequence) or self.sequence[index].pk != clip.pk:
                return index + 1
        return len(path) + 1

    def _take_number(self, clip: Clip) -> int:
        return next(i for i, take in enumerate(self.takes_of(clip), 1) if take.pk == clip.pk)


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


class ChainExport(Claimable, StoredFiles):
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
    # "copy", "smartcut" (a copy with the frames next to cuts re-encoded) or "reencode".
    method = models.CharField(max_length=20, blank=True)
    method_reason = models.CharField(max_length=200, blank=True)
    # The joined file's sound, as the join reports it: whether it has a sound track, how
    # long it is, the parts (0-based) that play silence (no sound, or sound that could not
    # be read), and the join's own sentences about it for the export panel.
    has_audio = models.BooleanField(null=True, blank=True)
    audio_duration = models.FloatField(null=True, blank=True)
    silent_parts = models.JSONField(default=list, blank=True)
    notes = models.JSONField(default=list, blank=True)
    storage_key = models.CharField(max_length=32, default=_storage_folder, editable=False)
    file = models.FileField(upload_to=export_upload_to, blank=True, max_length=300)
    duration = models.FloatField(null=True, blank=True)
    dropped_frames = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Set when a clip it contains was deleted: the film shows something that is gone.
    stale_since = models.DateTimeField(null=True, blank=True)

    FILE_FIELDS = ("file",)

    class Meta:
        ordering = ["-pk"]

    def __str__(self):
        return f"Chain export {self.pk} ({len(self.clip_ids)} clips)"

    @classmethod
    def containing(cls, owner, pks) -> models.QuerySet:
        """The owner's exports whose sequence has any of these clips (sequence_key is the
        ids joined by commas: a text match works on every database, JSON lookups do not)."""
        match = Q(pk__in=[])
        for pk in pks:
            match |= (
                Q(sequence_key=str(pk))
                | Q(sequence_key__startswith=f"{pk},")
                | Q(sequence_key__endswith=f",{pk}")
                | Q(sequence_key__contains=f",{pk},")
            )
        return cls.objects.filter(match, owner=owner)

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.READY, self.Status.FAILED)

    def download_name(self) -> str:
        """The file name of the joined film: the chain's title as it is now."""
        root = Clip.objects.filter(pk=(self.clip_ids or [0])[0]).select_related("chain_row").first()
        return file_name_for(Chain.title_of(root)) if root else file_name_for("")

    @staticmethod
    def key_for(clips) -> str:
        """The sequence as it is joined: its clips, and the colour-matched copy a step plays
        when it has one (matching a seam, or undoing it, makes another film)."""
        return ",".join(
            f"{c.pk}~{hashlib.blake2s(c.matched_video.name.encode(), digest_size=4).hexdigest()}"
            if c.plays_matched
            else str(c.pk)
            for c in clips
        )

    @classmethod
    def latest_for(cls, owner, clips) -> ChainExport | None:
        return cls.objects.filter(owner=owner, sequence_key=cls.key_for(clips)).first()

    @property
    def method_text(self) -> str:
        if self.method == "copy":
            return "by stream copy (no quality lost)"
        if self.method == "smartcut":
            return "by stream copy, the few frames next to each cut re-encoded (smart cut)"
        return f"re-encoded ({self.method_reason})" if self.method_reason else "re-encoded"

    def sound_lines(self) -> list[str]:
        """What the export panel says of the joined file's sound, in plain sentences."""
        if self.status != self.Status.READY:
            return []
        if not self.has_audio:
            return ["No sound: none of the clips has a sound track, so the joined file is silent."]
        lines = [
            f"Sound: yes, AAC 48 kHz stereo, {self.audio_duration or 0:.2f} s, in step with the picture."
        ]
        for entry in self.silent_parts or []:
            part = entry.get("part", 0) if isinstance(entry, dict) else int(entry)
            why = entry.get("why", "none") if isinstance(entry, dict) else "none"
            pk = self.clip_ids[part] if part < len(self.clip_ids) else None
            what = f"Step {part + 1}" + (f" (clip #{pk})" if pk else "")
            if why == "corrupt":
                lines.append(f"{what}: its sound could not be read, so silence was inserted in its place.")
            else:
                lines.append(f"{what} has no sound: silence was inserted for its length.")
        if len(self.silent_parts or []) == len(self.clip_ids):
            lines[0] = "Sound: a silent track only (no clip's sound could be used)."
        return lines

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


class FirstRun(models.Model):
    """The studio's first account (its admin), in a row with a fixed key. "Create your
    account" inserts the account and this row in one transaction: of simultaneous posts
    only one insert can succeed (the others wait on the key, then fail), so exactly one
    admin is made. Deleting that account deletes the row, and the studio with no user at
    all offers the first run again."""

    ONLY = 1

    id = models.PositiveSmallIntegerField(primary_key=True, default=ONLY)
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(id=1), name="first_run_is_one_row")]

    def __str__(self):
        return f"First account: {self.user_id}"

    @classmethod
    def admit(cls, user) -> bool:
        """Save `user` (unsaved) as the first account, unless another was made first: then
        nothing is saved and False is returned."""
        try:
            with transaction.atomic():
                user.save()
                cls.objects.create(id=cls.ONLY, user=user)
        except IntegrityError:
            user.pk = None
            return False
        return True
