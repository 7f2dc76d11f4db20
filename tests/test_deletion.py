"""What deleting leaves behind (nothing only the clip used), uploads no clip uses, and the
storage a creator uses: the account page and the optional quota."""

import importlib
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from django_q.models import Schedule

from studio import inputs, jobs
from studio.models import Asset, ChainExport, Clip, storage_used
from studio.providers.simulator import render

from .images import png_bytes
from .test_views import ready_clip

pytestmark = pytest.mark.django_db

GOOD = {
    "model": "simulator:cinema",
    "prompt": "A quiet harbour at dawn",
    "aspect_ratio": "16:9",
    "duration": "4",
}


def upload(user, color=(200, 60, 40)):
    image = SimpleUploadedFile("frame.png", png_bytes(color=color), content_type="image/png")
    return inputs.bring(user, "first_frame", upload=image)


def job_folder(settings, clip) -> Path:
    return Path(settings.MEDIA_ROOT) / "simulator" / clip.remote_id


def delete(client, clip, callbacks, **data):
    with callbacks(execute=True):
        return client.post(f"/clips/{clip.pk}/delete/", data)


def test_deleting_a_clip_removes_its_upload_and_the_simulators_copies(
    signed_in, user, enqueued, settings, django_capture_on_commit_callbacks
):
    frame = upload(user)
    clip = ready_clip(user, first_frame=frame)
    folder = job_folder(settings, clip)
    kept = [
        Path(clip.video.path),
        Path(clip.thumbnail.path),
        Path(clip.last_frame.file.path),
        Path(frame.file.path),
    ]
    # The simulator keeps a copy of the first frame, the prompt and the video, as a service would.
    assert {p.name for p in folder.iterdir()} >= {"first_frame.png", "job.json", "video.mp4"}
    assert clip.prompt in (folder / "job.json").read_text()
    assert delete(signed_in, clip, django_capture_on_commit_callbacks).status_code == 302
    assert not Clip.objects.exists() and not Asset.objects.exists()
    assert not any(p.exists() for p in kept) and not folder.exists()


def test_an_upload_another_clip_uses_is_kept(signed_in, user, enqueued, django_capture_on_commit_callbacks):
    frame = upload(user)
    first = ready_clip(user, first_frame=frame)
    second = ready_clip(user, first_frame=frame, prompt="The same harbour, later")
    delete(signed_in, first, django_capture_on_commit_callbacks)
    assert Asset.objects.filter(pk=frame.pk).exists() and Path(frame.file.path).exists()
    delete(signed_in, second, django_capture_on_commit_callbacks)
    assert not Asset.objects.filter(pk=frame.pk).exists() and not Path(frame.file.path).exists()


def test_a_joined_film_that_contained_the_clip_is_marked_stale(
    signed_in, user, enqueued, django_capture_on_commit_callbacks
):
    clip = ready_clip(user)
    other = ready_clip(user, prompt="Another chain entirely")
    sequence = f"{other.pk + 100},{clip.pk},{other.pk + 200}"
    with_it = ChainExport.objects.create(owner=user, clip=clip, clip_ids=[clip.pk], sequence_key=sequence)
    without = ChainExport.objects.create(
        owner=user, clip=other, clip_ids=[other.pk], sequence_key=f"{other.pk}"
    )
    lookalike = ChainExport.objects.create(owner=user, clip=other, sequence_key=f"{clip.pk}0,1{clip.pk}")
    delete(signed_in, clip, django_capture_on_commit_callbacks)
    assert ChainExport.objects.get(pk=with_it.pk).stale_since is not None
    assert ChainExport.objects.get(pk=without.pk).stale_since is None
    assert ChainExport.objects.get(pk=lookalike.pk).stale_since is None


def test_uploads_no_clip_uses_are_removed_after_a_day(user, enqueued, django_capture_on_commit_callbacks):
    old_unused, recent_unused, old_used = upload(user), upload(user, (1, 2, 3)), upload(user, (4, 5, 6))
    ready_clip(user, first_frame=old_used)
    day_ago = timezone.now() - timedelta(days=1, minutes=1)
    Asset.objects.filter(pk__in=[old_unused.pk, old_used.pk]).update(created_at=day_ago)
    with django_capture_on_commit_callbacks(execute=True):
        assert jobs.remove_unused_uploads() == 1
    assert not Asset.objects.filter(pk=old_unused.pk).exists() and not Path(old_unused.file.path).exists()
    assert Asset.objects.filter(pk__in=[recent_unused.pk, old_used.pk]).count() == 2
    assert Path(recent_unused.file.path).exists()
    assert jobs.remove_unused_uploads() == 0  # a second run finds nothing left to do


def brought_video(user, tmp_path) -> Asset:
    """A video a creator brought to extend, prepared by the worker (so it has its poster)."""
    path = tmp_path / "mine.mp4"
    render(path, "My own footage", "16:9", 1, None)
    video = SimpleUploadedFile("mine.mp4", path.read_bytes(), content_type="video/mp4")
    asset = inputs.bring(user, "extend_video", upload=video)
    jobs.prepare_video(asset.pk)
    asset.refresh_from_db()
    assert asset.status == Asset.Status.READY and asset.poster
    return asset


def test_a_brought_videos_poster_goes_with_it(
    signed_in, user, enqueued, tmp_path, django_capture_on_commit_callbacks
):
    unused, extended = brought_video(user, tmp_path), brought_video(user, tmp_path)
    files = {a.pk: [Path(a.file.path), Path(a.poster.path)] for a in (unused, extended)}
    assert all(p.exists() for paths in files.values() for p in paths)
    assert unused.stored_bytes == sum(p.stat().st_size for p in files[unused.pk])
    Asset.objects.filter(pk=unused.pk).update(created_at=timezone.now() - timedelta(days=2))
    with django_capture_on_commit_callbacks(execute=True):
        assert jobs.remove_unused_uploads() == 1
    assert not any(p.exists() for p in files[unused.pk]) and not files[unused.pk][0].parent.exists()

    clip = ready_clip(user, extend_video=extended)
    delete(signed_in, clip, django_capture_on_commit_callbacks)
    assert not Asset.objects.exists()
    assert not any(p.exists() for p in files[extended.pk]) and not files[extended.pk][0].parent.exists()


def test_the_removal_of_unused_uploads_is_scheduled_once():
    """The migration's own step, run twice: one hourly schedule. (Run here rather than read
    from the test database, which a transactional test elsewhere in this process may have
    emptied of what the migrations wrote.)"""
    from django.apps import apps

    step = importlib.import_module("studio.migrations.0013_unused_uploads_schedule")
    step.create_schedule(apps, None)
    step.create_schedule(apps, None)
    schedules = Schedule.objects.filter(func="studio.jobs.remove_unused_uploads")
    assert schedules.count() == 1 and schedules.get().schedule_type == Schedule.HOURLY


def test_the_account_page_shows_the_storage_used(signed_in, user, enqueued):
    clip = ready_clip(user)
    frame = upload(user)
    expected = clip.video.size + clip.thumbnail.size + clip.last_frame.file.size + frame.file.size
    assert storage_used(user) == expected
    home = signed_in.get("/").content.decode()
    assert 'href="/account/"' in home
    page = signed_in.get("/account/").content.decode()
    assert "You keep <strong>" in page and "Joined films" in page


def test_past_the_quota_uploads_and_generations_are_refused_with_a_plain_message(
    signed_in, user, enqueued, settings
):
    upload(user)
    settings.STUDIO_USER_QUOTA_BYTES = storage_used(user) + 10
    response = signed_in.post(
        "/inputs/",
        {"field": "first_frame", "file": SimpleUploadedFile("f.png", png_bytes(), content_type="image/png")},
    )
    assert response.status_code == 422
    assert "Your storage is full" in response.content.decode() and Asset.objects.count() == 1
    settings.STUDIO_USER_QUOTA_BYTES = storage_used(user)
    response = signed_in.post("/generate/", GOOD, HTTP_HX_REQUEST="true")
    assert response.status_code == 422 and "Your storage is full" in response.content.decode()
    assert not Clip.objects.exists()
    settings.STUDIO_USER_QUOTA_BYTES = None
    assert signed_in.post("/generate/", GOOD, HTTP_HX_REQUEST="true").status_code == 200
