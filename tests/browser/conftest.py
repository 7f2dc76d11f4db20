"""Browser tests run the studio as `make run` does: a web server and a django-q2 worker in
their own processes, on a fresh SQLite file, driven by Debian's Chromium through
Playwright. They skip, saying why, when Chromium is not installed."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from ..conftest import TEST_SIMULATOR_HEIGHT, chromium_path, free_port, provider_secret_settings

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
PASSWORD = "fox-in-the-snow-42"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # Chromium's new headless mode still builds the address bar's suggestion popup, a page of
    # its own, for every window: 0.6 s of CPU per browser context, half of what one costs.
    # The tests never type in an address bar. (Playwright merges this with its own list.)
    "--disable-features=WebUIOmniboxPopup,WebUIOmniboxAimPopup",
]
# A migrated database with the test account and a session signed in as it, made once per
# test process and copied for each studio: migrating and creating the account cost about
# 2.5 s of CPU per studio started.
_TEMPLATE: dict[str, object] = {}
# Makes the account and a signed-in session for it, and prints the session's key. The
# studios share SECRET_KEY, so the session is good in each copy of the database.
MAKE_ACCOUNT = f"""
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore
user = get_user_model().objects.create_superuser("ana", "ana@example.com", {PASSWORD!r})
session = SessionStore()
session.update({{
    SESSION_KEY: str(user.pk),
    BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend",
    HASH_SESSION_KEY: user.get_session_auth_hash(),
}})
session.create()
print(session.session_key)
"""


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/browser/" in str(item.fspath):
            item.add_marker(pytest.mark.browser)


class Studio:
    """A running studio (web + worker) on a port of its own."""

    def __init__(self, base_dir: Path, extra_env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_dir = base_dir
        self.env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{base_dir / 'studio.sqlite3'}",
            "MEDIA_ROOT": str(base_dir / "media"),
            "SECRET_KEY": "browser-test-secret-key-not-for-production",
            "SIMULATOR_DELAY_SECONDS": "1.5",
            "SIMULATOR_HEIGHT": str(TEST_SIMULATOR_HEIGHT),
            "POLL_SWEEP_SECONDS": "60",
            "STUDIO_IGNORE_DOTENV": "1",
            **dict.fromkeys(provider_secret_settings(), ""),
            # runstudio writes the parts' output here; its console goes to console.log.
            "LOG_FILE": str(base_dir / "studio.log"),
            **(extra_env or {}),
        }
        self.env.pop("DJANGO_SETTINGS_MODULE", None)
        self.log = open(base_dir / "console.log", "w")
        self.process = None

    def start(self):
        self._copy_template_database()
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "runstudio", "--port", str(self.port)],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("The studio did not start:\n" + self.read_log())

    def _copy_template_database(self):
        """The studio's database: a copy of one migrated once per process, with the account."""
        template = _TEMPLATE.get("path")
        if template is None:
            folder = Path(tempfile.mkdtemp(prefix="studio-template-"))
            template = folder / "studio.sqlite3"
            env = {**self.env, "DATABASE_URL": f"sqlite:///{template}", "MEDIA_ROOT": str(folder / "media")}
            manage = [sys.executable, "manage.py"]
            subprocess.run(
                [*manage, "migrate", "--noinput"],
                cwd=ROOT,
                env=env,
                check=True,
                stdout=self.log,
                stderr=subprocess.STDOUT,
            )
            made = subprocess.run(
                [*manage, "shell", "-c", MAKE_ACCOUNT],
                cwd=ROOT,
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            _TEMPLATE["session_key"] = made.stdout.split()[-1]
            _TEMPLATE["path"] = template
        self.session_key = _TEMPLATE["session_key"]
        for suffix in ("", "-wal"):  # WAL mode: a log left beside the file holds pages too
            if Path(f"{template}{suffix}").exists():
                shutil.copyfile(f"{template}{suffix}", self.base_dir / f"studio.sqlite3{suffix}")

    def read_log(self) -> str:
        self.log.flush()
        parts = []
        for name in ("console.log", "studio.log"):
            path = self.base_dir / name
            if path.exists():
                parts.append(f"--- {name} ---\n{path.read_text()}")
        return "\n".join(parts)

    def stop(self):
        """Signal runstudio alone: it stops its parts itself within 5 s. A signal to every
        process at once made django-q2 linger until SIGKILL (20 s per test)."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                # runstudio is stuck: its parts get SIGTERM when it dies (PR_SET_PDEATHSIG).
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


@pytest.fixture(scope="session")
def chromium():
    path = chromium_path()
    if not path:
        pytest.skip("Debian's chromium is not installed (make test installs it when apt is available)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def start_studio(tmp_path):
    started = []

    def start(extra_env=None):
        studio = Studio(tmp_path, extra_env).start()
        started.append(studio)
        return studio

    yield start
    for studio in started:
        studio.stop()


def new_context(chromium, width=1280, height=900):
    """A browser context that asks for reduced motion, which the studio's CSS honours: a
    generating card's shimmer and spinner otherwise keep software-rendering Chromium
    repainting (2.7 s of CPU in 10 s with two such cards, against 0.2 s), and the suite
    runs on two cores. The walks check what a creator sees, not the animation."""
    return chromium.new_context(viewport={"width": width, "height": height}, reduced_motion="reduce")


@pytest.fixture
def page(chromium, request):
    context = new_context(chromium)
    page = context.new_page()
    page.set_default_timeout(20_000)
    # Anything the Content-Security-Policy refused (an inline script, an eval, htmx needing
    # one) fails the test that caused it: every walk checks the policy and the pages agree.
    refused = []
    page.on(
        "console",
        lambda message: refused.append(message.text) if "Content Security Policy" in message.text else None,
    )
    yield page
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-failure.png"), full_page=True)
    context.close()
    assert not refused, refused


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def sign_in(page, studio, with_the_form=False):
    """Open the gallery signed in as ana: through the sign-in form when asked (test_walk
    does, as a creator would), else with the session the template database holds. The
    form's password check costs the web server 0.8 s of CPU (PBKDF2), and the walks sign
    in about forty times."""
    if with_the_form:
        page.goto(studio.url + "/")
        page.get_by_label("Username").fill("ana")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
    else:
        page.context.add_cookies(
            [{"name": "sessionid", "value": studio.session_key, "url": studio.url, "httpOnly": True}]
        )
        page.goto(studio.url + "/")
    page.get_by_role("heading", name="Your clips").wait_for()


def shot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
