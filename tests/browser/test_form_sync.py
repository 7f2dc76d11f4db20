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
