"""Background work: everything that calls a provider or decodes video.

Starting a clip (shared by Generate and Generate again), submit, poll, finish, join,
preparing a brought video, recovery and clean-up. Tasks (django-q2) take primary keys only,
are enqueued after commit, and are safe to run twice: every state change is a claim on the
model (one conditional UPDATE), so a second run finds nothing left to do.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.cache import cache
from django.core.files import File
from django.core.files.base import ContentFile
from django.db import close_old_connections, connections, transaction
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone
from django_q.tasks import async_task

from . import catalogue, media
from .models import (
    LATE_LOOK_EVERY,
    Asset,
    ChainExport,
    Clip,
    Lease,
    WebhookDelivery,
    estimate_cache_key,
    sequence_cuts,
)
from .providers import (
    ModelSpec,
    Provider,
    ProviderError,
    RemoteStatus,
    Submission,
    all_providers,
    enabled_providers,
    find_provider,
    get_provider,
)
from .providers.base import ImageInput

log = logging.getLogger(__name__)

SWEEP_LEASE = "poll-sweep"
# A submit that has not come back after this long was cut off (worker killed, machine
# restarted): whether the provider accepted it cannot be known.
SUBMIT_STALE_AFTER = timedelta(minutes=3)
# A finish (download, probe, frames) still claimed after this long died with its worker.
FINISH_STALE_AFTER = timedelta(minutes=12)
# Copies of a made clip tried (with backoff from FINISH_BACKOFF_SECONDS, about ten minutes
# in all) before it shows as made-but-not-copied; it is still looked for after that.
FINISH_MAX_ATTEMPTS = 6
FINISH_BACKOFF_SECONDS = 10.0
# A create refused by the provider's firewall (nothing reached it) is tried this many times.
EDGE_TRIES = 3
# A create the provider's docs ask us to resend (ProviderError.resend_documented) is sent at most this many
# times, each after looking for a job made by the one before.
RESEND_MAX_TRIES = 5
# Due clips claimed per batch of polls.
POLL_BATCH = 500
# How often a sweep claims what has come due and applies the answers that are in (seconds).
SWEEP_TICK = 0.2
UNCERTAIN_HEADLINE = "The provider may have started this clip."
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


def enqueue_measure(pk: int) -> None:
    async_task("studio.jobs.measure_clip", pk, task_name=f"measure seam of clip {pk}", group="media")


def enqueue_colour_match(pk: int) -> None:
    async_task("studio.jobs.match_colour", pk, task_name=f"match colour of clip {pk}", group="media")


def _send_deadline() -> timedelta:
    """How long the studio keeps trying to send a clip that providers refuse for now."""
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
            cost_unit=spec.cost_unit,
            next_poll_at=now + QUEUE_GRACE,
            # Until the provider accepts it: how long sending may keep being retried. From
            # acceptance on, the provider's own deadline replaces it (_accept).
            deadline_at=now + _send_deadline(),
            **fields,
        )
        if references:
            clip.reference_images.set(references)
        # Priced from the saved clip (its inputs included), as the form priced the same options.
        clip.cost_estimate = clip.estimate_with(spec)
        Clip.objects.filter(pk=clip.pk).update(cost_estimate=clip.cost_estimate)
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
    if not clip.reset_for_retry(QUEUE_GRACE, _send_deadline()):
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
        last_frame=provider_input(clip.end_frame) if clip.end_frame else None,
        generate_audio=clip.generate_audio,
        seed=clip.seed,
        reference_images=[provider_input(a) for a in clip.reference_images.order_by("pk")],
        extend_video=provider_input(clip.extend_video) if clip.extend_video else None,
        webhook_url=webhook_url(clip),
    )


def provider_input(asset: Asset) -> ImageInput:
    """An asset as a provider input (an image, or a video to extend), read through the
    storage (which may be a bucket: no local path is assumed)."""
    return ImageInput(storage=asset.file.storage, storage_name=asset.file.name, public_url=asset.public_url())


def _first_frame_input(clip: Clip) -> ImageInput | None:
    if clip.first_frame is None:
        return None
    image = provider_input(clip.first_frame)
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
    """Send the clip to its provider, never twice for one paid job.

    The claim (queued → submitting) makes a second run of this task a no-op. A create is
    sent again only when the answer proved that no job was made (a 429, a refused
    connection, a firewall refusal) or when the provider's docs ask for it (resend_documented),
    and then only after looking in the provider's list of recent jobs for one made by the
    earlier try. Any other uncertain answer ends "may have started" (_lost_answer). If the
    process dies after the provider answered but before we saved, the clip stays in
    `submitting`, and recovery treats it as a lost answer too."""
    clip = Clip.objects.filter(pk=pk).first()
    if clip is None:
        return
    # Before the claim: a worker that dies while decoding leaves the clip queued (nothing
    # was sent), never "may have started".
    if clip.status == Clip.Status.QUEUED and not attach_handoff_frame(clip):
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
    except LookupError as exc:
        _fail(clip, str(exc))  # nothing was sent
        return
    try:
        submission = build_submission(clip)
        if clip.look_before_send:
            found = _look_for_job(clip, provider, submission)
            if found is not None:
                _accept(clip, provider, found.remote_id, {"status": Clip.Status.SUBMITTING}, found.created_at)
                return
        remote_id = provider.submit(submission)
    except ProviderError as exc:
        _after_submit_error(clip, provider, exc)
        return
    _accept(clip, provider, remote_id, {"status": Clip.Status.SUBMITTING})


def _save_frame(owner, source: str, picture, original_name: str, file_name: str) -> Asset:
    """A frame of a clip (its last one, or a hand-off frame) kept as a PNG asset."""
    frame = Asset(
        owner=owner, source=source, width=picture.width, height=picture.height, original_name=original_name
    )
    frame.file.save(file_name, ContentFile(media.png_bytes(picture)), save=False)
    frame.save()
    return frame


def attach_handoff_frame(clip: Clip) -> bool:
    """Give a clip continued from a chosen frame of its parent that frame's picture as its
    first frame: the parent's last-frame image when it is the last frame as made, else the
    frame decoded from the video the parent plays (its colour-matched copy, when it has one,
    so the seam matches what is seen). Safe to run twice: the picture is attached only if
    none is yet. False when the clip cannot be sent (it is failed, with the reason)."""
    if clip.handoff_frame is None or clip.first_frame_id:
        return True
    parent = clip.parent
    if parent is None or not parent.is_ready or not parent.video:
        _fail(
            clip,
            "The clip it continues was deleted, so its hand-off frame is gone. Nothing was sent.",
            expected_status=Clip.Status.QUEUED,
        )
        return False
    if clip.handoff_frame == parent.last_index and parent.last_frame_id and not parent.plays_matched:
        frame = parent.last_frame
    else:
        try:
            with media.local_copy(parent.played_video) as path:
                picture = media.frame_at_index(path, clip.handoff_frame)
        except media.MediaError as exc:
            _fail(
                clip,
                f"The hand-off frame could not be taken from clip #{parent.pk}: {exc} Nothing was sent.",
                expected_status=Clip.Status.QUEUED,
            )
            return False
        frame = _save_frame(
            clip.owner,
            Asset.Source.HANDOFF_FRAME,
            picture,
            f"clip-{parent.pk}-frame-{clip.handoff_frame}.png",
            "handoff-frame.png",
        )
    if not clip.claim({"first_frame__isnull": True}, first_frame=frame):
        clip.refresh_from_db()
        if frame.source == Asset.Source.HANDOFF_FRAME:
            # Another run attached its own copy first: this one is not needed.
            name = frame.file.name
            frame.delete()
            _remove_files(frame.file.storage, [name])
    return True


def _accept(clip: Clip, provider: Provider, remote_id: str, expected: dict, accepted_at=None) -> bool:
    """The provider has the job: from now on its deadline counts (time in our queue and
    retries before this do not), and the clip is polled."""
    now = timezone.now()
    accepted = min(accepted_at or now, now)
    if not clip.claim(
        expected,
        status=Clip.Status.RUNNING,
        remote_id=remote_id,
        submitted_at=accepted,
        deadline_at=accepted + timedelta(minutes=provider.deadline_minutes),
        # A job found in the provider's list may be done already: poll it at once.
        next_poll_at=now + timedelta(seconds=0 if accepted_at else provider.poll_interval),
        poll_failures=0,
        error="",
        notice="",
        failure_kind="",
        finished_at=None,
        look_before_send=False,
    ):
        return False
    log.info("clip %s accepted by %s as %s", clip.pk, clip.provider, remote_id)
    # Start polling now rather than at the scheduler's next wake-up (~30-60 s away).
    enqueue_sweep()
    return True


def _after_submit_error(clip: Clip, provider: Provider, exc: ProviderError) -> None:
    if exc.permanent:
        # The request itself was refused (bad input, refused key): no job was made.
        _fail(clip, exc.message, field_errors=exc.field_errors, expected_status=Clip.Status.SUBMITTING)
    elif exc.kind == ProviderError.EDGE:
        # Refused at the firewall in front of the API: nothing reached the provider.
        if clip.submit_attempts >= EDGE_TRIES:
            _fail(clip, exc.message, expected_status=Clip.Status.SUBMITTING)
        else:
            _requeue(clip, exc)
    elif not exc.outcome_unknown:
        _requeue(clip, exc)  # the answer proves no job was made (429, no connection)
    elif exc.resend_documented and clip.submit_attempts < RESEND_MAX_TRIES:
        _requeue(clip, exc, look_before_send=True)  # the docs ask for it; look first
    else:
        _lost_answer(clip, provider, exc.message)


def _requeue(clip: Clip, exc: ProviderError, look_before_send: bool = False) -> None:
    delay = exc.retry_after if exc.retry_after is not None else _backoff(clip.submit_attempts)
    clip.claim(
        {"status": Clip.Status.SUBMITTING},
        status=Clip.Status.QUEUED,
        next_poll_at=timezone.now() + timedelta(seconds=delay),
        notice=f"Waiting to retry: {exc.message}",
        look_before_send=look_before_send or clip.look_before_send,
    )
    log.info("clip %s: submit will be retried in %.0f s (%s)", clip.pk, delay, exc.message)


def _look_for_job(clip: Clip, provider: Provider, submission: Submission):
    """A job in the provider's list that an earlier, unanswered create of this clip made,
    or None. Jobs other clips already follow are not taken, and while another clip with the
    same prompt is being sent the list cannot tell the two apart: ask again later."""
    if not provider.can_find_jobs:
        return None
    twin = (
        Clip.objects.filter(provider=clip.provider, prompt=clip.prompt, status=Clip.Status.SUBMITTING)
        .exclude(pk=clip.pk)
        .exists()
    )
    if twin:
        raise ProviderError("Another clip with the same prompt is being sent; looking again shortly.")
    found = provider.find_jobs(submission, clip.created_at)
    taken = set(
        Clip.objects.filter(provider=clip.provider, remote_id__in=[job.remote_id for job in found])
        .exclude(pk=clip.pk)
        .values_list("remote_id", flat=True)
    )
    job = next((job for job in found if job.remote_id not in taken), None)
    if job is not None:
        log.info("clip %s: found job %s in %s's list; following it", clip.pk, job.remote_id, clip.provider)
    return job


def _lost_answer(clip: Clip, provider: Provider | None, reason: str = "") -> None:
    """A create whose answer never came (a timeout, a dropped connection, a 5xx the docs do
    not ask us to resend, a worker killed mid-call). Look for the job where the provider
    lists them; otherwise the clip says it may have started, and for such providers the
    studio keeps looking (look_for_lost_jobs)."""
    listing = provider is not None and provider.can_find_jobs
    if listing:
        try:
            found = _look_for_job(clip, provider, build_submission(clip))
        except ProviderError as exc:
            log.info("clip %s: could not look for its job now (%s)", clip.pk, exc.message)
            found = None
        if found is not None:
            _accept(clip, provider, found.remote_id, {"status": Clip.Status.SUBMITTING}, found.created_at)
            return
    _fail(
        clip,
        uncertain_message(clip, reason),
        expected_status=Clip.Status.SUBMITTING,
        kind=Clip.Failure.UNCERTAIN,
        keep_looking=listing,
    )


def _fail(
    clip: Clip, message: str, field_errors: dict | None = None, expected_status: str | None = None, **how
):
    if clip.fail(message, field_errors, expected_status, **how):
        log.info("clip %s failed: %s", clip.pk, clip.error)
        return True
    return False


def uncertain_message(clip: Clip, reason: str = "") -> str:
    provider = provider_label(clip.provider)
    what = f" What came back: {reason.rstrip('.')}." if reason else ""
    return (
        f"{UNCERTAIN_HEADLINE} We lost contact with {provider} while sending it, so we cannot tell "
        f"whether it was accepted.{what} Check your {provider} account before trying again: sending "
        "it again may be billed twice."
    )


def timeout_message(clip: Clip, provider: Provider | None = None) -> str:
    provider = provider or find_provider(clip.provider)
    minutes = provider.deadline_minutes if provider else settings.CLIP_DEADLINE_MINUTES
    label = provider.label if provider else clip.provider
    return f"Timed out: {label} did not finish this clip within {minutes:g} minutes."


# --- Polling --------------------------------------------------------------------------------
# A sweep claims the due clips of each provider in one batch (one conditional UPDATE moves
# their next poll an interval ahead, so no other sweep or worker takes them), polls them on
# a pool of threads (each waits on the network; only the main thread touches the database),
# and writes only what changed. Failed clips that may still be delivered (timed out, or made
# but not copied) are polled too, every LATE_LOOK_EVERY, for CLIP_LATE_DELIVERY_HOURS.

_pool: tuple[int, int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    """One pool per process (a forked worker makes its own), sized by POLL_CONCURRENCY."""
    global _pool
    size = settings.POLL_CONCURRENCY
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid() or _pool[1] != size:
            _pool = (os.getpid(), size, ThreadPoolExecutor(size, thread_name_prefix="poll"))
        return _pool[2]


def claim_due(provider: Provider, now=None, limit: int = POLL_BATCH, pks=None) -> list[Clip]:
    """Claim up to `limit` due clips of `provider` (of `pks` only, when given) for one poll
    each: running clips (their next poll an interval ahead) and failed ones still looked for
    (LATE_LOOK_EVERY ahead). Only rows still due when the UPDATE runs are taken, so two
    sweeps never share a clip."""
    now = now or timezone.now()
    token = uuid.uuid4().hex
    looked_for = Q(
        status=Clip.Status.FAILED,
        failure_kind__in=[Clip.Failure.TIMED_OUT, Clip.Failure.COPY],
        deadline_at__gte=now - Clip.late_delivery_window(),
    )
    due = (
        Clip.objects.filter(Q(status=Clip.Status.RUNNING) | looked_for, provider=provider.name)
        .filter(next_poll_at__lte=now)
        .exclude(remote_id="")
    )
    if pks is not None:
        due = due.filter(pk__in=pks)
    ids = list(due.order_by("next_poll_at").values_list("pk", flat=True)[:limit])
    if not ids:
        return []
    for status, ahead in (
        (Clip.Status.RUNNING, timedelta(seconds=provider.poll_interval)),
        (Clip.Status.FAILED, LATE_LOOK_EVERY),
    ):
        Clip.objects.filter(pk__in=ids, status=status, next_poll_at__lte=now).update(
            next_poll_at=now + ahead, poll_token=token
        )
    return list(Clip.objects.filter(pk__in=ids, poll_token=token))


class Polls:
    """Polls in flight on the pool, their answers applied in this (the calling) thread as they
    come. A slow answer holds only its own thread. A BaseException in a poll (a worker being
    killed) stops everything: the clips not yet applied were claimed, so the next interval
    polls them again."""

    def __init__(self):
        self.in_flight: dict[Future, tuple[Clip, Provider]] = {}

    def start(self, provider: Provider, clips: list[Clip]) -> int:
        for clip in clips:
            self.in_flight[_executor().submit(_poll_once, provider, clip)] = (clip, provider)
        return len(clips)

    def start_due(self, room: int) -> int:
        """Claim and start the due clips of every enabled provider, at most `room` of them."""
        started = 0
        for provider in enabled_providers():
            if room - started <= 0:
                break
            started += self.start(provider, claim_due(provider, limit=room - started))
        return started

    def apply_done(self, timeout: float | None) -> None:
        """Apply the answers that are in, waiting up to `timeout` (None: as long as it takes)
        for the first of them."""
        if not self.in_flight:
            return
        done, _ = wait(self.in_flight, timeout=timeout, return_when=FIRST_COMPLETED)
        try:
            for future in done:
                clip, provider = self.in_flight.pop(future)
                _after_poll(clip, provider, future.result())
        except BaseException:
            self.cancel()
            raise

    def drain(self) -> None:
        while self.in_flight:
            self.apply_done(None)

    def cancel(self) -> None:
        for future in self.in_flight:
            future.cancel()
        self.in_flight.clear()


def _poll_once(provider: Provider, clip: Clip) -> RemoteStatus | ProviderError:
    """The provider's answer, or the ProviderError it gave. Threads only call the network;
    a database connection one opened anyway (a key read from the database) is closed here,
    so pool threads never hold connections."""
    try:
        return provider.poll(clip.remote_id)
    except ProviderError as exc:
        return exc
    finally:
        if threading.current_thread() is not threading.main_thread():
            for connection in connections.all(initialized_only=True):
                connection.close()


def _after_poll(clip: Clip, provider: Provider, outcome: RemoteStatus | ProviderError) -> None:
    now = timezone.now()
    if clip.status == Clip.Status.FAILED:
        _after_late_poll(clip, outcome)
        return
    past_deadline = clip.deadline_at is not None and now >= clip.deadline_at
    if isinstance(outcome, ProviderError):
        _after_poll_error(clip, provider, outcome, past_deadline)
        return
    if clip.paused_at:
        clip.resume()
    if outcome.state == RemoteStatus.RUNNING and past_deadline:
        # That was the last poll before the deadline ends the wait; the clip is still looked
        # for afterwards, in case it is delivered late.
        _time_out(clip, provider)
    else:
        apply_remote_status(clip, outcome)


def _time_out(clip: Clip, provider: Provider) -> None:
    _fail(
        clip,
        timeout_message(clip, provider),
        expected_status=Clip.Status.RUNNING,
        kind=Clip.Failure.TIMED_OUT,
        keep_looking=True,
    )


def _after_poll_error(clip: Clip, provider: Provider, exc: ProviderError, past_deadline: bool) -> None:
    retry_at = timezone.now() + timedelta(seconds=provider.poll_interval)
    if exc.kind == ProviderError.AUTH:
        # The job runs on and is billed whatever our key: wait for a key that works.
        clip.pause(waiting_for_key(provider), key_notice(provider, exc), retry_at)
        log.warning("clip %s: %s refused the key while polling; waiting", clip.pk, provider.name)
    elif exc.kind == ProviderError.EDGE and clip.poll_failures + 1 >= EDGE_TRIES:
        clip.pause(f"Waiting for {provider.vendor}'s firewall", exc.message, retry_at)
        clip.claim({"status": Clip.Status.RUNNING}, poll_failures=F("poll_failures") + 1)
    elif exc.permanent:
        _fail(clip, exc.message, expected_status=Clip.Status.RUNNING)
    elif past_deadline:
        _time_out(clip, provider)  # the last poll got no answer either
    else:
        delay = max(exc.retry_after or 0, _backoff(clip.poll_failures + 1, provider.poll_interval))
        clip.claim(
            {"status": Clip.Status.RUNNING},
            poll_failures=F("poll_failures") + 1,
            next_poll_at=timezone.now() + timedelta(seconds=delay),
        )
        log.info("clip %s: poll failed (%s), next in %.0f s", clip.pk, exc.message, delay)


def _after_late_poll(clip: Clip, outcome: RemoteStatus | ProviderError) -> None:
    """A clip that timed out (or could not be copied), polled again: delivered after all, it
    is revived; failed at the provider, its reason replaces ours and the looking stops."""
    mine = {"status": Clip.Status.FAILED, "poll_token": clip.poll_token}
    if isinstance(outcome, ProviderError):
        if outcome.permanent and outcome.kind != ProviderError.AUTH:
            clip.claim(mine, next_poll_at=None)
        return
    if outcome.state == RemoteStatus.SUCCEEDED:
        # A clip whose copy failed gets one more try per look; a late delivery the full set.
        attempts = FINISH_MAX_ATTEMPTS - 1 if clip.failure_kind == Clip.Failure.COPY else 0
        changes = _finishing_changes(outcome)
        if clip.claim(
            mine,
            **changes,
            error="",
            field_errors={},
            failure_kind="",
            finished_at=None,
            finish_attempts=attempts,
            finish_claimed_at=None,
        ):
            log.info("clip %s was delivered late by %s; finishing it", clip.pk, clip.provider)
            transaction.on_commit(lambda: enqueue_finish(clip.pk))
    elif outcome.state == RemoteStatus.FAILED:
        clip.claim(mine, error=outcome.error or clip.error, failure_kind="", next_poll_at=None)


def _finishing_changes(remote: RemoteStatus) -> dict:
    changes = {
        "status": Clip.Status.FINISHING,
        "remote_result": {
            "video_url": remote.video_url,
            "fallback_video_url": remote.fallback_video_url,
            "thumbnail_url": remote.thumbnail_url,
            "last_frame_url": remote.last_frame_url,
            "received_at": timezone.now().isoformat(),
        },
        "poll_failures": 0,
        # Finishing is driven by its task and recovery, not by the poll rhythm.
        "next_poll_at": None,
    }
    if remote.cost is not None:
        changes["cost_actual"] = remote.cost
        if remote.cost_unit:
            changes["cost_unit"] = remote.cost_unit
    return changes


def apply_remote_status(clip: Clip, remote: RemoteStatus) -> None:
    if remote.state == RemoteStatus.FAILED:
        _fail(
            clip,
            remote.error or "The provider could not make this clip.",
            expected_status=Clip.Status.RUNNING,
        )
    elif remote.state == RemoteStatus.SUCCEEDED:
        if clip.claim({"status": Clip.Status.RUNNING}, **_finishing_changes(remote), notice=""):
            transaction.on_commit(lambda: enqueue_finish(clip.pk))
    elif clip.poll_failures or clip.notice:
        # Still running: nothing to write unless an earlier trouble is now over.
        clip.claim({"status": Clip.Status.RUNNING}, poll_failures=0, notice="")


def waiting_for_key(provider: Provider) -> str:
    return provider.waiting_label()


def key_notice(provider: Provider, exc: ProviderError) -> str:
    """What a clip waiting for a key says: what happened, that nothing is lost, what to do."""
    return (
        f"{exc.message} {provider.vendor} goes on making this clip, and will bill it, so the clip is "
        f"kept. Whoever runs the studio should check the {provider.vendor} key; the studio asks again "
        "by itself and carries on as soon as the key works."
    )


def pause_clips_of_disabled_providers() -> int:
    """Clips running at a provider the studio no longer has a key for (it was removed, or the
    environment lost it) wait for it instead of failing: the jobs are paid for. They carry
    on by themselves once the provider is on again."""
    paused = 0
    for provider in all_providers():
        if provider.is_enabled():
            continue
        waiting = Clip.objects.filter(
            provider=provider.name,
            status__in=[Clip.Status.RUNNING, Clip.Status.FINISHING],
            paused_at__isnull=True,
        )
        # Read first: an UPDATE takes SQLite's write lock even when it changes nothing.
        if not waiting.exists():
            continue
        paused += waiting.update(
            paused_at=timezone.now(),
            pause_label=waiting_for_key(provider),
            notice=(
                f"{provider.label} was switched off in the studio while it made this clip. The clip is "
                f"kept: once whoever runs the studio connects {provider.label} again, it carries on by itself."
            ),
        )
    return paused


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
            polled += _sweep(deadline, holder, lease_seconds)
        finally:
            Lease.release(SWEEP_LEASE, holder)
        # A clip submitted while we were letting go may have found the lease taken.
        if time.monotonic() >= deadline or not _active_clips():
            break
    close_old_connections()
    return f"polled {polled}"


def _sweep(deadline: float, holder: str, lease_seconds: float) -> int:
    """Keep polls flowing until `deadline`: every SWEEP_TICK, claim what has come due (as
    much as the pool can start soon) and apply the answers that are in. A clip is polled
    within a tick of coming due, so the gap between two of its polls stays close to the
    interval, and a slow answer never holds back the others. Stale work is recovered, lost
    jobs looked for and the lease renewed once a second."""
    polls = Polls()
    polled, housekeeping, first = 0, 0.0, True
    room = settings.POLL_CONCURRENCY * 2
    try:
        while True:
            now = time.monotonic()
            housekept = now >= housekeeping
            if housekept:
                recover_stale_clips()
                look_for_lost_jobs()
                pause_clips_of_disabled_providers()
                Lease.acquire(SWEEP_LEASE, holder, lease_seconds)
                housekeeping = now + 1.0
            if now < deadline or first:  # one pass at least, however short the sweep
                polled += polls.start_due(room - len(polls.in_flight))
                first = False
            if polls.in_flight:
                polls.apply_done(SWEEP_TICK)
            elif now >= deadline or (housekept and not _active_clips()):
                return polled
            else:
                time.sleep(SWEEP_TICK)
    finally:
        polls.drain()


def look_for_lost_jobs() -> int:
    """Clips that may have started, at providers that list recent jobs: look for each in
    the list every LATE_LOOK_EVERY while CLIP_LATE_DELIVERY_HOURS last, and follow the job
    when it shows up (the clip is then generating again, with no second job)."""
    now = timezone.now()
    names = [p.name for p in enabled_providers() if p.can_find_jobs]
    found = 0
    for clip in Clip.objects.filter(
        status=Clip.Status.FAILED,
        failure_kind=Clip.Failure.UNCERTAIN,
        provider__in=names,
        next_poll_at__lte=now,
        deadline_at__gte=now - Clip.late_delivery_window(),
    )[:POLL_BATCH]:
        expected = {"status": Clip.Status.FAILED, "next_poll_at": clip.next_poll_at}
        if not clip.claim(expected, next_poll_at=now + LATE_LOOK_EVERY):
            continue
        provider = get_provider(clip.provider)
        try:
            job = _look_for_job(clip, provider, build_submission(clip))
        except ProviderError as exc:
            log.info("clip %s: could not look for its job (%s)", clip.pk, exc.message)
            continue
        if job is not None and _accept(
            clip, provider, job.remote_id, {"status": Clip.Status.FAILED}, job.created_at
        ):
            found += 1
    return found


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
# A clip the provider reported complete is never timed out while its files are copied:
# copying is tried again with backoff; an expired link is replaced (another address the
# provider gave, or a fresh poll); a refused key pauses it. After FINISH_MAX_ATTEMPTS the
# clip shows as made-but-not-copied and is still looked for (a fresh poll gives fresh links).


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
        next_poll_at=None,
    ):
        return
    try:
        _copy_results(clip)
    except (ProviderError, media.MediaError) as exc:
        _after_copy_error(clip, exc)


def _after_copy_error(clip: Clip, exc: ProviderError | media.MediaError) -> None:
    message = exc.message if isinstance(exc, ProviderError) else str(exc)
    kind = exc.kind if isinstance(exc, ProviderError) else ""
    provider = find_provider(clip.provider)
    mine = {"status": Clip.Status.FINISHING, "finish_claimed_at": clip.finish_claimed_at}
    log.warning("clip %s: copying failed (attempt %s): %s", clip.pk, clip.finish_attempts, message)
    if kind == ProviderError.AUTH and provider is not None:
        # Not the file's fault: wait for the key, without using up the tries.
        if clip.claim(mine, finish_attempts=F("finish_attempts") - 1, finish_claimed_at=None):
            retry_at = timezone.now() + timedelta(seconds=provider.poll_interval)
            clip.pause(waiting_for_key(provider), key_notice(provider, exc), retry_at)
        return
    if clip.finish_attempts >= FINISH_MAX_ATTEMPTS:
        _fail(
            clip,
            f"The clip was made but could not be copied into the studio: {message}",
            expected_status=Clip.Status.FINISHING,
            kind=Clip.Failure.COPY,
            keep_looking=True,
        )
    elif kind == ProviderError.EXPIRED:
        # Result links expire: a fresh poll of the job hands out new ones.
        if clip.claim(mine, status=Clip.Status.RUNNING, next_poll_at=timezone.now(), finish_claimed_at=None):
            transaction.on_commit(enqueue_sweep)
    else:
        # A damaged transfer looks the same as a broken file, and a second download costs nothing.
        delay = _backoff(clip.finish_attempts, FINISH_BACKOFF_SECONDS)
        clip.claim(mine, finish_claimed_at=None, next_poll_at=timezone.now() + timedelta(seconds=delay))


def _download_video(provider: Provider, result: dict, destination: Path) -> None:
    """The video, from its URL, or from the provider's other address for it when the first
    link has expired (RemoteStatus.fallback_video_url: a content endpoint, with the key)."""
    try:
        provider.download(result["video_url"], destination)
    except ProviderError as exc:
        fallback = result.get("fallback_video_url")
        if exc.kind != ProviderError.EXPIRED or not fallback:
            raise
        log.info("the video's link has expired (%s); using %s's other address", exc.message, provider.name)
        provider.download(fallback, destination)


def _copy_results(clip: Clip) -> None:
    provider = get_provider(clip.provider)
    result = clip.remote_result
    with tempfile.TemporaryDirectory(prefix="clip-") as tmp:
        tmp = Path(tmp)
        video_path = tmp / "video.mp4"
        _download_video(provider, result, video_path)
        info = media.probe(video_path)
        last = _provider_image(clip, provider, result.get("last_frame_url"), tmp / "last_frame")
        if last is None:
            last = media.last_frame(video_path)
        thumb = _provider_image(clip, provider, result.get("thumbnail_url"), tmp / "thumbnail")
        if thumb is None:
            thumb = media.frame_at(video_path, min(1.0, info.duration / 2))
        # The hand-off candidates, decoded once here (the picker only serves the images).
        strip = _strip_images(clip, video_path)
        repeated = _repeated_source(clip, video_path)

        with transaction.atomic():
            clip = Clip.objects.select_for_update().get(pk=clip.pk)
            if clip.status != Clip.Status.FINISHING:
                return
            frame_asset = _save_frame(
                clip.owner, Asset.Source.LAST_FRAME, last, f"clip-{clip.pk}-last-frame.png", "last-frame.png"
            )
            with video_path.open("rb") as fh:
                clip.video.save("video.mp4", File(fh), save=False)
            clip.thumbnail.save("thumbnail.jpg", ContentFile(media.thumbnail_jpeg(thumb)), save=False)
            clip.last_frame = frame_asset
            clip.video_width, clip.video_height = info.width, info.height
            clip.video_duration = info.duration
            clip.video_frames = info.frames or None
            clip.strip = _save_strip(clip, strip)
            clip.repeated_frames = repeated
            # The seam into this clip and its drift are measured next (measure_clip).
            clip.media_due_at = timezone.now()
            clip.status = Clip.Status.READY
            clip.error = ""
            clip.failure_kind = ""
            clip.notice = ""
            clip.paused_at, clip.pause_label = None, ""
            clip.next_poll_at = None
            clip.finished_at = timezone.now()
            clip.save()
            # The model's typical time has moved: the next card reads it afresh.
            key = estimate_cache_key(clip.provider, clip.model_key)
            transaction.on_commit(lambda: cache.delete(key))
            transaction.on_commit(lambda: enqueue_measure(clip.pk))
    log.info("clip %s ready (%sx%s, %.2f s)", clip.pk, clip.video_width, clip.video_height, info.duration)


def _strip_images(clip: Clip, video_path: Path) -> list[tuple[media.StripFrame, bytes]]:
    """The last second of the video as hand-off candidates, each with its JPEG; none when it
    cannot be decoded (the clip is still usable: measure_clip tries again)."""
    try:
        return [(frame, media.thumbnail_jpeg(frame.image)) for frame in media.frame_strip(video_path)]
    except media.MediaError as exc:
        log.warning("clip %s: no frame strip (%s)", clip.pk, exc)
        return []


def _save_strip(clip: Clip, strip: list[tuple[media.StripFrame, bytes]]) -> list[dict]:
    storage = clip.video.storage
    entries = []
    for frame, jpeg in strip:
        name = storage.save(clip.strip_name(frame.index), ContentFile(jpeg))
        entries.append(
            {"index": frame.index, "time": frame.time, "sharpness": round(frame.sharpness, 2), "name": name}
        )
    return entries


def _repeated_source(clip: Clip, video_path: Path) -> int:
    """For an extend result: how many of its leading frames repeat the video it extends
    (the contract leaves open whether a provider returns the source too)."""
    if clip.extend_video_id is None:
        return 0
    try:
        with media.local_copy(clip.extend_video.file) as source:
            return media.repeated_source_frames(source, video_path, clip.duration)
    except (media.MediaError, OSError) as exc:
        log.warning("clip %s: could not compare the extend result with its source (%s)", clip.pk, exc)
        return 0


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
        # The worker died while sending: whether the provider took it cannot be known.
        _lost_answer(clip, find_provider(clip.provider), "the studio was interrupted while sending it")
    for clip in Clip.objects.filter(status=Clip.Status.QUEUED, deadline_at__lte=now):
        if clip.look_before_send:
            # A 500 left it unknown whether a job exists: never a plain "nothing was sent".
            if clip.claim(
                {"status": Clip.Status.QUEUED}, status=Clip.Status.SUBMITTING, submitting_since=now
            ):
                _lost_answer(
                    clip, find_provider(clip.provider), clip.notice.removeprefix("Waiting to retry: ")
                )
        else:
            reason = clip.notice.removeprefix("Waiting to retry: ") or "it was not accepted in time"
            _fail(
                clip,
                f"Could not send this clip to {provider_label(clip.provider)}: {reason} Nothing was "
                "charged; try again later.",
                expected_status=Clip.Status.QUEUED,
            )
    # Running clips past their deadline are polled once more before they time out (read
    # first: this runs every second, and an UPDATE takes SQLite's write lock even for nothing).
    overdue = list(
        Clip.objects.filter(
            status=Clip.Status.RUNNING, deadline_at__lte=now, next_poll_at__gt=now
        ).values_list("pk", flat=True)
    )
    if overdue:
        Clip.objects.filter(pk__in=overdue, status=Clip.Status.RUNNING, next_poll_at__gt=now).update(
            next_poll_at=now
        )
    # Queued clips whose submit task never ran, or whose retry time has come. The claim
    # stops two sweeps from enqueueing the same clip.
    for clip in Clip.objects.filter(status=Clip.Status.QUEUED, next_poll_at__lte=now):
        if clip.claim(
            {"status": Clip.Status.QUEUED, "next_poll_at": clip.next_poll_at}, next_poll_at=now + QUEUE_GRACE
        ):
            enqueue_submit(clip.pk)
    # Finishing clips with no live finish task: never claimed, claimed by a dead worker, or
    # waiting for their next try (a backoff, a paused key).
    stale = now - FINISH_STALE_AFTER
    for clip in Clip.objects.filter(status=Clip.Status.FINISHING):
        if clip.finish_claimed_at is None:
            due = clip.next_poll_at <= now if clip.next_poll_at else clip.updated_at < now - QUEUE_GRACE
        else:
            due = clip.finish_claimed_at < stale
        if due and clip.claim(
            {
                "status": Clip.Status.FINISHING,
                "finish_claimed_at": clip.finish_claimed_at,
                "updated_at": clip.updated_at,
            },
            finish_claimed_at=None,
            next_poll_at=None,
        ):
            enqueue_finish(clip.pk)
    for pk in recover_stale_exports():
        enqueue_export(pk)
    recover_media_work(now)
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


# --- Seams: figures and colour ----------------------------------------------------------------
# What the chain view shows of each seam is measured here, never in a web request: the seam
# into a clip (the parent's hand-off frame against this clip's first shown frame, both as the
# sequence plays them), its drift against the chain's first step, the strip of hand-off
# candidates (when finishing could not make it), and colour-matched copies.

# A colour match (a re-encode of the whole clip) still claimed after this long died with
# its worker. A 10 s 1080p clip takes 30-140 s on two busy cores (bench/RESULTS.md).
COLOUR_STALE_AFTER = timedelta(minutes=20)
# Seam pictures are shown small beside the figures.
SEAM_IMAGE_BOX = (320, 320)


def _chain_root(clip: Clip) -> Clip:
    return clip.chain()[0]


def _figures_key(clip: Clip, root: Clip) -> str:
    """Names what the figures of `clip` depend on: the parent's played video and hand-off
    frame, the clip's own played video, and the chain's first step."""
    parent = clip.parent
    reference = clip.match_reference_key() if parent is not None else ""
    return f"{reference}|{clip.played_video.name}|{root.played_video.name}"[:300]


def _shown_first(clip: Clip, path: Path):
    """The first frame of `clip` the sequence shows at the seam (after a repeated source)."""
    return (
        media.frame_at_index(path, clip.repeated_frames) if clip.repeated_frames else media.first_frame(path)
    )


def _handoff_picture(clip: Clip, parent: Clip, path: Path):
    handoff = clip.handoff_of(parent)
    return (
        (handoff, media.frame_at_index(path, handoff))
        if handoff is not None
        else (None, media.last_frame(path))
    )


def measure_clip(pk: int) -> None:
    """Measure the seam into a clip and its drift, on the videos the sequence plays (and,
    for a colour-matched clip, on its own video too, for the before-and-after). Safe to run
    twice: figures already measured on the same videos are left as they are."""
    clip = Clip.objects.select_related("parent").filter(pk=pk).first()
    if clip is None:
        return
    if not clip.is_ready or not clip.video:
        Clip.objects.filter(pk=pk).update(media_due_at=None)
        return
    if clip.colour_pending:
        return  # measured once its corrected copy is made (match_colour asks for it)
    parent = clip.parent if clip.parent is not None and clip.parent.is_ready else None
    if parent is not None and parent.colour_pending:
        return  # the parent's copy changes the seam: its match asks for this clip again
    root = _chain_root(clip)
    key = _figures_key(clip, root)
    if clip.figures_for == key and clip.strip and clip.figures:
        Clip.objects.filter(pk=pk).update(media_due_at=None)
        return
    storage = clip.video.storage
    old_images = [n for n in (clip.figures.get("before_image"), clip.figures.get("after_image")) if n]
    new_images: list[str] = []
    try:
        with ExitStack() as files:
            played = files.enter_context(media.local_copy(clip.played_video))
            strip = clip.strip
            if not strip:  # finishing could not make it (or the clip is older than strips)
                own = played if not clip.plays_matched else files.enter_context(media.local_copy(clip.video))
                strip = _save_strip(clip, _strip_images(clip, own))
            after = _shown_first(clip, played)
            if root.pk == clip.pk:
                reference = after
            else:
                with media.local_copy(root.played_video) as root_path:
                    reference = media.first_frame(root_path)
            figures: dict = {"drift": round(media.drift(reference, after), 3)}
            if parent is not None:
                parent_path = files.enter_context(media.local_copy(parent.played_video))
                handoff, before = _handoff_picture(clip, parent, parent_path)
                seam = media.seam_figures(before, after)
                figures.update(
                    difference=round(seam.difference, 3),
                    colour_shift=round(seam.colour_shift, 3),
                    parent_frame=handoff if handoff is not None else parent.last_index,
                )
                if clip.plays_matched:
                    with media.local_copy(clip.video) as own:
                        own_first = _shown_first(clip, own)
                    unmatched = media.seam_figures(before, own_first)
                    figures["original"] = {
                        "difference": round(unmatched.difference, 3),
                        "colour_shift": round(unmatched.colour_shift, 3),
                        "drift": round(media.drift(reference, own_first), 3),
                    }
                folder = f"clips/{clip.storage_key}/seam/"
                for side, picture in (("before", before), ("after", after)):
                    small = picture.convert("RGB")
                    small.thumbnail(SEAM_IMAGE_BOX)
                    name = storage.save(folder + f"{side}.jpg", ContentFile(media.thumbnail_jpeg(small)))
                    new_images.append(name)
                    figures[f"{side}_image"] = name
    except media.MediaError as exc:
        log.warning("clip %s: its seam could not be measured (%s)", pk, exc)
        Clip.objects.filter(pk=pk).update(figures={"error": str(exc)}, figures_for=key, media_due_at=None)
        _remove_files(storage, new_images)
        return
    Clip.objects.filter(pk=pk).update(figures=figures, figures_for=key, strip=strip, media_due_at=None)
    _remove_files(storage, [n for n in old_images if n not in new_images])
    log.info("clip %s measured: %s", pk, {k: v for k, v in figures.items() if not k.endswith("_image")})


def ask_to_measure(clips) -> None:
    """Measure these clips in the worker (after commit), marking them due so the chain view
    waits for the figures."""
    clips = [c for c in clips if c.is_ready]
    pks = [c.pk for c in clips]
    if not pks:
        return
    now = timezone.now()
    Clip.objects.filter(pk__in=pks).update(media_due_at=now)
    for clip in clips:
        clip.media_due_at = now  # the page drawn from these objects waits for the figures
    for pk in pks:
        transaction.on_commit(lambda pk=pk: enqueue_measure(pk))


def set_colour_match(clips, on: bool) -> list[Clip]:
    """Switch "Match colour to the previous clip" for these clips (steps after the first).
    Switched on, the worker renders each corrected copy; off, the clip plays its own video
    again at once. Either way what later clips start from has changed: their copies and
    figures are made again. Returns the clips that changed."""
    changed = []
    for clip in clips:
        again = on and clip.colour_match and clip.colour_state == Clip.ColourState.FAILED
        if clip.parent_id is None or not clip.is_ready or (clip.colour_match == on and not again):
            continue
        if on and clip.repeated_frames:
            continue  # an extend result goes on from its source's own pictures: nothing to match
        now = timezone.now()
        if on:
            done = clip.claim(
                {"colour_match": clip.colour_match, "colour_state": clip.colour_state},
                colour_match=True,
                colour_state=Clip.ColourState.QUEUED,
                colour_claimed_at=now,
                colour_error="",
            )
            if done:
                transaction.on_commit(lambda pk=clip.pk: enqueue_colour_match(pk))
        else:
            old = clip.matched_video.name
            done = clip.claim(
                {"colour_match": True},
                colour_match=False,
                colour_state=Clip.ColourState.NONE,
                colour_error="",
                matched_video="",
                matched_for="",
                colour_claimed_at=None,
            )
            if done:
                if old:
                    storage = clip.video.storage
                    transaction.on_commit(lambda old=old, storage=storage: _remove_files(storage, [old]))
                _played_changed(clip)
        if done:
            changed.append(clip)
    return changed


def _played_changed(clip: Clip) -> None:
    """The video `clip` plays changed (a corrected copy was made, or dropped): measure it
    again, and every clip that continues it (their seams start from it); those matched to
    it are matched again."""
    ask_to_measure([clip])
    now = timezone.now()
    children = list(clip.children.filter(status=Clip.Status.READY))
    again = [c for c in children if c.colour_match]
    if again:
        # Also over a match in progress: its result would be corrected towards the old picture.
        Clip.objects.filter(pk__in=[c.pk for c in again]).update(
            colour_state=Clip.ColourState.QUEUED, colour_claimed_at=now, updated_at=now
        )
        for child in again:
            transaction.on_commit(lambda pk=child.pk: enqueue_colour_match(pk))
    ask_to_measure([c for c in children if not c.colour_match])


def match_colour(pk: int) -> None:
    """Render the clip's copy corrected towards its parent's hand-off frame, as the parent
    plays it (media.colour_match_video), once (claimed). A parent still being matched goes
    first: its match queues this one again when it is done."""
    clip = Clip.objects.select_related("parent").filter(pk=pk).first()
    if clip is None or not clip.colour_match:
        return
    parent = clip.parent
    if parent is None or not clip.is_ready or not parent.is_ready:
        clip.claim(
            {"colour_match": True, "colour_state__in": [Clip.ColourState.QUEUED, Clip.ColourState.MATCHING]},
            colour_state=Clip.ColourState.FAILED,
            colour_error="There is no previous clip to match the colour to.",
        )
        return
    if parent.colour_pending:
        return
    key = clip.match_reference_key()
    if clip.colour_state == Clip.ColourState.READY and clip.matched_for == key:
        return
    if clip.colour_state not in (Clip.ColourState.QUEUED, Clip.ColourState.READY):
        return  # being matched by another worker (recovered if it died), or failed
    now = timezone.now()
    if not clip.claim(
        {
            "colour_match": True,
            "colour_state": clip.colour_state,
            "colour_claimed_at": clip.colour_claimed_at,
        },
        colour_state=Clip.ColourState.MATCHING,
        colour_claimed_at=now,
        colour_error="",
    ):
        return
    mine = {"colour_match": True, "colour_state": Clip.ColourState.MATCHING, "colour_claimed_at": now}

    def fail(message: str) -> None:
        clip.claim(mine, colour_state=Clip.ColourState.FAILED, colour_error=message)

    with _failures_recorded(
        fail, f"clip {pk}: colour match", "The colour could not be matched because of an error in the studio."
    ):
        with tempfile.TemporaryDirectory(prefix="colour-") as tmp, ExitStack() as files:
            parent_path = files.enter_context(media.local_copy(parent.played_video))
            source = files.enter_context(media.local_copy(clip.video))
            _, reference = _handoff_picture(clip, parent, parent_path)
            out = Path(tmp) / "matched.mp4"
            result = media.colour_match_video(source, reference, out)
            with transaction.atomic():
                current = Clip.objects.select_for_update().filter(pk=pk, **mine).first()
                if current is None:
                    return  # switched off, or queued again meanwhile
                old = current.matched_video.name
                with out.open("rb") as fh:
                    current.matched_video.save("matched.mp4", File(fh), save=False)
                current.colour_state = Clip.ColourState.READY
                current.matched_for = key
                current.save()
                storage = current.video.storage
                if old and old != current.matched_video.name:
                    transaction.on_commit(lambda: _remove_files(storage, [old]))
                _played_changed(current)
        log.info(
            "clip %s colour matched: difference %.2f -> %.2f (clipped %.4f)",
            pk,
            result.before,
            result.after,
            result.clipped,
        )


def recover_media_work(now=None) -> None:
    """Measurements and colour matches whose task was lost or whose worker died: handed
    out again (read first: this runs every second)."""
    now = now or timezone.now()
    grace = now - QUEUE_GRACE
    for clip in Clip.objects.filter(
        status=Clip.Status.READY, media_due_at__lt=grace, media_due_at__gt=now - timedelta(days=1)
    ).only("pk", "media_due_at"):
        if clip.claim({"media_due_at": clip.media_due_at}, media_due_at=now):
            enqueue_measure(clip.pk)
    stale = (Q(colour_state=Clip.ColourState.QUEUED) & Q(colour_claimed_at__lt=grace)) | (
        Q(colour_state=Clip.ColourState.MATCHING) & Q(colour_claimed_at__lt=now - COLOUR_STALE_AFTER)
    )
    for clip in Clip.objects.filter(stale, colour_match=True).only("pk", "colour_state", "colour_claimed_at"):
        expected = {"colour_state": clip.colour_state, "colour_claimed_at": clip.colour_claimed_at}
        if clip.claim(expected, colour_state=Clip.ColourState.QUEUED, colour_claimed_at=now):
            enqueue_colour_match(clip.pk)


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
    mine = {"status": ChainExport.Status.RUNNING, "claimed_at": export.claimed_at}

    def fail(message: str) -> None:
        export.claim(mine, status=ChainExport.Status.FAILED, error=message, finished_at=timezone.now())

    with _failures_recorded(
        fail, f"chain export {pk}", "The chain could not be joined because of an error in the studio."
    ):
        by_pk = {c.pk: c for c in Clip.objects.filter(owner=export.owner, pk__in=export.clip_ids)}
        clips = [by_pk.get(pk) for pk in export.clip_ids]
        missing = [pk for pk, c in zip(export.clip_ids, clips) if c is None or not c.is_ready or not c.video]
        matching = [c.pk for c in clips if c is not None and c.colour_pending]
        if not missing and matching:
            raise media.MediaError(
                f"The colour of clip #{matching[0]} is still being matched: join the chain once it is done."
            )
        if missing:
            raise media.MediaError(
                f"Clip #{missing[0]} is not ready (or was deleted), so the chain cannot be joined."
            )

        def report(fraction: float) -> None:
            ChainExport.objects.filter(pk=pk, **mine).update(progress=min(99, int(fraction * 100)))

        with tempfile.TemporaryDirectory(prefix="chain-") as tmp, ExitStack() as copies:
            # Each video as a file PyAV can open: itself on a local disk, else a temporary
            # copy from the storage (a bucket), removed after the join.
            # The colour-matched copy of a step that has one (what the sequence player plays).
            paths = [copies.enter_context(media.local_copy(clip.played_video)) for clip in clips]
            # The same cuts the sequence player plays (models.sequence_cuts).
            parts = [cut.join_part(path) for cut, path in zip(sequence_cuts(clips), paths)]
            out = Path(tmp) / "chain.mp4"
            result = media.join_videos(parts, out, progress=report)
            with transaction.atomic():
                current = ChainExport.objects.select_for_update().filter(pk=pk, **mine).first()
                if current is None:
                    return  # taken over by a later attempt
                with out.open("rb") as fh:
                    current.file.save("chain.mp4", File(fh), save=False)
                current.status = ChainExport.Status.READY
                current.progress = 100
                current.method, current.method_reason = result.method, result.reason
                current.duration, current.dropped_frames = result.duration, result.dropped
                current.has_audio, current.audio_duration = result.has_audio, result.audio_duration
                current.silent_parts = [
                    {"part": n, "why": result.sound_states[n] if n < len(result.sound_states) else "none"}
                    for n in result.silent_parts
                ]
                current.notes = result.notes
                current.error = ""
                current.finished_at = timezone.now()
                current.save()
        log.info("chain export %s ready (%s, %.2f s)", export.pk, result.method, result.duration)


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

    def fail(message: str) -> None:
        asset.claim({"status": Asset.Status.PREPARING}, status=Asset.Status.FAILED, error=message)

    with _failures_recorded(
        fail, f"video {pk}: preparing", "The video could not be prepared because of an error in the studio."
    ):
        with tempfile.TemporaryDirectory(prefix="video-") as tmp, media.local_copy(asset.file) as source:
            info = media.check_video(source)  # the header's limits first, then a real decode
            if media.is_h264_mp4(source):
                kept = None
            else:
                kept = Path(tmp) / "video.mp4"
                media.to_h264_mp4(source, kept)
                info = media.probe(kept)
            poster = media.thumbnail_jpeg(media.first_frame(kept or source))
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
                current.poster.save("poster.jpg", ContentFile(poster), save=False)
                current.width, current.height, current.duration = info.width, info.height, info.duration
                current.status = Asset.Status.READY
                current.save()
            if kept is not None:
                transaction.on_commit(lambda: _remove_files(asset.file.storage, [old_name]))


# --- Deleting -------------------------------------------------------------------------------


def delete_clip(clip: Clip, with_takes: bool = False) -> int:
    """Delete a clip (and, with `with_takes`, every clip that continues it) and every file
    only it used: its video and thumbnail, its last frame, the uploads it started from or
    was asked to end on, its references, a video it extended, and what its provider keeps
    of the job where the studio can reach it (the simulator's copies). Without
    `with_takes`, the takes that continued it become the roots of their own chains. A file
    a remaining clip still uses (a last frame it starts from, a video it extends, an upload
    it shares) is kept. Joined films that contained it are marked stale. Returns how many
    clips were deleted."""
    doomed = [clip] + (clip.descendants() if with_takes else [])
    ids = {c.pk for c in doomed}
    names = [f.name for c in doomed for f in (c.video, c.thumbnail) if f]
    derived = [name for c in doomed for name in c.media_names()]
    uses = [rel for rel in Asset._meta.related_objects if rel.related_model is Clip]
    used_by_doomed = Q()
    for rel in uses:
        used_by_doomed |= Q(**{f"{rel.name}__in": ids})
    candidates = Asset.objects.filter(
        used_by_doomed | Q(source=Asset.Source.CLIP_VIDEO, file__in=names), owner=clip.owner
    ).distinct()
    jobs_kept = [(c.provider, c.remote_id) for c in doomed if c.remote_id]
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
                names += asset.own_file_names()
        Asset.objects.filter(pk__in=[a.pk for a in doomed_assets]).delete()
        ChainExport.containing(clip.owner, ids).filter(stale_since=None).update(stale_since=timezone.now())
        Clip.objects.filter(pk__in=ids).delete()
        names += derived
        storage = clip.video.storage
        transaction.on_commit(lambda: _remove_files(storage, names))
        transaction.on_commit(lambda: _forget_jobs(jobs_kept))
    return len(ids)


def _forget_jobs(jobs_kept: list[tuple[str, str]]) -> None:
    for name, remote_id in jobs_kept:
        provider = find_provider(name)
        if provider is None:
            continue
        try:
            provider.forget(remote_id)
        except Exception:  # what a provider keeps must not undo the deletion
            log.warning("could not drop %s's copy of job %s", name, remote_id, exc_info=True)


# An upload no clip uses is kept this long (a creator may still be filling in the form).
UNUSED_UPLOAD_AGE = timedelta(days=1)


def remove_unused_uploads() -> int:
    """Delete assets that no clip uses and that are older than UNUSED_UPLOAD_AGE, with their
    files (a clip's own video, published to be extended, stays: it is the clip's). Runs on
    a schedule (migration 0013); safe to run twice, and beside a Generate: an asset a clip
    starts to use in the meantime is not deleted."""
    cutoff = timezone.now() - UNUSED_UPLOAD_AGE
    removed = 0
    for pk in list(Asset.unused().filter(created_at__lt=cutoff).values_list("pk", flat=True)[:1000]):
        with transaction.atomic():
            # Locked first (a lock cannot cover the outer joins "unused" reads), then checked.
            asset = Asset.objects.select_for_update().filter(pk=pk).first()
            if asset is None or not Asset.unused().filter(pk=pk, created_at__lt=cutoff).exists():
                continue
            names, storage = asset.own_file_names(), asset.file.storage
            asset.delete()
            if names:
                transaction.on_commit(lambda storage=storage, names=names: _remove_files(storage, names))
            removed += 1
    if removed:
        log.info("removed %s upload(s) no clip used for a day", removed)
    return removed


@contextmanager
def _failures_recorded(fail, what: str, studio_error: str):
    """Around a worker task's work on a file: a MediaError (something about the file itself,
    in plain words for the creator) calls fail(its message); any other error is logged and
    calls fail(studio_error). Nothing is raised on: the task has ended, and its card says why."""
    try:
        yield
    except media.MediaError as exc:
        fail(str(exc))
    except Exception:
        log.exception("%s failed", what)
        fail(studio_error)


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
