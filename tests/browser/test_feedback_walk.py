"""What a creator sees and hears after Generate, in a real browser: the message beside the
button, the new card brought into view and highlighted, the time on a generating card, a
notification from a background tab, Generate with the keyboard alone, and the shortcuts."""

import re

from playwright.sync_api import expect

from .conftest import new_context, shot, sign_in

TIMEOUT = 60_000

# The Notification API and the tab's visibility, stubbed so a test can see what the page
# asks for: PERMISSION is the browser's answer so far, ANSWER what it answers when asked.
NOTIFICATION_STUB = """
(() => {
  window.__notes = [];
  window.__asked = 0;
  // Kept across reloads, as a browser keeps a site's permission.
  let permission = sessionStorage.getItem("stub-permission") || "%(permission)s";
  class StubNotification {
    constructor(title, options) { window.__notes.push({ title, body: (options || {}).body || "" }); }
    close() {}
    static get permission() { return permission; }
    static requestPermission(callback) {
      window.__asked += 1;
      permission = "%(answer)s";
      sessionStorage.setItem("stub-permission", permission);
      if (callback) { callback(permission); }
      return Promise.resolve(permission);
    }
  }
  window.Notification = StubNotification;
  let hidden = false;
  Object.defineProperty(document, "visibilityState", { configurable: true, get: () => (hidden ? "hidden" : "visible") });
  Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
  window.__setHidden = (value) => { hidden = value; document.dispatchEvent(new Event("visibilitychange")); };
  // Sound: count the tones the page plays.
  window.__tones = 0;
  const node = () => ({ connect: () => node(), gain: { setValueAtTime() {}, exponentialRampToValueAtTime() {} } });
  window.AudioContext = class {
    constructor() { this.currentTime = 0; this.destination = {}; }
    createOscillator() { window.__tones += 1; return { ...node(), frequency: {}, start() {}, stop() {} }; }
    createGain() { return node(); }
  };
})();
"""


def generate(page, prompt, model="simulator:cinema"):
    page.get_by_label("Model").select_option(model)
    page.get_by_label("Prompt").fill(prompt)
    page.get_by_role("button", name="Generate").click()


def in_viewport(locator) -> bool:
    return locator.evaluate(
        "el => { const r = el.getBoundingClientRect(); return r.top >= 0 && r.top < innerHeight && r.bottom > 0; }"
    )


def test_generate_shows_the_message_and_scrolls_to_the_highlighted_card_on_a_phone(chromium, start_studio):
    studio = start_studio()
    context = new_context(chromium, 375, 740)
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        sign_in(page, studio)
        # The cards htmx redraws, by id (a card becomes Ready only through a redraw).
        page.evaluate(
            "() => { window.__redrawn = []; document.addEventListener('htmx:afterSwap',"
            " e => window.__redrawn.push(e.detail.target.id)); }"
        )
        generate(page, "A heron lifts off a misty river at dawn")
        note = page.locator("#generated-note")
        expect(note).to_have_text(re.compile(r"Clip #\d+ queued"))
        link = note.get_by_role("link")
        card_id = link.get_attribute("href").lstrip("#")
        card = page.locator(f"#{card_id}")
        expect(card).to_have_class(re.compile(r"card--new"))
        page.wait_for_function(
            "id => { const r = document.getElementById(id).getBoundingClientRect(); return r.top >= 0 && r.top < innerHeight; }",
            arg=card_id,
        )
        assert page.evaluate("document.activeElement.id") == card_id
        assert page.evaluate("scrollY") > 300  # the card is below the form on a phone
        # The prompt stays, for the next take; "Clear" empties it.
        expect(page.get_by_label("Prompt")).to_have_value("A heron lifts off a misty river at dawn")
        shot(page, "feedback-375-generated")
        # The highlight outlives the card's own redraws (every 2 s), then goes.
        page.wait_for_function("id => window.__redrawn.includes(id)", arg=card_id, timeout=8000)
        expect(card).to_have_class(re.compile(r"card--new"))
        expect(card).not_to_have_class(re.compile(r"card--new"), timeout=8000)
        page.get_by_role("button", name="Clear the prompt").click()
        expect(page.get_by_label("Prompt")).to_have_value("")
        assert page.evaluate("document.activeElement.id") == "id_prompt"
    finally:
        context.close()


def test_the_estimate_and_the_place_in_line_show_on_unfinished_cards(page, start_studio):
    studio = start_studio({"SIMULATOR_DELAY_SECONDS": "5"})
    sign_in(page, studio)
    generate(page, "A lantern drifts over a dark lake")
    card = page.locator("article.card").first
    expect(card.locator(".eta").first).to_have_text("Next in line")
    expect(card.locator(".eta", has_text="Generating for")).to_contain_text("left", timeout=TIMEOUT)
    expect(card.locator(".eta-basis")).to_have_text(
        "Estimate: the offline simulator's typical time, as no clip of this model has finished here yet."
    )
    shot(page, "feedback-1280-generating")
    card.locator(".status", has_text="Ready").wait_for(timeout=TIMEOUT)
    # The next clip of the model is estimated from the one that finished here.
    generate(page, "The lantern rises into falling snow")
    second = page.locator("article.card").first
    expect(second.locator(".eta-basis")).to_have_text(
        "Estimate: from the last clip of this model made here.", timeout=TIMEOUT
    )
    expect(second.locator(".eta-clock")).to_have_text(re.compile(r"^0:0\d$"))


def test_a_notification_is_created_when_a_clip_finishes_in_a_background_tab(page, start_studio):
    page.add_init_script(NOTIFICATION_STUB % {"permission": "granted", "answer": "granted"})
    studio = start_studio()
    sign_in(page, studio)
    normal_icon = page.locator('link[rel="icon"]').get_attribute("href")
    sound = page.get_by_label("Sound when a clip is ready")
    expect(sound).not_to_be_checked()  # off by default
    sound.check()
    assert page.evaluate("window.__tones") == 2  # a first chime, so the creator hears what it is
    generate(page, "A paper boat on a rain-soaked street")
    expect(page.locator("article.card").first).to_be_visible()
    assert page.evaluate("window.__asked") == 0  # granted already: nothing to ask
    page.evaluate("window.__setHidden(true)")
    page.wait_for_function("() => window.__notes.length === 1", timeout=TIMEOUT)
    note = page.evaluate("window.__notes[0]")
    assert re.fullmatch(r"Clip #\d+ is ready", note["title"]) and "paper boat" in note["body"]
    assert page.title().startswith("✓ 1 ready · ")
    # A screen reader hears it too.
    expect(page.locator("#studio-live")).to_have_text(re.compile(r"^Clip #\d+ is ready\.$"))
    assert page.locator('link[rel="icon"]').get_attribute("href").endswith("favicon-ready.svg")
    assert page.evaluate("window.__tones") == 4
    page.evaluate("window.__setHidden(false)")
    assert page.title() == "Lastframe Studio"
    assert page.locator('link[rel="icon"]').get_attribute("href") == normal_icon


def test_permission_is_asked_once_after_the_first_generate_and_never_after_a_no(chromium, start_studio):
    studio = start_studio()
    for answer_button, browser_answer in (("No, thanks", "granted"), ("Notify me", "denied")):
        context = new_context(chromium)
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.add_init_script(NOTIFICATION_STUB % {"permission": "default", "answer": browser_answer})
        try:
            sign_in(page, studio)
            ask = page.locator("#notify-ask")
            expect(ask).to_be_hidden()  # never before the first Generate
            generate(page, "A kite over a windy beach")
            expect(ask).to_be_visible()
            expect(ask).to_contain_text("Clips take a minute or more")
            shot(page, "feedback-notify-ask")
            ask.get_by_role("button", name=answer_button).click()
            expect(ask).to_be_hidden()
            assert page.evaluate("window.__asked") == (1 if answer_button == "Notify me" else 0)
            generate(page, "The kite string snaps")
            expect(page.locator("#generated-note")).to_contain_text("queued")
            page.reload()
            # Heard after the studio's own listener (notify.js's, added first), which decides
            # whether to ask.
            page.evaluate(
                "document.addEventListener('studio:clip-queued', () => { window.__queued = true; })"
            )
            generate(page, "The kite drifts out to sea")
            expect(page.locator("#generated-note")).to_contain_text("queued")
            page.wait_for_function("window.__queued === true")
            expect(ask).to_be_hidden()
            assert page.evaluate("window.__asked") <= 1
            # Refused: the studio works on, says so, and notifies nobody.
            page.evaluate("window.__setHidden(true)")
            page.locator("article.card .status", has_text="Ready").first.wait_for(timeout=TIMEOUT)
            page.wait_for_function("() => document.title.startsWith('✓')", timeout=TIMEOUT)
            assert page.evaluate("window.__notes.length") == 0
            expect(page.locator("#notify-status")).to_have_text(
                "Notifications are off in this browser (its site settings can turn them on)."
                if browser_answer == "denied"
                else "Notifications are off."
            )
        finally:
            context.close()


def test_keyboard_only_generate(page, start_studio):
    studio = start_studio()
    sign_in(page, studio)
    page.evaluate("document.activeElement && document.activeElement.blur()")

    def tab_to(selector, limit=40):
        for _ in range(limit):
            page.keyboard.press("Tab")
            if page.evaluate("s => document.activeElement.matches(s)", selector):
                outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
                assert outline != "none", f"{selector} has no visible focus"
                return
        raise AssertionError(f"{selector} is not reachable with Tab")

    tab_to("#id_prompt")
    page.keyboard.type("ab")
    tab_to("#generate-button")
    page.keyboard.press("Enter")
    # The error is beside the field, and the focus goes to the field.
    expect(page.locator("#id_prompt_error")).to_contain_text("at least 5 characters")
    page.wait_for_function("() => document.activeElement.id === 'id_prompt'")
    assert page.get_attribute("#id_prompt", "aria-invalid") == "true"
    page.keyboard.type("c a fox crosses a frozen lake")
    tab_to("#generate-button")
    page.keyboard.press("Enter")
    page.wait_for_function("() => /^clip-\\d+$/.test(document.activeElement.id)")
    card_id = page.evaluate("document.activeElement.id")
    expect(page.locator("#generated-note")).to_have_text(f"Clip #{card_id.split('-')[1]} queued")
    shot(page, "feedback-keyboard-generate")


def test_gallery_and_chain_shortcuts(page, start_studio):
    studio = start_studio({"SIMULATOR_DELAY_SECONDS": "0.2"})
    sign_in(page, studio)
    generate(page, "A red kite over green hills")
    generate(page, "A blue kite over a grey sea")
    cards = page.locator("article.card")
    for n in range(2):
        cards.nth(n).locator(".status", has_text="Ready").wait_for(timeout=TIMEOUT)
    newest, oldest = (cards.nth(n).get_attribute("id") for n in range(2))
    # Typing in a field: the keys are letters, nothing else.
    page.get_by_label("Prompt").fill("")
    page.get_by_label("Prompt").press("j")
    expect(page.get_by_label("Prompt")).to_have_value("j")
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("j")
    assert page.evaluate("document.activeElement.id") == newest
    page.keyboard.press("j")
    assert page.evaluate("document.activeElement.id") == oldest
    page.keyboard.press("k")
    assert page.evaluate("document.activeElement.id") == newest
    page.keyboard.press(" ")
    page.wait_for_function("id => !document.querySelector('#' + id + ' video').paused", arg=newest)
    page.keyboard.press(" ")
    page.wait_for_function("id => document.querySelector('#' + id + ' video').paused", arg=newest)
    page.keyboard.press("?")
    dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
    expect(dialog).to_be_visible()
    shot(page, "feedback-shortcuts")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    page.keyboard.press("c")
    page.get_by_role("heading", name=re.compile(r"Continue clip #\d+")).wait_for()
    # In the chain view, j moves along the takes and space plays one in place.
    pk = newest.split("-")[1]
    page.goto(studio.url + f"/clips/{pk}/chain/")
    page.keyboard.press("j")
    assert page.evaluate("document.activeElement.id") == f"take-{pk}"
    page.keyboard.press(" ")
    page.wait_for_function(
        "id => document.querySelector(id + ' video') && !document.querySelector(id + ' video').paused",
        arg=f"#take-{pk}",
    )
