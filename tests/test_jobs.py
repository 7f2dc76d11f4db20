"""The life of a clip in the background: submit once, poll, finish, recover, time out."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from studio import jobs, media
from studio.catalogue import find_model
from studio.models import Clip, Lease
from studio.providers import ProviderError
from studio.providers.base import RemoteStatus
from studio.providers.simulator import SimulatorProvider

from .conftest import run_enqueued

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
        jobs.poll_due_once()
    clip.refresh_from_db()
    assert clip.status == Clip.Status.FINISHING
    assert enqueued == [("studio.jobs.finish_clip", (clip.pk,))]
    run_enqueued(enqueued)
    clip.refresh_from_db()
    assert clip.status == Clip.Status.READY and clip.status_label == "Ready"
    assert clip.video and clip.thumbnail and clip.last_frame
    assert (clip.video_width, clip.video_height) == (854, 480)
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
    jobs.poll_clip(clip)
    jobs.finish_clip(clip.pk)
    clip.refresh_from_db()
    first_video = clip.video.name
    jobs.finish_clip(clip.pk)
    clip.refresh_from_db()
    assert clip.status == Clip.Status.READY and clip.video.name == first_video
    assert clip.owner.assets.filter(source="last_frame").count() == 1


def test_clip_left_submitting_by_a_crash_is_failed_not_resubmitted(user, enqueued, submits):
    clip = new_clip(user)
    # The worker died after claiming the clip: it may or may not have reached the provider.
    Clip.objects.filter(pk=clip.pk).update(
        status=Clip.Status.SUBMITTING, submitting_since=timezone.now() - timedelta(minutes=10)
    )
    jobs.recover_stale_clips()
    jobs.submit_clip(clip.pk)
    clip.refresh_from_db()
    assert clip.status == Clip.Status.FAILED
    assert "cannot tell whether it was accepted" in clip.error
    assert "before trying again" in clip.error
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


def test_running_clip_past_its_deadline_fails_with_a_reason(user, enqueued):
    clip = new_clip(user)
    jobs.submit_clip(clip.pk)
    Clip.objects.filter(pk=clip.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))
    jobs.recover_stale_clips()
    clip.refresh_from_db()
    assert clip.status == Clip.Status.FAILED
    assert clip.error.startswith("Timed out")


def test_a_poll_is_claimed_so_two_pollers_poll_once(user, enqueued, monkeypatch):
    clip = new_clip(user)
    jobs.submit_clip(clip.pk)
    make_due(clip)
    polls = []
    monkeypatch.setattr(
        SimulatorProvider, "poll", lambda self, rid: polls.append(rid) or RemoteStatus("running")
    )
    stale_copy = Clip.objects.get(pk=clip.pk)  # a second worker read the same row
    jobs.poll_clip(clip)
    jobs.poll_clip(stale_copy)
    assert len(polls) == 1


def test_transient_poll_error_backs_off_and_does_not_fail(user, enqueued, monkeypatch):
    clip = new_clip(user)
    jobs.submit_clip(clip.pk)
    make_due(clip)

    def broken(self, rid):
        raise ProviderError("Service unavailable", retry_after=42)

    monkeypatch.setattr(SimulatorProvider, "poll", broken)
    before = timezone.now()
    jobs.poll_clip(clip)
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
    jobs.poll_clip(clip)
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
    jobs.poll_clip(parent)
    jobs.finish_clip(parent.pk)
    parent.refresh_from_db()
    child = new_clip(
        user, parent=parent, first_frame=parent.last_frame, prompt="The boat sails into a tunnel"
    )
    jobs.submit_clip(child.pk)
    make_due(child)
    jobs.poll_clip(child)
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
