"""Shared fixtures. Every test gets its own MEDIA_ROOT and a simulator with no delay;
nothing here reaches the internet."""

import os
import shutil
import socket

import pytest

# Playwright's sync API runs an event loop in the test thread; Django would refuse ORM
# calls from it without this (NOTES.md).
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


# The files that take longest, longest first (seconds of one run on the 2-core CI machine,
# from `pytest --durations`, four processes): handed out first, so no long file starts last.
LONG_FILES = (
    "test_scaleout.py",  # 182 s: the job and fault tests again on PostgreSQL, two workers
    "browser/test_feedback_walk.py",  # 144 s
    "browser/test_storyboard_walk.py",  # 125 s: one studio, steps built test by test
    "browser/test_accessibility.py",  # 117 s
    "test_runstudio.py",  # 102 s
    "browser/test_chains_walk.py",  # 75 s
    "test_seams.py",  # 50 s
    "test_fuzz.py",  # 49 s
    "test_chains.py",  # 47 s
    "browser/test_pictory_walk.py",  # 40 s
)


def pytest_collection_modifyitems(items):
    """Longest first: `make test` shares the tests between processes by file
    (pytest-xdist), and a long file handed out last keeps one process busy while the others
    have nothing left. The many short files fill in behind. A stable sort: each file keeps
    its own order."""

    def weight(item):
        path = str(item.fspath).replace("\\", "/")
        for rank, name in enumerate(LONG_FILES):
            if path.endswith("/tests/" + name):
                return rank
        return len(LONG_FILES) + (0 if "/browser/" in path else 1)

    items.sort(key=weight)


# Lines of picture the simulator renders in tests, here and in the studios and test runs
# they start: the fewest it allows. Rendering and decoding are most of the media-heavy
# tests' CPU: eight such files took 253 s of it at 240 lines and 159 s at 144 on the 2-core
# machine. Tests of the default size, or of fidelity at full size, set 480 themselves.
TEST_SIMULATOR_HEIGHT = 144


@pytest.fixture(autouse=True)
def studio_settings(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    settings.SIMULATOR_DELAY_SECONDS = 0
    settings.SIMULATOR_ENABLED = True
    settings.SIMULATOR_HEIGHT = TEST_SIMULATOR_HEIGHT
    settings.PUBLIC_BASE_URL = ""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # A cache of its own per test: nothing cached (an estimate, a session) outlives it.
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": str(tmp_path)}
    }
    # WhiteNoise indexes every static file (the admin's too, 175) each time its middleware
    # is built, and the test client builds the middleware anew for each client: 0.1 s a
    # time, an eighth of the provider and view tests' CPU. Looked up per request instead.
    settings.WHITENOISE_AUTOREFRESH = True
    # Tasks are not run by a worker in unit tests: they are called directly.
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": False}
    return settings


@pytest.fixture
def enqueued(monkeypatch):
    """Capture django-q2 enqueues instead of sending them to a broker: a list of
    (function path, args) the test can run by hand."""
    calls = []

    def fake_async_task(func, *args, **kwargs):
        calls.append((func, args))
        return "fake-task-id"

    monkeypatch.setattr("studio.jobs.async_task", fake_async_task)
    return calls


def run_enqueued(calls):
    """Run captured tasks (and those they enqueue) until none is left."""
    import importlib

    ran = 0
    while calls:
        func, args = calls.pop(0)
        module, name = func.rsplit(".", 1)
        getattr(importlib.import_module(module), name)(*args)
        ran += 1
        assert ran < 200, "tasks keep enqueueing each other"
    return ran


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("ana", "ana@example.com", "a-long-password-1")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user("ben", "ben@example.com", "a-long-password-2")


@pytest.fixture
def signed_in(client, user):
    client.force_login(user)
    return client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def provider_secret_settings() -> list[str]:
    """Every setting that holds a provider's secret, from the registry: a test that must
    blank them or plant fake ones needs no list of its own (a new provider is covered)."""
    from studio.providers import all_providers

    return sorted({name for provider in all_providers() for name in provider.secret_settings})


def chromium_path():
    return shutil.which("chromium") or shutil.which("chromium-browser")
