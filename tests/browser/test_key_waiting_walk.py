"""A Pictory clip whose key is refused while it runs waits, in a real browser, and becomes
Ready once the key works again (the loopback fake refuses the key, then accepts it)."""

from playwright.sync_api import expect

from ..fakes.pictory import FakePictory
from .conftest import shot, sign_in

TIMEOUT = 60_000


def test_a_clip_whose_key_is_refused_while_it_runs_waits_then_becomes_ready(page, start_studio):
    fake = FakePictory().start()
    try:
        studio = start_studio(
            {
                "PICTORY_API_KEY": fake.key,
                "PICTORY_API_BASE_URL": fake.base_url,
                # Faster than Pictory's 10 s is allowed against a server on this machine only.
                "PICTORY_POLL_SECONDS": "1",
            }
        )
        sign_in(page, studio)
        page.get_by_label("Model").select_option("pictory:veo3.1_fast")
        expect(page.locator("#cost")).to_contain_text("40 credits")
        page.get_by_label("Prompt").fill("A red kite climbs over a windy beach at noon")
        page.get_by_role("button", name="Generate").click()

        card = page.locator("article.card").first
        card.locator(".status", has_text="Generating").wait_for(timeout=TIMEOUT)
        assert len(fake.creates()) == 1
        # The key is revoked while Pictory makes the clip (the job goes on, and is billed).
        fake.key_refused = True
        expect(card.locator(".status")).to_have_text("Waiting for a working Pictory key", timeout=TIMEOUT)
        expect(card).to_contain_text("check the Pictory key")
        expect(card).to_contain_text("carries on as soon as the key works")
        expect(card).not_to_contain_text("Failed")
        shot(page, "key-waiting-1280")
        page.set_viewport_size({"width": 375, "height": 800})
        card.scroll_into_view_if_needed()
        shot(page, "key-waiting-375")
        page.set_viewport_size({"width": 1280, "height": 900})

        # The key works again: the next poll finds the clip done, and it is copied.
        fake.script_polls("completed")
        fake.key_refused = False
        card.locator(".status", has_text="Ready").wait_for(timeout=TIMEOUT)
        expect(card.locator("video")).to_have_count(1)
        expect(card).not_to_contain_text("Waiting for a working")
        shot(page, "key-waiting-ready-1280")
        assert len(fake.creates()) == 1, "the clip was sent twice"
    finally:
        fake.stop()
