"""What the page benchmarks share: a throwaway SQLite studio, a signed-in test client, and
the median server time and SQL query count of a request. Imported by gallery.py,
chain.py and feedback.py (run from the repository root: `python bench/<name>.py`)."""

import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

from machine import cpu_name, load_average  # bench/ is the script folder: on sys.path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TMP = Path(tempfile.mkdtemp(prefix="lastframe-bench-"))
os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "studio.settings",
        "DATABASE_URL": f"sqlite:///{TMP / 'bench.sqlite3'}",
        "MEDIA_ROOT": str(TMP / "media"),
        "STUDIO_IGNORE_DOTENV": "1",
        "ALLOWED_HOSTS": "testserver",
        "SECRET_KEY": "bench-only",
        # No provider key from this machine's environment: nothing reaches a service.
        "PICTORY_API_KEY": "",
        "OPENROUTER_API_KEY": "",
    }
)
warnings.filterwarnings("ignore", message="No directory at")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

RUNS = 15


def signed_in_client():
    """A fresh database and a client signed in as its one creator; (client, user)."""
    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench", password="bench-password-1")
    client = Client()
    client.force_login(user)
    return client, user


def timed(fn, runs: int) -> tuple[float, int]:
    """The median milliseconds of `runs` calls of `fn`, and the SQL queries of one."""
    times, queries = [], 0
    for _ in range(runs):
        with CaptureQueriesContext(connection) as ctx:
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1000)
        queries = len(ctx.captured_queries)
    return statistics.median(times), queries


def measure(client, url, runs=RUNS, expect=200, **headers):
    """Median milliseconds of `runs` requests (in process: server time only) and the SQL
    query count of one."""
    times, queries = [], None
    for _ in range(runs):
        with CaptureQueriesContext(connection) as ctx:
            start = time.perf_counter()
            response = client.get(url, **headers)
            body = response.content
            times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == expect, (url, response.status_code, body[:300])
        queries = len(ctx.captured_queries)
    return statistics.median(times), queries


def measure_side_by_side(client, cases, runs=RUNS):
    """Each case timed once per round, round after round, so a machine busy with other work
    slows every case alike; the median ms and the query count of each case, in order.
    `cases`: (url, expected status, headers) tuples."""
    times = [[] for _ in cases]
    queries = [0 for _ in cases]
    for _ in range(runs):
        for index, (url, expect, headers) in enumerate(cases):
            ms, queries[index] = measure(client, url, runs=1, expect=expect, **headers)
            times[index].append(ms)
    return [(statistics.median(t), q) for t, q in zip(times, queries)]


def machine() -> str:
    load = load_average()
    load = " ".join(f"{x:.1f}" for x in load) if load else "?"
    return (
        f"{os.cpu_count()} cores ({cpu_name()}), load average {load}, SQLite, Django {django.get_version()}"
    )


def run(main) -> None:
    try:
        main()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
