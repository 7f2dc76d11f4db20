"""OpenRouter video, end to end against a loopback fake that follows contracts.md.

Clips go through the real flow: the generate view, the submit task, polls, the finish task
(copying into our storage). Tasks are captured by `enqueued` and run by hand."""

from __future__ import annotations

import copy
import html
import io
import json
import re
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from studio import jobs
from studio.catalogue import find_model, model_groups
from studio.models import Clip, ModelOverride, ProviderModelCache, WebhookDelivery
from studio.providers import ProviderError, Submission, get_provider
from studio.providers.openrouter import (
    CONSTRAINTS,
    DATA_POLICY,
    KEY_REFUSED,
    MODEL_GONE,
    NO_CREDITS,
    signature_problem,
    spec_from,
)
from tests.conftest import run_enqueued
from tests.fakes.openrouter import (
    MODELS,
    UNUSUAL,
    FakeOpenRouter,
    decode_data_url,
    error,
    render_clip,
    sign,
)
from tests.test_pictory import send_when_due

from .worker import poll_due_once

pytestmark = pytest.mark.django_db(transaction=True)

PROMPT = "A lighthouse at dusk, waves crashing, slow dolly in"
PUBLIC = "https://studio.example.com"
VEO = "openrouter:google/veo-3.1"
FIRST = "openrouter:acme/first-frame"
REFS = "openrouter:acme/references"
SECRET = "whsec_test_secret"


@pytest.fixture
def openrouter(settings):
    render_clip("16:9")  # render the fake's result once, not inside a request with a 2 s timeout
    fake = FakeOpenRouter().start()
    settings.OPENROUTER_API_KEY = fake.key
    settings.OPENROUTER_API_BASE_URL = fake.base_url
    settings.OPENROUTER_TIMEOUT_SECONDS = 2
    settings.OPENROUTER_POLL_SECONDS = 30
    settings.OPENROUTER_WEBHOOK_SECRET = ""
    settings.PICTORY_API_KEY = ""
    settings.POLL_SWEEP_SECONDS = 0
    yield fake
    fake.stop()


@pytest.fixture
def public(settings):
    settings.PUBLIC_BASE_URL = PUBLIC
    return PUBLIC


def offered_models():
    """Every model the Model select offers now."""
    return [spec for _, specs in model_groups() for spec in specs]


def png(color=(200, 40, 40), size=(64, 36), name="frame.png"):
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return SimpleUploadedFile(name, out.getvalue(), content_type="image/png")


def post_generate(client, **fields):
    data = {"model": VEO, "prompt": PROMPT, "aspect_ratio": "16:9", "duration": "4", "resolution": "720p"}
    data.update(fields)
    return client.post(reverse("generate"), {k: v for k, v in data.items() if v is not None})


def make_due(clip):
    Clip.objects.filter(pk=clip.pk).update(next_poll_at=timezone.now() - timedelta(seconds=1))


def poll(clip, enqueued):
    make_due(clip)
    poll_due_once()
    run_enqueued(enqueued)
    clip.refresh_from_db()
    return clip


def create_clip(client, enqueued, **fields) -> Clip:
    response = post_generate(client, **fields)
    assert response.status_code == 302, page(response)[:3000]
    run_enqueued(enqueued)
    return Clip.objects.latest("pk")


def ready_clip(client, enqueued, openrouter, **fields) -> Clip:
    clip = create_clip(client, enqueued, **fields)
    openrouter.script_polls("completed")
    poll(clip, enqueued)
    assert clip.status == Clip.Status.READY, clip.error
    return clip


def page(response) -> str:
    return html.unescape(response.content.decode())


def options_of(text: str, name: str) -> list[str]:
    match = re.search(rf'<select name="{name}"[^>]*>(.*?)</select>', text, re.S)
    assert match, f"no select {name}"
    return re.findall(r'<option value="([^"]*)"', match.group(1))


# --- Discovery --------------------------------------------------------------------------------


def test_without_a_key_openrouter_is_absent_and_the_providers_page_says_how_to_add_it(signed_in, settings):
    settings.OPENROUTER_API_KEY = ""
    assert "openrouter:" not in signed_in.get(reverse("home")).content.decode()
    text = page(signed_in.get(reverse("providers")))
    assert "OpenRouter is off" in text and "OPENROUTER_API_KEY" in text
    assert "Refresh models" not in text


def test_the_model_select_lists_what_openrouter_lists_and_never_the_key(signed_in, openrouter):
    text = page(signed_in.get(reverse("home")))
    for model in MODELS:
        assert f'value="openrouter:{model["id"]}"' in text
    assert "Google: Veo 3.1 · OpenRouter" in text
    providers = page(signed_in.get(reverse("providers")))
    assert "OpenRouter is off" not in providers and openrouter.key not in providers + text
    assert "0.2 to 0.6 USD per second" in providers and "price known after the clip is made" in providers
    [read] = openrouter.model_reads()
    assert read.headers["authorization"] == f"Bearer {openrouter.key}"
    assert read.headers["x-openrouter-title"] == "Lastframe Studio"


def test_an_unusual_model_is_offered_exactly_as_listed(signed_in, openrouter):
    openrouter.models = [UNUSUAL]
    text = page(signed_in.get(reverse("form_options"), {"model": "openrouter:odd/model-x"}))
    assert options_of(text, "duration") == ["3", "7"]
    assert re.findall(
        r'<option value="([^"]*)"', text.split('name="aspect_ratio"')[1].split("</select>")[0]
    ) == ["21:9"]
    for absent in (
        'name="resolution"',
        'name="generate_audio"',
        'name="seed"',
        'name="first_frame_upload"',
        'name="last_frame_upload"',
    ):
        assert absent not in text
    # No frames listed, and no sign of reference images: text only, so no choice to make.
    assert 'name="start_mode"' not in text and 'name="reference_images"' not in text
    assert "The price is not known in advance" in text


def test_an_unusual_model_makes_a_clip_with_exactly_those_values(signed_in, openrouter, enqueued):
    openrouter.models = [UNUSUAL]
    clip = create_clip(
        signed_in,
        enqueued,
        model="openrouter:odd/model-x",
        duration="7",
        aspect_ratio="21:9",
        resolution=None,
    )
    assert clip.status == Clip.Status.RUNNING, clip.error
    assert openrouter.creates()[0].json == {
        "model": "odd/model-x",
        "prompt": PROMPT,
        "duration": 7,
        "aspect_ratio": "21:9",
    }
    # Values outside the lists are refused before anything is sent.
    for fields, message in (
        ({"duration": "5"}, "cannot make that duration"),
        ({"aspect_ratio": "16:9"}, "cannot make that aspect ratio"),
    ):
        response = post_generate(
            signed_in,
            model="openrouter:odd/model-x",
            resolution=None,
            **{"duration": "7", "aspect_ratio": "21:9", **fields},
        )
        assert response.status_code == 422 and message in page(response)
    assert len(openrouter.creates()) == 1


def test_model_entries_map_onto_specs_whatever_they_state():
    spec = spec_from(
        {
            "id": "new/model",
            "name": "New",
            "supported_durations": [8, "4", 6.0, True, -1, 2.5],
            "supported_aspect_ratios": ["5:4", "5:4", ""],
            "supported_resolutions": [],
            "supported_frame_images": ["last_frame"],
            "generate_audio": True,
            "seed": None,
            "pricing_skus": {"duration_seconds": "0.05"},
        }
    )
    assert spec.durations == (4, 6, 8) and spec.aspect_ratios == ("5:4",) and spec.resolutions == ()
    assert spec.last_frame and not spec.first_frame and spec.max_reference_images == 0
    assert spec.generate_audio and not spec.seed
    assert spec.cost_per_second == Decimal("0.05") and spec.cost_unit == "USD"
    bare = spec_from({"id": "bare/model"})
    assert (bare.durations, bare.aspect_ratios, bare.resolutions) == ((), (), ())
    assert bare.max_reference_images == 0 and bare.cost_per_second is None
    assert spec_from({"name": "no id"}) is None


def test_the_model_list_is_cached_and_refreshed_by_the_button(signed_in, openrouter):
    signed_in.get(reverse("home"))
    signed_in.get(reverse("home"))
    assert len(openrouter.model_reads()) == 1  # read once, then from the database
    assert ProviderModelCache.objects.get(provider="openrouter").fetched_at is not None
    openrouter.models.append(UNUSUAL)
    assert 'value="openrouter:odd/model-x"' not in signed_in.get(reverse("home")).content.decode()
    response = signed_in.post(reverse("refresh_models"), follow=True)
    assert "OpenRouter lists 4 video models." in page(response)
    assert 'value="openrouter:odd/model-x"' in signed_in.get(reverse("home")).content.decode()
    assert len(openrouter.model_reads()) == 2


def test_the_refresh_button_needs_a_signed_in_post_with_a_csrf_token(openrouter, user):
    response = Client().post(reverse("refresh_models"))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    assert strict.get(reverse("refresh_models")).status_code == 405
    assert strict.post(reverse("refresh_models")).status_code == 403
    text = strict.get(reverse("providers")).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', text).group(1)
    assert strict.post(reverse("refresh_models"), {"csrfmiddlewaretoken": token}).status_code == 302


def test_when_the_list_cannot_be_read_no_model_is_offered_and_the_page_says_so(signed_in, openrouter):
    openrouter.models_replies.append(error(500, "Internal Server Error"))
    assert "openrouter:" not in signed_in.get(reverse("home")).content.decode()
    text = page(signed_in.get(reverse("providers")))
    assert "Could not read OpenRouter's model list" in text and "Refresh models" in text
    # Pages do not keep waiting on a service that just failed.
    assert len(openrouter.model_reads()) == 1
    response = signed_in.post(reverse("refresh_models"), follow=True)
    assert "OpenRouter lists 3 video models." in page(response)
    assert VEO in signed_in.get(reverse("home")).content.decode()


def test_a_failed_refresh_keeps_the_last_good_list(signed_in, openrouter):
    assert find_model(VEO) is not None
    openrouter.models_replies.append(error(502, "Provider returned error"))
    response = signed_in.post(reverse("refresh_models"), follow=True)
    assert "Could not read OpenRouter's model list" in page(response)
    assert find_model(VEO) is not None
    assert "The last try to read it again failed" in page(signed_in.get(reverse("providers")))


def test_the_periodic_task_reads_the_list_only_when_it_is_stale(openrouter, settings):
    settings.OPENROUTER_MODELS_REFRESH_MINUTES = 60
    assert offered_models()
    jobs.refresh_provider_models()
    assert len(openrouter.model_reads()) == 1
    ProviderModelCache.objects.update(fetched_at=timezone.now() - timedelta(minutes=61))
    assert "openrouter: 3 models" in jobs.refresh_provider_models()
    assert len(openrouter.model_reads()) == 2


# --- Cost -------------------------------------------------------------------------------------


def test_the_form_estimates_the_cost_from_pricing_skus_or_says_it_is_not_known(signed_in, openrouter):
    url = reverse("form_options")
    text = page(signed_in.get(url, {"model": VEO, "duration": "8", "resolution": "1080p"}))
    assert "Estimated cost: 2.4 USD (8 s × 0.3 USD/s)" in text
    text = page(
        signed_in.get(url, {"model": VEO, "duration": "8", "resolution": "1080p", "generate_audio": "on"})
    )
    assert "Estimated cost: 4.8 USD (8 s × 0.6 USD/s)" in text
    assert "Estimated cost: 0.6 USD (5 s × 0.12 USD/s)" in page(signed_in.get(url, {"model": FIRST}))
    assert "The price is not known in advance" in page(signed_in.get(url, {"model": REFS}))


def test_the_real_usd_cost_replaces_the_estimate_once_completed(signed_in, openrouter, enqueued):
    clip = create_clip(signed_in, enqueued, duration="8")
    assert clip.cost_estimate == Decimal("1.6") and clip.cost_text == "≈ 1.6 USD"
    openrouter.script_polls("completed")
    poll(clip, enqueued)
    assert clip.status == Clip.Status.READY
    assert clip.cost_actual == Decimal("0.5") and clip.cost_text == "0.5 USD"
    assert "0.5 USD" in page(signed_in.get(reverse("clip_card", args=[clip.pk])))


# --- Requests ---------------------------------------------------------------------------------


def test_text_only_sends_the_documented_body_and_headers(signed_in, openrouter, enqueued):
    clip = create_clip(signed_in, enqueued, duration="8", resolution="1080p", generate_audio="on", seed="42")
    [create] = openrouter.creates()
    assert create.json == {
        "model": "google/veo-3.1",
        "prompt": PROMPT,
        "duration": 8,
        "resolution": "1080p",
        "aspect_ratio": "16:9",
        "generate_audio": True,
        "seed": 42,
    }
    assert create.headers["authorization"] == f"Bearer {openrouter.key}"
    assert create.headers["x-openrouter-title"] == "Lastframe Studio"
    assert create.headers["content-type"] == "application/json"
    assert "http-referer" not in create.headers  # no public address to name
    assert clip.status == Clip.Status.RUNNING and clip.remote_id.startswith("vid-")
    assert 29 <= (clip.next_poll_at - timezone.now()).total_seconds() <= 31


def test_audio_off_is_sent_as_false_and_an_empty_seed_is_not_sent(signed_in, openrouter, enqueued):
    create_clip(signed_in, enqueued)
    body = openrouter.creates()[0].json
    assert body["generate_audio"] is False and "seed" not in body


def test_the_first_frame_goes_as_a_data_url_without_a_public_address(signed_in, openrouter, enqueued):
    clip = create_clip(
        signed_in, enqueued, model=FIRST, duration="5", start_mode="first_frame", first_frame_upload=png()
    )
    [create] = openrouter.creates()
    [frame] = create.json["frame_images"]
    assert frame["type"] == "image_url" and frame["frame_type"] == "first_frame"
    content_type, content = decode_data_url(frame["image_url"]["url"])
    assert content_type == "image/png" and content == clip.first_frame.file.read()
    assert "input_references" not in create.json and "callback_url" not in create.json


def test_first_and_last_frame_go_by_public_url_with_a_callback(signed_in, openrouter, enqueued, public):
    clip = create_clip(
        signed_in,
        enqueued,
        start_mode="first_frame",
        first_frame_upload=png(),
        last_frame_upload=png((0, 90, 200), name="end.png"),
    )
    [create] = openrouter.creates()
    assert create.json["frame_images"] == [
        {
            "type": "image_url",
            "image_url": {"url": clip.first_frame.public_url()},
            "frame_type": "first_frame",
        },
        {"type": "image_url", "image_url": {"url": clip.end_frame.public_url()}, "frame_type": "last_frame"},
    ]
    assert create.json["callback_url"] == f"{PUBLIC}/hooks/openrouter/{clip.webhook_token}/"
    assert create.headers["http-referer"] == PUBLIC
    assert clip.end_frame.original_name == "end.png"
    # Trying again keeps both frames.
    form = page(signed_in.get(reverse("retry_clip", args=[clip.pk])))
    assert f'name="last_frame_asset" value="{clip.end_frame_id}"' in form
    assert f'name="first_frame_asset" value="{clip.first_frame_id}"' in form


def test_no_callback_without_an_https_public_address(signed_in, openrouter, enqueued, settings):
    settings.PUBLIC_BASE_URL = "http://studio.lan:8000"
    create_clip(signed_in, enqueued)
    assert "callback_url" not in openrouter.creates()[0].json


def test_reference_images_go_as_input_references(signed_in, openrouter, enqueued):
    form = page(signed_in.get(reverse("form_options"), {"model": REFS, "start_mode": "reference_images"}))
    assert 'name="reference_images"' in form and "1 to 3" in form
    assert 'name="first_frame_upload"' not in form and 'name="duration"' in form
    clip = create_clip(
        signed_in,
        enqueued,
        model=REFS,
        aspect_ratio=None,
        resolution=None,
        start_mode="reference_images",
        reference_images=[png(name="a.png"), png((0, 90, 200), name="b.png")],
    )
    [create] = openrouter.creates()
    references = list(clip.reference_images.order_by("pk"))
    assert [decode_data_url(r["image_url"]["url"])[1] for r in create.json["input_references"]] == [
        a.file.read() for a in references
    ]
    assert all(r["type"] == "image_url" for r in create.json["input_references"])
    assert "frame_images" not in create.json and "aspect_ratio" not in create.json
    assert "resolution" not in create.json and "generate_audio" not in create.json


def test_frames_and_references_are_never_sent_together(openrouter, tmp_path):
    """OpenRouter would keep the frames and drop the references without a word, on a paid
    clip: the studio refuses the pair before anything is sent."""
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    from studio.providers.base import ImageInput
    from studio.providers.openrouter import request_body

    for frames in ({"first_frame": ImageInput(image)}, {"last_frame": ImageInput(image)}):
        with pytest.raises(ProviderError) as caught:
            request_body(
                Submission(
                    model=find_model(VEO), prompt=PROMPT, reference_images=[ImageInput(image)], **frames
                )
            )
        assert caught.value.permanent and "not both" in caught.value.message
    assert not openrouter.creates()


def test_a_last_frame_is_refused_on_a_model_without_one(signed_in, openrouter, enqueued):
    response = post_generate(
        signed_in,
        model=FIRST,
        duration="5",
        start_mode="first_frame",
        first_frame_upload=png(),
        last_frame_upload=png(),
    )
    assert response.status_code == 422
    assert "Acme: First Frame · OpenRouter cannot take a last frame." in page(response)
    assert not Clip.objects.exists() and not openrouter.creates()


def test_a_last_frame_alone_is_refused_where_the_model_takes_a_first_frame(signed_in, openrouter, enqueued):
    response = post_generate(signed_in, start_mode="first_frame", last_frame_upload=png())
    assert response.status_code == 422
    assert "takes a last frame only together with a first frame" in page(response)
    assert not Clip.objects.exists() and not openrouter.creates()


def test_a_last_frame_alone_goes_to_a_model_that_takes_only_a_last_frame(signed_in, openrouter, enqueued):
    openrouter.models.append({**UNUSUAL, "id": "odd/ending", "supported_frame_images": ["last_frame"]})
    clip = create_clip(
        signed_in,
        enqueued,
        model="openrouter:odd/ending",
        duration="7",
        aspect_ratio="21:9",
        resolution=None,
        start_mode="first_frame",
        last_frame_upload=png(),
    )
    [frame] = openrouter.creates()[0].json["frame_images"]
    assert frame["frame_type"] == "last_frame" and clip.first_frame is None


def test_the_admin_can_say_a_last_frame_works_alone_on_a_model(signed_in, openrouter, enqueued):
    ModelOverride.objects.create(provider="openrouter", model_key="google/veo-3.1", last_frame_alone="yes")
    openrouter.lone_last_frame_ok.add("google/veo-3.1")  # what the admin found out
    clip = create_clip(signed_in, enqueued, start_mode="first_frame", last_frame_upload=png())
    assert clip.status == Clip.Status.RUNNING, clip.error
    assert [f["frame_type"] for f in openrouter.creates()[0].json["frame_images"]] == ["last_frame"]


# --- Polling ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "style, path",
    [
        ("relative", "/api/v1/jobs/{id}/status"),
        ("absolute", "/api/v1/jobs/{id}/status"),
        ("standard", "/api/v1/videos/{id}"),
        ("missing", "/api/v1/videos/{id}"),
        ("foreign", "/api/v1/videos/{id}"),  # another host would get the key: not followed
    ],
)
def test_polls_follow_the_polling_url_resolved_against_the_origin(
    signed_in, openrouter, enqueued, style, path
):
    openrouter.polling = style
    clip = create_clip(signed_in, enqueued)
    job_id = clip.remote_id.split("|")[0]
    poll(clip, enqueued)
    [request] = openrouter.polls()
    assert request.path == path.format(id=job_id)
    assert request.headers["authorization"] == f"Bearer {openrouter.key}"


@pytest.mark.parametrize("step", ["pending", "in_progress", "mystery-status"])
def test_pending_in_progress_and_unknown_statuses_keep_the_clip_running(
    signed_in, openrouter, enqueued, step
):
    clip = create_clip(signed_in, enqueued)
    openrouter.script_polls(step)
    poll(clip, enqueued)
    assert clip.status == Clip.Status.RUNNING and clip.error == "" and clip.poll_failures == 0


@pytest.mark.parametrize("step", ["failed", "cancelled", "expired"])
def test_failed_cancelled_and_expired_show_their_error(signed_in, openrouter, enqueued, step):
    clip = create_clip(signed_in, enqueued)
    openrouter.script_polls(step)
    poll(clip, enqueued)
    assert clip.status == Clip.Status.FAILED
    assert clip.error == f"The job was {step}: the provider gave up on it."
    assert clip.error in page(signed_in.get(reverse("clip_card", args=[clip.pk])))


def test_an_unknown_job_fails_honestly(signed_in, openrouter, enqueued):
    clip = create_clip(signed_in, enqueued)
    openrouter.script_polls("404")
    assert poll(clip, enqueued).error == "OpenRouter has no record of this job."


def test_completed_downloads_from_the_api_with_the_key(signed_in, openrouter, enqueued):
    clip = ready_clip(signed_in, enqueued, openrouter)
    [download] = openrouter.downloads()
    assert download.path == f"/api/v1/videos/{clip.remote_id.split('|')[0]}/content"
    assert download.query == {"index": ["0"]}
    assert download.headers["authorization"] == f"Bearer {openrouter.key}"
    assert clip.video.read() == openrouter.jobs[clip.remote_id.split("|")[0]].video
    assert clip.last_frame is not None and clip.thumbnail  # derived from the MP4


def test_completed_without_urls_uses_the_content_endpoint(signed_in, openrouter, enqueued):
    clip = create_clip(signed_in, enqueued)
    openrouter.script_polls("completed-no-urls")
    assert poll(clip, enqueued).status == Clip.Status.READY
    assert openrouter.downloads()[0].path.endswith("/content")


def test_storage_urls_get_no_key_and_a_null_cost_keeps_the_estimate(signed_in, openrouter, enqueued):
    clip = create_clip(signed_in, enqueued)
    openrouter.script_polls("completed-storage")
    assert poll(clip, enqueued).status == Clip.Status.READY, clip.error
    assert "authorization" not in openrouter.downloads()[0].headers
    clip2 = create_clip(signed_in, enqueued)
    openrouter.script_polls("completed-free")
    assert poll(clip2, enqueued).cost_actual is None and clip2.cost_text == "≈ 0.8 USD"


def test_a_download_without_the_key_is_refused_by_the_fake(openrouter):
    import httpx

    clip_job = openrouter.jobs
    answer = httpx.get(f"{openrouter.base_url}/videos/x/content?index=0")
    assert answer.status_code == 401 and answer.json()["error"]["code"] == 401 and not clip_job


def test_a_502_while_downloading_is_retried_honouring_retry_after(signed_in, openrouter, enqueued):
    clip = create_clip(signed_in, enqueued)
    openrouter.content_replies.append(error(502, "Provider returned error", headers={"Retry-After": "1"}))
    openrouter.script_polls("completed")
    started = time.monotonic()
    assert poll(clip, enqueued).status == Clip.Status.READY
    assert time.monotonic() - started >= 1
    assert len(openrouter.downloads()) == 2


# --- Errors -----------------------------------------------------------------------------------


def test_a_400_shows_its_message_beside_the_form_field(signed_in, openrouter, enqueued):
    openrouter.create_replies.append(error(400, "duration must be one of [4, 6, 8]"))
    clip = create_clip(signed_in, enqueued)
    assert clip.status == Clip.Status.FAILED
    assert clip.field_errors == {"duration": ["duration must be one of [4, 6, 8]"]}
    assert (
        clip.error
        == "OpenRouter did not accept these settings. (Duration: duration must be one of [4, 6, 8])"
    )
    form = page(signed_in.get(reverse("retry_clip", args=[clip.pk])))
    error_at = form.index('<p class="field-error">duration must be one of [4, 6, 8]</p>')
    assert form.index('for="id_duration"') < error_at < form.index('for="id_resolution"')


def test_the_fakes_own_400_maps_to_a_field(openrouter):
    provider = get_provider("openrouter")
    with pytest.raises(ProviderError) as caught:
        provider.submit(Submission(model=find_model(VEO), prompt=PROMPT, aspect_ratio="4:3"))
    assert caught.value.permanent and set(caught.value.field_errors) == {"aspect_ratio"}


@pytest.mark.parametrize(
    "reply, message",
    [
        (error(401, "No auth credentials found"), KEY_REFUSED),
        (error(402, "Insufficient credits"), NO_CREDITS),
        (
            error(403, "Prompt flagged: violence", {"reasons": ["violence"]}),
            "Refused by moderation: Prompt flagged: violence Change the prompt or the images.",
        ),
        (
            error(403, "This model is not available in your region"),
            "OpenRouter does not allow this request for your key or region (403): "
            "This model is not available in your region",
        ),
        (error(404, "Model not found"), MODEL_GONE),
        (
            error(404, "No endpoints found matching your data policy", {"reason": "privacy_restricted"}),
            DATA_POLICY,
        ),
        (error(404, "No allowed providers are available", {"reason": "constraint_filtered"}), CONSTRAINTS),
    ],
)
def test_refusals_say_why_and_never_show_the_key(signed_in, openrouter, enqueued, reply, message):
    openrouter.create_replies.append(reply)
    clip = create_clip(signed_in, enqueued)
    assert clip.status == Clip.Status.FAILED and clip.error == message
    assert (
        "OpenRouter refused the API key" in KEY_REFUSED and "Not enough credits on OpenRouter" in NO_CREDITS
    )
    card = page(signed_in.get(reverse("clip_card", args=[clip.pk])))
    assert message in card and openrouter.key not in card


def test_a_wrong_key_is_refused_by_the_fake_and_reported(signed_in, openrouter, enqueued, settings):
    settings.OPENROUTER_API_KEY = "sk-or-wrong-but-secret"
    assert not [m for m in offered_models() if m.provider == "openrouter"]  # nor can the list be read
    assert "OpenRouter refused the API key" in page(signed_in.get(reverse("providers")))


def test_a_429_on_create_is_sent_again_and_makes_exactly_one_job(signed_in, openrouter, enqueued):
    openrouter.create_replies.extend([error(429, "Rate limited", headers={"Retry-After": "7"})])
    clip = create_clip(signed_in, enqueued)
    assert clip.status == Clip.Status.QUEUED and clip.notice.startswith("Waiting to retry")
    assert 6 <= (clip.next_poll_at - timezone.now()).total_seconds() <= 7.5
    assert send_when_due(clip, enqueued).status == Clip.Status.RUNNING
    assert len(openrouter.creates()) == 2 and len(openrouter.jobs) == 1


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_5xx_on_create_is_never_sent_again_by_itself(signed_in, openrouter, enqueued, status):
    """OpenRouter's docs ask for no resend, and no idempotency key exists: a 5xx may have
    made a paid job, so the clip says it may have started and waits for the creator."""
    openrouter.create_replies.append(error(status, "Provider returned error"))
    clip = create_clip(signed_in, enqueued)
    assert clip.status == Clip.Status.FAILED and clip.failure_kind == Clip.Failure.UNCERTAIN
    assert clip.error.startswith("The provider may have started this clip.")
    jobs.recover_stale_clips()
    run_enqueued(enqueued)
    assert len(openrouter.creates()) == 1
    card = page(signed_in.get(reverse("clip_card", args=[clip.pk])))
    assert "Send again" in card and "may be billed twice" in card
    # OpenRouter lists no jobs: nothing to keep looking in, and the card does not pretend so.
    assert "keeps looking" not in card


def test_poll_429_and_502_back_off_without_failing(signed_in, openrouter, enqueued):
    clip = create_clip(signed_in, enqueued)
    openrouter.script_polls("429", "502", "completed")
    poll(clip, enqueued)
    assert clip.status == Clip.Status.RUNNING and clip.poll_failures == 1
    assert (clip.next_poll_at - timezone.now()).total_seconds() >= 6.5
    poll(clip, enqueued)
    assert clip.status == Clip.Status.RUNNING and clip.poll_failures == 2
    assert poll(clip, enqueued).status == Clip.Status.READY


def test_a_create_timeout_may_have_started_and_is_never_sent_twice(signed_in, openrouter, enqueued):
    openrouter.create_replies.append("timeout")
    clip = create_clip(signed_in, enqueued)
    assert clip.status == Clip.Status.FAILED and "cannot tell whether it was accepted" in clip.error
    assert clip.failure_kind == Clip.Failure.UNCERTAIN and "ReadTimeout" in clip.error
    assert len(openrouter.creates()) == 1


@pytest.mark.parametrize("configured, used", [(0.2, 10.0), (9.9, 10.0), (30, 30.0), (999, 120.0)])
def test_the_poll_interval_is_never_below_10_seconds_against_openrouter(
    openrouter, settings, configured, used
):
    settings.OPENROUTER_API_BASE_URL = "https://openrouter.ai/api/v1"
    settings.OPENROUTER_POLL_SECONDS = configured
    assert get_provider("openrouter").poll_interval == used


def test_only_a_test_server_on_this_machine_may_be_polled_faster(openrouter, settings):
    settings.OPENROUTER_POLL_SECONDS = 0.2
    assert get_provider("openrouter").poll_interval == 0.5  # the loopback fake, floored
    settings.OPENROUTER_API_BASE_URL = "http://localhost:9/api/v1"
    assert get_provider("openrouter").poll_interval == 0.5


def test_the_deadline_can_be_set_for_openrouter_with_decimals(openrouter, settings):
    settings.OPENROUTER_DEADLINE_MINUTES = 12.5
    assert get_provider("openrouter").deadline_minutes == 12.5
    settings.OPENROUTER_DEADLINE_MINUTES = None
    settings.CLIP_DEADLINE_MINUTES = 45
    assert get_provider("openrouter").deadline_minutes == 45


# --- Continue from last frame -----------------------------------------------------------------


def test_continuing_sends_the_extracted_last_frame_as_the_first_frame(signed_in, openrouter, enqueued):
    parent = ready_clip(signed_in, enqueued, openrouter)
    form = page(signed_in.get(reverse("continue_clip", args=[parent.pk])))
    assert 'value="first_frame" selected' in form
    create_clip(
        signed_in,
        enqueued,
        start_mode="first_frame",
        parent=str(parent.pk),
        first_frame_asset=str(parent.last_frame_id),
        prompt="The beam turns toward us",
    )
    [frame] = openrouter.creates()[-1].json["frame_images"]
    assert frame["frame_type"] == "first_frame"
    assert decode_data_url(frame["image_url"]["url"]) == ("image/png", parent.last_frame.file.read())


# --- Webhook ----------------------------------------------------------------------------------


def hook(client, clip, body: dict, signature: str | None = None, key: str | None = None):
    raw = json.dumps(body).encode()
    headers = {}
    if signature is not None:
        headers["HTTP_X_OPENROUTER_SIGNATURE"] = signature
    if key is not None:
        headers["HTTP_X_OPENROUTER_IDEMPOTENCY_KEY"] = key
    return client.post(
        reverse("provider_webhook", args=["openrouter", clip.webhook_token]),
        raw,
        content_type="application/json",
        **headers,
    )


def completed_event(clip):
    return {
        "type": "video.generation.completed",
        "created_at": "2026-01-01T00:00:00Z",
        "data": {
            "id": clip.remote_id,
            "status": "completed",
            "unsigned_urls": ["https://evil.example/x.mp4"],
        },
    }


@pytest.fixture
def hooked(signed_in, openrouter, enqueued, public, settings):
    settings.OPENROUTER_WEBHOOK_SECRET = SECRET
    clip = create_clip(signed_in, enqueued)
    enqueued.clear()
    return clip


def test_a_rightly_signed_webhook_only_makes_the_clip_due(hooked, client, enqueued, openrouter):
    body = completed_event(hooked)
    raw = json.dumps(body).encode()
    response = hook(client, hooked, body, sign(SECRET, raw), key=f"{hooked.remote_id}-completed")
    assert response.status_code == 204
    clip = Clip.objects.get(pk=hooked.pk)
    assert clip.next_poll_at <= timezone.now() and clip.status == Clip.Status.RUNNING
    assert clip.remote_result == hooked.remote_result and not openrouter.polls()
    assert [task for task, _ in enqueued] == ["studio.jobs.poll_due_clips"]


@pytest.mark.parametrize(
    "signature, status",
    [
        (None, 401),
        ("t=123", 400),
        ("garbage", 400),
        ("wrong-secret", 401),
        ("stale", 401),
        # Anyone can send these, unauthenticated: digits that are not ASCII, a number int()
        # refuses, a v1 compare_digest refuses. Each is unreadable, never a 500.
        ("t=١٢٣٤,v1=ab", 400),
        ("t=²,v1=ab", 400),
        ("t=" + "9" * 5000 + ",v1=ab", 400),
        ("t=1000,v1=é", 400),
        ("future", 401),
        ("tampered", 401),
    ],
)
def test_a_badly_signed_webhook_changes_nothing(hooked, client, enqueued, signature, status):
    body = completed_event(hooked)
    raw = json.dumps(body).encode()
    now = int(time.time())
    header = {
        "wrong-secret": sign("not-the-secret", raw),
        "stale": sign(SECRET, raw, now - 301),
        "future": sign(SECRET, raw, now + 301),
        "tampered": sign(SECRET, raw + b" "),
    }.get(signature, signature)
    response = hook(client, hooked, body, header, key=f"{hooked.remote_id}-completed")
    assert response.status_code == status
    clip = Clip.objects.get(pk=hooked.pk)
    assert clip.next_poll_at == hooked.next_poll_at and clip.updated_at == hooked.updated_at
    assert not enqueued and not WebhookDelivery.objects.exists()


def test_a_repeated_delivery_is_acted_on_once(hooked, client, enqueued):
    body = completed_event(hooked)
    raw = json.dumps(body).encode()
    key = f"{hooked.remote_id}-completed"
    assert hook(client, hooked, body, sign(SECRET, raw), key=key).status_code == 204
    # Back to waiting, as after the poll the first delivery caused.
    later = timezone.now() + timedelta(seconds=30)
    Clip.objects.filter(pk=hooked.pk).update(next_poll_at=later)
    assert hook(client, hooked, body, sign(SECRET, raw), key=key).status_code == 204
    assert Clip.objects.get(pk=hooked.pk).next_poll_at == later and len(enqueued) == 1
    # Another delivery (another status) wakes it again.
    assert hook(client, hooked, body, sign(SECRET, raw), key=f"{hooked.remote_id}-failed").status_code == 204
    assert Clip.objects.get(pk=hooked.pk).next_poll_at <= timezone.now() and len(enqueued) == 2


def test_without_a_secret_the_token_alone_authenticates(signed_in, openrouter, enqueued, public, client):
    clip = create_clip(signed_in, enqueued)
    assert hook(client, clip, completed_event(clip)).status_code == 204
    assert Clip.objects.get(pk=clip.pk).next_poll_at <= timezone.now()
    assert client.post(reverse("provider_webhook", args=["openrouter", "not-the-token"])).status_code == 404
    assert client.get(reverse("provider_webhook", args=["openrouter", clip.webhook_token])).status_code == 405


def test_signature_check_window():
    raw = b'{"a": 1}'
    assert signature_problem(sign(SECRET, raw, 1000), raw, SECRET, now=1000 + 299) is None
    assert signature_problem(sign(SECRET, raw, 1000), raw, SECRET, now=1000 + 301)[0] == 401
    header = sign(SECRET, raw, 1000) + ",v1=" + "0" * 64  # several v1 values: any may match
    assert signature_problem(header, raw, SECRET, now=1000) is None


def test_one_provider_and_connection_pool_serve_every_call(openrouter):
    assert get_provider("openrouter") is get_provider("openrouter")


# --- Capabilities true to the model list --------------------------------------------------------


@pytest.fixture
def realistic(openrouter):
    from tests.fakes.openrouter_models import REALISTIC_MODELS

    openrouter.models = copy.deepcopy(REALISTIC_MODELS)
    return openrouter


def test_reference_images_are_offered_on_a_model_that_also_takes_frames(signed_in, realistic, enqueued):
    form = page(signed_in.get(reverse("form_options"), {"model": VEO}))
    assert options_of(form, "start_mode") == ["text", "first_frame", "reference_images"]
    clip = create_clip(
        signed_in,
        enqueued,
        start_mode="reference_images",
        reference_images=[png(name="a.png"), png((0, 90, 200), name="b.png")],
    )
    assert clip.status == Clip.Status.RUNNING, clip.error
    [create] = realistic.creates()
    assert len(create.json["input_references"]) == 2 and "frame_images" not in create.json
    assert not realistic.jobs[clip.remote_id.split("|")[0]].extra.get("references_ignored")


def test_the_number_of_references_follows_the_description(realistic):
    assert find_model("openrouter:alibaba/wan-2.7").max_reference_images == 4  # "up to 4 references"
    assert find_model(VEO).max_reference_images == 3
    assert find_model("openrouter:kwaivgi/kling-v2.5-turbo").max_reference_images == 0


def test_the_admin_overrides_what_the_list_suggests_about_references(signed_in, openrouter, enqueued):
    openrouter.models = [UNUSUAL]
    ModelOverride.objects.create(
        provider="openrouter", model_key="odd/model-x", reference_images="yes", max_reference_images=2
    )
    form = page(signed_in.get(reverse("form_options"), {"model": "openrouter:odd/model-x"}))
    assert options_of(form, "start_mode") == ["text", "reference_images"]
    assert find_model("openrouter:odd/model-x").max_reference_images == 2
    ModelOverride.objects.filter(model_key="odd/model-x").update(reference_images="no")
    assert find_model("openrouter:odd/model-x").max_reference_images == 0


def test_models_that_need_a_video_are_not_offered_and_the_providers_page_says_why(signed_in, realistic):
    home = page(signed_in.get(reverse("home")))
    assert 'value="openrouter:google/veo-3.1"' in home
    assert "acme/upscale-4k" not in home and "runway/aleph" not in home
    assert find_model("openrouter:acme/upscale-4k") is None
    providers = page(signed_in.get(reverse("providers")))
    for name in ("Acme: Upscale 4K", "Runway: Aleph"):
        row = providers.split(name, 1)[1].split("</li>", 1)[0]
        assert "Not supported yet: this model works on a video you give it" in row
    row = providers.split("Google: Veo 3.1", 1)[1].split("</li>", 1)[0]
    assert "Not supported yet" not in row
    assert "10 video models (2 not supported yet), list read" in providers


def test_posting_a_video_only_model_is_refused_before_anything_is_sent(signed_in, realistic, enqueued):
    response = post_generate(signed_in, model="openrouter:acme/upscale-4k", resolution="4K", duration=None)
    assert response.status_code == 422 and "Choose one of the models in the list." in page(response)
    assert not realistic.creates()


# --- Copying and refused keys ------------------------------------------------------------------


def test_an_expired_signed_url_falls_back_to_the_content_endpoint_with_the_key(
    signed_in, openrouter, enqueued
):
    openrouter.signed_ttl = -60  # handed out already expired
    clip = create_clip(signed_in, enqueued)
    openrouter.script_polls("completed-signed")
    assert poll(clip, enqueued).status == Clip.Status.READY, clip.error
    storage, content = openrouter.downloads()
    assert storage.path.startswith("/storage/") and "authorization" not in storage.headers
    assert (
        content.path.endswith("/content") and content.headers["authorization"] == f"Bearer {openrouter.key}"
    )
    assert clip.video.read() == openrouter.jobs[clip.remote_id.split("|")[0]].video


def test_a_401_while_polling_waits_for_a_working_key_and_then_finishes(signed_in, openrouter, enqueued):
    clip = create_clip(signed_in, enqueued)
    openrouter.key_refused = True
    poll(clip, enqueued)
    assert clip.status == Clip.Status.RUNNING and clip.status_label == "Waiting for a working OpenRouter key"
    assert KEY_REFUSED in clip.notice
    openrouter.key_refused = False
    openrouter.script_polls("completed")
    assert poll(clip, enqueued).status == Clip.Status.READY and clip.paused_at is None


def test_a_401_while_copying_waits_for_the_key_without_losing_the_clip(signed_in, openrouter, enqueued):
    clip = create_clip(signed_in, enqueued)
    openrouter.script_polls("completed")
    make_due(clip)
    poll_due_once()
    openrouter.key_refused = True
    run_enqueued(enqueued)
    clip.refresh_from_db()
    assert clip.status == Clip.Status.FINISHING and clip.paused_at is not None
    assert clip.status_label == "Waiting for a working OpenRouter key"
    openrouter.key_refused = False
    Clip.objects.filter(pk=clip.pk).update(next_poll_at=timezone.now() - timedelta(seconds=1))
    jobs.recover_stale_clips()
    run_enqueued(enqueued)
    clip.refresh_from_db()
    assert clip.status == Clip.Status.READY and clip.paused_at is None
