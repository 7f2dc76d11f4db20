"""Estimates true to OpenRouter's price list, and the same figure everywhere it is shown.

A realistic model list (tests/fakes/openrouter_models.py: every pricing-key family of the
recorded live list) is replayed, and each estimate is checked against a figure worked out by
hand in the comment beside it."""

from __future__ import annotations

import copy
import html
import io
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from studio.models import Clip
from studio.providers.openrouter import specs_from
from tests.conftest import run_enqueued
from tests.fakes.openrouter import FakeOpenRouter, render_clip
from tests.fakes.openrouter_models import REALISTIC_MODELS

from .worker import poll_due_once

SPECS = {spec.key: spec for spec in specs_from(copy.deepcopy(REALISTIC_MODELS))}
PROMPT = "A paper lantern drifts over a night market, slow crane up"


def usd(value: str) -> Decimal:
    return Decimal(value)


# (model, options, hand-worked figure in USD or None for "known after the clip is made")
CASES = [
    # Per second by resolution, with and without audio: 4 s × 0.20 (720p, no audio).
    ("google/veo-3.1", {"seconds": 4, "resolution": "720p", "generate_audio": False}, "0.80"),
    # 8 s × 0.60 (1080p with audio).
    ("google/veo-3.1", {"seconds": 8, "resolution": "1080p", "generate_audio": True}, "4.80"),
    # 6 s × 0.40 (720p with audio).
    ("google/veo-3.1", {"seconds": 6, "resolution": "720p", "generate_audio": True}, "2.40"),
    # Per second by resolution alone: 12 s × 0.50 (1080p).
    ("openai/sora-2-pro", {"seconds": 12, "resolution": "1080p"}, "6.00"),
    ("openai/sora-2-pro", {"seconds": 4, "resolution": "720p"}, "1.20"),
    # One flat price per second: 10 s × 0.07.
    ("kwaivgi/kling-v2.5-turbo", {"seconds": 10, "resolution": "1080p"}, "0.70"),
    # Text-to-video vs image-to-video, by how the clip starts: 5 s × 0.15 (text, 1080p).
    ("alibaba/wan-2.7", {"seconds": 5, "resolution": "1080p", "start_mode": "text"}, "0.75"),
    # 5 s × 0.12 (image-to-video, 1080p), one first frame (no per-image fee on this model).
    (
        "alibaba/wan-2.7",
        {"seconds": 5, "resolution": "1080p", "start_mode": "first_frame", "frames": 1},
        "0.60",
    ),
    # 10 s × 0.08 (image-to-video 720p), first and last frame.
    (
        "alibaba/wan-2.7",
        {"seconds": 10, "resolution": "720p", "start_mode": "first_frame", "frames": 2},
        "0.80",
    ),
    # Per reference: references are neither start, so the higher rate 0.10 (720p text):
    # 5 s × 0.10 + 2 references × 0.05 = 0.50 + 0.10.
    (
        "alibaba/wan-2.7",
        {"seconds": 5, "resolution": "720p", "start_mode": "reference_images", "references": 2},
        "0.60",
    ),
    # Token-priced: known only afterwards.
    ("bytedance/seedance-2.0-fast", {"seconds": 5, "resolution": "720p", "generate_audio": True}, None),
    # Cents per second by resolution, with a minimum: 6 s × 4.5 ¢ = 27 ¢ < 30 ¢ → 0.30.
    ("minimax/hailuo-02", {"seconds": 6, "resolution": "768p"}, "0.30"),
    # 10 s × 4.5 ¢ = 45 ¢ (above the minimum).
    ("minimax/hailuo-02", {"seconds": 10, "resolution": "768p"}, "0.45"),
    # 6 s × 8 ¢ = 48 ¢ (1080p).
    ("minimax/hailuo-02", {"seconds": 6, "resolution": "1080p"}, "0.48"),
    # Cents per second of output; the continuation SKU (6 ¢) is not the generation price:
    # 5 s × 9 ¢ = 45 ¢.
    ("luma/ray-2", {"seconds": 5, "resolution": "720p", "start_mode": "text"}, "0.45"),
    # Per input image: 5 s × 9 ¢ + 1 image × 2 ¢ = 47 ¢.
    ("luma/ray-2", {"seconds": 5, "resolution": "720p", "start_mode": "first_frame", "frames": 1}, "0.47"),
    # 9 s × 9 ¢ + 2 images × 2 ¢ = 81 ¢ + 4 ¢.
    ("luma/ray-2", {"seconds": 9, "resolution": "720p", "start_mode": "first_frame", "frames": 2}, "0.85"),
    # With and without audio, no resolution: 5 s × 0.12 and 8 s × 0.08.
    ("pixverse/pixverse-v5", {"seconds": 5, "generate_audio": True}, "0.60"),
    ("pixverse/pixverse-v5", {"seconds": 8, "generate_audio": False}, "0.64"),
]


@pytest.mark.parametrize("key, options, expected", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_pricing_family_gives_the_hand_worked_estimate(key, options, expected):
    options = dict(options)
    seconds = options.pop("seconds")
    amount = SPECS[key].estimate_cost(seconds, **options)
    assert amount == (None if expected is None else usd(expected))


def test_the_replayed_list_covers_every_pricing_family():
    names = {name for model in REALISTIC_MODELS for name in (model["pricing_skus"] or {})}
    families = [
        r"^duration_seconds$",
        r"^duration_seconds_\d+p$",
        r"^duration_seconds_with_audio$",
        r"^duration_seconds_without_audio$",
        r"^duration_seconds_with_audio_\d+p$",
        r"^duration_seconds_without_audio_\d+p$",
        r"^text_to_video_duration_seconds_\d+p$",
        r"^image_to_video_duration_seconds_\d+p$",
        r"^cents_per_second_output$",
        r"^cents_per_second_output_\d+p$",
        r"^cents_per_second_video_continuation_\d+p$",
        r"^reference_images$",
        r"^cents_per_image_input$",
        r"^minimum_cents_per_generation$",
        r"^video_tokens$",
        r"^video_tokens_without_audio$",
    ]
    for family in families:
        assert any(re.match(family, name) for name in names), family


def test_the_price_summary_names_the_fees_and_the_minimum():
    assert SPECS["alibaba/wan-2.7"].price_summary == (
        "0.08 to 0.15 USD per second, plus 0.05 USD per reference image"
    )
    assert (
        SPECS["minimax/hailuo-02"].price_summary == "0.045 to 0.08 USD per second; at least 0.3 USD per clip"
    )
    assert SPECS["luma/ray-2"].price_summary == "0.09 USD per second, plus 0.02 USD per input image"
    assert SPECS["bytedance/seedance-2.0-fast"].price_summary == ""


def test_an_option_no_price_covers_gives_no_estimate_rather_than_a_wrong_one():
    # Seedance lists 480p, priced by tokens; Veo has no price for a resolution it does not list.
    assert SPECS["google/veo-3.1"].estimate_cost(4, "4K", False) is None


# --- The same figure on first render, after a change, and on the queued card ------------------


@pytest.fixture
def openrouter(settings):
    render_clip("16:9")
    fake = FakeOpenRouter(models=copy.deepcopy(REALISTIC_MODELS)).start()
    settings.OPENROUTER_API_KEY = fake.key
    settings.OPENROUTER_API_BASE_URL = fake.base_url
    # The fake renders a continued clip from its first frame inside the poll: give it time.
    settings.OPENROUTER_TIMEOUT_SECONDS = 15
    settings.PICTORY_API_KEY = ""
    settings.SIMULATOR_ENABLED = False
    settings.POLL_SWEEP_SECONDS = 0
    yield fake
    fake.stop()


def cost_line(response) -> str:
    text = html.unescape(response.content.decode())
    return re.search(r'<p class="cost" id="cost">([^<]*)</p>', text).group(1)


def png(name="frame.png"):
    out = io.BytesIO()
    Image.new("RGB", (64, 36), (200, 40, 40)).save(out, "PNG")
    return SimpleUploadedFile(name, out.getvalue(), content_type="image/png")


@pytest.mark.django_db(transaction=True)
def test_veo_shows_the_720p_estimate_first_after_a_change_and_on_the_queued_card(
    signed_in, openrouter, enqueued
):
    options = {"model": "openrouter:google/veo-3.1", "prompt": PROMPT}
    first = cost_line(signed_in.get(reverse("form_options"), options))
    # 720p is the first resolution, so selected; audio unchecked: 4 s × 0.20.
    assert first == "Estimated cost: 0.8 USD (4 s × 0.2 USD/s)"
    changed = cost_line(
        signed_in.get(reverse("form_options"), {**options, "resolution": "1080p", "duration": "8"})
    )
    assert changed == "Estimated cost: 2.4 USD (8 s × 0.3 USD/s)"
    back = cost_line(
        signed_in.get(reverse("form_options"), {**options, "resolution": "720p", "duration": "4"})
    )
    assert back == first
    response = signed_in.post(
        reverse("generate"),
        {**options, "aspect_ratio": "16:9", "duration": "4", "resolution": "720p", "start_mode": "text"},
    )
    assert response.status_code == 302
    clip = Clip.objects.get()
    assert clip.cost_estimate == Decimal("0.8") and clip.cost_text == "≈ 0.8 USD"
    assert "≈ 0.8 USD" in signed_in.get(reverse("clip_card", args=[clip.pk])).content.decode()


@pytest.mark.django_db(transaction=True)
def test_the_first_render_of_the_page_prices_the_selected_resolution(signed_in, openrouter):
    session = signed_in.session
    session["last_model"] = "openrouter:google/veo-3.1"
    session.save()
    assert cost_line(signed_in.get(reverse("home"))) == "Estimated cost: 0.8 USD (4 s × 0.2 USD/s)"


@pytest.mark.django_db(transaction=True)
def test_the_form_and_the_card_agree_on_fees_per_image(signed_in, openrouter, enqueued):
    options = {
        "model": "openrouter:luma/ray-2",
        "prompt": PROMPT,
        "duration": "5",
        "aspect_ratio": "16:9",
        "resolution": "720p",
        "start_mode": "first_frame",
    }
    response = signed_in.post(reverse("generate"), {**options, "first_frame_upload": png()})
    assert response.status_code == 302, cost_line(response)
    clip = Clip.objects.get()
    # 5 s × 9 ¢ + 1 input image × 2 ¢.
    assert clip.cost_estimate == Decimal("0.47")
    redraw = cost_line(
        signed_in.get(reverse("form_options"), {**options, "first_frame_asset": str(clip.first_frame_id)})
    )
    assert redraw == "Estimated cost: 0.47 USD (5 s × 0.09 USD/s + 1 input image × 0.02 USD)"


@pytest.mark.django_db(transaction=True)
def test_a_minimum_charge_is_shown_as_such(signed_in, openrouter):
    text = cost_line(
        signed_in.get(reverse("form_options"), {"model": "openrouter:minimax/hailuo-02", "duration": "6"})
    )
    assert text == "Estimated cost: 0.3 USD (the minimum per clip; 6 s × 0.045 USD/s comes to less)"


@pytest.mark.django_db(transaction=True)
def test_token_priced_models_say_the_price_is_known_after(signed_in, openrouter):
    text = cost_line(
        signed_in.get(reverse("form_options"), {"model": "openrouter:bytedance/seedance-2.0-fast"})
    )
    assert text == "The price is not known in advance: the real cost is known after the clip is made."


# --- Reported costs replace estimates -----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_reported_costs_replace_estimates_and_chain_totals_sum_them(signed_in, openrouter, enqueued):
    def make(**fields):
        data = {
            "model": "openrouter:google/veo-3.1",
            "prompt": PROMPT,
            "aspect_ratio": "16:9",
            "duration": "8",
            "resolution": "1080p",
            **fields,
        }
        assert signed_in.post(reverse("generate"), data).status_code == 302
        run_enqueued(enqueued)
        clip = Clip.objects.latest("pk")
        openrouter.script_polls("completed")  # the fake reports usage.cost 0.5
        Clip.objects.filter(pk=clip.pk).update(next_poll_at=timezone.now() - timedelta(seconds=1))
        poll_due_once()
        run_enqueued(enqueued)
        clip.refresh_from_db()
        assert clip.is_ready, clip.error
        return clip

    first = make()
    assert first.cost_estimate == Decimal("2.4") and first.cost_actual == Decimal("0.5")
    assert first.cost_text == "0.5 USD"
    second = make(start_mode="first_frame", parent=str(first.pk), first_frame_asset=str(first.last_frame_id))
    # The continuation starts from an image: priced image-to-video where a model says so.
    assert second.cost_estimate == Decimal("2.4") and second.cost_actual == Decimal("0.5")
    text = html.unescape(signed_in.get(reverse("chain_view", args=[second.pk])).content.decode())
    totals = text.split('id="chain-totals"', 1)[1][:800]  # the chain's cost, as the page says it
    assert "1 USD" in totals and "≈ 1 USD" not in totals and "4.8" not in totals
