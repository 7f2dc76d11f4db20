"""Bringing a picture: drop it on the form, see its preview, fix the shape, keep it through
a rejected form, and refuse a link to a private address. Bringing a video: held while the
worker prepares it, then previewed, and extended."""

import base64

from playwright.sync_api import expect

from studio.providers.simulator import render

from ..images import png_bytes
from .conftest import shot, sign_in

TIMEOUT = 60_000


def drop_file(page, selector, name, data, mime):
    transfer = page.evaluate_handle(
        """([b64, name, mime]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, {type: mime}));
            return dt;
        }""",
        [base64.b64encode(data).decode(), name, mime],
    )
    page.dispatch_event(selector, "dragover", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def test_drop_a_first_frame_see_it_keep_it_and_generate_from_it(page, start_studio):
    studio = start_studio()
    sign_in(page, studio)
    page.get_by_label("Model").select_option("simulator:motion")
    expect(page.get_by_label("Aspect ratio").locator("option")).to_have_count(5)
    page.get_by_label("How the clip starts").select_option("first_frame")
    zone = page.locator("[data-dropzone][data-field=first_frame]")
    zone.wait_for()
    shot(page, "inputs-1-dropzone")

    # A 4:3 picture while the clip is 16:9.
    drop_file(
        page, "[data-dropzone][data-field=first_frame]", "window.png", png_bytes(size=(640, 480)), "image/png"
    )
    preview = page.get_by_role("img", name="First frame")
    expect(preview).to_be_visible(timeout=TIMEOUT)
    expect(page.locator(".shape-hint")).to_contain_text("different shape from 16:9")
    shot(page, "inputs-2-dropped")
    page.get_by_role("button", name="Switch to 4:3").click()
    expect(page.get_by_label("Aspect ratio")).to_have_value("4:3")
    expect(page.locator(".shape-hint")).to_have_count(0)

    # A form rejected for another reason keeps the picture.
    page.get_by_label("Prompt").fill("hi")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator(".field-error", has_text="at least 5 characters")).to_be_visible()
    expect(page.get_by_role("img", name="First frame")).to_be_visible()
    shot(page, "inputs-3-kept-after-error")

    page.get_by_label("Prompt").fill("The window opens onto a stormy sea")
    page.get_by_role("button", name="Generate").click()
    card = page.locator("article.card").first
    card.locator(".status", has_text="Ready").wait_for(timeout=TIMEOUT)
    expect(card).to_contain_text("4:3")


def test_bring_a_video_see_it_prepared_and_extend_it(page, start_studio, tmp_path):
    studio = start_studio()
    sign_in(page, studio)
    page.get_by_label("Model").select_option("simulator:cinema")
    page.get_by_label("How the clip starts").select_option("extend_video")
    source = tmp_path / "mine.mp4"
    render(source, "My own footage", "16:9", 2, None)
    # What the Generate button is as each poll of the preparing card goes out (htmx has
    # disabled the elements it disables by then).
    page.evaluate("""() => { window.__pollSaw = [];
        document.addEventListener('htmx:beforeSend', e => { if (e.detail.elt.id.startsWith('held-'))
            window.__pollSaw.push(document.getElementById('generate-button').disabled); }); }""")
    page.locator("[data-dropzone][data-field=extend_video] input[type=file]").set_input_files(source)
    # Held at once while the worker checks it, then its first frame, which the worker made.
    poster = page.get_by_role("img", name="Video to extend: first frame of the video")
    expect(poster).to_be_visible(timeout=TIMEOUT)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=poster.element_handle())
    # The card's own redraws left the rest of the form alone, and Generate usable.
    expect(page.get_by_label("Aspect ratio")).to_have_value("16:9")
    expect(page.get_by_label("How the clip starts")).to_have_value("extend_video")
    polls = page.evaluate("window.__pollSaw")
    assert polls and not all(polls), polls
    shot(page, "inputs-4-video-held")

    page.get_by_label("Prompt").fill("The same shot, the camera keeps rising")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#generated-note")).to_contain_text("queued")
    expect(page.locator("article.card")).to_have_count(1)
    page.locator("article.card").first.locator(".status", has_text="Ready").wait_for(timeout=TIMEOUT)


def test_a_link_to_a_private_address_is_refused_beside_the_field(page, start_studio):
    studio = start_studio()
    sign_in(page, studio)
    page.get_by_label("How the clip starts").select_option("first_frame")
    page.get_by_label("First frame: link").fill("http://127.0.0.1:9/secret.png")
    page.get_by_role("button", name="Use link").click()
    error = page.locator("[data-dropzone][data-field=first_frame] [data-zone-error]")
    expect(error).to_contain_text("private or local network address")
    shot(page, "inputs-4-private-link")


def test_the_form_at_phone_width(page, start_studio):
    studio = start_studio()
    page.set_viewport_size({"width": 375, "height": 800})
    sign_in(page, studio)
    page.get_by_label("How the clip starts").select_option("first_frame")
    page.locator("[data-dropzone][data-field=first_frame]").wait_for()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"the page scrolls sideways ({width}px)"
    shot(page, "inputs-5-phone")
