"""Quick changes of two selects in a row: the form ends in the state of the last change
(option redraws are serialised; the newest replaces one still in flight)."""

from playwright.sync_api import expect

from .conftest import sign_in


def test_changing_model_then_start_mode_at_once_shows_the_first_frame_input(page, start_studio):
    studio = start_studio()
    sign_in(page, studio)
    for model in ("simulator:motion", "simulator:cinema", "simulator:motion"):
        page.get_by_label("Model").select_option(model)
        # No wait for the model's redraw: a fast creator does not wait either.
        page.get_by_label("How the clip starts").select_option("first_frame")
        expect(page.locator("[data-dropzone][data-field=first_frame]")).to_be_visible()
        expect(page.get_by_label("Model")).to_have_value(model)
        page.get_by_label("How the clip starts").select_option("text")
        expect(page.locator("[data-dropzone][data-field=first_frame]")).to_have_count(0)


def test_a_box_ticked_while_the_options_are_redrawn_stays_ticked(page, start_studio):
    studio = start_studio()
    sign_in(page, studio)
    page.get_by_label("Model").select_option("simulator:cinema")
    audio = page.get_by_label("Generate audio")
    expect(audio).not_to_be_checked()
    # The redraw for a new duration is held in flight while the creator ticks the box: it
    # was sent with the box unticked.
    held = []
    page.route("**/generate/options/**", lambda route: held.append(route))
    page.get_by_label("Duration").select_option("6")
    page.wait_for_function("() => document.querySelector('#form-redraw.htmx-request') !== null")
    audio.check()
    assert held, "the redraw was not sent"
    for route in held:
        route.continue_()
    page.unroute("**/generate/options/**")
    expect(page.get_by_label("Duration")).to_have_value("6")
    page.wait_for_function("() => document.querySelector('#form-redraw.htmx-request') === null")
    expect(audio).to_be_checked()
