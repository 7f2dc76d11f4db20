"""The whole walk of a creator on the offline simulator, in a real browser."""

import io
import re

import av
from PIL import ImageChops, ImageStat
from playwright.sync_api import expect

from .conftest import shot, sign_in

TIMEOUT = 60_000


def frames_of(video_bytes):
    with av.open(io.BytesIO(video_bytes)) as container:
        return [frame.to_image() for frame in container.decode(container.streams.video[0])]


def mean_abs_diff(a, b):
    return sum(ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).mean) / 3


def test_generate_watch_and_continue_from_the_last_frame(page, start_studio):
    studio = start_studio()
    sign_in(page, studio, with_the_form=True)
    page.evaluate("window.__noReload = true")
    shot(page, "walk-1-empty-gallery")

    page.get_by_label("Model").select_option("simulator:cinema")
    page.get_by_label("Prompt").fill("A paper lantern drifts over a dark lake, slow dolly in")
    page.get_by_label("Aspect ratio").select_option("16:9")
    page.get_by_label("Duration").select_option("4")
    page.get_by_role("button", name="Generate").click()

    card = page.locator("article.card").first
    card.wait_for()
    expect(card.locator(".status")).to_have_text(re.compile(r"queued|generating", re.IGNORECASE))
    shot(page, "walk-2-queued")
    card.locator(".status", has_text="Generating").wait_for(timeout=TIMEOUT)
    card.locator(".status", has_text="Ready").wait_for(timeout=TIMEOUT)
    assert page.evaluate("window.__noReload") is True, "the page reloaded"
    shot(page, "walk-3-ready")

    video = card.locator("video")
    video.evaluate("v => { v.muted = true; return v.play(); }")
    page.wait_for_function(
        "() => document.querySelector('article.card video').currentTime > 0.2", timeout=TIMEOUT
    )
    first_src = video.get_attribute("src")

    card.get_by_role("link", name="Continue from last frame").click()
    page.get_by_role("heading", name="Continue clip").wait_for()
    preview = page.get_by_role("img", name="First frame: last frame of the clip being continued")
    expect(preview).to_be_visible()
    expect(page.get_by_label("Model")).to_have_value("simulator:cinema")
    expect(page.get_by_label("Aspect ratio")).to_have_value("16:9")
    shot(page, "walk-4-continue-form")
    page.get_by_label("Prompt").fill("The lantern rises into falling snow")
    page.get_by_role("button", name="Generate").click()

    expect(page.locator("article.card")).to_have_count(2)
    second = page.locator("article.card").first
    second.locator(".status", has_text="Ready").wait_for(timeout=TIMEOUT)
    second_src = second.locator("video").get_attribute("src")
    assert second_src != first_src
    shot(page, "walk-5-second-ready")

    first_frames = frames_of(page.request.get(studio.url + first_src).body())
    second_frames = frames_of(page.request.get(studio.url + second_src).body())
    assert mean_abs_diff(second_frames[0], first_frames[-1]) < 4

    # The clip page shows the chain, root first.
    second.get_by_role("link", name="Clip #").click()
    expect(page.locator(".chain-strip li")).to_have_count(2)
    shot(page, "walk-6-chain")
