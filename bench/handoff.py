"""Hand-off and seam costs at 1080p (issue 12): what the worker spends making a clip's strip,
measuring a seam and matching its colour, and what serving the strip picker costs the web
server once that is done (nothing is decoded in a request).

    .venv/bin/python bench/handoff.py

Renders one 10 s 1080p clip with sound into $BENCH_MEDIA_DIR (shared with bench/media.py,
kept for later runs) and works on a throwaway SQLite studio (bench/pages.py).
"""

import importlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from django.core.files.base import ContentFile
from django.urls import reverse
from pages import signed_in_client

from studio import jobs, media
from studio.models import Asset, Clip

# bench/media.py, imported once pages.py has pointed Django at the throwaway database (it
# sets Django up itself, with the default one, when it is imported first).
bench_media = importlib.import_module("media")
cpu_model, graded, render_1080p = bench_media.cpu_model, bench_media.graded, bench_media.render_1080p

RUNS = 9


def material() -> Path:
    folder = Path(os.environ.get("BENCH_MEDIA_DIR") or Path(tempfile.gettempdir()) / "lastframe-bench-1080p")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "clip0.mp4"
    if not path.exists():
        start = time.perf_counter()
        render_1080p(path, 10, 0)
        print(f"  (rendered {path.name} in {time.perf_counter() - start:.0f} s)")
    return path


def stored_clip(user, source: Path, parent=None) -> Clip:
    """A ready clip whose video is a copy of `source` in the studio's storage."""
    info = media.probe(source)
    clip = Clip(
        owner=user,
        parent=parent,
        provider="simulator",
        model_key="cinema",
        model_label="Sim Cinema",
        prompt="A 1080p benchmark clip",
        status=Clip.Status.READY,
        video_width=info.width,
        video_height=info.height,
        video_duration=info.duration,
        video_frames=info.frames,
    )
    clip.save()
    with source.open("rb") as fh:
        clip.video.save("video.mp4", fh, save=False)
    last = media.last_frame(source)
    frame = Asset(owner=user, source=Asset.Source.LAST_FRAME, width=last.width, height=last.height)
    frame.file.save("last-frame.png", ContentFile(media.png_bytes(last)), save=True)
    clip.last_frame = frame
    clip.save()
    return clip


def seconds(fn) -> tuple[float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"Hand-off benchmark · nproc {os.cpu_count()}, {cpu_model()}, load average {load}")
    source = material()
    client, user = signed_in_client()
    parent = stored_clip(user, source)
    path = Path(parent.video.path)

    # The worker, once per clip, when it is finished: decode the last second, keep JPEGs.
    wall, cpu = seconds(
        lambda: setattr(parent, "strip", jobs._save_strip(parent, jobs._strip_images(parent, path)))
    )
    parent.save(update_fields=["strip"])
    size = sum(Path(parent.video.storage.path(e["name"])).stat().st_size for e in parent.strip)
    print(
        f"  strip made by the worker at finish: {wall:.2f} s (CPU {cpu:.2f} s), {len(parent.strip)} frames "
        f"({parent.strip[0]['index']}-{parent.strip[-1]['index']}), {size / 1024:.0f} KiB of JPEG"
    )

    # The web server: the picker (the continue page) and every image of its strip.
    page = reverse("continue_clip", args=[parent.pk])
    images = [reverse("clip_strip_frame", args=[parent.pk, e["index"]]) for e in parent.strip]

    def serve():
        assert client.get(page).status_code == 200
        for url in images:
            response = client.get(url)
            assert response.status_code == 200
            b"".join(response.streaming_content)

    serve()  # warm
    times = []
    for _ in range(RUNS):
        times.append(seconds(serve)[0])
    page_only = statistics.median(seconds(lambda: client.get(page))[0] for _ in range(RUNS))
    print(
        f"  strip served: picker page + {len(images)} images {statistics.median(times) * 1000:.0f} ms "
        f"(page alone {page_only * 1000:.0f} ms), median of {RUNS}; no decoding in the request"
    )
    wall, _ = seconds(lambda: media.frame_strip(path))
    print(f"    (decoding the strip in the request instead: {wall:.2f} s)")

    # A continuation whose colour drifted: the seam measured, then matched.
    tmp = Path(tempfile.mkdtemp(prefix="lastframe-bench-handoff-"))
    try:
        drifted = tmp / "drifted.mp4"
        shutil.copyfile(source, drifted)
        child = stored_clip(user, drifted, parent=parent)
        child.handoff_frame = parent.video_frames - 1
        child.save(update_fields=["handoff_frame"])
        # As bench/media.py: the hand-off frame is this clip's first picture as a parent graded
        # 5 % warmer, so the figures before and after say what the match did.
        reference = graded(media.first_frame(path), 0.05)
        wall, cpu = seconds(lambda: jobs.measure_clip(child.pk))
        print(f"  seam measured by the worker: {wall:.2f} s (CPU {cpu:.2f} s)")
        out = tmp / "matched.mp4"
        found = []
        wall, cpu = seconds(
            lambda: found.append(media.colour_match_video(Path(child.video.path), reference, out))
        )
        print(
            f"  colour match of a 10 s 1080p clip (colour_match_video): {wall:.1f} s (CPU {cpu:.1f} s), "
            f"seam difference {found[0].before:.2f} -> {found[0].after:.2f}, clipped {found[0].clipped:.4f}"
        )
        Clip.objects.filter(pk=child.pk).update(colour_match=True, colour_state=Clip.ColourState.QUEUED)
        wall, cpu = seconds(lambda: jobs.match_colour(child.pk))
        child.refresh_from_db()
        print(
            f"  the worker's whole match_colour task (towards the parent's last frame, another picture: "
            f"timing only): {wall:.1f} s (CPU {cpu:.1f} s), state {child.colour_state}"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
