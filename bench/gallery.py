"""Gallery benchmark: seed clips of one creator in a throwaway SQLite database and report the
gallery page's and the card fragment's server time and SQL query count, at 100, 10,000 and
100,000 clips, to show neither grows with the number of clips (issue 15 asks for the page
within 25 ms median and a card within 5 ms and 2 queries at 100,000).

Run: .venv/bin/python bench/gallery.py   (or `make bench`). Writes nothing outside a temp dir.
"""

from pages import machine, measure, run, signed_in_client

from studio.models import Clip

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


def main():
    client, user = signed_in_client()
    print("Gallery benchmark · SQLite · median of 15 requests each (Django test client, in process)")
    print(machine())
    print(f"{'clips':>7}  {'request':<44} {'ms':>7} {'queries':>8}")
    for size in (100, 10_000, 100_000):
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
            ("gallery, one model  ?model=simulator:motion", "/?model=simulator:motion", {}),
            ("gallery, generating  ?status=generating", "/?status=generating", {}),
            ("gallery of chains  /?show=chains", "/?show=chains", {}),
            ("chain view", f"/clips/{newest.pk}/chain/", {}),
        ]
        for label, url, headers in cases:
            ms, queries = measure(client, url, **headers)
            print(f"{size:>7}  {label:<44} {ms:>7.1f} {queries:>8}")


if __name__ == "__main__":
    run(main)
