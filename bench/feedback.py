"""Feedback benchmark (issue 14): what the time estimate, the place in line and the pasted
provider keys cost, at 1,000 and at 100,000 clips in a throwaway SQLite database.

Prints the estimate's query (the last ten finished clips of a model) and its query plan,
a generating card's fragment, a gallery page full of generating cards, and a read of
`HostedProvider.api_key` from a key saved on the Providers page (unchanged, and just
changed by another process, which costs a decryption).

Run: .venv/bin/python bench/feedback.py   (writes nothing outside a temp dir). With
BENCH_QUERIES=1 it also prints each query of the card and the gallery page with its time.
"""

import os
from datetime import timedelta

import pages  # the throwaway database and Django's set-up, first
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from studio import keys
from studio.models import Clip, ProviderKey
from studio.providers import all_providers

RUNS = 15
MODELS = [("simulator", "cinema"), ("simulator", "motion"), ("pictory", "veo3.1")]
STATUSES = [Clip.Status.READY] * 8 + [Clip.Status.FAILED, Clip.Status.QUEUED]


def seed(user, upto: int) -> None:
    """Clips numbered up to `upto`, each finished a second after the one before; the ready
    ones took 40 to 89 s from acceptance."""
    now, have = timezone.now(), Clip.objects.count()
    rows = []
    for n in range(have, upto):
        (provider, key), status = MODELS[n % len(MODELS)], STATUSES[n % len(STATUSES)]
        finished = now - timedelta(seconds=upto - n)
        done = {"finished_at": finished} if status == Clip.Status.READY else {}
        started = finished - timedelta(seconds=40 + n % 50)
        rows.append(
            Clip(
                owner=user,
                provider=provider,
                model_key=key,
                model_label=key,
                status=status,
                prompt=f"Shot {n}: a lantern at dusk",
                submitted_at=started,
                **done,
            )
        )
    Clip.objects.bulk_create(rows, batch_size=5000)


def main():
    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench", password="bench-password-1")
    client = Client()
    client.force_login(user)
    pictory = next(p for p in all_providers() if p.name == "pictory")
    print(f"Feedback benchmark · SQLite · median of {RUNS} runs each (in process)")
    print(f"{'clips':>7}  {'what':<56} {'ms':>7} {'queries':>8}")
    for size in (1_000, 100_000):
        seed(user, size)
        Clip.objects.filter(status=Clip.Status.RUNNING).update(status=Clip.Status.READY)
        running = Clip.objects.filter(status=Clip.Status.READY).order_by("-pk")[:24]
        Clip.objects.filter(pk__in=[c.pk for c in running]).update(status=Clip.Status.RUNNING)
        one = Clip.objects.filter(status=Clip.Status.RUNNING).order_by("-pk").first()

        def estimate():
            Clip.objects.typical_generation_seconds("simulator", "cinema")

        def card(url=f"/clips/{one.pk}/card/"):
            assert client.get(url, HTTP_HX_REQUEST="true").status_code == 200

        def gallery():
            assert client.get("/").status_code == 200

        keys.save("pictory", "pictai_bench_0123456789")

        def key_read():
            assert pictory.api_key

        def key_changed():
            ProviderKey.objects.filter(provider="pictory").update(
                encrypted=keys.encrypt("pictai_bench_other")
            )
            assert pictory.api_key

        cases = [
            ("estimate: median of the last 10 of one model", estimate),
            ("card fragment, generating (estimate shown)", card),
            ("gallery page, 24 generating cards", gallery),
            ("api_key read, saved key unchanged", key_read),
            ("api_key read after another process changed it (+ UPDATE)", key_changed),
        ]
        for label, fn in cases:
            ms, queries = pages.timed(fn, RUNS)
            print(f"{size:>7}  {label:<56} {ms:>7.2f} {queries:>8}")
        if os.environ.get("BENCH_QUERIES"):
            for label, fn in cases[1:3]:
                with CaptureQueriesContext(connection) as ctx:
                    fn()
                for q in ctx.captured_queries:
                    print(f"         {label[:20]:<20} {float(q['time']) * 1000:>7.1f} ms  {q['sql'][:110]}")
    with connection.cursor() as cursor:
        sql, params = (
            Clip.objects.filter(provider="simulator", model_key="cinema", status="ready")
            .exclude(submitted_at=None)
            .exclude(finished_at=None)
            .order_by("-finished_at")
            .values_list("submitted_at", "finished_at")[:10]
            .query.sql_with_params()
        )
        cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        print("estimate query plan:", " / ".join(row[-1] for row in cursor.fetchall()))


if __name__ == "__main__":
    pages.run(main)
