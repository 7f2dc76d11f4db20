"""Choosing the hand-off frame in a real browser (issue 12): the strip of the last second in
the gallery's Continue flow, a frame picked from it, the chain view's seam and its figures,
any frame by number, a frame outside the clip refused beside the field, and the joined chain
downloaded with its sound. Screenshots of the picker and the chain view at 1280 and 375 px."""

import re

import av
from playwright.sync_api import expect

from .conftest import shot, sign_in
from .test_chains_walk import generate, newest_ready_card

TIMEOUT = 60_000
FPS = 24
FRAMES = 4 * FPS
PICKED = 80


def test_pick_a_frame_from_the_strip_continue_and_download_the_chain_with_sound(page, start_studio, tmp_path):
    studio = start_studio()
    sign_in(page, studio)
    page.get_by_label("Model").select_option("simulator:cinema")
    page.get_by_label("Aspect ratio").select_option("16:9")
    page.get_by_label("Duration").select_option("4")
    # Each choice redraws the model's options: tick the box once the last redraw is in.
    page.wait_for_load_state("networkidle")
    page.get_by_label("Generate audio").check()
    expect(page.get_by_label("Generate audio")).to_be_checked()
    generate(page, "A paper lantern drifts over a dark lake, slow dolly in")
    card, root = newest_ready_card(page, 1)

    # The strip: the last second, the true last frame chosen, the sharpest marked.
    card.get_by_role("link", name="Continue from last frame").click()
    page.get_by_role("heading", name=f"Continue clip #{root}").wait_for()
    expect(page.get_by_label("Generate audio")).to_be_checked()  # as the clip it continues
    strip = page.get_by_role("group", name="Hand-off frame")
    radios = strip.locator(".strip input[type=radio]")
    expect(radios).to_have_count(FPS)
    last = strip.get_by_role("radio", name=re.compile(rf"^Frame {FRAMES - 1}\b"))
    expect(last).to_be_checked()
    expect(strip.locator(".strip-frame--sharpest")).to_have_count(1)
    expect(strip.locator(".strip-frame--sharpest")).to_contain_text("sharpest")
    preview = page.get_by_role("img", name="First frame: last frame of the clip being continued")
    expect(preview).to_be_visible()
    shot(page, "handoff-1-strip-1280")

    # A radio group: the arrow keys move the choice along the strip.
    last.focus()
    page.keyboard.press("ArrowLeft")
    expect(strip.get_by_role("radio", name=re.compile(rf"^Frame {FRAMES - 2}\b"))).to_be_checked()
    picked = strip.get_by_role("radio", name=re.compile(rf"^Frame {PICKED}\b"))
    picked.check()
    expect(
        page.get_by_role("img", name=f"First frame: frame {PICKED} of the clip being continued")
    ).to_be_visible()

    page.set_viewport_size({"width": 375, "height": 812})
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 375
    picked.scroll_into_view_if_needed()
    for tile in strip.locator(".strip-frame").all()[:4]:
        box = tile.bounding_box()
        assert box["width"] >= 24 and box["height"] >= 24
    shot(page, "handoff-2-strip-375")
    page.set_viewport_size({"width": 1280, "height": 900})

    page.get_by_label("Prompt").fill("The lantern rises into falling snow")
    page.get_by_role("button", name="Generate").click()
    _, child = newest_ready_card(page, 2)

    # The chain view: step 1 is cut right after the hand-off frame, and the seam is shown.
    page.goto(f"{studio.url}/clips/{root}/chain/")
    page.get_by_role("button", name="Play the sequence").wait_for()
    expect(page.locator("[data-seq-step='1']")).to_have_attribute("data-end", f"{(PICKED + 1) / FPS:.4f}")
    seam = page.locator("#seam-2")
    expect(seam).to_contain_text("smooth", timeout=TIMEOUT)
    expect(seam).to_contain_text(f"Step 1 · frame {PICKED}")
    expect(seam.get_by_role("img", name=f"Step 1, frame {PICKED}: the hand-off frame")).to_be_visible()
    expect(seam.get_by_role("button", name="Match colour to the previous clip")).to_be_visible()
    expect(page.locator("#seam-help")).to_contain_text("more than 5")

    # Any frame, by its number; one outside the clip is refused beside the field.
    nxt = page.locator("#next-step")
    nxt.get_by_text("Any frame of the clip").click()
    number = nxt.get_by_label("Frame number")
    number.fill("500")
    expect(nxt.get_by_role("radio", name="Continue from this frame")).to_be_checked()
    nxt.get_by_label("What happens next").fill("The snow settles over a silent town")
    nxt.get_by_role("button", name="Continue from frame 500").click()  # it says which
    expect(page.locator(".handoff-errors")).to_contain_text(
        f"Frame 500 is not in clip #{child}: it has {FRAMES} frames, numbered 0 to {FRAMES - 1}."
    )
    expect(page.locator("[data-seq-step]")).to_have_count(2)  # nothing was started
    shot(page, "handoff-3-chain-1280")

    # Join it: the export panel says what it did with the sound; the file has it.
    page.get_by_role("button", name="Download the whole chain").click()
    link = page.get_by_role("link", name="Download the whole chain (MP4)")
    link.wait_for(timeout=TIMEOUT)
    panel = page.locator("#chain-export")
    expect(panel).to_contain_text("Sound: yes, AAC 48 kHz stereo")
    expect(panel).to_contain_text(re.compile("stream copy|smart cut|re-encoded"))
    with page.expect_download() as info:
        link.click()
    path = tmp_path / "chain.mp4"
    info.value.save_as(path)
    with av.open(str(path)) as container:
        assert container.streams.audio, "the joined chain has no sound"
        audio = container.streams.audio[0]
        assert audio.codec_context.name == "aac" and audio.codec_context.sample_rate == 48000
        frames = sum(1 for _ in container.decode(container.streams.video[0]))
    assert frames == PICKED + 1 + FRAMES - 1  # the parent to its hand-off frame, the repeat once

    page.set_viewport_size({"width": 375, "height": 812})
    page.reload()
    page.get_by_role("button", name="Play the sequence").wait_for()
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 375
    page.locator("#seam-2").scroll_into_view_if_needed()
    for button in (
        page.locator("#seam-2").get_by_role("button", name="Match colour to the previous clip"),
        page.get_by_role("link", name="Download the whole chain (MP4)"),
    ):
        box = button.bounding_box()
        assert box["height"] >= 24 and box["x"] >= 0 and box["x"] + box["width"] <= 375
    shot(page, "handoff-4-chain-375")
