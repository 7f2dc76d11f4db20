"""Media benchmark and measurements.

    .venv/bin/python bench/media.py seams   figures behind the seam, drift and repeat thresholds
    .venv/bin/python bench/media.py speed   the studio against ffmpeg, side by side, at 1080p
    .venv/bin/python bench/media.py         both (or `make bench`)

`seams` renders 480-line clips with the simulator (about a minute). `speed` renders its 1080p
material once into $BENCH_MEDIA_DIR (default: a folder in the temp dir, kept for later runs:
encoding 1080p takes minutes on two cores) and needs the ffmpeg binary as the reference;
the studio itself never calls it. BENCH_QUICK=1 leaves out the two
slow items (colour match, the re-encoding join). Studio times are taken in process (a worker calls these
functions in a running process); ffmpeg's are whole processes, as it would be run.
"""

import os
import resource
import shutil
import statistics
import subprocess
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
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter  # noqa: E402

django.setup()

from machine import cpu_name as cpu_model  # noqa: E402  bench/ is on sys.path (the script's folder)

from studio import media  # noqa: E402
from studio.providers.simulator import render  # noqa: E402

PROMPTS = [
    "A lantern drifting over a dark lake",
    "Morning fog lifting off a pine forest",
    "A red kite over the dunes at noon",
]


def spread(values) -> str:
    values = sorted(values)
    return f"{values[0]:6.2f} {statistics.median(values):6.2f} {values[-1]:6.2f}"


def graded(image: Image.Image, amount: float) -> Image.Image:
    """Warmer, lifted and flatter by `amount` (0.04 = 4 %): the drift continuations show."""
    rgb = np.asarray(image, dtype=np.float32)
    gain = np.array([1 + amount, 1.0, 1 - amount])
    out = (rgb - 128) * (1 - amount / 2) * gain + 128 + 100 * amount
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def landscape(size=(854, 480)) -> Image.Image:
    """A photo-like still: sky, hills, a sun, a little grain."""
    rng = np.random.default_rng(0)
    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    for y in range(size[1]):
        k = y / size[1]
        draw.line((0, y, size[0], y), fill=(int(90 + 100 * k), int(140 + 60 * k), int(220 - 60 * k)))
    for i in range(5):
        x, h = int(rng.integers(0, size[0])), int(rng.integers(120, 300))
        draw.polygon(
            [(x - 300, size[1]), (x, size[1] - h), (x + 300, size[1])],
            fill=(40 + 20 * i, 90 + 15 * i, 50 + 10 * i),
        )
    draw.ellipse((600, 60, 680, 140), fill=(250, 230, 160))
    grain = rng.normal(0, 8, (size[1], size[0], 3))
    return Image.fromarray(
        np.clip(np.asarray(image, dtype=np.float32) + grain, 0, 255).astype(np.uint8)
    ).filter(ImageFilter.GaussianBlur(0.7))


def decoded(path: Path) -> list[Image.Image]:
    with av.open(str(path)) as container:
        return [frame.to_image() for frame in container.decode(video=0)]


def seams(tmp: Path) -> None:
    print("Seam figures (difference 0-255, colour shift ΔE76) on 854x480 simulator clips")
    print("  case                                  n   difference min/med/max   colour min/med/max")
    rows: dict[str, list] = {}

    def add(case: str, before: Image.Image, after: Image.Image) -> None:
        figures = media.seam_figures(before, after)
        rows.setdefault(case, []).append((figures.difference, figures.colour_shift))

    roots = []
    for n, prompt in enumerate(PROMPTS):
        root = tmp / f"root{n}.mp4"
        render(root, prompt, "16:9", 4, None)
        roots.append((root, decoded(root)))
    for n, (_root, frames) in enumerate(roots):
        for a, b in zip(frames, frames[1:]):
            add("consecutive frames of one clip", a, b)
        last = frames[-1]
        last.save(tmp / "handoff.png")
        child = tmp / f"child{n}.mp4"
        render(child, PROMPTS[n] + ", later", "16:9", 4, tmp / "handoff.png")
        child_frames = decoded(child)
        for a, b in zip(child_frames, child_frames[1:]):
            add("consecutive frames of one clip", a, b)
        add("true hand-off (last -> first)", last, child_frames[0])
        # A hand-off picked from the strip: the join cuts the parent there.
        frames[-9].save(tmp / "picked.png")
        picked = tmp / f"picked{n}.mp4"
        render(picked, PROMPTS[n] + ", from the strip", "16:9", 2, tmp / "picked.png")
        add("true hand-off (picked, cut there)", frames[-9], media.first_frame(picked))
        # The same child joined after the whole parent: the picture jumps back in time.
        for back in (6, 12, 24):
            frames[-1 - back].save(tmp / "earlier.png")
            earlier = tmp / f"earlier{n}-{back}.mp4"
            render(earlier, PROMPTS[n] + ", earlier", "16:9", 1, tmp / "earlier.png")
            add(f"earlier hand-off, {back:2d} frames back", last, media.first_frame(earlier))
        for amount in (0.02, 0.04, 0.08):
            graded(last, amount).save(tmp / "graded.png")
            drifted = tmp / f"drifted{n}-{amount}.mp4"
            render(drifted, PROMPTS[n] + ", drifted", "16:9", 1, tmp / "graded.png")
            add(f"colour-drifted continuation, {amount:.0%}", last, media.first_frame(drifted))
        other = roots[(n + 1) % len(roots)][1][0]
        add("cut to a different clip", last, other)
    for case, figures in rows.items():
        print(
            f"  {case:36s} {len(figures):3d}   {spread(f[0] for f in figures)}   {spread(f[1] for f in figures)}"
        )
    print(
        f"  thresholds: SEAM_JUMP_DIFFERENCE {media.SEAM_JUMP_DIFFERENCE}, SEAM_JUMP_COLOUR {media.SEAM_JUMP_COLOUR}"
    )

    print("Drift against step 1 (its first frame against step k's first), steps 2-5")
    landscape().save(tmp / "landscape.png")
    for start, label in ((tmp / "landscape.png", "photo-like shot"), (None, "moving shapes")):
        for amount in (0.0, 0.02, 0.04):
            first = tmp / "drift1.mp4"
            render(first, PROMPTS[0], "16:9", 2, start)
            reference, previous, figures = media.first_frame(first), first, []
            for step in range(2, 6):
                graded(media.last_frame(previous), amount).save(tmp / "next.png")
                path = tmp / f"drift{step}.mp4"
                render(path, PROMPTS[0], "16:9", 2, tmp / "next.png")
                figures.append(media.drift(reference, media.first_frame(path)))
                previous = path
            shown = " ".join(f"{f:5.2f}" for f in figures)
            print(f"  {label:16s} grade per hop {amount:3.0%}   {shown}")
    print(f"  threshold: DRIFT_WARN {media.DRIFT_WARN}")

    print("Repeats in extend results (seam difference)")
    source = roots[1][0]
    extended = tmp / "extended.mp4"
    render(extended, "The fog lifts further", "16:9", 2, None, extend_source=source)
    source_frames, result_frames = roots[1][1], decoded(extended)
    repeats = [media.seam_figures(a, b).difference for a, b in zip(source_frames, result_frames)]
    neighbours = [
        media.seam_figures(a, b).difference
        for a, b in zip(source_frames, result_frames[1 : len(source_frames)])
    ]
    source_frames[-1].save(tmp / "last.png")
    continued = tmp / "continued.mp4"
    render(continued, "The fog lifts further", "16:9", 2, tmp / "last.png")
    print(f"  a repeated frame against its source frame      {spread(repeats)}")
    print(f"  ...against the source's next frame            {spread(neighbours)}")
    starts = [
        media.seam_figures(root_frames[0], media.last_frame(path)).difference for path, root_frames in roots
    ]
    print(f"  a clip's first frame against its last          {spread(starts)}")
    print(f"  threshold: REPEAT_DIFFERENCE {media.REPEAT_DIFFERENCE}")
    found = media.repeated_source_frames(source, extended, 2)
    plain = media.repeated_source_frames(source, continued, 2)
    print(f"  repeated frames detected: {found} of {len(source_frames)}; in a plain continuation: {plain}")


# --- Speed at 1080p ---------------------------------------------------------------------------

FPS_1080 = 30


def render_1080p(path: Path, seconds: int, seed: int) -> None:
    """A moving 1080p picture with film-like grain (the bitrate of real footage, not of a
    flat cartoon), x264 veryfast with its default keyframe spacing (250 frames), and an AAC
    48 kHz stereo tone."""
    size = (1920, 1080)
    base = Image.new("RGB", size)
    draw = ImageDraw.Draw(base)
    for y in range(0, size[1], 8):
        draw.rectangle((0, y, size[0], y + 8), fill=(30 + y // 8 + seed * 20, 60, 140 - y // 10))
    grains = [
        Image.effect_noise((size[0] // 2, size[1] // 2), 60).resize(size).convert("RGB") for _ in range(4)
    ]
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS_1080)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "20"}
        stream.codec_context.thread_type = "FRAME"
        audio = container.add_stream("aac", rate=48000, layout="stereo")
        per_frame = 48000 // FPS_1080
        t = np.arange(seconds * 48000) / 48000
        tone = (0.2 * np.sin(2 * np.pi * (220 + 40 * seed + 30 * np.sin(t)) * t)).astype(np.float32)
        pcm = np.stack([tone, tone])
        pending = np.zeros((2, 0), dtype=np.float32)
        written = 0
        for i in range(seconds * FPS_1080):
            frame = base.copy()
            d = ImageDraw.Draw(frame)
            for k in range(6):
                x = (i * (7 + k * 3) + k * 300 + seed * 97) % size[0]
                y = 200 + k * 130
                d.ellipse((x - 90, y - 90, x + 90, y + 90), fill=(255 - k * 30, 80 + k * 25, 40 * k % 255))
            frame = Image.blend(frame, grains[i % 4], 0.12)
            for packet in stream.encode(av.VideoFrame.from_image(frame)):
                container.mux(packet)
            pending = np.concatenate([pending, pcm[:, i * per_frame : (i + 1) * per_frame]], axis=1)
            while pending.shape[1] >= 1024:
                chunk = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(pending[:, :1024]), format="fltp", layout="stereo"
                )
                chunk.sample_rate, chunk.pts = 48000, written
                written += 1024
                pending = pending[:, 1024:]
                for packet in audio.encode(chunk):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        for packet in audio.encode(None):
            container.mux(packet)


def material() -> Path:
    folder = Path(os.environ.get("BENCH_MEDIA_DIR") or Path(tempfile.gettempdir()) / "lastframe-bench-1080p")
    folder.mkdir(parents=True, exist_ok=True)
    wanted = [(f"clip{n}.mp4", 10, n) for n in range(5)] + [("long.mp4", 60, 7)]
    for name, seconds, seed in wanted:
        path = folder / name
        if not path.exists():
            start = time.perf_counter()
            partial = path.with_suffix(".part.mp4")
            render_1080p(partial, seconds, seed)
            partial.replace(path)
            print(f"  rendered {name} ({seconds} s of 1080p) in {time.perf_counter() - start:.0f} s")
    return folder


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, stdin=subprocess.DEVNULL)


def side_by_side(label: str, ours, theirs, runs: int, warm_up: bool = True) -> None:
    """Run the two in turn (A B A B ...) after one warm-up each; print the medians and the
    median of the pairwise ratios, which holds while the machine's speed drifts, for wall
    time and for CPU time (ours: every thread of this process; ffmpeg's: its process)."""
    if warm_up:
        ours()
        theirs()
    pairs = []
    for _ in range(runs):
        wall, cpu, children = time.perf_counter(), time.process_time(), _children_cpu()
        ours()
        ours_wall, ours_cpu = time.perf_counter() - wall, time.process_time() - cpu
        wall, children = time.perf_counter(), _children_cpu()
        theirs()
        pairs.append((ours_wall, time.perf_counter() - wall, ours_cpu, _children_cpu() - children))

    def median(i):
        return statistics.median(p[i] for p in pairs)

    wall_ratio = statistics.median(p[0] / p[1] for p in pairs)
    cpu_ratio = statistics.median(p[2] / p[3] for p in pairs)
    print(
        f"  {label:40s} wall: studio {median(0):7.3f} s  ffmpeg {median(1):7.3f} s  ratio {wall_ratio:4.2f}"
        f" | cpu: {median(2):7.3f} s  {median(3):7.3f} s  ratio {cpu_ratio:4.2f}  ({runs} pairs)"
    )


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def speed(tmp: Path) -> None:
    if not shutil.which("ffmpeg"):
        sys.exit("The speed benchmark compares with the ffmpeg binary: install it (make bench does).")
    print("Speed at 1920x1080, 30 fps, with AAC 48 kHz stereo sound")
    folder = material()
    clips = [folder / f"clip{n}.mp4" for n in range(5)]
    listing = tmp / "list.txt"
    listing.write_text("".join(f"file '{clip}'\n" for clip in clips))
    parts = [media.JoinPart(clip) for clip in clips]
    size_mb = sum(c.stat().st_size for c in clips) / 1e6
    print(
        f"  material: 5 x 10 s clips, {size_mb:.0f} MB; a 60 s clip, {(folder / 'long.mp4').stat().st_size / 1e6:.0f} MB"
    )

    result = media.join_videos(parts, tmp / "copy.mp4")
    print(f"  copy join: {result.method}, {result.frames} frames, sound {result.audio_duration:.3f} s")
    side_by_side(
        "join 5 x 10 s by stream copy",
        lambda: media.join_videos(parts, tmp / "copy.mp4"),
        lambda: ffmpeg(
            "-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(tmp / "ff-copy.mp4")
        ),
        runs=9,
    )
    start = time.perf_counter()
    for clip in clips:
        with av.open(str(clip)) as container:
            for _ in container.demux():
                pass
    print(f"    (reading the five inputs once, packets only: {time.perf_counter() - start:.3f} s)")
    profile_copy_join(parts, tmp)

    for name in ("clip0.mp4", "long.mp4"):
        clip = folder / name
        side_by_side(
            f"last frame of {media.probe(clip).duration:.0f} s ({media.frame_count(clip)} frames)",
            lambda clip=clip: media.last_frame(clip),
            lambda clip=clip: ffmpeg(
                "-sseof", "-0.04", "-i", str(clip), "-an", "-frames:v", "1", str(tmp / "last.bmp")
            ),
            runs=7,
        )
    same = media.last_frame(clips[0]).tobytes() == decoded(clips[0])[-1].tobytes()
    print(f"    same pixels as decoding everything: {same}")

    start, cpu = time.perf_counter(), time.process_time()
    strip = media.frame_strip(clips[0])
    print(
        f"  frame strip of a 10 s clip: {time.perf_counter() - start:.3f} s (CPU {time.process_time() - cpu:.3f} s)"
        f" for {len(strip)} frames ({strip[0].index}-{strip[-1].index}, images and sharpness included)"
    )

    if os.environ.get("BENCH_QUICK"):
        return  # colour match and the re-encoding join take minutes
    # The parent's hand-off frame: this clip's first picture, as the parent graded it.
    reference = graded(media.frame_at_index(clips[0], 0), 0.05)
    start, cpu = time.perf_counter(), time.process_time()
    matched = media.colour_match_video(clips[0], reference, tmp / "matched.mp4")
    print(
        f"  colour match of a 10 s clip: {time.perf_counter() - start:.1f} s (CPU {time.process_time() - cpu:.1f} s)"
        f" (difference {matched.before:.2f} -> {matched.after:.2f}, clipped {matched.clipped:.4f})"
    )

    # The studio re-encodes when clips differ; here the same clips, made to re-encode.
    side_by_side(
        "join 5 x 10 s by re-encoding (veryfast)",
        lambda: media._join(parts, tmp / "re.mp4", None, "benchmark"),
        lambda: ffmpeg(
            "-f", "concat", "-safe", "0", "-i", str(listing),
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-c:a", "copy", str(tmp / "ff-re.mp4"),
        ),
        runs=int(os.environ.get("BENCH_REENCODE_RUNS", "2")),
        warm_up=False,  # a minute each: nothing left to warm
    )  # fmt: skip


def profile_copy_join(parts, tmp: Path) -> None:
    """Where a stream-copy join spends its time: one run under cProfile, the functions with
    the most time of their own (PyAV's compiled calls count as their callers')."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    media.join_videos(parts, tmp / "profiled.mp4")
    profiler.disable()
    stats = pstats.Stats(profiler)
    top = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:6]
    shown = "; ".join(f"{name} {stat[2]:.3f} s" for (_, _, name), stat in top)
    print(f"    (one copy join under cProfile: {stats.total_tt:.3f} s; most own time: {shown})")


def main() -> None:
    wanted = sys.argv[1:] or ["seams", "speed"]
    tmp = Path(tempfile.mkdtemp(prefix="lastframe-bench-media-"))
    print(
        f"Machine: nproc {os.cpu_count()}, {cpu_model()}, {time.strftime('%Y-%m-%d')}, PyAV {av.__version__}"
    )
    try:
        if "seams" in wanted:
            seams(tmp)
        if "speed" in wanted:
            speed(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
