"""Chain view benchmark: a chain of 10 and of 50 steps with 3 takes each (a branch of 3
steps off one take, the last step still generating), in a gallery of 500 other clips. Reports
the chain view's and its polled live part's server time and SQL query count beside the
gallery page's, measured in the same run, to show that the query count does not grow with
steps or takes and that the chain view stays within 2x the gallery page.

Run: .venv/bin/python bench/chain.py   (or `make bench`). Writes nothing outside a temp dir.
"""

import re

from pages import machine, measure_side_by_side, run, signed_in_client

from studio.models import Asset, Clip

TAKES = 3
RUNS = 25
BASE = {
    "provider": "simulator",
    "model_key": "cinema",
    "model_label": "Sim Cinema · offline preview",
    "aspect_ratio": "16:9",
    "duration": 4,
}
MADE = {"status": Clip.Status.READY, "video_duration": 4.0, "video_frames": 96}


def made_clip(user, n: int, parent=None, **fields) -> Clip:
    """A ready clip row with its files named (nothing on disk: pages only link to them)."""
    frame = Asset.objects.create(owner=user, file=f"assets/b{n}/last-frame.png")
    return Clip.objects.create(
        owner=user,
        parent=parent,
        prompt=f"Shot {n}: a lantern over the harbour, slow dolly in",
        first_frame=parent.last_frame if parent else None,
        last_frame=frame,
        video=f"clips/b{n}/video.mp4",
        thumbnail=f"clips/b{n}/thumbnail.jpg",
        **{**BASE, **MADE, **fields},
    )


def seed_gallery(user, count: int) -> None:
    Clip.objects.bulk_create(
        Clip(owner=user, prompt=f"Single shot {n}", thumbnail=f"clips/s{n}/t.jpg", **BASE, **MADE)
        for n in range(count)
    )


def seed_chain(user, steps: int) -> Clip:
    """Each step has TAKES takes; the chain goes on from the second, chosen explicitly; a
    branch of three steps grows from the third take of step 3; the last step generates."""
    root = made_clip(user, 0)
    parent, n = root, 1
    for step in range(2, steps + 1):
        takes = []
        for _ in range(TAKES):
            last = step == steps and len(takes) == TAKES - 1
            takes.append(made_clip(user, n, parent, **({"status": Clip.Status.RUNNING} if last else {})))
            n += 1
        Clip.objects.filter(pk=parent.pk).update(chosen_take=takes[1])
        if step == 3:
            below = takes[2]
            for _ in range(3):
                below = made_clip(user, n, below)
                n += 1
        parent = takes[1]
    return root


def main():
    client, user = signed_in_client()
    seed_gallery(user, 500)
    print(f"Chain view benchmark · {machine()}")
    print(
        f"Median of {RUNS} rounds; each round times every request once, in turn (Django test client, "
        "in process: server time only)."
    )
    print(f"{'chain':>12}  {'request':<42} {'ms':>7} {'queries':>8} {'x gallery':>10}")
    for steps in (10, 50):
        root = seed_chain(user, steps)
        last = Clip.objects.filter(parent__isnull=False).order_by("-pk").first()
        live = client.get(f"/clips/{root.pk}/chain/live/", HTTP_HX_REQUEST="true").content.decode()
        signature = re.search(r'data-signature="(\w+)"', live).group(1)
        clips = Clip.objects.count()
        live_url = f"/clips/{root.pk}/chain/live/"
        cases = [
            ("gallery page  /", "/", 200, {}),
            ("gallery of chains  /?show=chains", "/?show=chains", 200, {}),
            ("chain view, opened from its first clip", f"/clips/{root.pk}/chain/", 200, {}),
            ("chain view, opened from its newest clip", f"/clips/{last.pk}/chain/", 200, {}),
            ("live part, changed (whole fragment)", live_url, 200, {"HTTP_HX_REQUEST": "true"}),
            ("live part, unchanged (204)", f"{live_url}?v={signature}", 204, {"HTTP_HX_REQUEST": "true"}),
        ]
        results = measure_side_by_side(client, [case[1:] for case in cases], runs=RUNS)
        gallery_ms = results[0][0]
        label = f"{steps}x{TAKES} ({clips})"
        for (name, *_), (ms, queries) in zip(cases, results):
            print(f"{label:>12}  {name:<42} {ms:>7.1f} {queries:>8} {ms / gallery_ms:>9.2f}x")


if __name__ == "__main__":
    run(main)
