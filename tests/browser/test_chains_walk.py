"""Chains in a real browser: two takes of one step, choosing one in the chain view,
downloading the whole chain as one MP4, and the pages at 375 px wide."""

import re

import av
from playwright.sync_api import expect

from .conftest import shot, sign_in

TIMEOUT = 60_000
FPS = 24


def generate(page, prompt):
    page.get_by_label("Prompt").fill(prompt)
    page.get_by_role("button", name="Generate").click()


def generate_4s_cinema(page, prompt):
    """A 4 s 16:9 clip of the simulator's cinema model, from the gallery's form."""
    page.get_by_label("Model").select_option("simulator:cinema")
    page.get_by_label("Aspect ratio").select_option("16:9")
    page.get_by_label("Duration").select_option("4")
    generate(page, prompt)


def newest_ready_card(page, count):
    expect(page.locator("article.card")).to_have_count(count, timeout=TIMEOUT)
    card = page.locator("article.card").first
    card.locator(".status", has_text="Ready").wait_for(timeout=TIMEOUT)
    return card, int(re.search(r"#(\d+)", card.locator(".card-link").inner_text()).group(1))


def fits_width(page, width):
    return page.evaluate("document.documentElement.scrollWidth") <= width


def test_takes_choose_one_and_download_the_whole_chain(page, start_studio, tmp_path):
    studio = start_studio()
    sign_in(page, studio)
    generate_4s_cinema(page, "A paper lantern drifts over a dark lake, slow dolly in")
    root_card, root = newest_ready_card(page, 1)

    # Two takes of the next step: continue twice from the same clip.
    root_card.get_by_role("link", name="Continue from last frame").click()
    generate(page, "Take one: the lantern rises into falling snow")
    _, take_one = newest_ready_card(page, 2)
    page.locator(f"#clip-{root}").get_by_role("link", name="Continue from last frame").click()
    page.get_by_role("heading", name=f"Continue clip #{root}").wait_for()
    generate(page, "Take two: the lantern sinks beneath the water")
    _, take_two = newest_ready_card(page, 3)

    # The chain view of the first clip goes on through the newest ready take.
    page.goto(f"{studio.url}/clips/{root}/chain/")
    page.get_by_role("button", name="Play the sequence").wait_for()
    steps = page.locator("[data-seq-step]")
    expect(steps).to_have_count(2)
    expect(steps.nth(1)).to_have_attribute("data-clip", str(take_two))
    expect(page.locator("#step-2 .take")).to_have_count(2)
    expect(page.locator(f"#take-{take_two}")).to_contain_text("In the sequence")
    shot(page, "chains-1-two-takes")

    # Choose the other take (nothing continues either, so nothing to warn about): the
    # sequence now uses it, from the root's chain view too.
    page.get_by_role("button", name=f"Use this take (take 1, clip #{take_one})").click()
    expect(page.locator(f"#take-{take_one}")).to_contain_text("In the sequence")
    page.goto(f"{studio.url}/clips/{take_two}/chain/")
    expect(page.locator("[data-seq-step]").nth(1)).to_have_attribute("data-clip", str(take_one))
    expect(page.locator("#chain-totals")).to_contain_text("2 steps · 8.0 s")
    expect(page.locator("#chain-totals")).to_contain_text("Free")
    shot(page, "chains-2-take-chosen")

    # Join it: a progress state, then the file.
    page.get_by_role("button", name="Download the whole chain").click()
    link = page.get_by_role("link", name="Download the whole chain (MP4)")
    link.wait_for(timeout=TIMEOUT)
    expect(page.locator("#chain-export")).to_contain_text("1 repeated seam frame left out")
    shot(page, "chains-3-joined")
    with page.expect_download() as info:
        link.click()
    path = tmp_path / "chain.mp4"
    info.value.save_as(path)
    # Named after the chain's title: the first words of its first prompt.
    assert info.value.suggested_filename == "A paper lantern drifts over a dark lake.mp4"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        duration = float(stream.duration * stream.time_base)
        frames = sum(1 for _ in container.decode(stream))
    assert frames == 2 * 4 * FPS - 1
    assert abs(duration - (8 - 1 / FPS)) < 0.002

    # On a phone: the chain view, the gallery (player and Continue) fit 375 px.
    page.set_viewport_size({"width": 375, "height": 812})
    page.goto(f"{studio.url}/clips/{root}/chain/")
    assert fits_width(page, 375)
    export_button = page.get_by_role("link", name="Download the whole chain (MP4)")
    box = export_button.bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= 375
    shot(page, "chains-4-chain-375")
    page.goto(studio.url + "/")
    page.get_by_role("heading", name="Your clips").wait_for()
    assert fits_width(page, 375)
    card = page.locator(f"#clip-{root}")
    card.scroll_into_view_if_needed()
    for element in (card.locator("video"), card.get_by_role("link", name="Continue from last frame")):
        box = element.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 375
    shot(page, "chains-5-gallery-375")
    page.goto(f"{studio.url}/clips/{take_one}/")
    assert fits_width(page, 375)
    shot(page, "chains-6-player-375")


def test_filters_retry_and_delete_in_the_browser(page, start_studio):
    studio = start_studio()
    sign_in(page, studio)
    page.get_by_label("Model").select_option("simulator:cinema")
    generate(page, "A red kite over green hills")
    newest_ready_card(page, 1)
    generate(page, "A blue boat in a grey harbour")
    newest_ready_card(page, 2)

    page.get_by_label("Search your clips").fill("kite")
    expect(page.locator("article.card")).to_have_count(1)
    expect(page.locator("article.card")).to_contain_text("red kite")
    assert "q=kite" in page.url
    page.get_by_label("Search your clips").fill("")
    expect(page.locator("article.card")).to_have_count(2)
    page.get_by_label("Show clips").select_option("failed")
    expect(page.locator(".gallery-none")).to_contain_text("No clips match")
    page.get_by_label("Show clips").select_option("")
    expect(page.locator("article.card")).to_have_count(2)

    card = page.locator("article.card").first
    card.locator("summary", has_text="More").click()
    card.get_by_role("link", name="Delete…").click()
    page.get_by_role("heading", name=re.compile("Delete clip")).wait_for()
    page.get_by_role("button", name="Delete").click()
    page.get_by_role("heading", name="Your clips").wait_for()
    expect(page.locator("article.card")).to_have_count(1)
    expect(page.locator(".messages")).to_contain_text("deleted")
