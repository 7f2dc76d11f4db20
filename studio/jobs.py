"""Background tasks (django-q2). Thin: each takes a primary key or nothing, finds the
clips, and calls their methods; running any of them twice is harmless (claims in models)."""

from __future__ import annotations

import logging
import time
import uuid

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone
from django_q.tasks import async_task

from .models import FINISH_STALE_AFTER, QUEUE_GRACE, SUBMIT_STALE_AFTER, ChainExport, Clip, Lease
from .providers import ProviderError, enabled_providers

log = logging.getLogger(__name__)

SWEEP_LEASE = "poll-sweep"


def enqueue_submit(pk: int) -> None:
    async_task("studio.jobs.submit_clip", pk, task_name=f"submit clip {pk}", group="clips")


def enqueue_finish(pk: int) -> None:
    async_task("studio.jobs.finish_clip", pk, task_name=f"finish clip {pk}", group="clips")


def enqueue_sweep() -> None:
    async_task("studio.jobs.poll_due_clips", task_name="poll due clips", group="sweeps")


def enqueue_export(pk: int) -> None:
    async_task("studio.jobs.export_chain", pk, task_name=f"join chain export {pk}", group="exports")


def export_chain(pk: int) -> None:
    """Join a chain's clips into one MP4 (claimed in ChainExport.run: a second run is a no-op)."""
    export = ChainExport.objects.filter(pk=pk).first()
    if export is not None:
        export.run()


def submit_clip(pk: int) -> None:
    clip = Clip.objects.filter(pk=pk).first()
    if clip is None:
        return
    clip.submit()
    if clip.status == Clip.Status.RUNNING:
        # Start polling now rather than at the scheduler's next wake-up (~30-60 s away).
        enqueue_sweep()


def finish_clip(pk: int) -> None:
    clip = Clip.objects.filter(pk=pk).first()
    if clip is not None:
        clip.finish()


def recover_stale_clips() -> None:
    """Move on every clip whose worker died or whose task was lost."""
    now = timezone.now()
    for clip in Clip.objects.filter(
        status=Clip.Status.SUBMITTING, submitting_since__lt=now - SUBMIT_STALE_AFTER
    ):
        clip.fail_if(Clip.Status.SUBMITTING, clip.unknown_outcome_message())
    for clip in Clip.objects.filter(
        status__in=[Clip.Status.QUEUED, Clip.Status.FINISHING], deadline_at__lte=now
    ):
        clip.fail_if(clip.status, clip.timeout_message())
    for clip in Clip.objects.filter(status=Clip.Status.RUNNING, deadline_at__lte=now):
        clip.fail_if(Clip.Status.RUNNING, clip.timeout_message())
    # Queued clips whose submit task never ran, or whose retry time has come. The
    # conditional update stops two sweeps from enqueueing the same clip.
    for clip in Clip.objects.filter(status=Clip.Status.QUEUED, next_poll_at__lte=now):
        if Clip.objects.filter(pk=clip.pk, status=Clip.Status.QUEUED, next_poll_at=clip.next_poll_at).update(
            next_poll_at=now + QUEUE_GRACE
        ):
            enqueue_submit(clip.pk)
    # Finishing clips with no live finish task: never claimed, or claimed by a dead worker.
    stale = now - FINISH_STALE_AFTER
    for clip in Clip.objects.filter(status=Clip.Status.FINISHING):
        lost = clip.finish_claimed_at is None and clip.updated_at < now - QUEUE_GRACE
        if lost or (clip.finish_claimed_at and clip.finish_claimed_at < stale):
            Clip.objects.filter(pk=clip.pk).update(finish_claimed_at=None, updated_at=now)
            enqueue_finish(clip.pk)
    for pk in ChainExport.recover_stale():
        enqueue_export(pk)


def refresh_provider_models() -> str:
    """Read again the model lists of providers that publish one (OpenRouter), when the
    cached copy is older than the provider's refresh interval. Scheduled every few minutes;
    a failure keeps the last good list."""
    done = []
    for provider in enabled_providers():
        if not provider.refreshable or not provider.refresh_due():
            continue
        try:
            done.append(f"{provider.name}: {provider.refresh_models()} models")
        except ProviderError as exc:
            log.warning("could not refresh the models of %s: %s", provider.name, exc.message)
            done.append(f"{provider.name}: failed")
    return "; ".join(done) or "nothing to refresh"


def poll_due_once() -> int:
    """Poll every running clip that is due; return how many were polled."""
    due = Clip.objects.filter(status=Clip.Status.RUNNING, next_poll_at__lte=timezone.now())
    count = 0
    for clip in due.order_by("next_poll_at")[:200]:
        clip.poll()
        count += 1
    return count


def _active_clips() -> bool:
    return Clip.objects.unfinished().exists()


def poll_due_clips(seconds: float | None = None) -> str:
    """The sweep: for about POLL_SWEEP_SECONDS, poll due clips and recover stale ones.

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
