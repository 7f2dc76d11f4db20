"""Gallery benchmark: seed 10,000 clips in a throwaway SQLite database and report the
gallery page's and the card fragment's server time and SQL query count, at 100 clips and at
10,000, to show the query count does not grow with the number of clips.

Run: .venv/bin/python bench/gallery.py   (or `make bench`). Writes nothing outside a temp dir.
"""

import statistics
import time

import throwaway  # the throwaway database and Django's set-up, first
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from studio.models import Clip

RUNS = 15
WORDS = ["lantern", "harbour", "storm", "heron", "city", "desert", "forest", "snow", "train", "kite"]
STATUSES = [Clip.Status.READY] * 7 + [Clip.Status.FAILED, Clip.Status.RUNNING, Clip.Status.QUEUED]
MODELS = [
    ("simulator", "cinema", "Sim Cinema · offline preview"),
    ("simulator", "motion", "Sim Motion · offline preview"),
    ("pictory", "veo-3.1", "Veo 3.1 (Pictory)"),
]


def seed(user, upto: int) -> None:
    have = Clip.objects.count()
    batch = []
    for n in range(have, upto):
        provider, key, label = MODELS[n % len(MODELS)]
        batch.append(
            Clip(
                owner=user,
                provider=provider,
                model_key=key,
                model_label=label,
                prompt=f"Shot {n}: a {WORDS[n % 10]} at dusk, slow dolly in, {WORDS[(n // 10) % 10]} light",
                aspect_ratio="16:9",
                duration=4,
                status=STATUSES[n % len(STATUSES)],
                video_duration=4.0 if n % 10 < 7 else None,
            )
        )
    Clip.objects.bulk_create(batch, batch_size=1000)
    # Some chains: every fifth clip continues the one before it.
    ids = list(Clip.objects.order_by("pk").values_list("pk", flat=True))
    Clip.objects.filter(pk__in=ids[1::5]).update(parent=None)
    for a, b in zip(ids[0:upto:5], ids[1:upto:5]):
        Clip.objects.filter(pk=b, parent__isnull=True).update(parent_id=a)


def measure(client, url, **headers):
    times, queries = [], None
    for _ in range(RUNS):
        with CaptureQueriesContext(connection) as ctx:
            start = time.perf_counter()
            response = client.get(url, **headers)
            body = response.content
            times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, (url, response.status_code, body[:300])
        queries = len(ctx.captured_queries)
    return statistics.median(times), queries


def main():
    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench", password="bench-password-1")
    client = Client()
    client.force_login(user)
    print(f"Gallery benchmark · SQLite · median of {RUNS} requests each (Django test client, in process)")
    print(f"{'clips':>7}  {'request':<44} {'ms':>7} {'queries':>8}")
    for size in (100, 10_000):
        seed(user, size)
        newest = Clip.objects.order_by("-pk").first()
        running = Clip.objects.filter(status=Clip.Status.RUNNING).order_by("-pk").first()
        middle = Clip.objects.order_by("-pk")[size // 2].pk
        cases = [
            ("gallery page  /", "/", {}),
            ("gallery, older page  /?before=<middle>", f"/?before={middle}", {}),
            (
                "gallery filtered  ?status=ready&q=lantern",
                "/?status=ready&q=lantern",
                {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "gallery"},
            ),
            ("card fragment (ready)", f"/clips/{newest.pk}/card/", {"HTTP_HX_REQUEST": "true"}),
            ("card fragment (generating)", f"/clips/{running.pk}/card/", {"HTTP_HX_REQUEST": "true"}),
            ("chain view", f"/clips/{newest.pk}/chain/", {}),
        ]
        for label, url, headers in cases:
            ms, queries = measure(client, url, **headers)
            print(f"{size:>7}  {label:<44} {ms:>7.1f} {queries:>8}")


if __name__ == "__main__":
    try:
        main()
    finally:
        throwaway.cleanup()
