"""The life of a clip in the background: submit once, poll, finish, recover, time out."""

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from studio import jobs, media
from studio.catalogue import find_model
from studio.models import Clip, Lease
from studio.providers import ProviderError
from studio.providers.base import RemoteStatus
from studio.providers.simulator import SimulatorProvider, frame_size

from .conftest import run_enqueued
from .worker import poll_clip, poll_due_once

pytestmark = pytest.mark.django_db


def new_clip(user, model="simulator:cinema", **fields):
    spec = find_model(model)
    fields.setdefault("prompt", "A paper boat on a rain-soaked street")
    fields.setdefault("aspect_ratio", spec.aspect_ratios[0])
    fields.setdefault("duration", spec.durations[0])
    return jobs.start_clip(user, spec, **fields)


def make_due(clip):
    Clip.objects.filter(pk=clip.pk).update(next_poll_at=timezone.now() - timedelta(seconds=1))
    clip.refresh_from_db()


@pytest.fixture
def submits(monkeypatch):
    """Count calls to the simulator's submit (the provider side)."""
    calls = []
    original = SimulatorProvider.submit

    def counting(self, submission):
        calls.append(submission)
        return original(self, submission)

    monkeypatch.setattr(SimulatorProvider, "submit", counting)
    return calls


def test_clip_goes_queued_submitting_running_ready(
    user, enqueued, submits, django_capture_on_commit_callbacks
):
    seen = []
    original_submit = SimulatorProvider.submit

    with django_capture_on_commit_callbacks(execute=True):
        clip = new_clip(user)
    assert clip.status == Clip.Status.QUEUED and clip.status_label == "Queued"
    assert enqueued == [("studio.jobs.submit_clip", (clip.pk,))]

    def watching_submit(self, submission):
        seen.append(Clip.objects.get(pk=clip.pk).status)
        return original_submit(self, submission)

    SimulatorProvider.submit = watching_submit
    try:
        func, args = enqueued.pop(0)
        jobs.submit_clip(*args)
    finally:
        SimulatorProvider.submit = original_submit
    assert seen == [Clip.Status.SUBMITTING]
    clip.refresh_from_db()
    assert clip.status == Clip.Status.RUNNING and clip.status_label == "Generating"
    assert clip.remote_id and clip.submitted_at
    assert enqueued == [("studio.jobs.poll_due_clips", ())]

    enqueued.clear()
    make_due(clip)
    with django_capture_on_commit_callbacks(execute=True):
        poll_due_once()
    clip.refresh_from_db()
    assert clip.status == Clip.Status.FINISHING
    assert enqueued == [("studio.jobs.finish_clip", (clip.pk,))]
    run_enqueued(enqueued)
    clip.refresh_from_db()
    assert clip.status == Clip.Status.READY and clip.status_label == "Ready"
    assert clip.video and clip.thumbnail and clip.last_frame
    assert (clip.video_width, clip.video_height) == frame_size("16:9")
    assert clip.video_duration == pytest.approx(4, abs=0.05)
    assert Path(clip.video.path).is_relative_to(Path(clip.video.storage.location))


def test_submit_task_run_twice_submits_once(user, enqueued, submits):
    clip = new_clip(user)
    jobs.submit_clip(clip.pk)
    jobs.submit_clip(clip.pk)
    assert len(submits) == 1
    clip.refresh_from_db()
    assert clip.status == Clip.Status.RUNNING


def test_finish_task_run_twice_finishes_once(user, enqueued, django_capture_on_commit_callbacks):
    clip = new_clip(user)
    jobs.submit_clip(clip.pk)
    make_due(clip)
    poll_clip(clip)
    jobs.finish_clip(clip.pk)
    clip.refresh_from_db()
    first_video = clip.video.name
    jobs.finish_clip(clip.pk)
    clip.refresh_from_db()
    assert clip.status == Clip.Status.READY and clip.video.name == first_video
    assert clip.owner.assets.filter(source="last_frame").count() == 1


def test_clip_left_submitting_by_a_crash_may_have_started_and_is_not_resubmitted(user, enqueued, submits):
    clip = new_clip(user)
    # The worker died after claiming the clip: it may or may not have reached the provider.
    Clip.objects.filter(pk=clip.pk).update(
        status=Clip.Status.SUBMITTING, submitting_since=timezone.now() - timedelta(minutes=10)
    )
    jobs.recover_stale_clips()
    jobs.submit_clip(clip.pk)
    clip.refresh_from_db()
    assert clip.status == Clip.Status.FAILED and clip.failure_kind == Clip.Failure.UNCERTAIN
    assert clip.error.startswith("The provider may have started this clip.")
    assert "cannot tell whether it was accepted" in clip.error
    assert "before trying again" in clip.error and "billed twice" in clip.error
    assert clip.may_bill_twice and clip.status_label == "May have started"
    assert submits == []


def test_recent_submitting_clip_is_left_alone(user, enqueued):
    clip = new_clip(user)
    Clip.objects.filter(pk=clip.pk).update(status=Clip.Status.SUBMITTING, submitting_since=timezone.now())
    jobs.recover_stale_clips()
    clip.refresh_from_db()
    assert clip.status == Clip.Status.SUBMITTING


def test_queued_clip_whose_task_was_lost_is_sent_again_once(user, enqueued, submits):
    clip = new_clip(user)
    enqueued.clear()  # the on-commit task never reached a worker
    Clip.objects.filter(pk=clip.pk).update(next_poll_at=timezone.now() - timedelta(seconds=1))
    jobs.recover_stale_clips()
    jobs.recover_stale_clips()  # a second sweep does not enqueue it again
    assert enqueued == [("studio.jobs.submit_clip", (clip.pk,))]
    jobs.submit_clip(clip.pk)
    assert len(submits) == 1


def still_running(monkeypatch, polls=None):
    def poll(self, remote_id):
        if polls is not None:
            polls.append(remote_id)
        return RemoteStatus("running")

    monkeypatch.setattr(SimulatorProvider, "poll", poll)


def test_running_clip_past_its_deadline_is_polled_once_more_then_times_out(user, enqueued, monkeypatch):
    clip = new_clip(user)
    jobs.submit_clip(clip.pk)
    polls = []
    still_running(monkeypatch, polls)
    Clip.objects.filter(pk=clip.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))
    jobs.recover_stale_clips()  # past the deadline: due for one last poll, not failed yet
    clip.refresh_from_db()
    assert clip.status == Clip.Status.RUNNING and clip.next_poll_at <= timezone.now()
    poll_due_once()
    clip.refresh_from_db()
    assert polls == [clip.remote_id]
    assert clip.status == Clip.Status.FAILED and clip.failure_kind == Clip.Failure.TIMED_OUT
    assert clip.error.startswith("Timed out")
    # The studio keeps looking for it.
    assert clip.still_looking_until is not None and clip.next_poll_at is not None


def test_a_clip_the_last_poll_finds_done_is_not_timed_out(user, enqueued, django_capture_on_commit_callbacks):
    clip = new_clip(user)
    jobs.submit_clip(clip.pk)
    Clip.objects.filter(pk=clip.pk).update(
        deadline_at=timezone.now() - timedelta(seconds=1), next_poll_at=timezone.now() - timedelta(seconds=1)
    )
    with django_capture_on_commit_callbacks(execute=True):
        poll_due_once()  # the simulator has finished it
    run_enqueued([e for e in enqueued if e[0] == "studio.jobs.finish_clip"])
    clip.refresh_from_db()
    assert clip.status == Clip.Status.READY and clip.error == ""


def test_a_poll_is_claimed_so_two_pollers_poll_once(user, enqueued, monkeypatch):
    clip = new_clip(user)
    jobs.submit_clip(clip.pk)
    make_due(clip)
    polls = []
    monkeypatch.setattr(
        SimulatorProvider, "poll", lambda self, rid: polls.append(rid) or RemoteStatus("running")
    )
    stale_copy = Clip.objects.get(pk=clip.pk)  # a second worker read the same row
    poll_clip(clip)
    poll_clip(stale_copy)
    assert len(polls) == 1


def test_transient_poll_error_backs_off_and_does_not_fail(user, enqueued, monkeypatch):
    clip = new_clip(user)
    jobs.submit_clip(clip.pk)
    make_due(clip)

    def broken(self, rid):
        raise ProviderError("Service unavailable", retry_after=42)

    monkeypatch.setattr(SimulatorProvider, "poll", broken)
    before = timezone.now()
    poll_clip(clip)
    clip.refresh_from_db()
    assert clip.status == Clip.Status.RUNNING
    assert clip.poll_failures == 1
    assert clip.next_poll_at >= before + timedelta(seconds=41)


def test_permanent_submit_error_fails_with_the_message(user, enqueued, monkeypatch):
    clip = new_clip(user)

    def refuse(self, submission):
        raise ProviderError("The prompt was refused by moderation.", permanent=True)

    monkeypatch.setattr(SimulatorProvider, "submit", refuse)
    jobs.submit_clip(clip.pk)
    clip.refresh_from_db()
    assert clip.status == Clip.Status.FAILED
    assert clip.error == "The prompt was refused by moderation."


def test_transient_submit_error_requeues_for_a_later_try(user, enqueued, monkeypatch):
    clip = new_clip(user)
    monkeypatch.setattr(
        SimulatorProvider,
        "submit",
        lambda self, s: (_ for _ in ()).throw(ProviderError("Too many requests", retry_after=30)),
    )
    jobs.submit_clip(clip.pk)
    clip.refresh_from_db()
    assert clip.status == Clip.Status.QUEUED
    assert clip.next_poll_at > timezone.now() + timedelta(seconds=25)


def test_failed_remote_job_shows_its_reason(user, enqueued, monkeypatch):
    clip = new_clip(user)
    jobs.submit_clip(clip.pk)
    make_due(clip)
    monkeypatch.setattr(
        SimulatorProvider, "poll", lambda self, rid: RemoteStatus("failed", error="Out of ideas.")
    )
    poll_clip(clip)
    clip.refresh_from_db()
    assert clip.status == Clip.Status.FAILED and clip.error == "Out of ideas."


@pytest.mark.django_db(transaction=True)  # on-commit callbacks run at once, as in a worker
def test_sweep_polls_until_every_clip_is_finished(user, enqueued, monkeypatch):
    clips = [new_clip(user), new_clip(user, model="simulator:motion", aspect_ratio="1:1")]
    for clip in clips:
        jobs.submit_clip(clip.pk)
    enqueued.clear()

    # Finishing runs as its own task: run it whenever the sweep enqueues one.
    def finish_now(func, *args, **kwargs):
        if func == "studio.jobs.finish_clip":
            jobs.finish_clip(*args)

    monkeypatch.setattr("studio.jobs.async_task", finish_now)
    result = jobs.poll_due_clips(seconds=30)
    assert result.startswith("polled")
    for clip in clips:
        clip.refresh_from_db()
        assert clip.status == Clip.Status.READY, clip.error
    assert Lease.objects.get(name=jobs.SWEEP_LEASE).holder == ""


def test_only_one_sweep_runs_at_a_time(user):
    assert Lease.acquire(jobs.SWEEP_LEASE, "someone-else", 60)
    assert jobs.poll_due_clips(seconds=1).startswith("another sweep is running")


def test_continued_clip_starts_from_the_parents_last_frame(user, enqueued):
    parent = new_clip(user)
    jobs.submit_clip(parent.pk)
    make_due(parent)
    poll_clip(parent)
    jobs.finish_clip(parent.pk)
    parent.refresh_from_db()
    child = new_clip(
        user, parent=parent, first_frame=parent.last_frame, prompt="The boat sails into a tunnel"
    )
    jobs.submit_clip(child.pk)
    make_due(child)
    poll_clip(child)
    jobs.finish_clip(child.pk)
    child.refresh_from_db()
    assert child.is_ready and child.chain() == [parent, child]
    start = media.first_frame(Path(child.video.path))
    end = media.last_frame(Path(parent.video.path))
    assert mean_abs_diff(start, end) < 4


def mean_abs_diff(a, b):
    from PIL import ImageChops, ImageStat

    a, b = a.convert("RGB"), b.convert("RGB").resize(a.size)
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


# --- Deadlines, finishing, late deliveries -------------------------------------------------


def test_the_deadline_counts_from_acceptance_not_from_the_clip_s_creation(user, enqueued, settings):
    settings.CLIP_DEADLINE_MINUTES = 10
    clip = new_clip(user)
    # An hour in our queue (retries, a busy worker) before the provider took it.
    Clip.objects.filter(pk=clip.pk).update(created_at=timezone.now() - timedelta(hours=1))
    jobs.submit_clip(clip.pk)
    clip.refresh_from_db()
    assert clip.status == Clip.Status.RUNNING
    assert clip.deadline_at - clip.submitted_at == timedelta(minutes=10)
    assert clip.deadline_at > timezone.now() + timedelta(minutes=9)


def run_finishes(enqueued):
    """Run the finish tasks that were enqueued (a sweep's own loop is driven by hand here)."""
    run_enqueued([e for e in enqueued if e[0] == "studio.jobs.finish_clip"])
    enqueued.clear()


def finishing_clip(user):
    clip = new_clip(user)
    jobs.submit_clip(clip.pk)
    make_due(clip)
    poll_clip(clip)
    clip.refresh_from_db()
    assert clip.status == Clip.Status.FINISHING
    return clip


def test_a_clip_being_copied_is_never_timed_out(user, enqueued, monkeypatch):
    clip = finishing_clip(user)
    Clip.objects.filter(pk=clip.pk).update(deadline_at=timezone.now() - timedelta(hours=2))
    jobs.recover_stale_clips()
    clip.refresh_from_db()
    assert clip.status == Clip.Status.FINISHING
    jobs.finish_clip(clip.pk)
    clip.refresh_from_db()
    assert clip.status == Clip.Status.READY


def flaky_download(monkeypatch, failures: int):
    """The first `failures` downloads of a video fail as a transfer that broke."""
    calls = []
    original = SimulatorProvider.download

    def download(self, url, destination):
        calls.append(url)
        if url.endswith("video.mp4") and len(calls) <= failures:
            raise ProviderError("The file storage had a problem (502).")
        return original(self, url, destination)

    monkeypatch.setattr(SimulatorProvider, "download", download)
    return calls


def test_copying_is_retried_with_growing_backoff(user, enqueued, monkeypatch):
    clip = finishing_clip(user)
    flaky_download(monkeypatch, failures=2)
    waits = []
    for _ in range(2):
        before = timezone.now()
        jobs.finish_clip(clip.pk)
        clip.refresh_from_db()
        assert clip.status == Clip.Status.FINISHING and clip.finish_claimed_at is None
        waits.append((clip.next_poll_at - before).total_seconds())
        enqueued.clear()
        jobs.recover_stale_clips()
        assert enqueued == []  # not before its time
        Clip.objects.filter(pk=clip.pk).update(next_poll_at=timezone.now() - timedelta(seconds=1))
        jobs.recover_stale_clips()
        assert enqueued == [("studio.jobs.finish_clip", (clip.pk,))]
    assert jobs.FINISH_BACKOFF_SECONDS <= waits[0] < waits[1]
    jobs.finish_clip(clip.pk)
    clip.refresh_from_db()
    assert clip.status == Clip.Status.READY


def test_a_copy_that_keeps_failing_is_kept_and_looked_for_again(
    user, enqueued, monkeypatch, django_capture_on_commit_callbacks
):
    clip = finishing_clip(user)
    flaky_download(monkeypatch, failures=jobs.FINISH_MAX_ATTEMPTS)
    for _ in range(jobs.FINISH_MAX_ATTEMPTS):
        Clip.objects.filter(pk=clip.pk).update(next_poll_at=None)
        jobs.finish_clip(clip.pk)
    clip.refresh_from_db()
    assert clip.status == Clip.Status.FAILED and clip.failure_kind == Clip.Failure.COPY
    assert clip.error.startswith("The clip was made but could not be copied into the studio")
    assert clip.still_looking_until is not None and not clip.may_bill_twice
    # Later, the provider's file answers again: a look finds it done and the copy works.
    Clip.objects.filter(pk=clip.pk).update(next_poll_at=timezone.now() - timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):
        poll_due_once()
    run_finishes(enqueued)
    clip.refresh_from_db()
    assert clip.status == Clip.Status.READY and clip.error == "" and clip.failure_kind == ""


def timed_out_clip(user, monkeypatch):
    clip = new_clip(user)
    jobs.submit_clip(clip.pk)
    with monkeypatch.context() as patched:
        still_running(patched)
        Clip.objects.filter(pk=clip.pk).update(
            deadline_at=timezone.now() - timedelta(seconds=1),
            next_poll_at=timezone.now() - timedelta(seconds=1),
        )
        poll_due_once()
    clip.refresh_from_db()
    assert clip.failure_kind == Clip.Failure.TIMED_OUT
    return clip


def test_a_timed_out_clip_delivered_later_is_revived_by_a_poll(
    user, enqueued, monkeypatch, django_capture_on_commit_callbacks
):
    clip = timed_out_clip(user, monkeypatch)
    poll_due_once()
    clip.refresh_from_db()
    assert clip.status == Clip.Status.FAILED  # not looked at again before LATE_LOOK_EVERY
    assert clip.next_poll_at >= timezone.now() + jobs.LATE_LOOK_EVERY - timedelta(seconds=5)
    make_due(clip)
    with django_capture_on_commit_callbacks(execute=True):
        poll_due_once()
    run_finishes(enqueued)
    clip.refresh_from_db()
    assert clip.status == Clip.Status.READY and clip.error == "" and not clip.failure_kind


def test_a_timed_out_clip_is_revived_when_a_webhook_says_it_is_done(
    user, enqueued, monkeypatch, django_capture_on_commit_callbacks
):
    clip = timed_out_clip(user, monkeypatch)
    with django_capture_on_commit_callbacks(execute=True):
        assert jobs.wake_by_webhook("simulator", clip.webhook_token) is True
    assert ("studio.jobs.poll_due_clips", ()) in enqueued
    with django_capture_on_commit_callbacks(execute=True):
        poll_due_once()
    run_finishes(enqueued)
    clip.refresh_from_db()
    assert clip.is_ready


def test_the_studio_stops_looking_after_the_late_delivery_window(user, enqueued, monkeypatch, settings):
    settings.CLIP_LATE_DELIVERY_HOURS = 24
    clip = timed_out_clip(user, monkeypatch)
    Clip.objects.filter(pk=clip.pk).update(
        deadline_at=timezone.now() - timedelta(hours=25), next_poll_at=timezone.now() - timedelta(minutes=1)
    )
    polls = []
    still_running(monkeypatch, polls)
    poll_due_once()
    assert polls == []
    clip.refresh_from_db()
    assert clip.still_looking_until is None
    assert jobs.wake_by_webhook("simulator", clip.webhook_token) is False


def test_a_provider_failure_seen_late_replaces_the_time_out(user, enqueued, monkeypatch):
    clip = timed_out_clip(user, monkeypatch)
    monkeypatch.setattr(
        SimulatorProvider, "poll", lambda self, rid: RemoteStatus("failed", error="The GPU caught fire.")
    )
    make_due(clip)
    poll_due_once()
    clip.refresh_from_db()
    assert clip.error == "The GPU caught fire." and clip.next_poll_at is None and not clip.failure_kind


# --- Refused keys ----------------------------------------------------------------------------


def refused_key(self, remote_id):
    raise ProviderError("The provider refused the API key.", permanent=True, kind=ProviderError.AUTH)


def test_a_refused_key_while_polling_pauses_the_clip_and_it_resumes(
    user, enqueued, monkeypatch, django_capture_on_commit_callbacks
):
    clip = new_clip(user)
    jobs.submit_clip(clip.pk)
    with monkeypatch.context() as patched:
        patched.setattr(SimulatorProvider, "poll", refused_key)
        Clip.objects.filter(pk=clip.pk).update(
            deadline_at=timezone.now() - timedelta(seconds=1),
            next_poll_at=timezone.now() - timedelta(seconds=1),
        )
        poll_due_once()
    clip.refresh_from_db()
    # Past its deadline too: a refused key never fails a running job, it waits.
    assert clip.status == Clip.Status.RUNNING and clip.paused_at is not None
    assert clip.status_label.startswith("Waiting for ")
    assert "refused the API key" in clip.notice and "carries on" in clip.notice
    make_due(clip)
    with django_capture_on_commit_callbacks(execute=True):
        poll_due_once()
    clip.refresh_from_db()
    assert clip.paused_at is None and clip.notice == "" and clip.status == Clip.Status.FINISHING


def test_a_refused_key_while_copying_pauses_without_using_up_the_tries(user, enqueued, monkeypatch):
    clip = finishing_clip(user)

    def download(self, url, destination):
        raise ProviderError("The provider refused the API key.", permanent=True, kind=ProviderError.AUTH)

    with monkeypatch.context() as patched:
        patched.setattr(SimulatorProvider, "download", download)
        for _ in range(jobs.FINISH_MAX_ATTEMPTS + 2):
            Clip.objects.filter(pk=clip.pk).update(next_poll_at=None)
            jobs.finish_clip(clip.pk)
    clip.refresh_from_db()
    assert clip.status == Clip.Status.FINISHING and clip.paused_at is not None
    assert clip.finish_attempts == 0
    Clip.objects.filter(pk=clip.pk).update(next_poll_at=None)
    jobs.finish_clip(clip.pk)
    clip.refresh_from_db()
    assert clip.status == Clip.Status.READY and clip.paused_at is None


def test_a_clip_of_a_provider_switched_off_waits_for_it(user, enqueued, settings):
    clip = new_clip(user)
    jobs.submit_clip(clip.pk)
    settings.SIMULATOR_ENABLED = False
    make_due(clip)
    poll_due_once()
    clip.refresh_from_db()
    assert clip.status == Clip.Status.RUNNING and clip.paused_at is not None
    assert "switched off" in clip.notice
    settings.SIMULATOR_ENABLED = True
    poll_due_once()
    clip.refresh_from_db()
    assert clip.paused_at is None and clip.status == Clip.Status.FINISHING


# --- Polling at scale --------------------------------------------------------------------------


def running_clips(user, count):
    """Clips the provider accepted (remote ids of their own, nothing rendered), all due."""
    clips = [new_clip(user, prompt=f"Batch clip number {n}") for n in range(count)]
    for clip in clips:
        Clip.objects.filter(pk=clip.pk).update(
            status=Clip.Status.RUNNING,
            remote_id=f"job-{clip.pk}",
            submitted_at=timezone.now(),
            deadline_at=timezone.now() + timedelta(minutes=30),
            next_poll_at=timezone.now() - timedelta(seconds=1),
        )
        clip.refresh_from_db()
    return clips


def test_due_clips_are_claimed_in_one_batch_and_an_unchanged_poll_writes_nothing(
    user, enqueued, monkeypatch, django_assert_max_num_queries
):
    running_clips(user, 30)
    still_running(monkeypatch)
    # Per provider: select the due ids, two claim UPDATEs, read the claimed rows; plus, for
    # each switched-off provider, a read of the keys pasted in the studio (one may have been
    # pasted since the last sweep) and a look for its clips. Not 4 queries per clip.
    with django_assert_max_num_queries(10):
        assert poll_due_once() == 30


def test_a_claimed_batch_is_never_claimed_again_in_the_same_interval(user, enqueued):
    running_clips(user, 5)
    provider = SimulatorProvider()
    first = jobs.claim_due(provider)
    second = jobs.claim_due(provider)  # a second worker, at the same moment
    assert len(first) == 5 and second == []


def test_a_slow_poll_does_not_hold_back_the_others(user, enqueued, monkeypatch, settings):
    settings.POLL_CONCURRENCY = 4
    clips = running_clips(user, 6)
    slow = clips[0].remote_id
    others_done = threading.Event()
    applied = []
    original = jobs._after_poll

    def after_poll(clip, provider, outcome):
        applied.append(clip.remote_id)
        original(clip, provider, outcome)
        if len(applied) == len(clips) - 1 and slow not in applied:
            others_done.set()

    def poll(self, remote_id):
        if remote_id == slow:
            # Answers only once every other clip's answer was applied (or gives up).
            assert others_done.wait(10), "the other polls waited for the slow one"
        return RemoteStatus("running")

    monkeypatch.setattr(jobs, "_after_poll", after_poll)
    monkeypatch.setattr(SimulatorProvider, "poll", poll)
    assert poll_due_once() == 6
    assert applied[-1] == slow and others_done.is_set()


def test_the_simulator_renders_when_it_accepts_a_job_never_in_a_poll(user, enqueued, monkeypatch):
    from studio.providers import simulator

    clip = new_clip(user)
    jobs.submit_clip(clip.pk)

    def no_render(*args, **kwargs):
        raise AssertionError("rendering inside the poll sweep")

    monkeypatch.setattr(simulator, "render", no_render)
    make_due(clip)
    poll_clip(clip)
    clip.refresh_from_db()
    assert clip.status == Clip.Status.FINISHING


# --- Sending ------------------------------------------------------------------------------------


def test_an_answer_lost_after_sending_says_it_may_have_started_and_never_resends(user, enqueued, monkeypatch):
    calls = []

    def lost(self, submission):
        calls.append(submission)
        raise ProviderError("The provider did not answer in time (ReadTimeout).", outcome_unknown=True)

    monkeypatch.setattr(SimulatorProvider, "submit", lost)
    clip = new_clip(user)
    jobs.submit_clip(clip.pk)
    jobs.recover_stale_clips()
    run_enqueued([e for e in enqueued if e[0] == "studio.jobs.submit_clip"])
    clip.refresh_from_db()
    assert len(calls) == 1
    assert clip.failure_kind == Clip.Failure.UNCERTAIN and clip.may_bill_twice
    assert "ReadTimeout" in clip.error
    # The simulator lists no jobs: nothing to keep looking in.
    assert clip.next_poll_at is None


def test_a_clip_never_accepted_in_time_fails_saying_nothing_was_charged(user, enqueued, monkeypatch):
    monkeypatch.setattr(
        SimulatorProvider,
        "submit",
        lambda self, s: (_ for _ in ()).throw(ProviderError("Too many requests (429).", retry_after=30)),
    )
    clip = new_clip(user)
    jobs.submit_clip(clip.pk)
    clip.refresh_from_db()
    assert clip.notice == "Waiting to retry: Too many requests (429)." and clip.error == ""
    Clip.objects.filter(pk=clip.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))
    jobs.recover_stale_clips()
    clip.refresh_from_db()
    assert clip.status == Clip.Status.FAILED and not clip.failure_kind
    assert "Nothing was charged" in clip.error and "429" in clip.error
