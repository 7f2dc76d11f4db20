"""The worker's polling, run at once inside a test and waited for: one clip now, or every
clip due now. (The studio's own sweep, jobs.poll_due_clips, keeps polls flowing for about a
minute at a time instead.)"""

from studio import jobs
from studio.models import Clip
from studio.providers import find_provider


def poll_clip(clip: Clip) -> None:
    """Poll this one clip now, if it is due and nobody else is polling it."""
    provider = find_provider(clip.provider)
    if provider is None or not provider.is_enabled():
        jobs.pause_clips_of_disabled_providers()
        return
    for claimed in jobs.claim_due(provider, pks=[clip.pk]):
        jobs._after_poll(claimed, provider, jobs._poll_once(provider, claimed))  # in this thread


def poll_due_once() -> int:
    """Poll every clip due now, once, and wait for the answers; return how many."""
    count = 0
    polls = jobs.Polls()
    jobs.pause_clips_of_disabled_providers()
    try:
        while True:
            started = polls.start_due(jobs.POLL_BATCH)
            polls.drain()
            count += started
            if started < jobs.POLL_BATCH:
                return count
    finally:
        polls.cancel()
