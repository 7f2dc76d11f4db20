"""Clips, the files they use, and the job behaviour that moves a clip to a final state.

Every state change that two processes could race on is a conditional UPDATE ("claim"):
only the process whose UPDATE matched a row goes on. That is what keeps a clip from being
submitted twice, polled twice in one interval, or finished twice.
"""

from __future__ import annotations

import logging
import secrets
import tempfile
import uuid
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.db import IntegrityError, models, transaction
from django.db.models import F, Q
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from . import media
from .providers import ModelSpec, ProviderError, RemoteStatus, Submission, find_model, get_provider
from .providers.base import ImageInput

log = logging.getLogger(__name__)

# A submit that has not come back after this long was cut off (worker killed, machine
# restarted): whether the provider accepted it cannot be known.
SUBMIT_STALE_AFTER = timedelta(minutes=3)
# A finish (download, probe, frames) still claimed after this long died with its worker.
FINISH_STALE_AFTER = timedelta(minutes=12)
FINISH_MAX_ATTEMPTS = 3
# How long a queued clip waits for its on-commit task before a sweep sends it again.
QUEUE_GRACE = timedelta(seconds=30)
# Longest pause between two polls when a provider keeps failing.
MAX_BACKOFF_SECONDS = 300
# How long a provider's own result URLs (e.g. Pictory's last frame) are trusted after we
# received them. Undocumented; after this the studio's own published copy is sent instead.
REMOTE_URL_FRESH_FOR = timedelta(minutes=30)

# Form fields as a creator knows them, for error messages that name a field.
FIELD_LABELS = {
    "prompt": "Prompt",
    "model": "Model",
    "aspect_ratio": "Aspect ratio",
    "duration": "Duration",
    "resolution": "Resolution",
    "first_frame_upload": "First frame",
    "last_frame_upload": "Last frame",
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


class Asset(models.Model):
    """An image (or video) the studio holds for a creator: an upload, or a clip's last
    frame. Stored under an unguessable folder; `public_token` names it when published."""

    class Kind(models.TextChoices):
        IMAGE = "image", "Image"
        VIDEO = "video", "Video"

    class Source(models.TextChoices):
        UPLOAD = "upload", "Upload"
        LAST_FRAME = "last_frame", "Last frame of a clip"
        # The video of one of the creator's clips, published to be extended (same file).
        CLIP_VIDEO = "clip_video", "Video of a clip"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assets")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.IMAGE)
    source = models.CharField(max_length=20, choices=Source.choices, default=Source.UPLOAD)
    storage_key = models.CharField(max_length=32, default=_storage_folder, editable=False)
    file = models.FileField(upload_to=asset_upload_to, max_length=300)
    original_name = models.CharField(max_length=255, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    public_token = models.CharField(max_length=64, unique=True, default=_token, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.original_name or Path(self.file.name).name

    def get_absolute_url(self):
        return reverse("asset_file", args=[self.pk])

    @classmethod
    def create_image(cls, owner, checked: media.CheckedImage, original_name: str = "") -> Asset:
        """Keep a clean copy of an image that media.check_image accepted."""
        asset = cls(
            owner=owner,
            kind=cls.Kind.IMAGE,
            original_name=original_name[:255],
            width=checked.width,
            height=checked.height,
        )
        asset.file.save(f"image.{checked.extension}", ContentFile(checked.content), save=False)
        asset.save()
        return asset

    @classmethod
    def create_video(cls, owner, content, info: media.VideoInfo, original_name: str = "") -> Asset:
        """Keep an uploaded video (a file object) that media.probe could decode."""
        asset = cls(
            owner=owner,
            kind=cls.Kind.VIDEO,
            original_name=original_name[:255],
            width=info.width,
            height=info.height,
        )
        asset.file.save("video.mp4", File(content), save=False)
        asset.save()
        asset.video_info = info  # what the caller may show, without reading the file back
        return asset

    @classmethod
    def from_file(cls, owner, path: Path, kind: str, original_name: str = "") -> Asset:
        """Check a file a creator brought (an upload or a link's copy) and keep a clean copy:
        images re-encoded without metadata, videos as H.264 MP4. Raises media.MediaError."""
        if kind == cls.Kind.IMAGE:
            limit = settings.STUDIO_MAX_IMAGE_BYTES
            if path.stat().st_size > limit:  # before reading it all into memory
                raise media.MediaError(f"The image is larger than {limit / (1024 * 1024):g} MB.")
            return cls.create_image(owner, media.check_image(path.read_bytes()), original_name)
        info = media.check_video(path)
        if media.is_h264_mp4(path):
            with path.open("rb") as fh:
                return cls.create_video(owner, fh, info, original_name)
        with tempfile.TemporaryDirectory(prefix="video-") as tmp:
            converted = Path(tmp) / "video.mp4"
            media.to_h264_mp4(path, converted)
            with converted.open("rb") as fh:
                return cls.create_video(owner, fh, media.probe(converted), original_name)

    @classmethod
    def from_link(cls, owner, url: str, kind: str) -> Asset:
        """Fetch a pasted link once (links.fetch_link: public addresses only) and keep our own
        copy of what it pointed to. Raises links.LinkError or media.MediaError."""
        from . import links

        limit = settings.STUDIO_MAX_IMAGE_BYTES if kind == cls.Kind.IMAGE else settings.STUDIO_MAX_VIDEO_BYTES
        fetched = links.fetch_link(url, (kind,), limit)
        try:
            name = Path(fetched.final_url.split("?", 1)[0]).name or "link"
            return cls.from_file(owner, fetched.path, kind, original_name=name)
        finally:
            fetched.path.unlink(missing_ok=True)

    @property
    def aspect(self) -> float | None:
        return self.width / self.height if self.width and self.height else None

    @classmethod
    def for_clip_video(cls, clip: Clip) -> Asset:
        """The clip's video as an asset, so it can be published like an upload. It points at
        the clip's own file (no copy); one asset per clip video is enough."""
        existing = cls.objects.filter(
            owner=clip.owner, kind=cls.Kind.VIDEO, source=cls.Source.CLIP_VIDEO, file=clip.video.name
        ).first()
        if existing is not None:
            return existing
        asset = cls(
            owner=clip.owner,
            kind=cls.Kind.VIDEO,
            source=cls.Source.CLIP_VIDEO,
            original_name=f"clip-{clip.pk}.mp4",
            width=clip.video_width,
            height=clip.video_height,
        )
        asset.file.name = clip.video.name
        asset.save()
        return asset

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


class Clip(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        SUBMITTING = "submitting", "Queued"
        RUNNING = "running", "Generating"
        FINISHING = "finishing", "Generating"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    FINAL_STATES = (Status.READY, Status.FAILED)

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
    # A provider's objections per form field ({"prompt": ["..."]}), to show beside the
    # fields when the creator tries again.
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
        indexes = [models.Index(fields=["owner", "-created_at"])]

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
    def spec(self) -> ModelSpec | None:
        return find_model(f"{self.provider}:{self.model_key}")

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

    # --- Chains and takes ---------------------------------------------------------------
    # A chain is the path of parents. Several children of one clip are alternative takes of
    # the next step; the sequence a chain plays (and joins) runs from the root through the
    # chosen take of each step.

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

    # --- Retrying and deleting ----------------------------------------------------------

    def retry(self) -> bool:
        """Send a failed clip again with the same settings, as the same clip (its card shows
        it queued again). Claimed (failed → queued), so a double click sends it once."""
        now = timezone.now()
        changed = Clip.objects.filter(pk=self.pk, status=self.Status.FAILED).update(
            status=self.Status.QUEUED,
            error="",
            field_errors={},
            remote_id="",
            remote_result={},
            next_poll_at=now + QUEUE_GRACE,
            deadline_at=now + timedelta(minutes=settings.CLIP_DEADLINE_MINUTES),
            poll_failures=0,
            submit_attempts=0,
            submitting_since=None,
            submitted_at=None,
            finish_attempts=0,
            finish_claimed_at=None,
            finished_at=None,
            cost_actual=None,
            updated_at=now,
        )
        self.refresh_from_db()
        if changed:
            from . import jobs

            transaction.on_commit(lambda: jobs.enqueue_submit(self.pk))
        return bool(changed)

    def delete_with_files(self, with_takes: bool = False) -> int:
        """Delete this clip (and, with `with_takes`, every clip that continues it) and its
        files. Without, the takes that continued it become the roots of their own chains.
        A file another remaining clip still uses (a last frame it starts from, a video it
        extends) is kept. Returns how many clips were deleted."""
        doomed = [self] + (self.descendants() if with_takes else [])
        ids = {c.pk for c in doomed}
        names = [f.name for c in doomed for f in (c.video, c.thumbnail) if f]
        uses = [rel for rel in Asset._meta.related_objects if rel.related_model is Clip]
        candidates = Asset.objects.filter(
            Q(last_frame_of__in=ids) | Q(source=Asset.Source.CLIP_VIDEO, file__in=names)
        ).distinct()
        with transaction.atomic():
            doomed_assets = []
            for asset in candidates:
                still_used = any(
                    Clip.objects.filter(**{rel.field.name: asset}).exclude(pk__in=ids).exists()
                    for rel in uses
                )
                if still_used:
                    names = [n for n in names if n != asset.file.name]  # a clip extends this video
                else:
                    doomed_assets.append(asset)
                    if asset.source != Asset.Source.CLIP_VIDEO:
                        names.append(asset.file.name)
            Asset.objects.filter(pk__in=[a.pk for a in doomed_assets]).delete()
            Clip.objects.filter(pk__in=ids).delete()
            storage = self.video.storage

            def remove_files():
                for name in names:
                    try:
                        storage.delete(name)
                        path = media.local_path(storage, name)
                        if path is not None:
                            path.parent.rmdir()  # its folder, once empty (a bucket has none)
                    except OSError:
                        pass
                    except Exception:  # a file left behind must not undo the deletion
                        log.warning("could not delete the stored file %s", name, exc_info=True)

            transaction.on_commit(remove_files)
        return len(ids)

    # --- Creating -----------------------------------------------------------------------

    @classmethod
    def create_for(cls, owner, spec: ModelSpec, **fields) -> Clip:
        """Save a new queued clip and send it to the provider once the transaction commits."""
        now = timezone.now()
        references = fields.pop("reference_images", None) or []
        # One transaction, so the submit task never sees the clip without its references.
        with transaction.atomic():
            clip = cls.objects.create(
                owner=owner,
                provider=spec.provider,
                model_key=spec.key,
                model_label=spec.label,
                cost_estimate=spec.estimate_cost(
                    fields.get("duration"), fields.get("resolution") or "", fields.get("generate_audio")
                ),
                cost_unit=spec.cost_unit,
                next_poll_at=now + QUEUE_GRACE,
                deadline_at=now + timedelta(minutes=settings.CLIP_DEADLINE_MINUTES),
                **fields,
            )
            if references:
                clip.reference_images.set(references)
            from . import jobs

            transaction.on_commit(lambda: jobs.enqueue_submit(clip.pk))
        return clip

    # --- Submitting ---------------------------------------------------------------------

    def _claim(self, expected: dict, **changes) -> bool:
        """Apply `changes` only if the row still matches `expected`; True if it did."""
        updated = Clip.objects.filter(pk=self.pk, **expected).update(updated_at=timezone.now(), **changes)
        if updated:
            self.refresh_from_db()
        return bool(updated)

    def build_submission(self) -> Submission:
        spec = self.spec
        if spec is None:
            raise ProviderError(f"The model “{self.model_label}” is no longer available.", permanent=True)
        return Submission(
            model=spec,
            prompt=self.prompt,
            aspect_ratio=self.aspect_ratio,
            duration=self.duration,
            resolution=self.resolution,
            first_frame=self._first_frame_input(),
            last_frame=self.end_frame.image_input() if self.end_frame else None,
            generate_audio=self.generate_audio,
            seed=self.seed,
            reference_images=[a.image_input() for a in self.reference_images.order_by("pk")],
            extend_video=self.extend_video.image_input() if self.extend_video else None,
            webhook_url=self.webhook_url(),
        )

    def _first_frame_input(self) -> ImageInput | None:
        if self.first_frame is None:
            return None
        image = self.first_frame.image_input()
        # Continuing a clip: the provider's own last-frame URL, while fresh, is the exact
        # picture and needs nothing published; our copy at its public URL is the fallback.
        parent = self.parent
        if parent is not None and parent.last_frame_id == self.first_frame_id:
            image.remote_url = parent.fresh_remote_last_frame_url()
        return image

    def webhook_url(self) -> str:
        """Where the provider may call to say the job moved on: unguessable per clip, and
        only when the studio has a public address and the provider has a receiver."""
        if not settings.PUBLIC_BASE_URL:
            return ""
        try:
            path = reverse(f"{self.provider}_webhook", args=[self.webhook_token])
        except NoReverseMatch:
            return ""
        return settings.PUBLIC_BASE_URL + path

    def submit(self) -> None:
        """Send the clip to its provider, exactly once.

        The claim (queued → submitting) makes a second run of this task a no-op. If the
        process dies after the provider answered but before we saved, the clip stays in
        `submitting`, and recovery fails it rather than risk a second paid job."""
        now = timezone.now()
        if not self._claim(
            {"status": self.Status.QUEUED},
            status=self.Status.SUBMITTING,
            submitting_since=now,
            submit_attempts=F("submit_attempts") + 1,
        ):
            return
        try:
            submission = self.build_submission()
            provider = get_provider(self.provider)
            remote_id = provider.submit(submission)
        except ProviderError as exc:
            self._after_submit_error(exc)
            return
        except LookupError as exc:
            self.fail(str(exc))
            return
        now = timezone.now()
        self._claim(
            {"status": self.Status.SUBMITTING},
            status=self.Status.RUNNING,
            remote_id=remote_id,
            submitted_at=now,
            next_poll_at=now + timedelta(seconds=provider.poll_interval),
            poll_failures=0,
        )
        log.info("clip %s submitted to %s as %s", self.pk, self.provider, remote_id)

    def _after_submit_error(self, exc: ProviderError) -> None:
        if exc.permanent:
            self.fail(exc.message, field_errors=exc.field_errors)
        elif exc.outcome_unknown:
            self.fail(self.unknown_outcome_message())
        else:
            # The provider answered and took nothing (429, 5xx): safe to send again later.
            delay = exc.retry_after or _backoff(self.submit_attempts)
            self._claim(
                {"status": self.Status.SUBMITTING},
                status=self.Status.QUEUED,
                next_poll_at=timezone.now() + timedelta(seconds=delay),
                error=f"Waiting to retry: {exc.message}",
            )
            log.info("clip %s: submit will be retried in %.0f s (%s)", self.pk, delay, exc.message)

    def unknown_outcome_message(self) -> str:
        provider = self.provider_label()
        return (
            f"We lost contact with {provider} while sending this clip, so we cannot tell "
            f"whether it was accepted. Check your {provider} account before trying again, "
            "so you are not charged twice."
        )

    def provider_label(self) -> str:
        try:
            return get_provider(self.provider).label
        except LookupError:
            return self.provider

    # --- Polling ------------------------------------------------------------------------

    def poll(self) -> None:
        """Ask the provider once how the job is going, if this clip is due and nobody else
        is polling it right now."""
        now = timezone.now()
        if self.status != self.Status.RUNNING or not self.next_poll_at or self.next_poll_at > now:
            return
        if self.deadline_at and now >= self.deadline_at:
            self.fail_if(self.Status.RUNNING, self.timeout_message())
            return
        try:
            provider = get_provider(self.provider)
        except LookupError as exc:
            self.fail_if(self.Status.RUNNING, str(exc))
            return
        # Claim this poll: move next_poll_at forward only if nobody moved it first.
        if not self._claim(
            {"status": self.Status.RUNNING, "next_poll_at": self.next_poll_at},
            next_poll_at=now + timedelta(seconds=provider.poll_interval),
        ):
            return
        try:
            remote = provider.poll(self.remote_id)
        except ProviderError as exc:
            if exc.permanent:
                self.fail_if(self.Status.RUNNING, exc.message)
            else:
                delay = max(exc.retry_after or 0, _backoff(self.poll_failures + 1, provider.poll_interval))
                self._claim(
                    {"status": self.Status.RUNNING},
                    poll_failures=F("poll_failures") + 1,
                    next_poll_at=timezone.now() + timedelta(seconds=delay),
                )
                log.info("clip %s: poll failed (%s), next in %.0f s", self.pk, exc.message, delay)
            return
        self.apply_remote_status(remote)

    def apply_remote_status(self, remote: RemoteStatus) -> None:
        if remote.state == RemoteStatus.FAILED:
            self.fail_if(self.Status.RUNNING, remote.error or "The provider could not make this clip.")
        elif remote.state == RemoteStatus.SUCCEEDED:
            result = {
                "video_url": remote.video_url,
                "thumbnail_url": remote.thumbnail_url,
                "last_frame_url": remote.last_frame_url,
                "received_at": timezone.now().isoformat(),
            }
            changes = {"status": self.Status.FINISHING, "remote_result": result, "poll_failures": 0}
            if remote.cost is not None:
                changes["cost_actual"] = remote.cost
                if remote.cost_unit:
                    changes["cost_unit"] = remote.cost_unit
            if self._claim({"status": self.Status.RUNNING}, **changes):
                from . import jobs

                transaction.on_commit(lambda: jobs.enqueue_finish(self.pk))
        else:
            self._claim({"status": self.Status.RUNNING}, poll_failures=0)

    def make_due(self) -> bool:
        """Poll this clip as soon as possible (a webhook said something happened). True when
        that moved the next poll earlier; a clip already due is left as it is."""
        now = timezone.now()
        return bool(
            Clip.objects.filter(pk=self.pk, status=self.Status.RUNNING, next_poll_at__gt=now).update(
                next_poll_at=now
            )
        )

    @classmethod
    def wake_by_webhook(cls, provider: str, token: str, delivery_key: str = "") -> bool | None:
        """A provider's webhook call, taken only as a hint: find the clip by the unguessable
        token in the URL and make it due. The call's body is never trusted; the next poll
        fetches the truth. A delivery already seen (same `delivery_key`, the provider's
        idempotency key) changes nothing. None when no clip has this token; else whether it
        was made due."""
        clip = cls.objects.filter(provider=provider, webhook_token=token).first() if token else None
        if clip is None:
            return None
        if delivery_key and not WebhookDelivery.first_time(provider, delivery_key):
            return False
        woke = clip.make_due()
        if woke:
            from . import jobs

            transaction.on_commit(jobs.enqueue_sweep)
        return woke

    def timeout_message(self) -> str:
        minutes = int(settings.CLIP_DEADLINE_MINUTES)
        return f"Timed out: {self.provider_label()} did not finish this clip within {minutes} minutes."

    # --- Finishing ----------------------------------------------------------------------

    def finish(self) -> None:
        """Copy the result into our storage, then derive what the provider did not give."""
        attempts = self.finish_attempts
        if not self._claim(
            {"status": self.Status.FINISHING, "finish_attempts": attempts},
            finish_attempts=attempts + 1,
            finish_claimed_at=timezone.now(),
        ):
            return
        try:
            self._copy_results()
        except (ProviderError, media.MediaError) as exc:
            # An unreadable video is fetched again: a transfer damaged on the way looks the
            # same as a broken file, and a second download costs nothing.
            permanent = isinstance(exc, ProviderError) and exc.permanent
            if permanent or self.finish_attempts >= FINISH_MAX_ATTEMPTS:
                message = exc.message if isinstance(exc, ProviderError) else str(exc)
                self.fail_if(
                    self.Status.FINISHING,
                    f"The clip was made but could not be copied into the studio: {message}",
                )
            else:
                # Let the next sweep try again soon.
                self._claim({"status": self.Status.FINISHING}, finish_claimed_at=None)
            log.warning("clip %s: finishing failed: %s", self.pk, exc)

    def _copy_results(self) -> None:
        provider = get_provider(self.provider)
        result = self.remote_result
        with tempfile.TemporaryDirectory(prefix="clip-") as tmp:
            tmp = Path(tmp)
            video_path = tmp / "video.mp4"
            provider.download(result["video_url"], video_path)
            info = media.probe(video_path)

            last = None
            if result.get("last_frame_url"):
                try:
                    provider.download(result["last_frame_url"], tmp / "last_frame")
                    last = media.load_image(tmp / "last_frame")
                except (ProviderError, media.MediaError) as exc:
                    log.info("clip %s: provider last frame unusable (%s); deriving it", self.pk, exc)
            if last is None:
                last = media.last_frame(video_path)

            thumb = None
            if result.get("thumbnail_url"):
                try:
                    provider.download(result["thumbnail_url"], tmp / "thumbnail")
                    thumb = media.load_image(tmp / "thumbnail")
                except (ProviderError, media.MediaError) as exc:
                    log.info("clip %s: provider thumbnail unusable (%s); deriving it", self.pk, exc)
            if thumb is None:
                thumb = media.frame_at(video_path, min(1.0, info.duration / 2))

            with transaction.atomic():
                clip = Clip.objects.select_for_update().get(pk=self.pk)
                if clip.status != self.Status.FINISHING:
                    return
                frame_asset = Asset(
                    owner=clip.owner,
                    source=Asset.Source.LAST_FRAME,
                    width=last.width,
                    height=last.height,
                    original_name=f"clip-{clip.pk}-last-frame.png",
                )
                frame_asset.file.save("last-frame.png", ContentFile(media.png_bytes(last)), save=False)
                frame_asset.save()
                with video_path.open("rb") as fh:
                    clip.video.save("video.mp4", File(fh), save=False)
                clip.thumbnail.save("thumbnail.jpg", ContentFile(media.thumbnail_jpeg(thumb)), save=False)
                clip.last_frame = frame_asset
                clip.video_width, clip.video_height = info.width, info.height
                clip.video_duration = info.duration
                clip.status = self.Status.READY
                clip.error = ""
                clip.finished_at = timezone.now()
                clip.save()
        self.refresh_from_db()
        log.info(
            "clip %s ready (%sx%s, %.2f s)",
            self.pk,
            self.video_width,
            self.video_height,
            self.video_duration or 0,
        )

    # --- Failing ------------------------------------------------------------------------

    def fail(self, message: str, field_errors: dict | None = None) -> None:
        self.fail_if(None, message, field_errors)

    def fail_if(self, expected_status, message: str, field_errors: dict | None = None) -> bool:
        """Mark failed (only from `expected_status` when given, never from a final state)."""
        expected = {"status": expected_status} if expected_status else {}
        if field_errors:
            details = "; ".join(
                f"{FIELD_LABELS[name]}: {' '.join(msgs)}" if name in FIELD_LABELS else " ".join(msgs)
                for name, msgs in field_errors.items()
            )
            message = f"{message} ({details})"
        changed = (
            Clip.objects.filter(pk=self.pk, **expected)
            .exclude(status__in=self.FINAL_STATES)
            .update(
                status=self.Status.FAILED,
                error=message,
                finished_at=timezone.now(),
                next_poll_at=None,
                updated_at=timezone.now(),
                field_errors=field_errors or {},
            )
        )
        self.refresh_from_db()
        if changed:
            log.info("clip %s failed: %s", self.pk, message)
        return bool(changed)


def _backoff(failures: int, base: float = 5.0) -> float:
    """Seconds before the next try after `failures` transient errors in a row."""
    return min(MAX_BACKOFF_SECONDS, base * (2 ** max(0, failures - 1)))


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


def export_upload_to(export: ChainExport, filename: str) -> str:
    return f"exports/{export.storage_key}/{Path(filename).name}"


class ChainExport(models.Model):
    """One MP4 of a chain's sequence, joined in the background (jobs.export_chain).

    Claimed like a clip (queued → running by conditional UPDATE), so running the task twice
    joins once; a join whose worker died is handed out again by the sweep."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Waiting to start"
        RUNNING = "running", "Joining"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    STALE_AFTER = timedelta(minutes=10)
    MAX_ATTEMPTS = 3

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

    @classmethod
    def start(cls, owner, clips: list[Clip]) -> ChainExport:
        """The export of this exact sequence: one already waiting, joining or ready is
        reused (a second click starts nothing); else a new one, enqueued after commit."""
        existing = (
            cls.objects.filter(owner=owner, sequence_key=cls.key_for(clips))
            .exclude(status=cls.Status.FAILED)
            .first()
        )
        if existing is not None and (existing.status != cls.Status.READY or existing.file_exists()):
            return existing
        export = cls.objects.create(
            owner=owner, clip=clips[-1], clip_ids=[c.pk for c in clips], sequence_key=cls.key_for(clips)
        )
        from . import jobs

        transaction.on_commit(lambda: jobs.enqueue_export(export.pk))
        return export

    def file_exists(self) -> bool:
        return bool(self.file) and self.file.storage.exists(self.file.name)

    def run(self) -> None:
        """Join the clips into one MP4, once (claimed), reporting progress as it goes."""
        now = timezone.now()
        claimed = ChainExport.objects.filter(pk=self.pk, status=self.Status.QUEUED).update(
            status=self.Status.RUNNING, attempts=F("attempts") + 1, claimed_at=now, progress=0, updated_at=now
        )
        self.refresh_from_db()
        if not claimed:
            return
        mine = {"pk": self.pk, "status": self.Status.RUNNING, "claimed_at": self.claimed_at}
        try:
            by_pk = {c.pk: c for c in Clip.objects.filter(owner=self.owner, pk__in=self.clip_ids)}
            clips = [by_pk.get(pk) for pk in self.clip_ids]
            missing = [
                pk for pk, c in zip(self.clip_ids, clips) if c is None or not c.is_ready or not c.video
            ]
            if missing:
                raise media.MediaError(
                    f"Clip #{missing[0]} is not ready (or was deleted), so the chain cannot be joined."
                )

            def report(fraction: float) -> None:
                ChainExport.objects.filter(**mine).update(progress=min(99, int(fraction * 100)))

            with tempfile.TemporaryDirectory(prefix="chain-") as tmp, ExitStack() as copies:
                # Each video as a file PyAV can open: itself on a local disk, else a
                # temporary copy from the storage (a bucket), removed after the join.
                paths = [copies.enter_context(media.local_copy(clip.video)) for clip in clips]
                parts = [media.JoinPart(paths[0])]
                for previous, clip, path in zip(clips, clips[1:], paths[1:]):
                    parts.append(media.JoinPart(path, drop_seam=clip.continues_seamlessly(previous)))
                out = Path(tmp) / "chain.mp4"
                result = media.join_videos(parts, out, progress=report)
                with transaction.atomic():
                    export = ChainExport.objects.select_for_update().filter(**mine).first()
                    if export is None:
                        return  # taken over by a later attempt
                    with out.open("rb") as fh:
                        export.file.save("chain.mp4", File(fh), save=False)
                    export.status = self.Status.READY
                    export.progress = 100
                    export.method, export.method_reason = result.method, result.reason
                    export.duration, export.dropped_frames = result.duration, result.dropped
                    export.error = ""
                    export.finished_at = timezone.now()
                    export.save()
            log.info("chain export %s ready (%s, %.2f s)", self.pk, result.method, result.duration)
        except media.MediaError as exc:
            self._fail(mine, str(exc))
        except Exception:
            log.exception("chain export %s failed", self.pk)
            self._fail(mine, "The chain could not be joined because of an error in the studio.")
        finally:
            self.refresh_from_db()

    def _fail(self, mine: dict, message: str) -> None:
        ChainExport.objects.filter(**mine).update(
            status=self.Status.FAILED, error=message, finished_at=timezone.now(), updated_at=timezone.now()
        )

    @classmethod
    def recover_stale(cls) -> list[int]:
        """Exports to hand out again: queued ones whose task was lost, and joins whose worker
        died (failed after MAX_ATTEMPTS). Returns the pks to enqueue."""
        now = timezone.now()
        again = []
        for export in cls.objects.filter(status=cls.Status.QUEUED, updated_at__lt=now - QUEUE_GRACE):
            if cls.objects.filter(
                pk=export.pk, status=cls.Status.QUEUED, updated_at=export.updated_at
            ).update(updated_at=now):
                again.append(export.pk)
        for export in cls.objects.filter(status=cls.Status.RUNNING, claimed_at__lt=now - cls.STALE_AFTER):
            expected = {"pk": export.pk, "status": cls.Status.RUNNING, "claimed_at": export.claimed_at}
            if export.attempts >= cls.MAX_ATTEMPTS:
                cls.objects.filter(**expected).update(
                    status=cls.Status.FAILED,
                    finished_at=now,
                    updated_at=now,
                    error="The join was interrupted several times; try again.",
                )
            elif cls.objects.filter(**expected).update(status=cls.Status.QUEUED, updated_at=now):
                again.append(export.pk)
        return again
