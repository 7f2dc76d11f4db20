"""Media benchmark: join a 5-clip chain by stream copy and by re-encoding, and extract the
last frame of a 10 s 1080p clip. Clips are rendered here with PyAV (the simulator's renderer
for the chain; a moving 1080p picture for the last frame).

Run: .venv/bin/python bench/media.py   (or `make bench`). Works in a temp dir.
"""

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
os.environ.setdefault("STUDIO_IGNORE_DOTENV", "1")

import av  # noqa: E402
import django  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

django.setup()

from studio import media  # noqa: E402
from studio.providers.simulator import render  # noqa: E402

RUNS = 3


def timed(fn, runs=RUNS):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def render_1080p(path: Path, seconds=10, fps=30, gop=None):
    """A moving 1080p picture (gradient + shapes), H.264 veryfast; `gop` keyframe spacing."""
    size = (1920, 1080)
    base = Image.new("RGB", size)
    draw = ImageDraw.Draw(base)
    for y in range(0, size[1], 8):
        draw.rectangle((0, y, size[0], y + 8), fill=(30 + y // 8, 60, 140 - y // 10))
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "20", **({"g": str(gop)} if gop else {})}
        for i in range(seconds * fps):
            frame = base.copy()
            d = ImageDraw.Draw(frame)
            for k in range(6):
                x = (i * (7 + k * 3) + k * 300) % size[0]
                y = 200 + k * 130
                d.ellipse((x - 90, y - 90, x + 90, y + 90), fill=(255 - k * 30, 80 + k * 25, 40 * k % 255))
            # Film-like grain, so the bitrate is that of real footage (~1-2 MB/s), not of a
            # flat cartoon that decodes unrealistically fast.
            grain = Image.effect_noise((size[0] // 2, size[1] // 2), 60).resize(size).convert("RGB")
            frame = Image.blend(frame, grain, 0.12)
            for packet in stream.encode(av.VideoFrame.from_image(frame)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def decode_all_last(path: Path):
    with av.open(str(path)) as container:
        frame = None
        for frame in container.decode(video=0):  # noqa: B007 (the last one is kept)
            pass
        return frame.to_image()


def main():
    tmp = Path(tempfile.mkdtemp(prefix="lastframe-bench-media-"))
    try:
        # A 5-clip chain as the simulator makes it (854x480, 24 fps, 4 s each), each clip
        # continued from the last frame of the one before.
        start = time.perf_counter()
        clips = []
        for n in range(5):
            path = tmp / f"clip{n}.mp4"
            first = None
            if clips:
                first = tmp / f"last{n - 1}.png"
                media.last_frame(clips[-1]).save(first)
            render(path, f"Shot {n + 1} of the bench chain: a lantern over a lake", "16:9", 4, first)
            clips.append(path)
        print(f"Rendered a 5-clip chain (854x480, 24 fps, 5 x 4 s) in {time.perf_counter() - start:.1f} s")

        no_seams = [media.JoinPart(p) for p in clips]
        seams = [media.JoinPart(clips[0])] + [media.JoinPart(p, drop_seam=True) for p in clips[1:]]
        plan = media.join_plan(seams)
        t_copy, copy = timed(lambda: media.join_videos(no_seams, tmp / "copy.mp4"))
        t_chain, chain = timed(lambda: media.join_videos(seams, tmp / "chain.mp4"))
        t_re, _ = timed(lambda: media._join_by_reencode(seams, tmp / "re.mp4", None))
        re_info = media.probe(tmp / "re.mp4")
        print("Joining 5 clips (20 s of 854x480):")
        print(
            f"  stream copy (no seams dropped):          {t_copy:6.3f} s  -> {copy.frames} frames, {copy.duration:.3f} s"
        )
        print(
            f"  re-encode, 4 seam frames dropped:        {t_re:6.3f} s  -> {re_info.frames} frames, {re_info.duration:.3f} s"
        )
        print(
            f"  as the studio joins it (plan: {plan[0]}{', ' + plan[1] if plan[1] else ''}): "
            f"{t_chain:.3f} s -> {chain.frames} frames, dropped {chain.dropped}"
        )

        # The same at 1080p for the join, to show how re-encoding scales with pixels.
        big = []
        for n in range(5):
            path = tmp / f"big{n}.mp4"
            render_1080p(path, seconds=2, fps=24, gop=48)
            big.append(path)
        t_copy_big, _ = timed(
            lambda: media.join_videos([media.JoinPart(p) for p in big], tmp / "bigcopy.mp4")
        )
        t_re_big, _ = timed(
            lambda: media._join_by_reencode([media.JoinPart(p) for p in big], tmp / "bigre.mp4", None), runs=1
        )
        print("Joining 5 clips (10 s of 1920x1080, 24 fps):")
        print(f"  stream copy:                              {t_copy_big:6.3f} s")
        print(f"  re-encode (veryfast):                     {t_re_big:6.3f} s")

        print("Last frame of a 10 s 1080p clip (30 fps):")
        for gop, label in ((None, "x264 default keyframes (every 250 frames)"), (60, "a keyframe every 2 s")):
            path = tmp / f"ten{gop}.mp4"
            render_1080p(path, seconds=10, fps=30, gop=gop)
            size_mb = path.stat().st_size / 1e6
            t_seek, img = timed(lambda path=path: media.last_frame(path))
            t_all, img_all = timed(lambda path=path: decode_all_last(path))
            same = img.tobytes() == img_all.tobytes()
            print(
                f"  {label} ({size_mb:.1f} MB): media.last_frame {t_seek:.3f} s; decode everything {t_all:.3f} s; same pixels: {same}"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
