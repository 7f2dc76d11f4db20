"""The pages a creator uses, checked in a real browser at 1280 and 375 px: axe-core (the
npm package `make test` installs) finds no serious or critical violation, tap targets are
44 px at least on a phone, no page logs a console error, and each is photographed."""

import pytest
from playwright.sync_api import expect

from .conftest import ROOT, Studio, new_context, shot, sign_in

TIMEOUT = 60_000
AXE = ROOT / ".axe" / "node_modules" / "axe-core" / "axe.min.js"
WIDTHS = (1280, 375)
PAGES = ("sign-in", "gallery", "clip", "chain", "providers")
# What a finger taps: every control, and links that stand alone (not a word inside a sentence).
TAPPABLE = (
    "button, select, textarea, summary, input:not([type=hidden]):not([type=file]):not([type=checkbox]),"
    " a.button, .topnav a, .brand, .card-link, .linklike, .crumbs a, .field--check label, .check-label"
)


@pytest.fixture(scope="module")
def studio(chromium, tmp_path_factory):
    """One studio for the module, with a chain of two ready clips and one still generating."""
    running = Studio(tmp_path_factory.mktemp("a11y"), {"SIMULATOR_DELAY_SECONDS": "0.5"}).start()
    context = new_context(chromium)
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        sign_in(page, running)
        page.get_by_label("Prompt").fill("A paper lantern drifts over a dark lake")
        page.get_by_role("button", name="Generate").click()
        card = page.locator("article.card").first
        card.locator(".status", has_text="Ready").wait_for(timeout=TIMEOUT)
        first = card.get_attribute("id").split("-")[1]
        card.get_by_role("link", name="Continue from last frame").click()
        page.get_by_label("Prompt").fill("The lantern rises into falling snow")
        page.get_by_role("button", name="Generate").click()
        page.locator("article.card").first.locator(".status", has_text="Ready").wait_for(timeout=TIMEOUT)
        running.clip_pk = first
        yield running
    finally:
        context.close()
        running.stop()


def open_page(chromium, studio, name, width, errors):
    context = new_context(chromium, width, 900)
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.on("console", lambda m: errors.append(f"{name} at {width}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"{name} at {width}: {e}"))
    if name == "sign-in":
        page.goto(studio.url + "/accounts/login/")
        return context, page
    sign_in(page, studio)
    if name == "gallery":
        # A card still generating is part of the gallery a creator sees.
        page.get_by_label("Prompt").fill("A heron lifts off a misty river")
        page.get_by_role("button", name="Generate").click()
        expect(page.locator("#generated-note")).to_contain_text("queued")
    elif name == "clip":
        page.goto(f"{studio.url}/clips/{studio.clip_pk}/")
    elif name == "chain":
        page.goto(f"{studio.url}/clips/{studio.clip_pk}/chain/")
    elif name == "providers":
        page.goto(studio.url + "/providers/")
    page.wait_for_load_state("networkidle")
    return context, page


def axe_problems(page) -> list[str]:
    # Evaluated through the DevTools protocol, so no Content-Security-Policy stands in its way.
    page.evaluate(AXE.read_text() + "\n;0")
    results = page.evaluate("axe.run(document, { resultTypes: ['violations'] })")
    return [
        f"{v['impact']}: {v['id']} ({v['help']}) at {[n['target'] for n in v['nodes']][:5]}"
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", PAGES)
def test_axe_finds_no_serious_or_critical_violation(chromium, studio, name, width):
    if not AXE.exists():
        pytest.skip(f"axe-core is not installed at {AXE.relative_to(ROOT)} (`make axe` installs it with npm)")
    errors = []
    context, page = open_page(chromium, studio, name, width, errors)
    try:
        assert axe_problems(page) == []
    finally:
        context.close()


@pytest.mark.parametrize("name", PAGES)
def test_tap_targets_are_44_px_at_least_on_a_phone(chromium, studio, name):
    errors = []
    context, page = open_page(chromium, studio, name, 375, errors)
    try:
        page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
        small = page.evaluate(
            """selector => [...document.querySelectorAll(selector)]
                .filter(el => el.offsetParent !== null && !el.closest('dialog:not([open])'))
                .map(el => [el, el.getBoundingClientRect()])
                .filter(([el, r]) => r.width > 0 && (r.height < 43.5 || r.width < 43.5))
                .map(([el, r]) => `${el.tagName.toLowerCase()}.${el.className} "${(el.innerText || el.value || '').trim().slice(0, 30)}" ${Math.round(r.width)}x${Math.round(r.height)}`)""",
            TAPPABLE,
        )
        assert small == []
        # Nothing wider than the phone: no sideways scrolling.
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
    finally:
        context.close()


@pytest.mark.parametrize("width", WIDTHS)
def test_no_page_logs_a_console_error_and_each_is_photographed(chromium, studio, width):
    errors = []
    for name in PAGES:
        context, page = open_page(chromium, studio, name, width, errors)
        try:
            if name == "gallery":
                page.locator("article.card .status", has_text="Ready").first.wait_for(timeout=TIMEOUT)
                # Every generating card redrawn until it finished: none polls any more.
                expect(page.locator('[hx-trigger="every 2s"]')).to_have_count(0, timeout=TIMEOUT)
            shot(page, f"a11y-{name}-{width}")
        finally:
            context.close()
    assert errors == []
