"""One chained pair of clips made with an OpenRouter model, in a real browser, against the
loopback fake OpenRouter running in this test process: the studio (web + worker) reads the
model list, submits, polls every second, downloads with the key, extracts the last frame,
and sends it as the next clip's first frame."""

import io

import av
from PIL import Image, ImageChops, ImageStat
from playwright.sync_api import expect

from tests.fakes.openrouter import FakeOpenRouter, decode_data_url

from .conftest import shot, sign_in

TIMEOUT = 60_000
MODEL = "openrouter:google/veo-3.1"


def last_frame_of(video_bytes):
    with av.open(io.BytesIO(video_bytes)) as container:
        frames = [frame.to_image() for frame in container.decode(container.streams.video[0])]
    return frames[-1]


def mean_abs_diff(a, b):
    return sum(ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).mean) / 3


def generate(page, prompt):
    page.get_by_label("Prompt").fill(prompt)
    page.get_by_role("button", name="Generate").click()


def test_an_openrouter_clip_and_its_continuation(page, start_studio):
    fake = FakeOpenRouter().start()
    fake.complete_after = 2
    try:
        studio = start_studio(
            {
                "OPENROUTER_API_KEY": fake.key,
                "OPENROUTER_API_BASE_URL": fake.base_url,
                # Under 10 s only for a test server (settings.py); the real service wants ~30 s.
                "OPENROUTER_POLL_SECONDS": "1",
            }
        )
        sign_in(page, studio)
        page.get_by_label("Model").select_option(MODEL)
        page.get_by_label("Resolution").wait_for()
        assert page.get_by_label("Duration").locator("option").all_inner_texts() == [
            "4 seconds",
            "6 seconds",
            "8 seconds",
        ]
        page.get_by_label("Aspect ratio").select_option("16:9")
        page.get_by_label("Duration").select_option("4")
        page.locator("#cost", has_text="Estimated cost").wait_for()
        generate(page, "A paper lantern drifts over a dark lake, slow dolly in")

        card = page.locator("article.card").first
        card.locator(".status", has_text="Ready").wait_for(timeout=TIMEOUT)
        expect(card).to_contain_text("0.5 USD")
        shot(page, "openrouter-1-ready")

        card.get_by_role("link", name="Continue from last frame").click()
        page.get_by_role("heading", name="Continue clip").wait_for()
        expect(page.get_by_label("Model")).to_have_value(MODEL)
        expect(
            page.get_by_role("img", name="First frame: last frame of the clip being continued")
        ).to_be_visible()
        generate(page, "The lantern rises into falling snow")
        second = page.locator("article.card").first
        page.locator("article.card").nth(1).wait_for()
        second.locator(".status", has_text="Ready").wait_for(timeout=TIMEOUT)
        shot(page, "openrouter-2-second-ready")

        first_create, second_create = fake.creates()
        assert "frame_images" not in first_create.json
        [frame] = second_create.json["frame_images"]
        assert frame["frame_type"] == "first_frame" and second_create.json["model"] == "google/veo-3.1"
        content_type, content = decode_data_url(frame["image_url"]["url"])
        assert content_type == "image/png"
        sent = Image.open(io.BytesIO(content))
        first_job = fake.jobs[first_create_id(fake, first_create)]
        assert mean_abs_diff(sent, last_frame_of(first_job.video)) < 4
        assert all(r.headers.get("authorization") == f"Bearer {fake.key}" for r in fake.downloads())
    finally:
        fake.stop()


def first_create_id(fake, create):
    return next(job.id for job in fake.jobs.values() if job.body == create.json)
