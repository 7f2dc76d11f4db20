"""Background work: everything that calls a provider or decodes video.

Starting a clip (shared by Generate and Generate again), submit, poll, finish, join,
preparing a brought video, recovery and clean-up. Tasks (django-q2) take primary keys only,
are enqueued after commit, and are safe to run twice: every state change is a claim on the
model (one conditional UPDATE), so a second run finds nothing left to do.
"""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.db import close_old_connections, transaction
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone
from django_q.tasks import async_task

from . import catalogue, media
from .models import Asset, ChainExport, Clip, Lease, WebhookDelivery, sequence_cuts
from .providers import ModelSpec, ProviderError, RemoteStatus, Submission, enabled_providers, get_provider
from .providers.base import ImageInput

log = logging.getLogger(__name__)

SWEEP_LEASE = "poll-sweep"
# A submit that has not come back after this long was cut off (worker killed, machine
# restarted): whether the provider accepted it cannot be known.
SUBMIT_STALE_AFTER = timedelta(minutes=3)
# A finish (download, probe, frames) still claimed after this long died with its worker.
FINISH_STALE_AFTER = timedelta(minutes=12)
FINISH_MAX_ATTEMPTS = 3
# How long a queued clip (or export, or brought video) waits for its on-commit task before a
# sweep sends it again.
QUEUE_GRACE = timedelta(seconds=30)
# Longest pause between two polls when a provider keeps failing.
MAX_BACKOFF_SECONDS = 300
# A join or a video preparation still claimed after this long died with its worker.
EXPORT_STALE_AFTER = timedelta(minutes=10)
EXPORT_MAX_ATTEMPTS = 3
PREPARE_STALE_AFTER = timedelta(minutes=10)


# --- Enqueueing (always after the transaction that made the work commits) -----------------


def enqueue_submit(pk: int) -> None:
    async_task("studio.jobs.submit_clip", pk, task_name=f"submit clip {pk}", group="clips")


def enqueue_finish(pk: int) -> None:
    async_task("studio.jobs.finish_clip", pk, task_name=f"finish clip {pk}", group="clips")


def enqueue_sweep() -> None:
    async_task("studio.jobs.poll_due_clips", task_name="poll due clips", group="sweeps")


def enqueue_export(pk: int) -> None:
    async_task("studio.jobs.export_chain", pk, task_name=f"join chain export {pk}", group="exports")


def enqueue_prepare(pk: int) -> None:
    async_task("studio.jobs.prepare_video", pk, task_name=f"prepare video {pk}", group="inputs")


def _deadline() -> timedelta:
    return timedelta(minutes=settings.CLIP_DEADLINE_MINUTES)


def _backoff(failures: int, base: float = 5.0) -> float:
    """Seconds before the next try after `failures` transient errors in a row."""
    return min(MAX_BACKOFF_SECONDS, base * (2 ** max(0, failures - 1)))


def provider_label(name: str) -> str:
    try:
        return get_provider(name).label
    except LookupError:
        return name


# --- Starting a clip ------------------------------------------------------------------------


def start_clip(owner, spec: ModelSpec, **fields) -> Clip:
    """Save a new queued clip (Generate, Generate again) and send it to the provider once
    the transaction commits. `extend_video` may be one of the creator's clips: its video is
    extended, and the new clip continues it."""
    now = timezone.now()
    references = fields.pop("reference_images", None) or []
    extend = fields.get("extend_video")
    # One transaction, so the submit task never sees the clip without its references.
    with transaction.atomic():
        if isinstance(extend, Clip):
            fields["parent"] = fields.get("parent") or extend
            fields["extend_video"] = clip_video_asset(extend)
        clip = Clip.objects.create(
            owner=owner,
            provider=spec.provider,
            model_key=spec.key,
            model_label=spec.label,
            cost_estimate=spec.estimate_cost(
                fields.get("duration"), fields.get("resolution") or "", fields.get("generate_audio")
            ),
            cost_unit=spec.cost_unit,
            next_poll_at=now + QUEUE_GRACE,
            deadline_at=now + _deadline(),
            **fields,
        )
        if references:
            clip.reference_images.set(references)
        transaction.on_commit(lambda: enqueue_submit(clip.pk))
    return clip


def clip_video_asset(clip: Clip) -> Asset:
    """The clip's video as an asset, so it can be published like an upload. It points at
    the clip's own file (no copy); one asset per clip video is enough."""
    existing = Asset.objects.filter(
        owner=clip.owner, kind=Asset.Kind.VIDEO, source=Asset.Source.CLIP_VIDEO, file=clip.video.name
    ).first()
    if existing is not None:
        return existing
    asset = Asset(
        owner=clip.owner,
        kind=Asset.Kind.VIDEO,
        source=Asset.Source.CLIP_VIDEO,
        original_name=f"clip-{clip.pk}.mp4",
        width=clip.video_width,
        height=clip.video_height,
        duration=clip.video_duration,
    )
    asset.file.name = clip.video.name
    asset.save()
    return asset


def cancel_clip(clip: Clip) -> tuple[bool, str]:
    """Stop a clip if that costs nothing (not sent yet) or its provider can stop it.
    Returns whether it was cancelled, and what to tell the creator. Safe to run twice, and
    against the worker: each step is a claim, so a clip sent (or finished) a moment before
    is left to go on, never cancelled after the fact."""
    if clip.status == Clip.Status.QUEUED:
        if clip.cancel(Clip.Status.QUEUED, "Cancelled before it was sent: nothing was spent."):
            log.info("clip %s cancelled before it was sent", clip.pk)
            return True, f"Clip #{clip.pk} cancelled before it was sent: nothing was spent."
        clip.refresh_from_db()
    try:
        provider = get_provider(clip.provider)
    except LookupError:
        provider = None
    provider_name = (provider.vendor or provider.label) if provider else provider_label(clip.provider)
    if clip.status == Clip.Status.SUBMITTING:
        return (
            False,
            f"Clip #{clip.pk} is being sent to {provider_name} right now, so it can no longer be cancelled for free.",
        )
    if clip.status != Clip.Status.RUNNING:
        return False, f"Clip #{clip.pk} is {clip.status_label.lower()}: there is nothing left to cancel."
    if provider is None:
        return (
            False,
            f"{provider_name} is not connected, so the studio cannot ask it to stop clip #{clip.pk}.",
        )
    if not provider.can_cancel:
        return False, cannot_cancel_message(provider_name)
    try:
        provider.cancel(clip.remote_id)
    except ProviderError as exc:
        return False, f"{provider_name} did not stop clip #{clip.pk}: {exc.message}"
    if clip.cancel(Clip.Status.RUNNING, f"Cancelled at {provider_name} while it was being made."):
        log.info("clip %s cancelled at %s", clip.pk, clip.provider)
        return True, f"Clip #{clip.pk} cancelled at {provider_name}."
    return False, f"Clip #{clip.pk} finished before it could be cancelled."


def cannot_cancel_message(provider_name: str) -> str:
    return (
        f"{provider_name} has it already and offers no way to stop a clip once it has started: "
        "it will finish, and be billed."
    )


def retry_clip(clip: Clip) -> bool:
    """Send a failed clip again with the same settings, as the same clip."""
    if not clip.reset_for_retry(QUEUE_GRACE, _deadline()):
        return False
    transaction.on_commit(lambda: enqueue_submit(clip.pk))
    return True


# --- Submitting -----------------------------------------------------------------------------


def build_submission(clip: Clip) -> Submission:
    spec = catalogue.find_model(clip.model_ref)
    if spec is None:
        raise ProviderError(f"The model “{clip.model_label}” is no longer available.", permanent=True)
    return Submission(
        model=spec,
        prompt=clip.prompt,
        aspect_ratio=clip.aspect_ratio,
        duration=clip.duration,
        resolution=clip.resolution,
        first_frame=_first_frame_input(clip),
        last_frame=clip.end_frame.image_input() if clip.end_frame else None,
        generate_audio=clip.generate_audio,
        seed=clip.seed,
        reference_images=[a.image_input() for a in clip.reference_images.order_by("pk")],
        extend_video=clip.extend_video.image_input() if clip.extend_video else None,
        webhook_url=webhook_url(clip),
    )


def _first_frame_input(clip: Clip) -> ImageInput | None:
    if clip.first_frame is None:
        return None
    image = clip.first_frame.image_input()
    # Continuing a clip: the provider's own last-frame URL, while fresh, is the exact
    # picture and needs nothing published; our copy at its public URL is the fallback.
    parent = clip.parent
    if parent is not None and parent.last_frame_id == clip.first_frame_id:
        image.remote_url = parent.fresh_remote_last_frame_url()
    return image


def webhook_url(clip: Clip) -> str:
    """Where the provider may call to say the job moved on: unguessable per clip, and only
    when the studio has a public address."""
    if not settings.PUBLIC_BASE_URL:
        return ""
    return settings.PUBLIC_BASE_URL + reverse("provider_webhook", args=[clip.provider, clip.webhook_token])


def submit_clip(pk: int) -> None:
    """Send the clip to its provider, exactly once.

    The claim (queued → submitting) makes a second run of this task a no-op. If the process
    dies after the provider answered but before we saved, the clip stays in `submitting`,
    and recovery fails it rather than risk a second paid job."""
    clip = Clip.objects.filter(pk=pk).first()
    if clip is None:
        return
    if not clip.claim(
        {"status": Clip.Status.QUEUED},
        status=Clip.Status.SUBMITTING,
        submitting_since=timezone.now(),
        submit_attempts=F("submit_attempts") + 1,
    ):
        return
    try:
        provider = get_provider(clip.provider)
        remote_id = provider.submit(build_submission(clip))
    except ProviderError as exc:
        _after_submit_error(clip, exc)
        return
    except LookupError as exc:
        _fail(clip, str(exc))
        return
    now = timezone.now()
    clip.claim(
        {"status": Clip.Status.SUBMITTING},
        status=Clip.Status.RUNNING,
        remote_id=remote_id,
        submitted_at=now,
        next_poll_at=now + timedelta(seconds=provider.poll_interval),
        poll_failures=0,
    )
    log.info("clip %s submitted to %s as %s", clip.pk, clip.provider, remote_id)
    # Start polling now rather than at the scheduler's next wake-up (~30-60 s away).
    enqueue_sweep()


def _after_submit_error(clip: Clip, exc: ProviderError) -> None:
    if exc.permanent:
        _fail(clip, exc.message, field_errors=exc.field_errors)
    elif exc.outcome_unknown:
        _fail(clip, unknown_outcome_message(clip))
    else:
        # The provider answered and took nothing (429, 5xx): safe to send again later.
        delay = exc.retry_after or _backoff(clip.submit_attempts)
        clip.claim(
            {"status": Clip.Status.SUBMITTING},
            status=Clip.Status.QUEUED,
            next_poll_at=timezone.now() + timedelta(seconds=delay),
            error=f"Waiting to retry: {exc.message}",
        )
        log.info("clip %s: submit will be retried in %.0f s (%s)", clip.pk, delay, exc.message)


def _fail(clip: Clip, message: str, field_errors: dict | None = None, expected_status: str | None = None):
    if clip.fail(message, field_errors, expected_status):
        log.info("clip %s failed: %s", clip.pk, clip.error)
        return True
    return False


def unknown_outcome_message(clip: Clip) -> str:
    provider = provider_label(clip.provider)
    return (
        f"We lost contact with {provider} while sending this clip, so we cannot tell whether it "
        f"was accepted. Check your {provider} account before trying again, so you are not "
        "charged twice."
    )


def timeout_message(clip: Clip) -> str:
    minutes = int(settings.CLIP_DEADLINE_MINUTES)
    return f"Timed out: {provider_label(clip.provider)} did not finish this clip within {minutes} minutes."


# --- Polling --------------------------------------------------------------------------------


def poll_clip(clip: Clip) -> None:
    """Ask the provider once how the job is going, if this clip is due and nobody else is
    polling it right now."""
    now = timezone.now()
    if clip.status != Clip.Status.RUNNING or not clip.next_poll_at or clip.next_poll_at > now:
        return
    if clip.deadline_at and now >= clip.deadline_at:
        _fail(clip, timeout_message(clip), expected_status=Clip.Status.RUNNING)
        return
    try:
        provider = get_provider(clip.provider)
    except LookupError as exc:
        _fail(clip, str(exc), expected_status=Clip.Status.RUNNING)
        return
    # Claim this poll: move next_poll_at forward only if nobody moved it first.
    if not clip.claim(
        {"status": Clip.Status.RUNNING, "next_poll_at": clip.next_poll_at},
        next_poll_at=now + timedelta(seconds=provider.poll_interval),
    ):
        return
    try:
        remote = provider.poll(clip.remote_id)
    except ProviderError as exc:
        if exc.permanent:
            _fail(clip, exc.message, expected_status=Clip.Status.RUNNING)
        else:
            delay = max(exc.retry_after or 0, _backoff(clip.poll_failures + 1, provider.poll_interval))
            clip.claim(
                {"status": Clip.Status.RUNNING},
                poll_failures=F("poll_failures") + 1,
                next_poll_at=timezone.now() + timedelta(seconds=delay),
            )
            log.info("clip %s: poll failed (%s), next in %.0f s", clip.pk, exc.message, delay)
        return
    apply_remote_status(clip, remote)


def apply_remote_status(clip: Clip, remote: RemoteStatus) -> None:
    if remote.state == RemoteStatus.FAILED:
        _fail(
            clip,
            remote.error or "The provider could not make this clip.",
            expected_status=Clip.Status.RUNNING,
        )
    elif remote.state == RemoteStatus.SUCCEEDED:
        result = {
            "video_url": remote.video_url,
            "thumbnail_url": remote.thumbnail_url,
            "last_frame_url": remote.last_frame_url,
            "received_at": timezone.now().isoformat(),
        }
        changes = {"status": Clip.Status.FINISHING, "remote_result": result, "poll_failures": 0}
        if remote.cost is not None:
            changes["cost_actual"] = remote.cost
            if remote.cost_unit:
                changes["cost_unit"] = remote.cost_unit
        if clip.claim({"status": Clip.Status.RUNNING}, **changes):
            transaction.on_commit(lambda: enqueue_finish(clip.pk))
    else:
        clip.claim({"status": Clip.Status.RUNNING}, poll_failures=0)


def poll_due_once() -> int:
    """Poll every running clip that is due; return how many were polled."""
    due = Clip.objects.filter(status=Clip.Status.RUNNING, next_poll_at__lte=timezone.now())
    count = 0
    for clip in due.order_by("next_poll_at")[:200]:
        poll_clip(clip)
        count += 1
    return count


def _active_clips() -> bool:
    return Clip.objects.unfinished().exists()


def poll_due_clips(seconds: float | None = None) -> str:
    """The sweep: for about POLL_SWEEP_SECONDS, poll due clips and recover stale work.

    Scheduled every minute and started after each submission. One sweep runs at a time
    (a lease), so sweeps do not pile up on the workers; each poll is claimed anyway, so an
    overlapping sweep would be harmless."""
    seconds = settings.POLL_SWEEP_SECONDS if seconds is None else seconds
    holder = uuid.uuid4().hex
    deadline = time.monotonic() + seconds
    lease_seconds = seconds + 60
    polled = 0
    while True:
        if not Lease.acquire(SWEEP_LEASE, holder, lease_seconds):
            return f"another sweep is running; polled {polled}"
        try:
            while True:
                recover_stale_clips()
                polled += poll_due_once()
                if not _active_clips() or time.monotonic() >= deadline:
                    break
                Lease.acquire(SWEEP_LEASE, holder, lease_seconds)
                time.sleep(0.5)
        finally:
            Lease.release(SWEEP_LEASE, holder)
        # A clip submitted while we were letting go may have found the lease taken.
        if time.monotonic() >= deadline or not _active_clips():
            break
    close_old_connections()
    return f"polled {polled}"


def wake_by_webhook(provider: str, token: str, delivery_key: str = "") -> bool | None:
    """A provider's webhook call, taken only as a hint: find the clip by the unguessable
    token in the URL and make it due. The call's body is never trusted; the next poll
    fetches the truth. A delivery already seen (same `delivery_key`, the provider's
    idempotency key) changes nothing. None when no clip has this token; else whether it was
    made due."""
    clip = Clip.objects.filter(provider=provider, webhook_token=token).first() if token else None
    if clip is None:
        return None
    if delivery_key and not WebhookDelivery.first_time(provider, delivery_key):
        return False
    woke = clip.make_due()
    if woke:
        transaction.on_commit(enqueue_sweep)
    return woke


# --- Finishing ------------------------------------------------------------------------------


def finish_clip(pk: int) -> None:
    """Copy the result into our storage, then derive what the provider did not give."""
    clip = Clip.objects.filter(pk=pk).first()
    if clip is None:
        return
    attempts = clip.finish_attempts
    if not clip.claim(
        {"status": Clip.Status.FINISHING, "finish_attempts": attempts},
        finish_attempts=attempts + 1,
        finish_claimed_at=timezone.now(),
    ):
        return
    try:
        _copy_results(clip)
    except (ProviderError, media.MediaError) as exc:
        # An unreadable video is fetched again: a transfer damaged on the way looks the
        # same as a broken file, and a second download costs nothing.
        permanent = isinstance(exc, ProviderError) and exc.permanent
        if permanent or clip.finish_attempts >= FINISH_MAX_ATTEMPTS:
            message = exc.message if isinstance(exc, ProviderError) else str(exc)
            _fail(
                clip,
                f"The clip was made but could not be copied into the studio: {message}",
                expected_status=Clip.Status.FINISHING,
            )
        else:
            # Let the next sweep try again soon.
            clip.claim({"status": Clip.Status.FINISHING}, finish_claimed_at=None)
        log.warning("clip %s: finishing failed: %s", clip.pk, exc)


def _copy_results(clip: Clip) -> None:
    provider = get_provider(clip.provider)
    result = clip.remote_result
    with tempfile.TemporaryDirectory(prefix="clip-") as tmp:
        tmp = Path(tmp)
        video_path = tmp / "video.mp4"
        provider.download(result["video_url"], video_path)
        info = media.probe(video_path)
        last = _provider_image(clip, provider, result.get("last_frame_url"), tmp / "last_frame")
        if last is None:
            last = media.last_frame(video_path)
        thumb = _provider_image(clip, provider, result.get("thumbnail_url"), tmp / "thumbnail")
        if thumb is None:
            thumb = media.frame_at(video_path, min(1.0, info.duration / 2))

        with transaction.atomic():
            clip = Clip.objects.select_for_update().get(pk=clip.pk)
            if clip.status != Clip.Status.FINISHING:
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
            clip.video_frames = info.frames or None
            clip.status = Clip.Status.READY
            clip.error = ""
            clip.finished_at = timezone.now()
            clip.save()
    log.info("clip %s ready (%sx%s, %.2f s)", clip.pk, clip.video_width, clip.video_height, info.duration)


def _provider_image(clip: Clip, provider, url: str | None, destination: Path):
    """An image the provider made for us (a last frame, a thumbnail), or None when there is
    none or it is unusable: then the studio derives it from the video."""
    if not url:
        return None
    try:
        provider.download(url, destination)
        return media.load_image(destination)
    except (ProviderError, media.MediaError) as exc:
        log.info("clip %s: provider image unusable (%s); deriving it", clip.pk, exc)
        return None


# --- Recovery -------------------------------------------------------------------------------


def recover_stale_clips() -> None:
    """Move on every clip, export and brought video whose worker died or whose task was lost."""
    now = timezone.now()
    for clip in Clip.objects.filter(
        status=Clip.Status.SUBMITTING, submitting_since__lt=now - SUBMIT_STALE_AFTER
    ):
        _fail(clip, unknown_outcome_message(clip), expected_status=Clip.Status.SUBMITTING)
    for clip in Clip.objects.filter(
        status__in=[Clip.Status.QUEUED, Clip.Status.FINISHING], deadline_at__lte=now
    ):
        _fail(clip, timeout_message(clip), expected_status=clip.status)
    for clip in Clip.objects.filter(status=Clip.Status.RUNNING, deadline_at__lte=now):
        _fail(clip, timeout_message(clip), expected_status=Clip.Status.RUNNING)
    # Queued clips whose submit task never ran, or whose retry time has come. The claim
    # stops two sweeps from enqueueing the same clip.
    for clip in Clip.objects.filter(status=Clip.Status.QUEUED, next_poll_at__lte=now):
        if clip.claim(
            {"status": Clip.Status.QUEUED, "next_poll_at": clip.next_poll_at}, next_poll_at=now + QUEUE_GRACE
        ):
            enqueue_submit(clip.pk)
    # Finishing clips with no live finish task: never claimed, or claimed by a dead worker.
    stale = now - FINISH_STALE_AFTER
    for clip in Clip.objects.filter(status=Clip.Status.FINISHING):
        lost = clip.finish_claimed_at is None and clip.updated_at < now - QUEUE_GRACE
        if lost or (clip.finish_claimed_at and clip.finish_claimed_at < stale):
            if clip.claim(
                {"status": Clip.Status.FINISHING, "finish_claimed_at": clip.finish_claimed_at},
                finish_claimed_at=None,
            ):
                enqueue_finish(clip.pk)
    for pk in recover_stale_exports():
        enqueue_export(pk)
    for asset in Asset.objects.filter(
        status=Asset.Status.PREPARING, updated_at__lt=now - PREPARE_STALE_AFTER
    ):
        if asset.claim({"status": Asset.Status.PREPARING, "updated_at": asset.updated_at}):
            enqueue_prepare(asset.pk)


def refresh_provider_models() -> str:
    """Read again the model lists of providers that publish one, when the cached copy is
    older than the provider's refresh interval. Scheduled every few minutes; a failure keeps
    the last good list."""
    done = []
    for provider in enabled_providers():
        if not catalogue.refresh_due(provider):
            continue
        try:
            done.append(f"{provider.name}: {catalogue.refresh(provider)} models")
        except ProviderError as exc:
            log.warning("could not refresh the models of %s: %s", provider.name, exc.message)
            done.append(f"{provider.name}: failed")
    return "; ".join(done) or "nothing to refresh"


# --- Joining a chain ------------------------------------------------------------------------


def start_export(owner, clips: list[Clip]) -> ChainExport:
    """The export of this exact sequence: one already waiting, joining or ready is reused
    (a second click starts nothing); else a new one, enqueued after commit."""
    key = ChainExport.key_for(clips)
    existing = (
        ChainExport.objects.filter(owner=owner, sequence_key=key)
        .exclude(status=ChainExport.Status.FAILED)
        .first()
    )
    if existing is not None and (existing.status != ChainExport.Status.READY or existing.file_exists()):
        return existing
    export = ChainExport.objects.create(
        owner=owner, clip=clips[-1], clip_ids=[c.pk for c in clips], sequence_key=key
    )
    transaction.on_commit(lambda: enqueue_export(export.pk))
    return export


def export_chain(pk: int) -> None:
    """Join the clips into one MP4, once (claimed), reporting progress as it goes."""
    export = ChainExport.objects.filter(pk=pk).first()
    if export is None:
        return
    now = timezone.now()
    if not export.claim(
        {"status": ChainExport.Status.QUEUED},
        status=ChainExport.Status.RUNNING,
        attempts=F("attempts") + 1,
        claimed_at=now,
        progress=0,
    ):
        return
    mine = {"pk": export.pk, "status": ChainExport.Status.RUNNING, "claimed_at": export.claimed_at}
    try:
        by_pk = {c.pk: c for c in Clip.objects.filter(owner=export.owner, pk__in=export.clip_ids)}
        clips = [by_pk.get(pk) for pk in export.clip_ids]
        missing = [pk for pk, c in zip(export.clip_ids, clips) if c is None or not c.is_ready or not c.video]
        if missing:
            raise media.MediaError(
                f"Clip #{missing[0]} is not ready (or was deleted), so the chain cannot be joined."
            )

        def report(fraction: float) -> None:
            ChainExport.objects.filter(**mine).update(progress=min(99, int(fraction * 100)))

        with tempfile.TemporaryDirectory(prefix="chain-") as tmp, ExitStack() as copies:
            # Each video as a file PyAV can open: itself on a local disk, else a temporary
            # copy from the storage (a bucket), removed after the join.
            paths = [copies.enter_context(media.local_copy(clip.video)) for clip in clips]
            # The same cuts the sequence player plays (models.sequence_cuts).
            parts = [cut.join_part(path) for cut, path in zip(sequence_cuts(clips), paths)]
            out = Path(tmp) / "chain.mp4"
            result = media.join_videos(parts, out, progress=report)
            with transaction.atomic():
                current = ChainExport.objects.select_for_update().filter(**mine).first()
                if current is None:
                    return  # taken over by a later attempt
                with out.open("rb") as fh:
                    current.file.save("chain.mp4", File(fh), save=False)
                current.status = ChainExport.Status.READY
                current.progress = 100
                current.method, current.method_reason = result.method, result.reason
                current.duration, current.dropped_frames = result.duration, result.dropped
                current.error = ""
                current.finished_at = timezone.now()
                current.save()
        log.info("chain export %s ready (%s, %.2f s)", export.pk, result.method, result.duration)
    except media.MediaError as exc:
        _fail_export(mine, str(exc))
    except Exception:
        log.exception("chain export %s failed", export.pk)
        _fail_export(mine, "The chain could not be joined because of an error in the studio.")


def _fail_export(mine: dict, message: str) -> None:
    now = timezone.now()
    ChainExport.objects.filter(**mine).update(
        status=ChainExport.Status.FAILED, error=message, finished_at=now, updated_at=now
    )


def recover_stale_exports() -> list[int]:
    """Exports to hand out again: queued ones whose task was lost, and joins whose worker
    died (failed after EXPORT_MAX_ATTEMPTS). Returns the pks to enqueue."""
    now = timezone.now()
    again = []
    for export in ChainExport.objects.filter(
        status=ChainExport.Status.QUEUED, updated_at__lt=now - QUEUE_GRACE
    ):
        if export.claim({"status": ChainExport.Status.QUEUED, "updated_at": export.updated_at}):
            again.append(export.pk)
    for export in ChainExport.objects.filter(
        status=ChainExport.Status.RUNNING, claimed_at__lt=now - EXPORT_STALE_AFTER
    ):
        expected = {"status": ChainExport.Status.RUNNING, "claimed_at": export.claimed_at}
        if export.attempts >= EXPORT_MAX_ATTEMPTS:
            export.claim(
                expected,
                status=ChainExport.Status.FAILED,
                finished_at=now,
                error="The join was interrupted several times; try again.",
            )
        elif export.claim(expected, status=ChainExport.Status.QUEUED):
            again.append(export.pk)
    return again


# --- Preparing a video a creator brought ------------------------------------------------------


def prepare_video(pk: int) -> None:
    """Check a brought video (limits from its header before decoding anything, then a real
    decode) and keep it as H.264 MP4, the one format every provider takes to extend. Runs in
    the worker: a re-encode can take many seconds of CPU."""
    asset = Asset.objects.filter(pk=pk, kind=Asset.Kind.VIDEO).first()
    if asset is None or not asset.claim(
        {"status": Asset.Status.PREPARING, "updated_at": asset.updated_at}, error=""
    ):
        return
    try:
        with tempfile.TemporaryDirectory(prefix="video-") as tmp, media.local_copy(asset.file) as source:
            info = media.check_video(source)  # the header's limits first, then a real decode
            if media.is_h264_mp4(source):
                kept = None
            else:
                kept = Path(tmp) / "video.mp4"
                media.to_h264_mp4(source, kept)
                info = media.probe(kept)
            old_name = asset.file.name
            with transaction.atomic():
                current = (
                    Asset.objects.select_for_update().filter(pk=pk, status=Asset.Status.PREPARING).first()
                )
                if current is None:
                    return
                if kept is not None:
                    with kept.open("rb") as fh:
                        current.file.save("video.mp4", File(fh), save=False)
                current.width, current.height, current.duration = info.width, info.height, info.duration
                current.status = Asset.Status.READY
                current.save()
            if kept is not None:
                transaction.on_commit(lambda: _remove_files(asset.file.storage, [old_name]))
    except media.MediaError as exc:
        Asset.objects.filter(pk=pk, status=Asset.Status.PREPARING).update(
            status=Asset.Status.FAILED, error=str(exc), updated_at=timezone.now()
        )
    except Exception:
        log.exception("video %s could not be prepared", pk)
        Asset.objects.filter(pk=pk, status=Asset.Status.PREPARING).update(
            status=Asset.Status.FAILED,
            error="The video could not be prepared because of an error in the studio.",
            updated_at=timezone.now(),
        )


# --- Deleting -------------------------------------------------------------------------------


def delete_clip(clip: Clip, with_takes: bool = False) -> int:
    """Delete a clip (and, with `with_takes`, every clip that continues it) and its files.
    Without, the takes that continued it become the roots of their own chains. A file
    another remaining clip still uses (a last frame it starts from, a video it extends) is
    kept. Returns how many clips were deleted."""
    doomed = [clip] + (clip.descendants() if with_takes else [])
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
                Clip.objects.filter(**{rel.field.name: asset}).exclude(pk__in=ids).exists() for rel in uses
            )
            if still_used:
                names = [n for n in names if n != asset.file.name]  # a clip extends this video
            else:
                doomed_assets.append(asset)
                if asset.source != Asset.Source.CLIP_VIDEO:
                    names.append(asset.file.name)
        Asset.objects.filter(pk__in=[a.pk for a in doomed_assets]).delete()
        Clip.objects.filter(pk__in=ids).delete()
        storage = clip.video.storage
        transaction.on_commit(lambda: _remove_files(storage, names))
    return len(ids)


def _remove_files(storage, names: list[str]) -> None:
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
