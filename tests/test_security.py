"""Security: owners, CSRF, secrets, DEBUG, and a battery of hostile requests."""

import logging
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from studio.models import Asset, Clip
from studio.providers import all_providers

from .conftest import provider_secret_settings
from .images import jpeg_bytes, png_bytes

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[1]
GOOD = {
    "model": "simulator:cinema",
    "prompt": "A quiet harbour at dawn",
    "aspect_ratio": "16:9",
    "duration": "4",
}


def bomb_png(width=30000, height=30000) -> bytes:
    """A tiny file that claims a huge picture (a decompression bomb)."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    raw = zlib.compress(b"\x00" * (width // 8 + 1) * 16)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
        + chunk(b"IDAT", raw)
        + chunk(b"IEND", b"")
    )


def upload(name, data, ctype="image/png"):
    return SimpleUploadedFile(name, data, content_type=ctype)


@pytest.fixture
def theirs(other_user):
    clip = Clip.objects.create(
        owner=other_user,
        provider="simulator",
        model_key="cinema",
        model_label="Sim",
        prompt="Their private clip",
        status=Clip.Status.READY,
        aspect_ratio="16:9",
        duration=4,
    )
    clip.video.save("video.mp4", ContentFile(b"their video"), save=False)
    clip.thumbnail.save("thumbnail.jpg", ContentFile(jpeg_bytes()), save=False)
    clip.save()
    asset = Asset(owner=other_user)
    asset.file.save("image.png", ContentFile(png_bytes()), save=True)
    return clip, asset


def hostile_requests(theirs):
    clip, asset = theirs
    c, a = clip.pk, asset.pk
    posts = [
        {**GOOD, "prompt": ""},
        {**GOOD, "prompt": "abcd"},
        {**GOOD, "prompt": "x" * 5001},
        {**GOOD, "prompt": " " * 50},
        {**GOOD, "aspect_ratio": "21:9"},
        {**GOOD, "aspect_ratio": "<script>alert(1)</script>"},
        {**GOOD, "aspect_ratio": ""},
        {**GOOD, "duration": "7"},
        {**GOOD, "duration": "-4"},
        {**GOOD, "duration": "1e9"},
        {**GOOD, "duration": "4.5"},
        {**GOOD, "model": "nope:nothing"},
        {**GOOD, "model": ""},
        {**GOOD, "model": "simulator:cinema' OR '1'='1"},
        {**GOOD, "model": "simulator:motion", "aspect_ratio": "21:9"},
        {**GOOD, "parent": c},
        {**GOOD, "parent": 999999},
        {**GOOD, "parent": "abc"},
        {**GOOD, "parent": "-1"},
        {**GOOD, "first_frame_asset": a},
        {**GOOD, "first_frame_asset": "abc"},
        {**GOOD, "first_frame_asset": 10**12},
        {**GOOD, "start_mode": "extend_video"},
        {**GOOD, "start_mode": "no-such-mode"},
        {
            **GOOD,
            "first_frame_upload": upload(
                "evil.svg", b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "image/svg+xml"
            ),
        },
        {**GOOD, "first_frame_upload": upload("cut.jpg", jpeg_bytes(size=(400, 300))[:500], "image/jpeg")},
        {**GOOD, "first_frame_upload": upload("doc.png", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj")},
        {**GOOD, "first_frame_upload": upload("bomb.png", bomb_png())},
        {**GOOD, "first_frame_upload": upload("empty.png", b"")},
        {
            **GOOD,
            "first_frame_upload": upload("page.png", b"<html><script>alert(1)</script></html>", "text/html"),
        },
        {
            **GOOD,
            "first_frame_upload": upload(
                "poly.png", png_bytes()[:60] + b"<script>alert(1)</script>" + png_bytes()[60:]
            ),
        },
        {
            **GOOD,
            "prompt": "ok",
            "first_frame_upload": upload("x.gif", b"GIF89a" + b"\x00" * 40, "image/gif"),
        },
    ]
    requests = [("post", "/generate/", data, {400, 404, 422}) for data in posts]
    requests += [
        ("get", "/generate/", None, {405}),
        ("put", "/generate/", None, {405}),
        ("delete", "/", None, {405}),
        ("post", f"/clips/{c}/", {}, {405}),
        ("post", "/generate/options/", {}, {405}),
        ("get", f"/clips/{c}/", None, {404}),
        ("get", f"/clips/{c}/card/", None, {404}),
        ("get", f"/clips/{c}/continue/", None, {404}),
        ("get", f"/clips/{c}/retry/", None, {404}),
        ("get", f"/clips/{c}/video.mp4", None, {404}),
        ("get", f"/clips/{c}/video.mp4?download=1", None, {404}),
        ("get", f"/clips/{c}/thumbnail.jpg", None, {404}),
        ("get", f"/assets/{a}/", None, {404}),
        ("get", "/clips/999999/", None, {404}),
        ("get", "/clips/99999999999999999999999/", None, {404}),
        ("get", "/assets/99999999999999999999999/", None, {404}),
        ("get", "/hooks/pictory/anything/", None, {404, 405}),
        ("post", "/hooks/pictory/not-a-token/", {"status": "completed"}, {404}),
        ("post", f"/hooks/pictory/{clip.webhook_token}/", {"status": "completed"}, {404}),
        ("post", "/hooks/pictory/" + "A" * 300 + "/", {}, {404}),
        ("get", f"/p/{asset.public_token}x/image.png", None, {404}),
        ("get", f"/p/{asset.public_token}/..%2F..%2Fsettings.py", None, {404}),
        ("get", "/p/short/image.png", None, {404}),
        ("get", f"/clips/{c}/chain/", None, {404}),
        ("post", f"/clips/{c}/chain/export/", {}, {404}),
        ("post", f"/clips/{c}/use-take/", {}, {404}),
        ("post", f"/clips/{c}/again/", {}, {404}),
        ("get", f"/clips/{c}/remix/", None, {404}),
        ("post", f"/clips/{c}/delete/", {"with_takes": "1"}, {404}),
        ("post", f"/clips/{c}/retry/", {}, {404}),
        ("get", "/exports/999999/", None, {404}),
        ("get", "/exports/999999/chain.mp4", None, {404}),
        ("get", f"/assets/{a}/poster.jpg", None, {404}),
        ("post", "/inputs/", {"field": "first_frame", "link": "http://127.0.0.1:9/x.png"}, {422}),
        ("post", "/inputs/", {"field": "first_frame", "link": "file:///etc/passwd"}, {422}),
        (
            "post",
            "/inputs/",
            {"field": "first_frame", "link": "http://169.254.169.254/latest/meta-data/"},
            {422},
        ),
        ("post", "/inputs/", {"field": "../../etc", "file": upload("a.png", png_bytes())}, {400}),
        ("post", "/inputs/", {"field": "first_frame", "file": upload("bomb.png", bomb_png())}, {422}),
        (
            "post",
            "/inputs/",
            {
                "field": "extend_video",
                "file": upload("v.mp4", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64, "video/mp4"),
            },
            # Held as "Preparing…": the worker refuses it (test_inputs), never the web request.
            {200},
        ),
        ("get", "/inputs/", None, {405}),
        ("get", f"/inputs/{a}/?field=first_frame", None, {404}),
        ("get", "/inputs/999999/?field=extend_video", None, {404}),
        ("get", "/inputs/1/?field=../../etc", None, {404}),
        ("get", "/providers/refresh/", None, {405}),
        ("get", "/hooks/openrouter/anything/", None, {404, 405}),
        ("post", "/hooks/openrouter/not-a-token/", {"type": "video.generation.completed"}, {401, 404}),
        (
            "post",
            f"/hooks/openrouter/{clip.webhook_token}/",
            {"type": "video.generation.completed"},
            {401, 404},
        ),
        (
            "post",
            "/setup/",
            {"username": "mallory", "password1": "fox-in-the-snow-42", "password2": "fox-in-the-snow-42"},
            {302},
        ),
    ]
    return requests


def test_fifty_hostile_requests_are_refused_without_a_server_error(
    signed_in, theirs, enqueued, django_user_model
):
    requests = hostile_requests(theirs)
    assert len(requests) >= 50
    clips, assets, users = Clip.objects.count(), Asset.objects.count(), django_user_model.objects.count()
    for method, url, data, expected in requests:
        kwargs = {"data": data} if data is not None else {}
        response = getattr(signed_in, method)(url, **kwargs)
        assert response.status_code in expected, (method, url, str(data)[:200], response.status_code)
    assert Clip.objects.count() == clips
    # Only the video held for the worker to check (and refuse) is new.
    assert Asset.objects.exclude(status=Asset.Status.PREPARING).count() == assets
    assert django_user_model.objects.count() == users
    assert enqueued == []


def test_forms_and_htmx_posts_need_the_csrf_token(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.post("/generate/", GOOD).status_code == 403
    assert client.post("/generate/", GOOD, HTTP_HX_REQUEST="true").status_code == 403
    page = client.get("/").content.decode()
    assert '"X-CSRFToken":' in page  # htmx sends the token with every request
    token = client.cookies["csrftoken"].value
    response = client.post("/generate/", GOOD, HTTP_HX_REQUEST="true", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200
    assert Clip.objects.count() == 1


SECRETS = {name: f"pictai_SECRET_{name.lower()}_0123456789" for name in provider_secret_settings()}


def test_no_secret_in_any_page_error_page_or_log_line(signed_in, user, settings, caplog, enqueued):
    for name, value in SECRETS.items():
        setattr(settings, name, value)
    for provider in all_providers():
        if getattr(provider, "base_url_setting", ""):  # nothing listens there: errors
            setattr(settings, provider.base_url_setting, "http://127.0.0.1:9/api")
    caplog.set_level(logging.DEBUG)
    clip = Clip.objects.create(
        owner=user,
        provider="pictory",
        model_key="veo3.1",
        model_label="Veo 3.1",
        prompt="A secret-free clip",
        aspect_ratio="16:9",
        duration=4,
    )
    from studio import jobs

    jobs.submit_clip(clip.pk)  # fails to connect: messages and logs are written
    clip.refresh_from_db()
    Clip.objects.filter(pk=clip.pk).update(status=Clip.Status.FAILED, error="Pictory refused the API key.")
    pages = [
        "/",
        "/providers/",
        f"/clips/{clip.pk}/",
        f"/clips/{clip.pk}/card/",
        f"/clips/{clip.pk}/retry/",
        "/generate/options/?model=pictory:veo3.1",
        "/clips/424242/",
        "/no/such/page/",
    ]
    seen = ""
    for url in pages:
        response = signed_in.get(url)
        assert response.status_code in (200, 302, 404), url
        seen += response.content.decode()
    seen += Client().get("/accounts/login/").content.decode()
    seen += "\n".join(record.getMessage() for record in caplog.records)
    seen += clip.error
    for value in SECRETS.values():
        assert value not in seen


def test_debug_is_off_unless_asked_for():
    env = {k: v for k, v in os.environ.items() if k != "DEBUG"}
    env["STUDIO_IGNORE_DOTENV"] = "1"
    code = "import studio.settings as s; print(s.DEBUG)"
    assert (
        subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
        ).stdout.strip()
        == "False"
    )
    env["DEBUG"] = "true"
    assert (
        subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
        ).stdout.strip()
        == "True"
    )


def test_a_server_error_page_shows_nothing_inside(client, settings, monkeypatch):
    settings.DEBUG = False
    client.raise_request_exception = False

    def boom(request):
        raise RuntimeError(f"internal detail {next(iter(SECRETS.values()))}")

    monkeypatch.setattr("studio.views.healthz", boom)
    import importlib

    from django.urls import clear_url_caches

    import studio.urls

    importlib.reload(studio.urls)
    clear_url_caches()
    try:
        response = client.get("/healthz")
        assert response.status_code == 500
        assert next(iter(SECRETS.values())) not in response.content.decode()
        assert "internal detail" not in response.content.decode()
    finally:
        monkeypatch.undo()
        importlib.reload(studio.urls)
        clear_url_caches()


# --- Headers ----------------------------------------------------------------------------


def test_pages_send_a_content_security_policy_without_inline_script_or_eval(signed_in):
    policy = signed_in.get("/")["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";") if part.strip())
    assert directives["script-src"] == "'self'"
    assert "unsafe" not in directives["script-src"] and "unsafe" not in directives["default-src"]
    assert directives["object-src"] == "'none'" and directives["frame-ancestors"] == "'none'"


def test_no_template_or_page_carries_inline_script_handlers_or_eval():
    """What the policy forbids must not be in the pages: <script> without src, on*="..."
    handlers, hx-on (htmx evaluates it) and hx-trigger filters ("[...]", evaluated too)."""
    sources = list((ROOT / "templates").rglob("*.html")) + [ROOT / "studio" / "views.py"]
    import re

    for path in sources:
        text = path.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), path
        assert not re.search(r"\son[a-z]+\s*=", text), path
        assert "hx-on" not in text and "javascript:" not in text, path
        for trigger in re.findall(r'hx-trigger="([^"]*)"', text):
            assert "[" not in trigger, (path, trigger)
    assert '"allowEval": false' in (ROOT / "templates" / "base.html").read_text()


def test_with_an_https_public_address_cookies_are_secure_and_hsts_is_sent():
    import json

    from .test_settings import read_settings

    names = ["SECURE_HSTS_SECONDS", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE"]
    done = read_settings(names, env={"PUBLIC_BASE_URL": "https://studio.example.com"})
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["SECURE_HSTS_SECONDS"] >= 180 * 24 * 3600
    assert found["SESSION_COOKIE_SECURE"] and found["CSRF_COOKIE_SECURE"]
    plain = json.loads(read_settings(names, env={"PUBLIC_BASE_URL": "http://127.0.0.1:8000"}).stdout)
    assert plain["SECURE_HSTS_SECONDS"] == 0 and not plain["SESSION_COOKIE_SECURE"]


def test_an_https_request_gets_hsts_when_it_is_on(client, settings):
    settings.SECURE_HSTS_SECONDS = 3600
    assert client.get("/healthz", secure=True)["Strict-Transport-Security"] == "max-age=3600"


def test_webhook_tokens_are_masked_in_access_log_lines(client, caplog):
    token = "tok_" + "x" * 30
    record = logging.LogRecord(
        "django.server",
        logging.INFO,
        __file__,
        1,
        '"%s" %s %s',
        (f"POST /hooks/openrouter/{token}/ HTTP/1.1", "404", "9"),
        None,
    )
    for name in ("django.server", "gunicorn.access"):
        logger = logging.getLogger(name)
        assert all(f.filter(record) for f in logger.filters)
    assert token not in record.getMessage() and "/hooks/openrouter/…/" in record.getMessage()
    # gunicorn names its atoms in a dict.
    atoms = logging.LogRecord(
        "gunicorn.access", logging.INFO, __file__, 1, "%(r)s", ({"r": f"GET /hooks/x/{token}/"},), None
    )
    for f in logging.getLogger("gunicorn.access").filters:
        f.filter(atoms)
    assert token not in atoms.getMessage()
    # And a studio log line that names the hook, through the console handler's filters.
    with caplog.at_level(logging.INFO):
        logging.getLogger("studio.test").info("webhook for /hooks/simulator/%s/ refused", token)
    from studio.logs import mask_hook_tokens

    assert mask_hook_tokens(f"https://s.example/hooks/p/{token}/?a=1") == "https://s.example/hooks/p/…/?a=1"
