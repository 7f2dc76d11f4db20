"""A chained pair of Pictory clips in a real browser, against the loopback fake Pictory."""

from playwright.sync_api import expect

from ..fakes.pictory import FakePictory
from .conftest import shot, sign_in

TIMEOUT = 90_000


def test_a_chained_pair_of_pictory_clips(page, start_studio):
    fake = FakePictory().start()
    try:
        studio = start_studio(
            {
                "PICTORY_API_KEY": fake.key,
                "PICTORY_API_BASE_URL": fake.base_url,
                "PICTORY_POLL_SECONDS": "10",  # the lowest the contract allows
            }
        )
        fake.script_polls("completed", "completed")
        sign_in(page, studio)

        page.get_by_label("Model").select_option("pictory:veo3.1_fast")
        # Wait for the form of the new model (the simulator's shows "Free", and the same ratios).
        expect(page.locator("#cost")).to_contain_text("credits")
        expect(page.get_by_label("Aspect ratio").locator("option")).to_have_text(["16:9", "9:16"])
        page.get_by_label("Duration").select_option("6")
        expect(page.locator("#cost")).to_contain_text("60 credits")
        page.get_by_label("Prompt").fill("A hot-air balloon rises over a misty valley at sunrise")
        shot(page, "pictory-1-form")
        page.get_by_role("button", name="Generate").click()

        card = page.locator("article.card").first
        card.locator(".status", has_text="Ready").wait_for(timeout=TIMEOUT)
        expect(card).to_contain_text("credits")
        shot(page, "pictory-2-ready")
        first_job = fake.creates()[0].json
        assert first_job == {
            "prompt": "A hot-air balloon rises over a misty valley at sunrise",
            "model": "veo3.1_fast",
            "aspectRatio": "16:9",
            "duration": "6s",
        }

        card.get_by_role("link", name="Continue from last frame").click()
        page.get_by_role("heading", name="Continue clip").wait_for()
        expect(page.get_by_label("Model")).to_have_value("pictory:veo3.1_fast")
        page.get_by_label("Prompt").fill("The balloon drifts above the clouds")
        page.get_by_role("button", name="Generate").click()
        expect(page.locator("article.card")).to_have_count(2)
        page.locator("article.card").first.locator(".status", has_text="Ready").wait_for(timeout=TIMEOUT)
        shot(page, "pictory-3-chain-ready")

        creates = fake.creates()
        assert len(creates) == 2
        first_id = fake.polls()[0].path.rsplit("/", 1)[1]
        # While Pictory's own last-frame URL is fresh, it is the next clip's first frame.
        assert creates[1].json["firstFrameImageUrl"] == f"{fake.origin}/files/{first_id}/last.png"
        assert creates[1].json["aspectRatio"] == "16:9"
    finally:
        fake.stop()
