"""The chain view as a live storyboard, in a real browser: steps and takes that update by
themselves, the sequence player, Compare, choosing a take that later steps continue, and the
chain's title on its gallery card. One studio and one chain for the whole file (made through
the chain view itself, as a creator would); each test opens its own page."""

import re

import pytest
from playwright.sync_api import expect

from .conftest import Studio, new_context, shot, sign_in
from .test_chains_walk import generate_4s_cinema

TIMEOUT = 60_000
FPS = 24


def ready(locator):
    locator.locator(".status", has_text="Ready").first.wait_for(timeout=TIMEOUT)


def continue_chain(page, prompt):
    page.get_by_label("What happens next").fill(prompt)
    page.get_by_role("button", name="Continue from last frame").click()


@pytest.fixture(scope="module")
def storyboard(chromium, tmp_path_factory):
    """A studio with one chain: step 1, step 2 with two takes (the second in use), step 3."""
    studio = Studio(tmp_path_factory.mktemp("storyboard")).start()
    context = new_context(chromium)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    try:
        sign_in(page, studio)
        generate_4s_cinema(page, "A paper lantern drifts over a dark lake, slow dolly in")
        card = page.locator("article.card").first
        ready(card)
        root = int(re.search(r"#(\d+)", card.locator(".card-link").inner_text()).group(1))
        page.goto(f"{studio.url}/clips/{root}/chain/")
        continue_chain(page, "The lantern rises into falling snow")
        ready(page.locator("#step-2"))
        page.locator("#step-2").get_by_role("button", name="Generate again").click()
        expect(page.locator("#step-2 .take")).to_have_count(2)
        expect(page.locator("#step-2 .take .status", has_text="Ready")).to_have_count(2, timeout=TIMEOUT)
        continue_chain(page, "The snow settles over a silent town")
        ready(page.locator("#step-3"))
        yield studio, root
    finally:
        context.close()
        studio.stop()


def open_chain(page, storyboard):
    studio, root = storyboard
    sign_in(page, studio)
    page.goto(f"{studio.url}/clips/{root}/chain/")
    page.get_by_role("button", name="Play the sequence").wait_for()


def timeline_clips(page):
    return page.locator("[data-seq-step]").evaluate_all("buttons => buttons.map(b => b.dataset.clip)")


def test_a_new_step_finishing_updates_the_chain_view_with_no_reload(page, storyboard):
    open_chain(page, storyboard)
    page.evaluate("window.notReloaded = true")
    download = page.get_by_role("button", name="Download the whole chain")
    expect(download).to_be_enabled()

    continue_chain(page, "Lanterns drift over the rooftops of the town")
    step = page.locator("#step-4")
    expect(step).to_contain_text(re.compile("Queued|Generating"))
    expect(download).to_be_disabled()
    expect(page.locator("#export-blocker")).to_contain_text("is still generating")
    ready(step)
    # Ready, joinable, and the live part stopped asking: all without a page load.
    expect(download).to_be_enabled(timeout=TIMEOUT)
    expect(page.locator("#chain-live")).not_to_have_attribute("hx-trigger", re.compile("."))
    expect(page.locator("[data-seq-step]")).to_have_count(4)
    assert page.evaluate("window.notReloaded") is True

    # "Generate again": the new take appears beside the first, live, and finishes there.
    step.get_by_role("button", name="Generate again").click()
    expect(step.locator(".take")).to_have_count(2)
    expect(step.locator(".take .status", has_text="Ready")).to_have_count(2, timeout=TIMEOUT)
    assert page.evaluate("window.notReloaded") is True
    shot(page, "storyboard-1-live-1280")


# Recorded in the page: every frame each stage video presents, and each cut.
RECORD = """() => {
  window.presented = []; window.cuts = [];
  const stage = document.querySelector('[data-sequence-stage]');
  stage.addEventListener('sequence:cut', e => window.cuts.push(e.detail));
  stage.querySelectorAll('video').forEach((video, n) => {
    const onFrame = (now, meta) => {
      window.presented.push({video: n, src: video.currentSrc, media: meta.mediaTime, at: meta.expectedDisplayTime,
                             front: video.classList.contains('is-front')});
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  });
}"""


def test_play_the_sequence_plays_step_1_then_step_2_with_no_gap(page, storyboard):
    open_chain(page, storyboard)
    steps = timeline_clips(page)
    page.evaluate(RECORD)
    stage = page.locator("[data-sequence-stage]")
    page.get_by_role("button", name="Play the sequence").click()
    expect(stage).to_have_attribute("data-step", "1")
    expect(page.locator("[data-seq-step='1']")).to_have_attribute("aria-current", "step")
    front = stage.locator("video.is-front")
    expect(front).to_have_attribute("src", f"/clips/{steps[0]}/video.mp4")

    expect(stage).to_have_attribute("data-step", "2", timeout=15_000)
    # The playing clip changed and the highlighted step followed.
    expect(front).to_have_attribute("src", f"/clips/{steps[1]}/video.mp4")
    expect(page.locator("[data-seq-step='2']")).to_have_attribute("aria-current", "step")
    expect(page.locator("[data-seq-step='1']")).not_to_have_attribute("aria-current", "step")
    # Step 2 has been on screen for a few frames before the pause.
    page.wait_for_function(
        "src => window.presented.filter(f => f.front && f.src.endsWith(src)).length >= 3",
        arg=f"/clips/{steps[1]}/video.mp4",
    )
    page.get_by_role("button", name="Pause").click()
    expect(stage.locator("[data-seq-status]")).to_have_text("Paused at step 2")

    [cut] = page.evaluate("window.cuts")[:1]
    # No visible gap: step 2 was loaded, sought to its first kept frame and able to play
    # before step 1 ended, and came to the front in place of it.
    assert (cut["from"], cut["to"], cut["prepared"]) == (1, 2, True) and cut["readyState"] >= 3
    frames = page.evaluate("window.presented")
    # What was on screen: frames the front video presented (the hidden one loads and seeks).
    shown = [f for f in frames if f["front"]]
    first = [f for f in shown if f["src"].endswith(f"/clips/{steps[0]}/video.mp4")]
    second = [f for f in shown if f["src"].endswith(f"/clips/{steps[1]}/video.mp4")]
    assert first and second
    # It cuts where the join cuts: step 2 continues step 1's last frame, so its own frame 0
    # (the same picture) is never shown; step 1 plays to its end.
    assert min(f["media"] for f in second) >= 1 / FPS - 0.002
    assert max(f["media"] for f in first) >= 4 - 1.5 / FPS
    last_of_first = max(f["at"] for f in first)
    first_of_second = min(f["at"] for f in second if f["at"] > last_of_first - 1)
    print(f"frame interval at the cut: {first_of_second - last_of_first:.1f} ms")
    shot(page, "storyboard-2-playing-1280")

    # From any step: a click on the timeline plays from that step.
    page.locator("[data-seq-step='3']").click()
    expect(stage).to_have_attribute("data-step", "3")
    expect(front).to_have_attribute("src", f"/clips/{steps[2]}/video.mp4")
    expect(page.locator("[data-seq-step='3']")).to_have_attribute("aria-current", "step")
    page.wait_for_function(
        "() => document.querySelector('[data-sequence-stage] video.is-front').currentTime > 0.3"
    )
    page.get_by_role("button", name="Pause").click()
    third = [
        f
        for f in page.evaluate("window.presented")
        if f["front"] and f["src"].endswith(f"/clips/{steps[2]}/video.mp4")
    ]
    assert third and min(f["media"] for f in third) >= 1 / FPS - 0.002  # a jump cuts there too


def test_compare_plays_two_takes_of_a_step_together_with_one_sound(page, storyboard):
    open_chain(page, storyboard)
    page.locator("#step-2").get_by_role("button", name="Compare").click()
    dialog = page.get_by_role("dialog", name=re.compile("Compare takes of step 2"))
    expect(dialog).to_be_visible()
    videos = dialog.locator("video")
    expect(videos).to_have_count(2)
    dialog.get_by_role("button", name="Play both").click()
    expect(dialog.get_by_role("button", name="Pause both")).to_be_visible()
    # Both have played more than half a second (read together below, on one clock).
    page.wait_for_function("vs => vs.every(v => v.currentTime > 0.6)", arg=videos.element_handles())
    state = videos.evaluate_all(
        "vs => vs.map(v => ({t: v.currentTime, paused: v.paused, muted: v.muted, src: v.currentSrc}))"
    )
    assert [s["paused"] for s in state] == [False, False]
    assert state[0]["src"] != state[1]["src"]  # two different takes
    assert abs(state[0]["t"] - state[1]["t"]) < 0.15  # same start, same clock
    assert state[0]["t"] > 0.5
    assert [s["muted"] for s in state] == [False, True]  # one sound at a time
    dialog.get_by_label("Sound from this take").nth(1).check()
    assert videos.evaluate_all("vs => vs.map(v => v.muted)") == [True, False]
    shot(page, "storyboard-3-compare-1280")
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()
    assert videos.evaluate_all("vs => vs.every(v => v.paused)")


def test_choosing_a_take_with_later_steps_warns_first_and_the_old_steps_stay_reachable(page, storyboard):
    open_chain(page, storyboard)
    before = timeline_clips(page)
    assert len(before) == 4
    step2 = page.locator("#step-2")
    step2.get_by_role("button", name="Use this take").click()
    warning = step2.get_by_role("alertdialog")
    expect(warning).to_contain_text(
        "Steps 3–4 continue from take 2. They stay as a branch you can return to."
    )
    assert timeline_clips(page) == before  # nothing changed yet
    shot(page, "storyboard-4-warning-1280")
    warning.get_by_role("button", name="Use take 1").click()
    expect(page.locator("[data-seq-step]")).to_have_count(2)
    branch = page.locator(".branch")
    expect(branch).to_have_count(1)
    expect(branch).to_contain_text("Steps 2–4")
    shot(page, "storyboard-5-branch-1280")

    page.reload()  # the truth, from the server
    expect(page.locator("[data-seq-step]")).to_have_count(2)
    page.get_by_role("button", name="Switch to this branch").click()
    expect(page.locator("[data-seq-step]")).to_have_count(4)
    assert timeline_clips(page) == before
    expect(page.locator(".branch")).to_have_count(0)


def test_the_title_is_edited_in_place_and_shows_on_the_chain_card_in_the_gallery(page, storyboard):
    studio, root = storyboard
    open_chain(page, storyboard)
    expect(page.get_by_role("heading", level=1)).to_have_text("A paper lantern drifts over a dark lake")
    page.get_by_role("link", name="Edit title").click()
    title = page.get_by_label("Title")
    expect(title).to_be_focused()
    title.fill("")
    page.get_by_role("button", name="Save title").click()
    expect(page.locator("#chain-title-error")).to_contain_text("Give the chain a title")
    title.fill("Night of the lanterns")
    page.get_by_role("button", name="Save title").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Night of the lanterns")

    page.goto(studio.url + "/")
    page.get_by_role("link", name="Chains").click()
    card = page.locator(f"#chain-{root}")
    expect(card.get_by_role("heading")).to_have_text("Night of the lanterns")
    expect(card).to_contain_text("4 steps")
    expect(card).to_contain_text("Cost so far: Free")
    shot(page, "storyboard-6-gallery-chains-1280")
    page.set_viewport_size({"width": 375, "height": 812})
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    shot(page, "storyboard-7-gallery-chains-375")


def test_the_chain_view_fits_a_phone_and_compare_stacks_there(page, storyboard):
    page.set_viewport_size({"width": 375, "height": 812})
    open_chain(page, storyboard)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    shot(page, "storyboard-8-chain-375")
    page.locator("#step-2").get_by_role("button", name="Compare").click()
    videos = page.get_by_role("dialog").locator("video")
    expect(videos).to_have_count(2)
    top, bottom = (v.bounding_box() for v in videos.all())
    assert bottom["y"] >= top["y"] + top["height"] - 1  # one above the other
    assert top["x"] >= 0 and top["x"] + top["width"] <= 375
    shot(page, "storyboard-9-compare-375")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.get_by_role("button", name="Close").click()
    shot(page, "storyboard-10-chain-1280")
