"""Generated values at every endpoint's parameters and headers: never a 500.

Hypothesis draws, for every route of studio/urls.py (the admin's aside), path values (ids of
the creator's own rows, of someone else's, and any number; any text for text parts), a
method, query and form values (the names the views read, and others; ASCII and other
scripts' digits, numbers past any integer column, ids of real rows, text) and headers
(Range, htmx's, a webhook's signature and delivery key), and sends them signed in. The
only property: the studio answers, and never with a server error. Nothing reaches the
network: name lookups fail, so a pasted link is refused like an unreachable one."""

import os
import socket

import pytest
from django.core.files.base import ContentFile
from django.test import Client
from django.urls import URLPattern, get_resolver, reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studio.models import Asset, ChainExport, Clip

from .images import png_bytes

pytestmark = pytest.mark.django_db

# The admin is Django's own; everything else is ours.
ROUTES = sorted(
    (p.name, p)
    for p in get_resolver().url_patterns
    if isinstance(p, URLPattern) and p.name and not str(p.pattern).startswith("admin")
)
NAMES = [
    # What the views, forms and inputs read.
    "before", "status", "model", "q", "show", "field", "edit", "cancel", "v", "next", "download",
    "changed", "action", "chain", "confirm", "opened", "prompt", "takes", "username", "password",
    "password1", "password2", "title", "key", "link", "aspect_ratio", "duration", "resolution",
    "generate_audio", "seed", "start_mode", "parent", "first_frame_asset", "last_frame_asset",
    "reference_assets", "extend_video",
]  # fmt: skip
DIGITS = st.sampled_from(["0", "-1", "²", "١٢", "１２", "9" * 19, "9" * 5000, "1e9", " 7 ", "0x1f", "NaN"])
HEADERS = {
    "HTTP_RANGE": st.one_of(
        st.builds(lambda a, b: f"bytes={a}-{b}", st.sampled_from(["", "0", "9" * 5000, "١"]), DIGITS),
        st.text(max_size=40),
    ),
    "HTTP_HX_REQUEST": st.sampled_from(["true", "false", ""]),
    "HTTP_HX_TARGET": st.sampled_from(["gallery", "chain-live", "", "x" * 300]),
    "HTTP_X_OPENROUTER_SIGNATURE": st.one_of(
        st.builds(lambda t, v: f"t={t},v1={v}", DIGITS, st.text(max_size=70)), st.text(max_size=40)
    ),
    "HTTP_X_OPENROUTER_IDEMPOTENCY_KEY": st.text(max_size=300),
}


@pytest.fixture
def world(user, other_user, settings, monkeypatch, enqueued):
    """A creator with one of each thing a route can name, and someone else's clip."""

    def no_network(*args, **kwargs):
        raise socket.gaierror("no network in tests")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    settings.OPENROUTER_WEBHOOK_SECRET = "whsec_fuzz"
    clip = Clip.objects.create(
        owner=user, provider="simulator", model_key="cinema", model_label="Sim", prompt="A harbour at dawn",
        status=Clip.Status.READY, aspect_ratio="16:9", duration=4,
    )  # fmt: skip
    clip.video.save("video.mp4", ContentFile(b"\x00" * 4096), save=False)
    clip.thumbnail.save("thumbnail.jpg", ContentFile(png_bytes()), save=False)
    clip.save()
    running = Clip.objects.create(
        owner=user, provider="simulator", model_key="cinema", model_label="Sim", prompt="Still going",
        status=Clip.Status.RUNNING, parent=clip, remote_id="0" * 32,
    )  # fmt: skip
    theirs = Clip.objects.create(owner=other_user, provider="simulator", model_key="cinema", prompt="Theirs")
    asset = Asset(owner=user)
    asset.file.save("image.png", ContentFile(png_bytes()), save=True)
    export = ChainExport.objects.create(
        owner=user, clip=clip, clip_ids=[clip.pk], sequence_key=str(clip.pk), status=ChainExport.Status.READY
    )
    export.file.save("chain.mp4", ContentFile(b"\x00" * 2048), save=True)
    ids = [clip.pk, running.pk, theirs.pk, asset.pk, export.pk]
    tokens = [running.webhook_token, asset.public_token, "image.png", "simulator", "openrouter", "pictory"]
    return {"user": user, "ids": ids, "tokens": tokens}


def path_value(converter, world):
    if type(converter).__name__ == "IdConverter":
        return st.one_of(st.sampled_from(world["ids"]), st.integers(0, 10**18 - 1))
    words = st.text(min_size=1, max_size=40).filter(lambda s: "/" not in s and s not in (".", ".."))
    return st.one_of(st.sampled_from(world["tokens"]), words)


def values(world):
    ids = st.sampled_from([str(pk) for pk in world["ids"]])
    one = st.one_of(
        st.text(max_size=60), DIGITS, ids, st.sampled_from(["simulator:cinema", "asset:1", "clip:1"])
    )
    return st.one_of(one, st.lists(one, max_size=3))


def requests_for(pattern, world):
    converters = pattern.pattern.converters
    kwargs = st.fixed_dictionaries({name: path_value(conv, world) for name, conv in converters.items()})
    params = st.dictionaries(
        st.one_of(st.sampled_from(NAMES), st.text(max_size=10)), values(world), max_size=6
    )
    headers = st.fixed_dictionaries({}, optional=HEADERS)
    return st.tuples(kwargs, st.sampled_from(["get", "post"]), params, headers)


@pytest.mark.parametrize("name, pattern", ROUTES, ids=[name for name, _ in ROUTES])
def test_no_generated_request_gets_a_server_error(world, name, pattern):
    client = Client(raise_request_exception=False)

    @settings(
        max_examples=int(os.environ.get("STUDIO_FUZZ_EXAMPLES", 25)),
        deadline=None,
        database=None,
        # The same examples every run, so CI is never red by chance; STUDIO_FUZZ_RANDOM=1
        # (with more STUDIO_FUZZ_EXAMPLES) explores new ones, and a 500 it finds is fixed
        # and kept as an @example.
        derandomize=os.environ.get("STUDIO_FUZZ_RANDOM") != "1",
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(requests_for(pattern, world))
    def check(request):
        kwargs, method, params, headers = request
        try:
            url = reverse(name, kwargs=kwargs)
        except Exception:  # a value the route itself cannot carry: nothing to send
            return
        client.force_login(world["user"])  # a generated sign-out does not end the run
        response = getattr(client, method)(url, params, **headers)
        assert response.status_code < 500, (method, url, params, headers, response.status_code)

    check()
