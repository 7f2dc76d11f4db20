"""Media in a storage without local paths (an S3-compatible bucket in production).

The flow tests run on Django's InMemoryStorage with its path() made to fail: every file is
written, read, probed, joined and served through the storage API, so no code path may
assume a file on this machine (only the simulator's own scratch folder stays local). The
S3 tests check the settings and the presigned URLs the studio redirects to; presigning is
local to boto3, and the network is blocked to prove it. Nothing here reaches the internet.
"""

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, InMemoryStorage, default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from studio import jobs, media
from studio.models import Asset, ChainExport, Clip
from studio.providers.simulator import render

from .images import png_bytes
from .test_jobs import mean_abs_diff
from .test_views import ready_clip

pytestmark = pytest.mark.django_db

FPS = 24
STATIC = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}


@pytest.fixture
def memory_storage(settings, monkeypatch):
    """Default storage = InMemoryStorage, whose path() (which names a file that does not
    exist) fails here like S3's for everyone but the storage itself (it uses it to resolve
    names): any use of a local path is an error."""
    own_path = InMemoryStorage.path

    def no_path(self, name):
        if sys._getframe(1).f_globals.get("__name__") != InMemoryStorage.__module__:
            raise NotImplementedError("This storage has no local paths.")
        return own_path(self, name)

    monkeypatch.setattr(InMemoryStorage, "path", no_path)
    settings.STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
        "staticfiles": STATIC,
    }
    # setting_changed resets django.core.files.storage.storages and default_storage.
    assert isinstance(default_storage, InMemoryStorage)
    yield default_storage


def local_files(settings) -> list[Path]:
    """Files under MEDIA_ROOT, apart from the simulator's own scratch folder."""
    root = Path(settings.MEDIA_ROOT)
    return [p for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0] != "simulator"]


def stored_bytes(fieldfile) -> bytes:
    with fieldfile.storage.open(fieldfile.name, "rb") as fh:
        return fh.read()


def test_file_fields_use_the_default_storage_lazily(memory_storage):
    for model, name in (
        (Clip, "video"),
        (Clip, "thumbnail"),
        (Asset, "file"),
        (Asset, "poster"),
        (ChainExport, "file"),
    ):
        assert model._meta.get_field(name).storage is default_storage


def test_local_copy_is_the_file_itself_on_disk_and_a_temporary_copy_otherwise(settings, user):
    asset = Asset(owner=user)
    asset.file.save("image.png", ContentFile(png_bytes()), save=False)
    assert isinstance(asset.file.storage, FileSystemStorage)
    with media.local_copy(asset.file) as path:
        assert path == Path(asset.file.path)
    assert path.exists()

    settings.STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
        "staticfiles": STATIC,
    }
    stored = Asset(owner=user)
    stored.file.save("image.png", ContentFile(png_bytes()), save=False)
    assert media.local_path(stored.file.storage, stored.file.name) is None
    with media.local_copy(stored.file) as copy:
        assert copy.read_bytes() == png_bytes() and copy.suffix == ".png"
    assert not copy.exists()


def test_the_whole_simulator_flow_runs_on_a_storage_without_local_paths(
    memory_storage, signed_in, user, other_user, client, settings, enqueued
):
    clip = ready_clip(user, prompt="A paper boat on a rain-soaked street")
    assert clip.video.storage is default_storage
    with pytest.raises(NotImplementedError):
        _ = clip.video.path  # the guard works: a local path would fail the flow
    for name in (clip.video.name, clip.thumbnail.name, clip.last_frame.file.name):
        assert memory_storage.exists(name)
    assert local_files(settings) == []
    with media.local_copy(clip.video) as path:
        assert media.probe(path).duration == pytest.approx(4, abs=0.05)
        end = media.last_frame(path)
    assert Image.open(io.BytesIO(stored_bytes(clip.thumbnail))).format == "JPEG"

    # Continue from the last frame: the simulator reads the first frame through the storage.
    child = ready_clip(user, parent=clip, first_frame=clip.last_frame, prompt="The boat sails into a tunnel")
    with media.local_copy(child.video) as path:
        assert mean_abs_diff(media.first_frame(path), end) < 4
    assert local_files(settings) == []

    # Serving, after the owner check: a redirect to the storage's own address for the file.
    for url, name in (
        (f"/clips/{clip.pk}/video.mp4", clip.video.name),
        (f"/clips/{clip.pk}/video.mp4?download=1", clip.video.name),
        (f"/clips/{clip.pk}/thumbnail.jpg", clip.thumbnail.name),
        (f"/assets/{clip.last_frame_id}/", clip.last_frame.file.name),
    ):
        response = signed_in.get(url, HTTP_RANGE="bytes=0-99")
        assert response.status_code == 302, url
        assert response["Location"] == memory_storage.url(name)
        assert "no-store" in response["Cache-Control"]
    client.force_login(other_user)
    for url in (
        f"/clips/{clip.pk}/video.mp4",
        f"/clips/{clip.pk}/thumbnail.jpg",
        f"/assets/{clip.last_frame_id}/",
    ):
        assert client.get(url).status_code == 404
    client.logout()
    # The published copy (for providers, which follow redirects): by its token alone.
    asset = clip.last_frame
    published = client.get(f"/p/{asset.public_token}/{Path(asset.file.name).name}")
    assert published.status_code == 302 and published["Location"] == memory_storage.url(asset.file.name)
    assert client.get(f"/p/{asset.public_token}/other.png").status_code == 404


def test_inputs_are_checked_kept_and_previewed_through_the_storage(
    memory_storage, signed_in, user, settings, tmp_path
):
    response = signed_in.post(
        "/inputs/",
        {"field": "first_frame", "file": SimpleUploadedFile("still.png", png_bytes(), "image/png")},
    )
    assert response.status_code == 200, response.content
    image = Asset.objects.get(owner=user, kind="image")
    assert Image.open(io.BytesIO(stored_bytes(image.file))).size == (320, 180)

    path = tmp_path / "mine.mp4"
    render(path, "My own footage", "16:9", 1, None)
    response = signed_in.post(
        "/inputs/",
        {"field": "extend_video", "file": SimpleUploadedFile("mine.mp4", path.read_bytes(), "video/mp4")},
    )
    assert response.status_code == 200, response.content
    video = Asset.objects.get(owner=user, kind="video")
    jobs.prepare_video(video.pk)  # the worker's check, reading the file through the storage
    video.refresh_from_db()
    card = signed_in.get(f"/inputs/{video.pk}/", {"field": "extend_video"}).content.decode()
    assert "1 s" in card and memory_storage.exists(video.file.name)
    # The poster was made by the worker and kept in the storage: served like a thumbnail.
    assert Image.open(io.BytesIO(stored_bytes(video.poster))).format == "JPEG"
    poster = signed_in.get(f"/assets/{video.pk}/poster.jpg")
    assert poster.status_code == 302 and poster["Location"] == memory_storage.url(video.poster.name)
    assert local_files(settings) == []

    # A provider that takes images inline (OpenRouter without PUBLIC_BASE_URL) reads them
    # through the storage too.
    from studio.providers.openrouter import _image_url

    sent = jobs.provider_input(image)
    assert _image_url(sent).startswith("data:image/png;base64,")
    assert sent.read_bytes() == stored_bytes(image.file)


def test_a_chain_is_joined_through_the_storage(
    memory_storage, signed_in, user, settings, enqueued, tmp_path, django_capture_on_commit_callbacks
):
    root = ready_clip(user, prompt="A paper lantern drifts over a dark lake")
    take = ready_clip(user, parent=root, first_frame=root.last_frame, prompt="The lantern rises into snow")
    enqueued.clear()
    with django_capture_on_commit_callbacks(execute=True):
        signed_in.post(f"/clips/{root.pk}/chain/export/", HTTP_HX_REQUEST="true")
    export = ChainExport.objects.get()
    jobs.export_chain(export.pk)
    export.refresh_from_db()
    assert export.status == ChainExport.Status.READY, export.error
    assert export.file_exists() and export.dropped_frames == 1
    assert local_files(settings) == []

    joined = tmp_path / "joined.mp4"
    joined.write_bytes(stored_bytes(export.file))
    parts = []
    for clip in (root, take):
        with media.local_copy(clip.video) as path:
            parts.append(media.probe(path))
    assert media.probe(joined).duration == pytest.approx(sum(p.duration for p in parts) - 1 / FPS, abs=0.002)

    response = signed_in.get(f"/exports/{export.pk}/chain.mp4")
    assert response.status_code == 302 and response["Location"] == memory_storage.url(export.file.name)

    # Deleting a clip removes its stored files (no folder to tidy in a bucket).
    names = [take.video.name, take.thumbnail.name]
    with django_capture_on_commit_callbacks(execute=True):
        jobs.delete_clip(take)
    assert not any(memory_storage.exists(name) for name in names)


# --- S3 -----------------------------------------------------------------------------------

S3_ENV = {
    "AWS_STORAGE_BUCKET_NAME": "studio-media",
    "AWS_S3_ENDPOINT_URL": "http://127.0.0.1:9",
    "AWS_S3_REGION_NAME": "eu-central-1",
    "AWS_LOCATION": "lastframe",
    "AWS_QUERYSTRING_EXPIRE": "300",
    "AWS_ACCESS_KEY_ID": "AKIAFAKEFAKEFAKE",
    "AWS_SECRET_ACCESS_KEY": "fake-secret-not-real",
}


def settings_storages(extra_env: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(STUDIO_IGNORE_DOTENV="1", SECRET_KEY="test-only", **extra_env)
    code = "import json, studio.settings as s; print(json.dumps(s.STORAGES))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=django_settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_settings_choose_s3_when_a_bucket_is_set():
    storages = settings_storages(S3_ENV)
    assert storages["default"]["BACKEND"] == "storages.backends.s3.S3Storage"
    options = storages["default"]["OPTIONS"]
    assert options["bucket_name"] == "studio-media"
    assert options["endpoint_url"] == "http://127.0.0.1:9" and options["region_name"] == "eu-central-1"
    assert options["location"] == "lastframe" and options["custom_domain"] is None
    assert options["default_acl"] == "private" and options["file_overwrite"] is False
    assert options["querystring_auth"] is True and options["querystring_expire"] == 300
    assert "fake-secret-not-real" not in json.dumps(storages)  # keys stay with boto3
    assert storages["staticfiles"] == STATIC

    plain = settings_storages({})
    assert plain["default"]["BACKEND"] == "django.core.files.storage.FileSystemStorage"
    assert plain["staticfiles"] == STATIC
    assert (
        settings_storages({"AWS_STORAGE_BUCKET_NAME": "b"})["default"]["OPTIONS"]["querystring_expire"] == 600
    )


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


S3_OPTIONS = {
    "bucket_name": "studio-media",
    "endpoint_url": "http://127.0.0.1:9",
    "region_name": "eu-central-1",
    "access_key": "AKIAFAKEFAKEFAKE",
    "secret_key": "fake-secret-not-real",
    "location": "lastframe",
    "signature_version": "s3v4",
    "default_acl": "private",
    "file_overwrite": False,
    "querystring_auth": True,
    "querystring_expire": 600,
}


def test_s3_storage_gives_presigned_urls_without_a_network_call(no_network):
    from storages.backends.s3 import S3Storage

    storage = S3Storage(**S3_OPTIONS)
    url = storage.url("clips/abc/video.mp4")
    assert url.startswith("http://127.0.0.1:9/studio-media/lastframe/clips/abc/video.mp4?")
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=600" in url
    assert media.local_path(storage, "clips/abc/video.mp4") is None


def test_media_views_redirect_to_a_presigned_url_on_s3(
    no_network, settings, signed_in, user, other_user, client
):
    settings.STORAGES = {
        "default": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": S3_OPTIONS},
        "staticfiles": STATIC,
    }
    clip = Clip.objects.create(
        owner=user,
        provider="simulator",
        model_key="cinema",
        model_label="Sim",
        prompt="A quiet harbour",
        status=Clip.Status.READY,
        video="clips/abc/video.mp4",
        thumbnail="clips/abc/thumbnail.jpg",
    )
    response = signed_in.get(f"/clips/{clip.pk}/video.mp4?download=1")
    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith("http://127.0.0.1:9/studio-media/lastframe/clips/abc/video.mp4?")
    assert "X-Amz-Signature=" in location and "X-Amz-Expires=600" in location
    assert (
        "response-content-disposition=attachment" in location
        and "response-content-type=video%2Fmp4" in location
    )
    assert "fake-secret-not-real" not in location
    thumb = signed_in.get(f"/clips/{clip.pk}/thumbnail.jpg")
    assert thumb.status_code == 302 and "response-content-type=image%2Fjpeg" in thumb["Location"]
    client.force_login(other_user)
    assert client.get(f"/clips/{clip.pk}/video.mp4").status_code == 404
