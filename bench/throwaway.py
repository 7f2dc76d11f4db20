"""What a benchmark of the studio does first: a throwaway SQLite database and media folder
(removed by `cleanup()`), the studio's settings with no provider key, and Django set up.
Import it before anything from Django or the studio."""

import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

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
        "PICTORY_API_KEY": "",
        "OPENROUTER_API_KEY": "",
    }
)

import django  # noqa: E402

warnings.filterwarnings("ignore", message="No directory at")
django.setup()

from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402


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


def cleanup() -> None:
    shutil.rmtree(TMP, ignore_errors=True)
