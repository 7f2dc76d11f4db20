"""Inputs a creator brings: files dropped or chosen, and links, checked and kept safely."""

import io
from pathlib import Path

import av
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from studio import links, media
from studio.models import Asset
from studio.providers.simulator import render

from .conftest import run_enqueued
from .images import jpeg_bytes, png_bytes
from .test_links import Files, server  # noqa: F401  (the loopback file server fixture)
from .test_security import bomb_png

pytestmark = pytest.mark.django_db


def send(client, field, **data):
    return client.post("/inputs/", {"field": field, **data})


def image_upload(name, data, ctype="image/png"):
    return SimpleUploadedFile(name, data, content_type=ctype)


def webm_bytes(tmp_path) -> bytes:
    path = tmp_path / "clip.webm"
    with av.open(str(path), "w", format="webm") as container:
        stream = container.add_stream("libvpx-vp9", rate=12)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for n in range(12):
            frame = av.VideoFrame.from_image(Image.new("RGB", (320, 240), (n * 20, 80, 160)))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path.read_bytes()


@pytest.mark.parametrize(
    "name,data,ext",
    [
        ("photo.jpg", jpeg_bytes(), "jpg"),
        ("still.png", png_bytes(), "png"),
    ],
)
def test_a_dropped_image_is_kept_reencoded_and_previewed(signed_in, user, name, data, ext):
    response = send(signed_in, "first_frame", file=image_upload(name, data))
    assert response.status_code == 200
    asset = Asset.objects.get(owner=user)
    assert asset.file.name.endswith(f".{ext}") and asset.original_name == name
    html = response.content.decode()
    assert f'name="first_frame_asset" value="{asset.pk}"' in html
    assert f'src="/assets/{asset.pk}/"' in html
    # Stored under an unguessable folder, not the creator's file name.
    assert name not in asset.file.name and len(asset.storage_key) == 32


def test_webp_is_accepted(signed_in, user):
    out = io.BytesIO()
    Image.new("RGB", (40, 30), "blue").save(out, "WEBP")
    assert (
        send(signed_in, "reference", file=image_upload("a.webp", out.getvalue(), "image/webp")).status_code
        == 200
    )
    assert (
        'name="reference_assets"'
        in send(signed_in, "reference", file=image_upload("b.png", png_bytes())).content.decode()
    )


def test_image_metadata_is_stripped(signed_in, user):
    exif = Image.Exif()
    exif[0x8825] = {2: (51.0, 30.0, 0.0)}  # GPS position of the photographer
    exif[0x010F] = "SecretCam"
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (1, 2, 3)).save(out, "JPEG", exif=exif.tobytes())
    send(signed_in, "first_frame", file=image_upload("gps.jpg", out.getvalue(), "image/jpeg"))
    stored = Asset.objects.get(owner=user).file.read()
    assert b"SecretCam" not in stored and not Image.open(io.BytesIO(stored)).getexif()


@pytest.mark.parametrize(
    "name,data,message",
    [
        ("bomb.png", bomb_png(), "megapixels"),
        (
            "evil.svg",
            b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
            "complete JPEG, PNG or WebP",
        ),
        ("cut.jpg", jpeg_bytes(size=(400, 300))[:700], "complete JPEG, PNG or WebP"),
        ("paper.png", b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<<>>", "complete JPEG, PNG or WebP"),
        (
            "poly.png",
            png_bytes()[:33] + b"<html><script>alert(1)</script></html>",
            "complete JPEG, PNG or WebP",
        ),
    ],
)
def test_hostile_images_get_a_plain_message_and_nothing_is_kept(signed_in, name, data, message):
    response = send(signed_in, "first_frame", file=image_upload(name, data))
    assert response.status_code == 422
    assert message in response.content.decode()
    assert not Asset.objects.exists()


def test_an_oversized_image_is_refused(signed_in, settings):
    settings.STUDIO_MAX_IMAGE_BYTES = 2000
    response = send(signed_in, "first_frame", file=image_upload("big.png", b"\x89PNG" + b"0" * 5000))
    assert response.status_code == 422 and "larger than" in response.content.decode()


class UnreadableBody:
    """A request body that must never be read (it would be hundreds of megabytes)."""

    read_at_all = False

    def read(self, *args):
        self.read_at_all = True
        raise AssertionError("the body was read")

    readline = read


def test_a_body_larger_than_anything_the_studio_takes_is_refused_before_it_is_read(signed_in, settings):
    settings.STUDIO_MAX_REQUEST_BYTES = 10 * 1024 * 1024
    body = UnreadableBody()
    response = signed_in.generic(
        "POST",
        "/inputs/",
        CONTENT_LENGTH=str(10 * 1024 * 1024 + 1),
        CONTENT_TYPE="multipart/form-data; boundary=x",
        **{"wsgi.input": body},
    )
    assert response.status_code == 413 and not body.read_at_all
    assert "at most 10 MB in one request" in response.content.decode()
    assert not Asset.objects.exists()
    # Within the limit the request goes on to its view (which refuses what is not a field).
    assert signed_in.post("/inputs/", {"field": "nothing"}).status_code == 400


def test_an_upload_larger_than_a_few_megabytes_is_never_held_in_memory(settings):
    assert settings.FILE_UPLOAD_MAX_MEMORY_SIZE <= 5 * 1024 * 1024
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE <= 5 * 1024 * 1024
    assert (
        settings.STUDIO_MAX_REQUEST_BYTES
        < settings.STUDIO_MAX_VIDEO_BYTES + 2 * settings.STUDIO_MAX_IMAGE_BYTES
    )


@pytest.fixture
def sent_video(signed_in, django_capture_on_commit_callbacks):
    """Send a video to the "extend" input as the page does, with its on-commit work run."""

    def send_video(name, data, ctype="video/mp4"):
        with django_capture_on_commit_callbacks(execute=True):
            return send(signed_in, "extend_video", file=image_upload(name, data, ctype))

    return send_video


def held_card(client, asset):
    return client.get(f"/inputs/{asset.pk}/", {"field": "extend_video"}).content.decode()


def test_a_video_to_extend_is_prepared_by_the_worker_then_previewed(
    sent_video, signed_in, user, tmp_path, enqueued, monkeypatch
):
    path = tmp_path / "mine.mp4"
    render(path, "My own footage", "16:9", 1, None)
    response = sent_video("mine.mp4", path.read_bytes())
    assert response.status_code == 200, response.content
    asset = Asset.objects.get(owner=user, kind="video")
    html = response.content.decode()
    # Held at once, by its id, while the worker checks it.
    assert asset.status == Asset.Status.PREPARING and "Preparing…" in html
    assert f'name="extend_video" value="asset:{asset.pk}"' in html and "every 1s" in html
    assert signed_in.get(f"/assets/{asset.pk}/poster.jpg").status_code == 404  # nothing decoded yet
    assert enqueued == [("studio.jobs.prepare_video", (asset.pk,))]
    run_enqueued(enqueued)
    asset.refresh_from_db()
    assert asset.status == Asset.Status.READY and asset.duration == pytest.approx(1.0, abs=0.05)
    html = held_card(signed_in, asset)
    assert "Preparing" not in html and "every 1s" not in html and "1 s" in html
    assert f'name="extend_video" value="asset:{asset.pk}"' in html
    # The worker made the preview: the page only sends the stored JPEG, decoding nothing.
    monkeypatch.setattr(media, "first_frame", lambda *a: pytest.fail("a web request decoded a video"))
    poster = signed_in.get(f"/assets/{asset.pk}/poster.jpg")
    assert poster.status_code == 200 and poster["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(b"".join(poster.streaming_content))).format == "JPEG"


def test_a_studio_error_while_preparing_a_video_fails_its_card_in_plain_words(
    sent_video, signed_in, user, tmp_path, enqueued, monkeypatch, caplog
):
    path = tmp_path / "mine.mp4"
    render(path, "My own footage", "16:9", 1, None)
    sent_video("mine.mp4", path.read_bytes())

    def broken(*args, **kwargs):
        raise RuntimeError("disk full at /srv/studio")

    monkeypatch.setattr(media, "check_video", broken)
    run_enqueued(enqueued)
    asset = Asset.objects.get(owner=user, kind="video")
    assert asset.status == Asset.Status.FAILED
    assert asset.error == "The video could not be prepared because of an error in the studio."
    assert "preparing failed" in caplog.text and "disk full" in caplog.text  # the details: the log only
    card = held_card(signed_in, asset)
    assert asset.error in card and "disk full" not in card


def test_a_brought_video_is_never_decoded_in_the_web_request(
    signed_in, user, tmp_path, enqueued, monkeypatch
):
    def no_decoding(*args, **kwargs):
        raise AssertionError("a web request decoded a video")

    for name in ("check_video", "check_video_limits", "probe", "to_h264_mp4", "is_h264_mp4", "first_frame"):
        monkeypatch.setattr(media, name, no_decoding)
    response = send(
        signed_in, "extend_video", file=image_upload("take.webm", webm_bytes(tmp_path), "video/webm")
    )
    assert response.status_code == 200 and "Preparing…" in response.content.decode()


def test_a_webm_to_extend_is_converted_to_h264_mp4(
    sent_video, user, tmp_path, enqueued, django_capture_on_commit_callbacks
):
    sent_video("take.webm", webm_bytes(tmp_path), "video/webm")
    original = Path(Asset.objects.get(owner=user, kind="video").file.path)
    with django_capture_on_commit_callbacks(execute=True):
        run_enqueued(enqueued)
    asset = Asset.objects.get(owner=user, kind="video")
    assert asset.status == Asset.Status.READY
    assert media.is_h264_mp4(Path(asset.file.path))
    assert media.probe(Path(asset.file.path)).duration == pytest.approx(1.0, abs=0.1)
    assert not original.exists()  # the WebM as it came is not kept beside the MP4


def test_an_undecodable_video_fails_on_its_card_and_cannot_be_used(sent_video, signed_in, user, enqueued):
    response = sent_video("fake.mp4", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 400)
    assert response.status_code == 200
    run_enqueued(enqueued)
    asset = Asset.objects.get(owner=user, kind="video")
    assert asset.status == Asset.Status.FAILED and "not a video the studio can read" in asset.error
    html = held_card(signed_in, asset)
    assert "not a video the studio can read" in html and 'name="extend_video"' not in html


@pytest.mark.parametrize(
    "setting,value,message",
    [
        ("STUDIO_MAX_VIDEO_SIDE", 200, "up to 200 pixels on the long side"),
        ("STUDIO_MAX_VIDEO_SECONDS", 0.5, "up to 0.5 s"),
        ("STUDIO_MAX_VIDEO_FPS", 10, "up to 10"),
    ],
)
def test_a_video_beyond_the_limits_is_refused_from_its_header(
    sent_video, user, tmp_path, enqueued, settings, monkeypatch, setting, value, message
):
    setattr(settings, setting, value)
    decoded = []
    monkeypatch.setattr(media, "probe", lambda path: decoded.append(path))
    sent_video("take.webm", webm_bytes(tmp_path), "video/webm")
    run_enqueued(enqueued)
    asset = Asset.objects.get(owner=user, kind="video")
    assert asset.status == Asset.Status.FAILED and message in asset.error
    assert decoded == []  # refused before a single frame was decoded


def test_a_link_to_loopback_is_refused(signed_in, server):  # noqa: F811
    httpd, base = server
    Files.routes["/a.png"] = (200, {"Content-Type": "image/png"}, png_bytes())
    response = send(signed_in, "first_frame", link=f"{base}/a.png")
    assert response.status_code == 422 and "private or local" in response.content.decode()
    assert Files.hits == [] and not Asset.objects.exists()


def test_a_link_whose_redirect_lands_on_10_0_0_1_is_refused(signed_in, server, monkeypatch):  # noqa: F811
    httpd, base = server
    real = links.address_allowed
    monkeypatch.setattr(links, "address_allowed", lambda a: a == "127.0.0.1" or real(a))
    Files.routes["/go"] = (302, {"Location": "http://10.0.0.1/secret.png"}, b"")
    response = send(signed_in, "first_frame", link=f"{base}/go")
    assert response.status_code == 422 and "private or local" in response.content.decode()


def test_a_good_link_is_copied_and_kept(signed_in, user, server, settings):  # noqa: F811
    httpd, base = server
    settings.STUDIO_ALLOW_PRIVATE_URLS = True  # the "public" server of this test is on loopback
    Files.routes["/photos/cat.png"] = (200, {"Content-Type": "image/png"}, png_bytes())
    response = send(signed_in, "reference", link=f"{base}/photos/cat.png")
    assert response.status_code == 200
    asset = Asset.objects.get(owner=user)
    assert asset.original_name == "cat.png"
    Files.routes.clear()  # the link goes away; our copy stays
    assert signed_in.get(f"/assets/{asset.pk}/").status_code == 200


def test_nothing_sent_or_an_unknown_field_is_refused(signed_in):
    assert send(signed_in, "first_frame").status_code == 422
    assert send(signed_in, "secret_field", file=image_upload("a.png", png_bytes())).status_code == 400


def test_another_creators_inputs_are_404(client, user, other_user, tmp_path):
    client.force_login(user)
    path = tmp_path / "v.mp4"
    render(path, "Mine", "1:1", 1, None)
    send(client, "extend_video", file=image_upload("v.mp4", path.read_bytes(), "video/mp4"))
    send(client, "first_frame", file=image_upload("a.png", png_bytes()))
    video = Asset.objects.get(kind="video")
    image = Asset.objects.get(kind="image")
    client.force_login(other_user)
    assert client.get(f"/assets/{video.pk}/poster.jpg").status_code == 404
    assert client.get(f"/assets/{image.pk}/").status_code == 404
    assert client.get(f"/assets/{video.pk}/").status_code == 404


def test_the_studio_needs_a_sign_in_to_take_inputs(client, user):
    response = client.post("/inputs/", {"field": "first_frame", "file": image_upload("a.png", png_bytes())})
    assert response.status_code == 302 and not Asset.objects.exists()
