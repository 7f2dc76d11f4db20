"""An admin connects Pictory by pasting its key on the Providers page: "Test" answers from
the (fake) provider, "Save" keeps it, and its models appear with no restart; the worker,
another process, sends the next clip with that key."""

import re

from playwright.sync_api import expect

from ..fakes.pictory import FakePictory
from .conftest import shot, sign_in

TIMEOUT = 90_000
PASTED = "pictai_browser_walk_0123456789"


def test_pasting_a_key_for_the_fake_pictory_makes_its_models_appear_with_no_restart(page, start_studio):
    fake = FakePictory(key=PASTED).start()
    try:
        studio = start_studio(
            {"PICTORY_API_BASE_URL": fake.base_url, "PICTORY_POLL_SECONDS": "10", "PICTORY_API_KEY": ""}
        )
        fake.script_polls("completed")
        sign_in(page, studio)
        expect(page.get_by_label("Model").locator('option[value^="pictory:"]')).to_have_count(0)
        page.get_by_role("link", name="Providers").click()
        section = page.locator("#provider-pictory")
        expect(section.get_by_role("heading")).to_have_text("Pictory AI Studio is off")
        field = section.get_by_label("Pictory AI Studio API key")

        # A wrong key: refused in plain words, and nothing saved.
        field.fill("pictai_wrong_0000")
        section.get_by_role("button", name="Save", exact=True).click()
        expect(section.locator(".key-check")).to_contain_text("Pictory refused this key")
        expect(section.get_by_role("button", name="Save anyway")).to_be_visible()
        expect(field).to_have_value("pictai_wrong_0000")  # still in the field, never sent back

        # The right one, pasted with quotes and spaces: "Test" says what is left.
        field.fill(f'  "{PASTED}" ')
        section.get_by_role("button", name="Test").click()
        expect(section.locator(".key-check")).to_have_text(
            "Pictory accepted the key: 21310 of 22000 AI credits left this billing term."
        )
        shot(page, "keys-1-tested")
        section.get_by_role("button", name="Save", exact=True).click()
        expect(page.locator(".message--success")).to_contain_text("Pictory AI Studio key saved (ending 6789)")
        section = page.locator("#provider-pictory")
        expect(section.locator(".provider-state")).to_contain_text(
            "with the key pasted here (ending 6789), saved by "
        )
        expect(section).to_contain_text("Veo 3.1 Fast · Pictory")
        assert PASTED not in page.content()
        shot(page, "keys-2-saved")

        # No restart: the form offers Pictory's models, and the worker sends with the key.
        page.get_by_role("link", name="Gallery").click()
        page.get_by_label("Model").select_option("pictory:veo3.1_fast")
        expect(page.locator("#cost")).to_contain_text("credits")
        page.get_by_label("Prompt").fill("A hot-air balloon rises over a misty valley")
        page.get_by_role("button", name="Generate").click()
        card = page.locator("article.card").first
        expect(card.locator(".cancel-note")).to_contain_text(
            "offers no way to stop a clip once it has started: it will finish, and be billed", timeout=TIMEOUT
        )
        card.locator(".status", has_text="Ready").wait_for(timeout=TIMEOUT)
        assert [r.headers["authorization"] for r in fake.creates()] == [PASTED]
        assert all(r.headers["authorization"] == PASTED for r in fake.polls())

        # Removed: its models go, the clip made with it stays.
        page.get_by_role("link", name="Providers").click()
        page.locator("#provider-pictory").get_by_role("button", name="Remove the saved key").click()
        expect(page.locator(".message--success")).to_contain_text("Pictory AI Studio key removed")
        page.get_by_role("link", name="Gallery").click()
        expect(page.get_by_label("Model").locator('option[value^="pictory:"]')).to_have_count(0)
        expect(page.locator("article.card").first.locator("video")).to_have_count(1)
        expect(page.locator("article.card").first).to_contain_text(re.compile(r"Veo 3\.1 Fast · Pictory"))
    finally:
        fake.stop()
