"""Pictory AI Studio, end to end against a loopback fake that follows contracts.md.

Clips go through the real flow: the generate view, the submit task, polls, the finish task
(copying into our storage). Tasks are captured by `enqueued` and run by hand."""

from __future__ import annotations

import html
import io
import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db.models import F
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from studio import jobs
from studio.catalogue import find_model
from studio.models import Asset, Clip
from studio.providers import ProviderError, Submission, get_provider
from studio.providers.pictory import FIREWALL, KEY_REFUSED, USER_AGENT, field_errors
from tests.conftest import free_port, run_enqueued
from tests.fakes.pictory import FakePictory, Job, rendered

from .worker import poll_due_once

# Real commits, so on-commit callbacks (enqueueing tasks) run at once, as in production.
pytestmark = pytest.mark.django_db(transaction=True)

PROMPT = "A lighthouse at dusk, waves crashing, slow dolly in"
PUBLIC = "https://studio.example.com"


@pytest.fixture
def pictory(settings):
    rendered("16:9")  # render the fake's result once, not inside a request with a 1 s timeout
    fake = FakePictory().start()
    settings.PICTORY_API_KEY = fake.key
    settings.PICTORY_API_BASE_URL = fake.base_url
    settings.PICTORY_TIMEOUT_SECONDS = 1
    settings.POLL_SWEEP_SECONDS = 0  # one pass per sweep: tests poll by hand
    yield fake
    fake.stop()


@pytest.fixture
def public(settings):
    settings.PUBLIC_BASE_URL = PUBLIC
    return PUBLIC


def png(color=(200, 40, 40), size=(64, 36), name="frame.png"):
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return SimpleUploadedFile(name, out.getvalue(), content_type="image/png")


def post_generate(client, **fields):
    data = {"model": "pictory:veo3.1", "prompt": PROMPT, "aspect_ratio": "16:9", "duration": "4"}
    data.update(fields)
    return client.post(reverse("generate"), data)


def make_due(clip):
    Clip.objects.filter(pk=clip.pk).update(next_poll_at=timezone.now() - timedelta(seconds=1))


def poll(clip, enqueued):
    """Poll the clip once now, and run what that enqueues (finishing)."""
    make_due(clip)
    poll_due_once()
    run_enqueued(enqueued)
    clip.refresh_from_db()
    return clip


def send_when_due(clip, enqueued):
    """Let a queued clip's retry time come: the sweep sends it again (and runs what follows)."""
    make_due(clip)
    jobs.recover_stale_clips()
    run_enqueued(enqueued)
    clip.refresh_from_db()
    return clip


def create_clip(client, enqueued, **fields) -> Clip:
    response = post_generate(client, **fields)
    assert response.status_code == 302, response.content.decode()[:2000]
    run_enqueued(enqueued)
    return Clip.objects.latest("pk")


def ready_clip(client, enqueued, pictory, **fields) -> Clip:
    clip = create_clip(client, enqueued, **fields)
    pictory.script_polls("completed")
    poll(clip, enqueued)
    assert clip.status == Clip.Status.READY, clip.error
    return clip


def page(response) -> str:
    return html.unescape(response.content.decode())


# --- Catalogue and settings ---------------------------------------------------------------


def test_without_a_key_pictory_is_absent_and_the_providers_page_says_how_to_add_it(signed_in, settings):
    settings.PICTORY_API_KEY = ""
    assert "pictory:veo3.1" not in signed_in.get(reverse("home")).content.decode()
    text = page(signed_in.get(reverse("providers")))
    assert "Pictory AI Studio is off" in text
    assert "PICTORY_API_KEY" in text and "pictai_" in text


def test_with_a_key_the_three_models_appear_in_the_model_select(signed_in, pictory):
    text = signed_in.get(reverse("home")).content.decode()
    for ref in ("pictory:veo3.1", "pictory:veo3.1_fast", "pictory:pixverse5.5"):
        assert f'value="{ref}"' in text
    providers = page(signed_in.get(reverse("providers")))
    assert "Pictory AI Studio is off" not in providers
    assert "20 credits per second" in providers and "1.6 credits per second" in providers
    assert pictory.key not in providers


def test_models_match_the_contract_table(pictory):
    veo, fast, pix = (find_model(f"pictory:{k}") for k in ("veo3.1", "veo3.1_fast", "pixverse5.5"))
    assert veo.aspect_ratios == fast.aspect_ratios == ("16:9", "9:16")
    assert veo.durations == fast.durations == (4, 6, 8)
    assert pix.aspect_ratios == ("16:9", "9:16", "1:1", "3:4", "4:3")
    assert pix.durations == (5, 8, 10)
    assert (veo.cost_per_second, fast.cost_per_second, pix.cost_per_second) == (
        Decimal("20"),
        Decimal("10"),
        Decimal("1.6"),
    )
    for spec in (veo, fast, pix):
        assert spec.cost_unit == "credits"
        assert spec.first_frame and spec.extend_video and spec.max_reference_images == 3


@pytest.mark.parametrize("configured, used", [(3, 10.0), (15, 15.0), (99, 30.0)])
def test_poll_interval_is_kept_within_10_to_30_seconds(pictory, settings, configured, used):
    settings.PICTORY_API_BASE_URL = "https://api.pictory.ai/pictoryapis"
    settings.PICTORY_POLL_SECONDS = configured
    assert get_provider("pictory").poll_interval == used


def test_only_a_test_server_on_this_machine_may_be_polled_faster(pictory, settings):
    settings.PICTORY_POLL_SECONDS = 2
    assert get_provider("pictory").poll_interval == 2.0  # the loopback fake


@pytest.mark.parametrize(
    "pictory_minutes, common, used", [(None, 30, 30.0), (None, 12.5, 12.5), (7.5, 30, 7.5)]
)
def test_the_deadline_can_be_set_for_pictory_with_decimals(pictory, settings, pictory_minutes, common, used):
    settings.PICTORY_DEADLINE_MINUTES = pictory_minutes
    settings.CLIP_DEADLINE_MINUTES = common
    assert get_provider("pictory").deadline_minutes == used


def test_form_shows_only_the_models_ratios_durations_and_credit_cost(signed_in, pictory):
    url = reverse("form_options")
    veo = page(signed_in.get(url, {"model": "pictory:veo3.1", "duration": "8"}))
    assert 'value="9:16"' in veo and 'value="1:1"' not in veo
    assert 'value="8"' in veo and 'value="10"' not in veo
    assert "160 credits (8 s × 20 credits/s)" in veo
    for label in ("Text only", "First frame", "Reference images", "Extend a video"):
        assert label in veo
    pix = page(signed_in.get(url, {"model": "pictory:pixverse5.5"}))
    assert 'value="4:3"' in pix and 'value="10"' in pix
    assert "8 credits (5 s × 1.6 credits/s)" in pix


def test_the_form_shows_only_the_inputs_of_the_chosen_mode(signed_in, pictory, public):
    url = reverse("form_options")
    text = signed_in.get(url, {"model": "pictory:veo3.1", "start_mode": "text"}).content.decode()
    assert 'name="first_frame_upload"' not in text and 'name="reference_images"' not in text
    refs = signed_in.get(url, {"model": "pictory:veo3.1", "start_mode": "reference_images"}).content.decode()
    assert 'name="reference_images"' in refs and "multiple" in refs
    assert 'name="first_frame_upload"' not in refs and 'name="extend_video_upload"' not in refs
    extend = signed_in.get(url, {"model": "pictory:veo3.1", "start_mode": "extend_video"}).content.decode()
    assert 'name="extend_video"' in extend and 'name="extend_video_upload"' in extend
    assert 'name="reference_images"' not in extend


# --- Requests, mode by mode -----------------------------------------------------------------


def test_text_only_sends_the_documented_body_and_headers(signed_in, pictory, enqueued):
    clip = create_clip(signed_in, enqueued, start_mode="text")
    [create] = pictory.creates()
    assert create.json == {"prompt": PROMPT, "model": "veo3.1", "aspectRatio": "16:9", "duration": "4s"}
    assert create.headers["authorization"] == pictory.key  # the raw key, no "Bearer"
    # A browser's User-Agent, as in Pictory's own helper (its bot protection refuses libraries).
    assert create.headers["user-agent"] == USER_AGENT and USER_AGENT.startswith("Mozilla/5.0 (")
    assert create.headers["content-type"] == "application/json"
    assert clip.status == Clip.Status.RUNNING
    assert clip.remote_id in pictory.jobs
    assert clip.cost_estimate == Decimal("80") and clip.cost_unit == "credits"
    # The first poll comes after Pictory's interval, not at once.
    assert 14 <= (clip.next_poll_at - timezone.now()).total_seconds() <= 16


def test_polls_send_the_raw_key_and_our_user_agent(signed_in, pictory, enqueued):
    clip = create_clip(signed_in, enqueued)
    poll(clip, enqueued)
    [request] = pictory.polls()
    assert request.path == f"/pictoryapis/v1/jobs/{clip.remote_id}"
    assert request.headers["authorization"] == pictory.key
    assert request.headers["user-agent"] == USER_AGENT


def test_the_fake_refuses_a_bearer_key_like_the_real_service(pictory):
    answer = httpx.post(
        f"{pictory.base_url}/v1/aistudio/videos",
        json={"prompt": PROMPT},
        headers={"Authorization": f"Bearer {pictory.key}", "User-Agent": "x/1"},
    )
    assert answer.status_code == 401


def test_first_frame_is_sent_as_its_published_url_with_a_webhook(signed_in, pictory, enqueued, public):
    clip = create_clip(signed_in, enqueued, start_mode="first_frame", first_frame_upload=png())
    [create] = pictory.creates()
    asset = clip.first_frame
    assert create.json["firstFrameImageUrl"] == asset.public_url()
    assert create.json["webhook"] == f"{PUBLIC}/hooks/pictory/{clip.webhook_token}/"
    assert not {"referenceImageUrls", "extendVideoUrl"} & set(create.json)
    # The published address really serves the picture, to anyone holding the URL.
    signed_in.logout()
    served = signed_in.get(asset.public_url().removeprefix(PUBLIC))
    assert served.status_code == 200 and b"".join(served.streaming_content)[:4] == b"\x89PNG"


def test_reference_images_are_sent_as_a_list_of_published_urls(signed_in, pictory, enqueued, public):
    clip = create_clip(
        signed_in,
        enqueued,
        model="pictory:pixverse5.5",
        duration="5",
        aspect_ratio="1:1",
        start_mode="reference_images",
        reference_images=[png(name="a.png"), png((0, 90, 200), name="b.png")],
    )
    [create] = pictory.creates()
    references = list(clip.reference_images.order_by("pk"))
    assert len(references) == 2
    assert create.json["referenceImageUrls"] == [a.public_url() for a in references]
    assert create.json["model"] == "pixverse5.5" and create.json["duration"] == "5s"
    assert "firstFrameImageUrl" not in create.json and "extendVideoUrl" not in create.json


def test_extending_one_of_my_clips_sends_its_video_and_continues_it(signed_in, pictory, enqueued, public):
    first = ready_clip(signed_in, enqueued, pictory)
    second = create_clip(
        signed_in,
        enqueued,
        start_mode="extend_video",
        extend_video=f"clip:{first.pk}",
        prompt="The lighthouse beam sweeps across the sea",
    )
    create = pictory.creates()[-1]
    assert create.json["extendVideoUrl"] == second.extend_video.public_url()
    assert "firstFrameImageUrl" not in create.json
    assert second.parent_id == first.pk
    signed_in.logout()
    served = signed_in.get(second.extend_video.public_url().removeprefix(PUBLIC))
    assert served.status_code == 200
    assert b"".join(served.streaming_content) == first.video.read()


def bring_video(client, enqueued, name, content, ctype="video/mp4") -> Asset:
    """A video dropped on the "extend" input, as the page sends it, prepared by the worker."""
    file = SimpleUploadedFile(name, content, content_type=ctype)
    assert client.post(reverse("add_input"), {"field": "extend_video", "file": file}).status_code == 200
    run_enqueued(enqueued)
    return Asset.objects.filter(kind=Asset.Kind.VIDEO).latest("pk")


def test_extending_an_uploaded_mp4_sends_its_published_url(signed_in, pictory, enqueued, public):
    video, _, _ = rendered("16:9")
    asset = bring_video(signed_in, enqueued, "mine.mp4", video)
    clip = create_clip(signed_in, enqueued, start_mode="extend_video", extend_video=f"asset:{asset.pk}")
    [create] = pictory.creates()
    assert clip.extend_video == asset and asset.kind == Asset.Kind.VIDEO
    assert create.json["extendVideoUrl"] == clip.extend_video.public_url()


def test_a_video_posted_with_the_form_is_held_until_the_worker_has_prepared_it(
    signed_in, pictory, enqueued, public
):
    """Without JavaScript the video comes with the form: it is kept at once, and the clip
    is sent once the worker has checked it and the creator presses Generate again."""
    video, _, _ = rendered("16:9")
    upload = SimpleUploadedFile("mine.mp4", video, content_type="video/mp4")
    response = post_generate(signed_in, start_mode="extend_video", extend_video_upload=upload)
    assert response.status_code == 422
    asset = Asset.objects.get(kind=Asset.Kind.VIDEO)
    text = page(response)
    assert "still being prepared" in text and f'value="asset:{asset.pk}"' in text
    assert not pictory.requests
    run_enqueued(enqueued)
    clip = create_clip(signed_in, enqueued, start_mode="extend_video", extend_video=f"asset:{asset.pk}")
    assert clip.extend_video == asset and len(pictory.creates()) == 1


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x1aE\xdf\xa3" + b"\0" * 64, "not a video the studio can read (MP4, MOV or WebM)"),
        (b"\0\0\0\x18ftypmp42" + b"\0" * 200, "not a video the studio can read (MP4, MOV or WebM)"),
    ],
)
def test_an_extend_upload_that_is_not_a_decodable_mp4_is_refused(
    signed_in, pictory, enqueued, public, content, message
):
    asset = bring_video(signed_in, enqueued, "x.mp4", content)
    assert asset.status == Asset.Status.FAILED
    response = post_generate(signed_in, start_mode="extend_video", extend_video=f"asset:{asset.pk}")
    assert response.status_code == 422
    assert message in page(response)
    assert not Clip.objects.exists() and not pictory.requests


def test_a_webm_to_extend_is_sent_to_pictory_as_our_h264_mp4(signed_in, pictory, enqueued, public, tmp_path):
    """A dropped MOV or WebM is kept as H.264 MP4 (by the worker), and Pictory gets the
    public MP4 the studio made of it."""
    from studio import media

    from .test_inputs import webm_bytes

    asset = bring_video(signed_in, enqueued, "take.webm", webm_bytes(tmp_path), "video/webm")
    clip = create_clip(signed_in, enqueued, start_mode="extend_video", extend_video=f"asset:{asset.pk}")
    assert clip.extend_video is not None
    assert media.is_h264_mp4(Path(clip.extend_video.file.path))
    sent = pictory.creates()[-1].json["extendVideoUrl"]
    assert sent.startswith(PUBLIC + "/p/") and sent.endswith(".mp4")


def test_forged_combinations_are_refused_before_anything_is_sent(signed_in, pictory, enqueued, public):
    cases = [
        (
            {"start_mode": "first_frame", "first_frame_upload": png(), "reference_images": [png()]},
            "A clip starts one way only",
        ),
        ({"start_mode": "text", "first_frame_upload": png()}, "A clip starts one way only"),
        ({"first_frame_upload": png(), "reference_images": [png()]}, "A clip starts one way only"),
        ({"start_mode": "reference_images"}, "Add 1 to 3 reference images"),
        (
            {"start_mode": "reference_images", "reference_images": [png() for _ in range(4)]},
            "Use at most 3 reference images (4 were sent).",
        ),
        ({"start_mode": "first_frame"}, "Choose a picture for the first frame"),
        ({"start_mode": "extend_video"}, "bring a video to extend"),
        ({"start_mode": "sideways"}, "cannot start a clip that way"),
    ]
    for fields, message in cases:
        response = post_generate(signed_in, **fields)
        assert response.status_code == 422, fields
        assert message in page(response), (fields, page(response)[:3000])
    assert not Clip.objects.exists()
    assert not pictory.requests


def test_choosing_a_clip_and_uploading_a_video_to_extend_is_refused(signed_in, pictory, enqueued, public):
    first = ready_clip(signed_in, enqueued, pictory)
    video, _, _ = rendered("16:9")
    response = post_generate(
        signed_in,
        start_mode="extend_video",
        extend_video=f"clip:{first.pk}",
        extend_video_upload=SimpleUploadedFile("m.mp4", video, content_type="video/mp4"),
    )
    assert response.status_code == 422
    assert "Choose one of your clips or upload a video, not both." in page(response)
    assert Clip.objects.count() == 1 and len(pictory.creates()) == 1


def test_a_held_reference_image_is_kept_when_another_field_fails(signed_in, pictory, enqueued, public):
    response = post_generate(signed_in, prompt="abc", start_mode="reference_images", reference_images=[png()])
    assert response.status_code == 422
    held = Asset.objects.get()
    text = response.content.decode()
    assert f'name="reference_assets" value="{held.pk}"' in text
    response = post_generate(signed_in, start_mode="reference_images", reference_assets=[str(held.pk)])
    assert response.status_code == 302
    run_enqueued(enqueued)
    assert pictory.creates()[0].json["referenceImageUrls"] == [held.public_url()]


def test_without_a_public_address_the_form_says_so_before_sending(signed_in, pictory, enqueued):
    for fields in (
        {"start_mode": "first_frame", "first_frame_upload": png()},
        {"start_mode": "reference_images", "reference_images": [png()]},
    ):
        response = post_generate(signed_in, **fields)
        assert response.status_code == 422
        assert "does not have one yet" in page(response) and "PUBLIC_BASE_URL" in page(response)
    assert not Clip.objects.exists() and not pictory.requests
    # Text only needs nothing of ours, and carries no webhook.
    clip = create_clip(signed_in, enqueued, start_mode="text")
    assert clip.status == Clip.Status.RUNNING
    assert "webhook" not in pictory.creates()[0].json


# --- Continue from last frame --------------------------------------------------------------


def test_continuing_sends_pictorys_last_frame_url_while_fresh(signed_in, pictory, enqueued):
    parent = ready_clip(signed_in, enqueued, pictory)
    form = page(signed_in.get(reverse("continue_clip", args=[parent.pk])))
    assert 'value="first_frame" selected' in form
    child = create_clip(
        signed_in,
        enqueued,
        start_mode="first_frame",
        parent=str(parent.pk),
        first_frame_asset=str(parent.last_frame_id),
        prompt="The beam turns toward us",
    )
    create = pictory.creates()[-1]
    assert create.json["firstFrameImageUrl"] == parent.remote_result["last_frame_url"]
    assert create.json["firstFrameImageUrl"].endswith("/last.png")
    assert child.parent_id == parent.pk and child.first_frame_id == parent.last_frame_id


def test_continuing_after_the_url_went_stale_sends_our_own_copy(signed_in, pictory, enqueued, settings):
    parent = ready_clip(signed_in, enqueued, pictory)
    stale = {**parent.remote_result, "received_at": (timezone.now() - timedelta(hours=2)).isoformat()}
    Clip.objects.filter(pk=parent.pk).update(remote_result=stale)
    fields = {
        "start_mode": "first_frame",
        "parent": str(parent.pk),
        "first_frame_asset": str(parent.last_frame_id),
    }
    # No public address and a stale provider URL: nothing can be sent; the form says so.
    response = post_generate(signed_in, **fields)
    assert response.status_code == 422 and "PUBLIC_BASE_URL" in page(response)
    settings.PUBLIC_BASE_URL = PUBLIC
    create_clip(signed_in, enqueued, **fields)
    parent.refresh_from_db()
    assert pictory.creates()[-1].json["firstFrameImageUrl"] == parent.last_frame.public_url()


# --- Statuses -------------------------------------------------------------------------------


@pytest.mark.parametrize("step", ["in-progress", "unknown"])
def test_in_progress_and_unknown_statuses_keep_the_clip_running(signed_in, pictory, enqueued, step):
    clip = create_clip(signed_in, enqueued)
    pictory.script_polls(step)
    poll(clip, enqueued)
    assert clip.status == Clip.Status.RUNNING and clip.error == ""
    assert clip.poll_failures == 0


def test_completed_with_every_field_copies_the_results_and_records_credits(signed_in, pictory, enqueued):
    clip = ready_clip(signed_in, enqueued, pictory)
    job = pictory.jobs[clip.remote_id]
    video, last_png, thumb = rendered("16:9")
    assert clip.video.read() == video
    assert clip.thumbnail.read()[:2] == b"\xff\xd8"
    assert clip.last_frame.file.read() == last_png  # Pictory's last frame, not a derived one
    assert {r.path.rsplit("/", 1)[1] for r in pictory.file_requests()} == {
        "video.mp4",
        "thumb.jpg",
        "last.png",
    }
    # Result files are not the API: the key never goes to them.
    assert all("authorization" not in r.headers for r in pictory.file_requests())
    assert clip.cost_actual == Decimal("80") and clip.cost_text == "80 credits"
    assert job.polls == 1
    card = page(signed_in.get(reverse("clip_card", args=[clip.pk])))
    assert "80 credits" in card and "≈" not in card


def test_completed_without_optional_fields_derives_thumbnail_and_keeps_the_estimate(
    signed_in, pictory, enqueued
):
    clip = create_clip(signed_in, enqueued)
    pictory.script_polls("completed-documented")
    poll(clip, enqueued)
    assert clip.status == Clip.Status.READY
    assert clip.thumbnail and clip.last_frame is not None
    assert clip.cost_actual is None and clip.cost_text == "≈ 80 credits"
    assert "thumb.jpg" not in {r.path.rsplit("/", 1)[1] for r in pictory.file_requests()}


def test_completed_with_only_a_video_url_derives_last_frame_and_thumbnail(signed_in, pictory, enqueued):
    clip = create_clip(signed_in, enqueued)
    pictory.script_polls("completed-bare")
    poll(clip, enqueued)
    assert clip.status == Clip.Status.READY
    assert clip.last_frame.width == clip.video_width and clip.thumbnail
    assert [r.path.rsplit("/", 1)[1] for r in pictory.file_requests()] == ["video.mp4"]


def test_a_preview_image_is_used_when_there_is_no_thumbnail(signed_in, pictory, enqueued):
    clip = create_clip(signed_in, enqueued)
    pictory.script_polls("completed-preview")
    poll(clip, enqueued)
    assert clip.status == Clip.Status.READY
    assert "thumb.jpg" in {r.path.rsplit("/", 1)[1] for r in pictory.file_requests()}


@pytest.mark.parametrize(
    "step, message",
    [
        ("failed", "The prompt was rejected by the content policy."),
        ("success-false", "The model could not render this prompt."),
        ("404", "Pictory has no record of this job."),
        ("job-not-found", "Pictory has no record of this job."),
        # The documented unknown-job answer, with HTTP 200 (the 404 above carries it too).
        ("job-not-found-200", "Pictory has no record of this job."),
    ],
)
def test_failures_show_pictorys_message(signed_in, pictory, enqueued, step, message):
    clip = create_clip(signed_in, enqueued)
    pictory.script_polls(step)
    poll(clip, enqueued)
    assert clip.status == Clip.Status.FAILED
    assert clip.error == message
    card = page(signed_in.get(reverse("clip_card", args=[clip.pk])))
    assert message in card and "hx-trigger" not in card  # a plain failure: nothing to wait for


def test_a_job_past_its_deadline_says_it_timed_out(signed_in, pictory, enqueued, settings):
    settings.PICTORY_DEADLINE_MINUTES = 7.5
    clip = create_clip(signed_in, enqueued)
    Clip.objects.filter(pk=clip.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))
    poll(clip, enqueued)
    assert clip.status == Clip.Status.FAILED
    assert clip.error == "Timed out: Pictory AI Studio did not finish this clip within 7.5 minutes."


# --- Errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        [
            {"field": "prompt", "message": "Describe a scene, not a list."},
            {"field": "aspectRatio", "message": "That ratio is not available today."},
        ],
        [
            {"name": "prompt", "errors": ["Describe a scene, not a list."]},
            {"name": "aspectRatio", "errors": "That ratio is not available today."},
        ],
    ],
)
def test_a_400_shows_each_message_beside_its_form_field(signed_in, pictory, enqueued, fields):
    pictory.reply_to_create(
        (400, {"code": "INVALID_REQUEST_BODY", "message": "Request body is invalid", "fields": fields})
    )
    clip = create_clip(signed_in, enqueued)
    assert clip.status == Clip.Status.FAILED
    assert clip.field_errors == {
        "prompt": ["Describe a scene, not a list."],
        "aspect_ratio": ["That ratio is not available today."],
    }
    assert "Aspect ratio: That ratio is not available today." in clip.error
    card = page(signed_in.get(reverse("clip_card", args=[clip.pk])))
    assert reverse("retry_clip", args=[clip.pk]) in card and "Fix and try again" in card
    form = page(signed_in.get(reverse("retry_clip", args=[clip.pk])))
    assert PROMPT in form
    prompt_error = form.index(
        '<div class="field-errors" id="id_prompt_error"><p class="field-error">Describe a scene, not a list.</p>'
    )
    ratio_error = form.index('<p class="field-error">That ratio is not available today.</p>')
    assert form.index('for="id_prompt"') < prompt_error < form.index('for="id_aspect_ratio"') < ratio_error
    assert ratio_error < form.index('for="id_duration"')
    assert len(pictory.jobs) == 0


def test_the_fakes_own_validation_errors_map_to_form_fields_in_every_shape(pictory):
    spec = find_model("pictory:veo3.1")
    provider = get_provider("pictory")
    for shape in ("field", "name", "name-str"):
        pictory.fields_shape = shape
        with pytest.raises(ProviderError) as caught:
            provider.submit(Submission(model=spec, prompt="A lighthouse", aspect_ratio="1:1", duration=5))
        assert caught.value.permanent
        assert set(caught.value.field_errors) == {"aspect_ratio", "duration"}


def test_field_error_names_are_mapped_to_form_fields():
    assert field_errors(
        [
            {"field": "body.referenceImageUrls[1]", "message": "not reachable"},
            {"name": "extendVideoUrl", "errors": ["not an MP4", "too long"]},
            {"name": "firstFrameImageUrl", "errors": "too small"},
            {"field": "mystery", "message": "odd"},
            "not an entry",
        ]
    ) == {
        "reference_images": ["not reachable"],
        "extend_video": ["not an MP4", "too long"],
        "first_frame": ["too small"],
        "__all__": ["mystery: odd"],
    }


def test_a_refused_key_says_so_and_never_shows_the_key(signed_in, pictory, enqueued, settings):
    settings.PICTORY_API_KEY = "pictai_wrong_but_secret_987654"
    clip = create_clip(signed_in, enqueued)
    assert clip.status == Clip.Status.FAILED
    assert clip.error == KEY_REFUSED == "Pictory refused the API key (check PICTORY_API_KEY)."
    assert pictory.creates()[0].headers["authorization"] == "pictai_wrong_but_secret_987654"
    for url in (reverse("clip_card", args=[clip.pk]), reverse("clip_detail", args=[clip.pk])):
        assert "pictai_wrong_but_secret_987654" not in signed_in.get(url).content.decode()


def test_429_then_500_then_success_creates_exactly_one_job(signed_in, pictory, enqueued):
    pictory.reply_to_create(
        (429, {"message": "Too Many Requests"}, {"Retry-After": "7"}),
        (500, {"message": "Internal Server Error"}),
    )
    clip = create_clip(signed_in, enqueued)
    assert clip.status == Clip.Status.QUEUED and clip.notice.startswith("Waiting to retry")
    assert 6 <= (clip.next_poll_at - timezone.now()).total_seconds() <= 7.5  # Retry-After honoured
    for expected in (Clip.Status.QUEUED, Clip.Status.RUNNING):
        send_when_due(clip, enqueued)
        assert clip.status == expected
    assert len(pictory.creates()) == 3
    # The 500 may have made a job: the list was searched before the next create (not after the 429).
    assert len(pictory.list_requests()) == 1
    assert len(pictory.jobs) == 1 and clip.remote_id in pictory.jobs
    pictory.script_polls("completed")
    assert poll(clip, enqueued).status == Clip.Status.READY


@pytest.mark.parametrize("shape", ["items", "list", "videos-ms"])
def test_a_job_made_by_a_create_answered_500_is_found_and_adopted_not_made_twice(
    signed_in, pictory, enqueued, shape
):
    pictory.list_shape = shape
    pictory.reply_to_create("500-after-create")
    clip = create_clip(signed_in, enqueued)
    assert clip.status == Clip.Status.QUEUED and clip.look_before_send
    send_when_due(clip, enqueued)
    assert clip.status == Clip.Status.RUNNING
    assert len(pictory.creates()) == 1 and len(pictory.jobs) == 1
    assert clip.remote_id in pictory.jobs
    pictory.script_polls("completed")
    assert poll(clip, enqueued).status == Clip.Status.READY


def test_after_two_500s_the_deadline_counts_from_acceptance(signed_in, pictory, enqueued, settings):
    """Today's loss: two 500s, a late acceptance, and "Timed out" before a single poll."""
    settings.PICTORY_DEADLINE_MINUTES = 10
    pictory.reply_to_create(
        (500, {"message": "Internal Server Error"}), (500, {"message": "Internal Server Error"})
    )
    clip = create_clip(signed_in, enqueued)
    for _ in range(2):
        # Each retry waits in the queue for a while: here far longer than the deadline.
        Clip.objects.filter(pk=clip.pk).update(created_at=F("created_at") - timedelta(minutes=20))
        send_when_due(clip, enqueued)
    assert clip.status == Clip.Status.RUNNING
    assert clip.deadline_at == clip.submitted_at + timedelta(minutes=10)
    pictory.script_polls("completed")
    assert poll(clip, enqueued).status == Clip.Status.READY
    assert len(pictory.polls()) == 1 and len(pictory.jobs) == 1


def test_poll_429_and_500_back_off_without_failing_the_clip(signed_in, pictory, enqueued):
    clip = create_clip(signed_in, enqueued)
    pictory.script_polls("429", "500", "completed")
    poll(clip, enqueued)
    assert clip.status == Clip.Status.RUNNING and clip.poll_failures == 1
    assert (clip.next_poll_at - timezone.now()).total_seconds() >= 6.5  # at least Retry-After
    poll(clip, enqueued)
    assert clip.status == Clip.Status.RUNNING and clip.poll_failures == 2
    assert (clip.next_poll_at - timezone.now()).total_seconds() >= 25  # backoff grows
    poll(clip, enqueued)
    assert clip.status == Clip.Status.READY
    assert len(pictory.creates()) == 1


@pytest.mark.parametrize("reply", ["timeout", "drop-after-create"])
def test_a_lost_create_answer_is_found_in_the_list_and_never_sent_twice(signed_in, pictory, enqueued, reply):
    pictory.reply_to_create(reply)
    clip = create_clip(signed_in, enqueued)
    assert clip.status == Clip.Status.RUNNING, clip.error
    assert clip.remote_id in pictory.jobs and len(pictory.list_requests()) == 1
    jobs.recover_stale_clips()
    run_enqueued(enqueued)
    assert len(pictory.creates()) == 1 and len(pictory.jobs) == 1


def test_a_lost_answer_with_no_job_in_the_list_may_have_started_and_is_looked_for(
    signed_in, pictory, enqueued
):
    # A gateway's 504 to a create: Pictory's docs ask for no resend, so the studio may not.
    pictory.reply_to_create((504, "<html>Gateway Timeout</html>", {"Content-Type": "text/html"}))
    clip = create_clip(signed_in, enqueued)
    assert clip.status == Clip.Status.FAILED and clip.failure_kind == Clip.Failure.UNCERTAIN
    assert clip.error.startswith("The provider may have started this clip.")
    assert "billed twice" in clip.error
    card = page(signed_in.get(reverse("clip_card", args=[clip.pk])))
    assert "May have started" in card and reverse("send_again", args=[clip.pk]) in card
    assert "Try again" not in card and "keeps looking for it until" in card
    # The job shows up in Pictory's list later (made by that create after all): adopted.
    job_id = "7d4bd7f1-0c3b-4f0e-9a57-000000000001"
    pictory.jobs[job_id] = Job(job_id, {"prompt": PROMPT, "model": "veo3.1"})
    Clip.objects.filter(pk=clip.pk).update(next_poll_at=timezone.now() - timedelta(seconds=1))
    assert jobs.look_for_lost_jobs() == 1
    clip.refresh_from_db()
    assert clip.status == Clip.Status.RUNNING and clip.remote_id == job_id and clip.error == ""
    assert len(pictory.creates()) == 1


def test_a_job_in_the_list_with_another_prompt_or_from_before_is_never_adopted(pictory):
    provider = get_provider("pictory")
    spec = find_model("pictory:veo3.1")
    old = Job("11111111-0000-0000-0000-000000000001", {"prompt": PROMPT, "model": "veo3.1"})
    old.created -= 3600  # the same prompt, an hour earlier: another clip
    other = Job(
        "11111111-0000-0000-0000-000000000002", {"prompt": "Something else entirely", "model": "veo3.1"}
    )
    pictory.jobs.update({old.id: old, other.id: other})
    since = timezone.now() - timedelta(minutes=5)
    assert provider.find_jobs(Submission(model=spec, prompt=PROMPT), since) == []
    fresh = Job("11111111-0000-0000-0000-000000000003", {"prompt": PROMPT, "model": "veo3.1"})
    pictory.jobs[fresh.id] = fresh
    assert [j.remote_id for j in provider.find_jobs(Submission(model=spec, prompt=PROMPT), since)] == [
        fresh.id
    ]


def test_send_again_warns_it_may_bill_twice_then_sends_the_same_clip(signed_in, pictory, enqueued):
    pictory.reply_to_create((502, {"message": "Bad Gateway"}))
    clip = create_clip(signed_in, enqueued)
    assert clip.may_bill_twice
    # "Try again" from an old page goes through the warning too.
    response = signed_in.post(reverse("retry_clip", args=[clip.pk]))
    assert response.status_code == 302 and response.url == reverse("send_again", args=[clip.pk])
    text = page(signed_in.get(reverse("send_again", args=[clip.pk])))
    assert "may be billed twice" in text and "Check your Pictory AI Studio account first" in text
    assert len(pictory.creates()) == 1
    assert signed_in.post(reverse("send_again", args=[clip.pk])).status_code == 302
    run_enqueued(enqueued)
    clip.refresh_from_db()
    assert clip.status == Clip.Status.RUNNING and len(pictory.creates()) == 2
    assert not clip.failure_kind and clip.error == ""


def test_an_unreachable_service_is_retried_later(signed_in, pictory, enqueued, settings):
    settings.PICTORY_API_BASE_URL = f"http://127.0.0.1:{free_port()}/pictoryapis"
    clip = create_clip(signed_in, enqueued)
    assert clip.status == Clip.Status.QUEUED
    assert clip.notice.startswith("Waiting to retry: Could not reach Pictory")
    assert "Waiting to retry: Could not reach Pictory" in page(
        signed_in.get(reverse("clip_card", args=[clip.pk]))
    )


def test_a_poll_timeout_keeps_the_clip_running(signed_in, pictory, enqueued):
    clip = create_clip(signed_in, enqueued)
    pictory.script_polls("timeout", "completed")
    poll(clip, enqueued)
    assert clip.status == Clip.Status.RUNNING and clip.poll_failures == 1
    assert poll(clip, enqueued).status == Clip.Status.READY


# --- Pictory's edge -------------------------------------------------------------------------


def test_a_configured_user_agent_is_sent(signed_in, pictory, enqueued, settings):
    settings.PICTORY_USER_AGENT = "Mozilla/5.0 (Macintosh) Safari/605.1.15"
    create_clip(signed_in, enqueued)
    assert pictory.creates()[0].headers["user-agent"] == "Mozilla/5.0 (Macintosh) Safari/605.1.15"


def test_a_firewall_refusal_of_a_create_is_retried_and_never_called_a_refused_key(
    signed_in, pictory, enqueued
):
    pictory.edge_refusals = 1
    clip = create_clip(signed_in, enqueued)
    assert clip.status == Clip.Status.QUEUED
    assert clip.notice == f"Waiting to retry: {FIREWALL}"
    assert "Pictory's firewall refused the request" in FIREWALL and "key" not in FIREWALL.split(".")[0]
    send_when_due(clip, enqueued)
    assert clip.status == Clip.Status.RUNNING and len(pictory.jobs) == 1


def test_a_firewall_that_keeps_refusing_fails_the_clip_saying_so(signed_in, pictory, enqueued):
    pictory.edge_refusals = jobs.EDGE_TRIES
    clip = create_clip(signed_in, enqueued)
    for _ in range(jobs.EDGE_TRIES - 1):
        send_when_due(clip, enqueued)
    assert clip.status == Clip.Status.FAILED
    assert clip.error == FIREWALL and KEY_REFUSED not in clip.error and not clip.failure_kind
    assert len(pictory.jobs) == 0


def test_a_firewall_refusal_while_polling_keeps_the_clip_then_lets_it_finish(signed_in, pictory, enqueued):
    clip = create_clip(signed_in, enqueued)
    pictory.edge_refusals = jobs.EDGE_TRIES
    for _ in range(jobs.EDGE_TRIES):
        poll(clip, enqueued)
        assert clip.status == Clip.Status.RUNNING
    assert clip.paused_at is not None and clip.status_label == "Waiting for Pictory's firewall"
    assert "PICTORY_USER_AGENT" in clip.notice and KEY_REFUSED not in clip.notice
    pictory.script_polls("completed")
    assert poll(clip, enqueued).status == Clip.Status.READY


# --- A key refused while a clip runs --------------------------------------------------------


def test_a_401_while_polling_shows_waiting_for_a_working_key_then_the_clip_finishes(
    signed_in, pictory, enqueued
):
    clip = create_clip(signed_in, enqueued)
    pictory.key_refused = True
    poll(clip, enqueued)
    assert clip.status == Clip.Status.RUNNING and clip.paused_at is not None
    card = page(signed_in.get(reverse("clip_card", args=[clip.pk])))
    assert "Waiting for a working Pictory key" in card
    assert "check the Pictory key" in card and "carries on as soon as the key works" in card
    # Polling goes on at Pictory's rhythm: each poll is also the check that the key works.
    assert 14 <= (clip.next_poll_at - timezone.now()).total_seconds() <= 16
    poll(clip, enqueued)
    assert clip.paused_at is not None
    pictory.key_refused = False
    pictory.script_polls("completed")
    assert poll(clip, enqueued).status == Clip.Status.READY
    assert "Waiting for a working" not in page(signed_in.get(reverse("clip_card", args=[clip.pk])))


def test_pictorys_own_403_while_polling_waits_for_the_key_too(signed_in, pictory, enqueued):
    clip = create_clip(signed_in, enqueued)
    pictory.script_polls((403, {"message": "Forbidden"}), "completed")
    poll(clip, enqueued)
    assert clip.status == Clip.Status.RUNNING and clip.status_label == "Waiting for a working Pictory key"
    assert poll(clip, enqueued).status == Clip.Status.READY


# --- Copying --------------------------------------------------------------------------------


def test_the_clip_still_plays_after_pictorys_urls_expire(signed_in, pictory, enqueued):
    clip = ready_clip(signed_in, enqueued, pictory)
    pictory.expire_files(403)
    assert httpx.get(clip.remote_result["video_url"]).status_code == 403
    response = signed_in.get(reverse("clip_video", args=[clip.pk]))
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == rendered("16:9")[0]
    assert signed_in.get(reverse("clip_thumbnail", args=[clip.pk])).status_code == 200
    assert signed_in.get(clip.last_frame.get_absolute_url()).status_code == 200


def test_links_that_expired_before_copying_are_replaced_by_a_fresh_poll(signed_in, pictory, enqueued):
    clip = create_clip(signed_in, enqueued)
    pictory.script_polls("completed", "completed")
    make_due(clip)
    poll_due_once()
    pictory.expire_links()  # the signed URLs of that answer no longer work (403)
    run_enqueued(enqueued)
    clip.refresh_from_db()
    assert clip.status == Clip.Status.READY, clip.error
    assert len(pictory.polls()) == 2 and "issued=" in clip.remote_result["video_url"]
    assert clip.cost_actual == Decimal("80")


@pytest.mark.parametrize("status", [403, 404, 410])
def test_files_that_stay_unavailable_leave_a_made_clip_looked_for_not_lost(
    signed_in, pictory, enqueued, status
):
    clip = create_clip(signed_in, enqueued)
    pictory.complete_after = 1  # every poll of the job says completed
    make_due(clip)
    poll_due_once()
    pictory.expire_files(status)
    run_enqueued(enqueued)
    clip.refresh_from_db()
    assert clip.status == Clip.Status.FAILED and clip.failure_kind == Clip.Failure.COPY
    assert "could not be copied into the studio" in clip.error and "expired" in clip.error
    assert clip.cost_actual == Decimal("80")  # made and billed: said so, never dropped
    card = page(signed_in.get(reverse("clip_card", args=[clip.pk])))
    assert "keeps looking for it until" in card and "Try again" not in card and "Send again" not in card
    # Later the files answer again: the next look finishes it.
    pictory.file_status = None
    assert poll(clip, enqueued).status == Clip.Status.READY
    assert len(pictory.creates()) == 1


def test_a_server_error_while_downloading_is_retried(signed_in, pictory, enqueued):
    clip = create_clip(signed_in, enqueued)
    pictory.script_polls("completed")
    make_due(clip)
    poll_due_once()
    pictory.expire_files(502)
    run_enqueued(enqueued)
    clip.refresh_from_db()
    assert clip.status == Clip.Status.FINISHING  # tried again after a backoff
    assert clip.next_poll_at > timezone.now()
    pictory.file_status = None
    jobs.finish_clip(clip.pk)
    clip.refresh_from_db()
    assert clip.status == Clip.Status.READY


def test_a_job_that_finishes_after_the_deadline_is_revived(signed_in, pictory, enqueued, settings):
    clip = create_clip(signed_in, enqueued)
    Clip.objects.filter(pk=clip.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))
    poll(clip, enqueued)  # the last poll: still in progress
    assert clip.status == Clip.Status.FAILED and clip.failure_kind == Clip.Failure.TIMED_OUT
    card = page(signed_in.get(reverse("clip_card", args=[clip.pk])))
    assert "keeps looking for it until" in card and "Send again" in card
    # Its card keeps asking, more slowly, so a late delivery shows without a reload.
    assert 'hx-trigger="every 15s"' in card
    pictory.script_polls("completed")
    assert poll(clip, enqueued).status == Clip.Status.READY
    assert clip.error == "" and clip.cost_actual == Decimal("80")
    assert "Timed out" not in page(signed_in.get(reverse("clip_card", args=[clip.pk])))


# --- Webhook --------------------------------------------------------------------------------


def test_the_webhook_with_the_right_token_makes_the_clip_due_and_nothing_else(
    signed_in, pictory, enqueued, public, client
):
    clip = create_clip(signed_in, enqueued)
    url = reverse("provider_webhook", args=["pictory", clip.webhook_token])
    assert pictory.creates()[0].json["webhook"] == PUBLIC + url
    before = Clip.objects.get(pk=clip.pk)
    forged = json.dumps(
        {
            "job_id": clip.remote_id,
            "success": True,
            "data": {"status": "completed", "url": "https://evil.example/x.mp4"},
        }
    )
    response = client.post(url, forged, content_type="application/json")
    assert response.status_code == 204
    clip.refresh_from_db()
    assert clip.next_poll_at <= timezone.now()
    assert clip.status == Clip.Status.RUNNING and clip.remote_result == before.remote_result
    assert [task for task, _ in enqueued] == ["studio.jobs.poll_due_clips"]
    # A repeat changes nothing more: the clip is already due, no second sweep.
    due_at = clip.next_poll_at
    assert client.post(url, forged, content_type="application/json").status_code == 204
    clip.refresh_from_db()
    assert clip.next_poll_at == due_at and len(enqueued) == 1
    assert not pictory.polls()  # the body was never taken as the truth
    # The truth comes from the next poll.
    pictory.script_polls("in-progress")
    run_enqueued(enqueued)
    clip.refresh_from_db()
    assert len(pictory.polls()) == 1 and clip.status == Clip.Status.RUNNING


def test_the_webhook_refuses_a_wrong_token_and_other_methods(signed_in, pictory, enqueued, public, client):
    clip = create_clip(signed_in, enqueued)
    before = Clip.objects.get(pk=clip.pk)
    assert client.post(reverse("provider_webhook", args=["pictory", "not-the-token"])).status_code == 404
    assert client.get(reverse("provider_webhook", args=["pictory", clip.webhook_token])).status_code == 405
    clip.refresh_from_db()
    assert clip.next_poll_at == before.next_poll_at and clip.updated_at == before.updated_at
    assert not enqueued


def test_a_simulator_clip_cannot_be_woken_through_the_pictory_hook(signed_in, pictory, enqueued, client):
    response = post_generate(signed_in, model="simulator:cinema", aspect_ratio="16:9", duration="4")
    assert response.status_code == 302
    sim = Clip.objects.get(provider="simulator")
    assert client.post(reverse("provider_webhook", args=["pictory", sim.webhook_token])).status_code == 404


def test_one_provider_and_connection_pool_serve_every_call(pictory):
    assert get_provider("pictory") is get_provider("pictory")
