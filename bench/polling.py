"""Polling benchmark: how many running clips one sweep keeps polled once per interval.

Seeds N running Pictory clips in a throwaway SQLite database (migrated from scratch), points
the studio at the loopback fake Pictory running in a process of its own and answering every
poll after 200 ms (as a real service is not instant), and runs the real sweep
(`jobs.poll_due_clips`) for three poll intervals. Reports polls per second and, per clip,
the gaps between two polls of it: the longest, the median, and how many clips went longer
than one interval plus a second between two polls. The first polls are spread over the first
interval, as clips started at different times are.

Side by side in one run: 100 and 1,000 clips with the studio's bounded concurrency
(POLL_CONCURRENCY, 32 by default), and 100 clips polled one after another (concurrency 1,
as the sweep did before) for comparison.

Run: .venv/bin/python bench/polling.py [--interval 15] [--latency 0.2]
Writes nothing outside a temp dir.
"""

import argparse
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

from machine import cpu_name, load_average  # bench/ is the script folder: on sys.path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TMP = Path(tempfile.mkdtemp(prefix="lastframe-bench-poll-"))


def run_fake(latency: float, pipe) -> None:
    """The fake Pictory in its own process (its threads must not share our GIL), until the
    pipe says stop."""
    from tests.fakes.pictory import FakePictory

    fake = FakePictory()
    fake.latency = latency
    fake.accept_unknown_jobs = True
    fake.start()
    # A client closing its pooled connections at the end is not an error worth a traceback.
    fake.server.handle_error = lambda request, address: None
    pipe.send((fake.origin, fake.key))
    pipe.recv()
    fake.stop()


def setup_django(base_url: str, key: str, interval: float) -> None:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "studio.settings",
            "DATABASE_URL": f"sqlite:///{TMP / 'bench.sqlite3'}",
            "MEDIA_ROOT": str(TMP / "media"),
            "STUDIO_IGNORE_DOTENV": "1",
            "SECRET_KEY": "bench-only",
            "PICTORY_API_KEY": key,
            "PICTORY_API_BASE_URL": base_url,
            "PICTORY_POLL_SECONDS": str(interval),
            "OPENROUTER_API_KEY": "",
            "SIMULATOR_ENABLED": "false",
        }
    )
    import warnings

    import django

    warnings.filterwarnings("ignore", message="No directory at")
    django.setup()
    import logging

    logging.getLogger("studio").setLevel(logging.WARNING)


def seed(count: int, interval: float) -> None:
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from studio.models import Clip

    Clip.objects.all().delete()
    user = get_user_model().objects.get_or_create(username="bench")[0]
    now = timezone.now()
    Clip.objects.bulk_create(
        [
            Clip(
                owner=user,
                provider="pictory",
                model_key="veo3.1",
                model_label="Veo 3.1 · Pictory",
                prompt=f"Benchmark clip {n}: a kite over the harbour at dusk",
                aspect_ratio="16:9",
                duration=4,
                status=Clip.Status.RUNNING,
                remote_id=f"00000000-0000-4000-8000-{n:012d}",
                submitted_at=now,
                deadline_at=now + timedelta(hours=2),
                # The first polls spread over one interval, as clips started at different times.
                next_poll_at=now + timedelta(seconds=interval * n / count),
            )
            for n in range(count)
        ],
        batch_size=500,
    )


def measure(count: int, concurrency: int, interval: float) -> dict:
    from django.conf import settings

    from studio import jobs
    from studio.providers.pictory import PictoryProvider

    settings.POLL_CONCURRENCY = concurrency
    seed(count, interval)
    seen = defaultdict(list)
    lock = threading.Lock()
    original = PictoryProvider.poll

    def timed_poll(self, remote_id):
        with lock:
            seen[remote_id].append(time.monotonic())
        return original(self, remote_id)

    PictoryProvider.poll = timed_poll
    seconds = interval * 3
    started, cpu = time.monotonic(), time.process_time()
    try:
        jobs.poll_due_clips(seconds=seconds)
    finally:
        PictoryProvider.poll = original
    elapsed, cpu = time.monotonic() - started, time.process_time() - cpu
    gaps = [b - a for times in seen.values() for a, b in zip(times, times[1:])]
    polls = sum(len(times) for times in seen.values())
    late = {rid for rid, times in seen.items() if any(b - a > interval + 1 for a, b in zip(times, times[1:]))}
    never_twice = count - sum(1 for times in seen.values() if len(times) >= 2)
    return {
        "clips": count,
        "concurrency": concurrency,
        "polls_per_s": polls / elapsed,
        "longest_gap": max(gaps) if gaps else float("nan"),
        "median_gap": statistics.median(gaps) if gaps else float("nan"),
        "late": len(late),
        "not_polled_again": never_twice,
        "polls": polls,
        "elapsed": elapsed,
        "cpu_ms_per_poll": cpu * 1000 / max(1, polls),
    }


def machine() -> str:
    load = load_average()
    load = f", load average {load[0]:.1f}" if load else ""
    return f"{os.cpu_count()} cores ({cpu_name()}{load}), Python {platform.python_version()}, SQLite"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=15.0, help="Pictory's poll interval (s)")
    parser.add_argument("--latency", type=float, default=0.2, help="the fake's answer time (s)")
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    fake = context.Process(target=run_fake, args=(args.latency, theirs), daemon=True)
    fake.start()
    origin, key = ours.recv()
    setup_django(origin + "/pictoryapis", key, args.interval)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    print(f"Polling benchmark · {machine()}")
    print(
        f"Fake Pictory in its own process, {args.latency * 1000:.0f} ms per answer; "
        f"poll interval {args.interval:g} s; each run lasts 3 intervals"
    )
    print(
        f"{'clips':>6} {'threads':>8} {'polls/s':>8} {'longest gap s':>14} {'median gap s':>13} "
        f"{'late':>6} {'CPU ms/poll':>12}"
    )
    print("  (late: clips with a gap over interval + 1 s; CPU: the studio's process, per poll)")
    try:
        for count, concurrency in ((100, None), (1000, None), (100, 1)):
            from django.conf import settings

            concurrency = concurrency or settings.POLL_CONCURRENCY
            result = measure(count, concurrency, args.interval)
            print(
                f"{result['clips']:>6} {result['concurrency']:>8} {result['polls_per_s']:>8.1f} "
                f"{result['longest_gap']:>14.2f} {result['median_gap']:>13.2f} {result['late']:>6} "
                f"{result['cpu_ms_per_poll']:>12.2f}"
                + (
                    f"   ({result['not_polled_again']} clips polled only once)"
                    if result["not_polled_again"]
                    else ""
                )
            )
    finally:
        ours.send("stop")
        fake.join(5)


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
