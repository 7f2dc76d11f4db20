"""Video and image work with PyAV and Pillow: probe, last frame, thumbnail, image checks.

No ffmpeg binary is called: PyAV's wheel carries what we need (NOTES.md).
"""

from __future__ import annotations

import io
import itertools
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from django.conf import settings
from django.core.files.storage import FileSystemStorage
from PIL import Image, ImageOps

THUMBNAIL_BOX = (640, 640)
IMAGE_FORMATS = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP"}


class MediaError(Exception):
    """A file is not the media we expected; the message is fit to show a creator."""


# --- Stored files, wherever the storage keeps them ----------------------------------------
# Media goes through Django's default storage: a folder (FileSystemStorage, MEDIA_ROOT) or
# a bucket (S3Storage, when AWS_STORAGE_BUCKET_NAME is set). Nothing outside these helpers
# may assume a stored file has a path on this machine.


def local_path(storage, name: str) -> Path | None:
    """The real path of a stored file when the storage keeps files on this machine's disk
    (FileSystemStorage), else None. Not `storage.path()` alone: S3 has none, and some
    storages (InMemoryStorage) answer with a path where no file is."""
    if name and isinstance(storage, FileSystemStorage):
        return Path(storage.path(name))
    return None


@contextmanager
def local_copy(file) -> Iterator[Path]:
    """A path on this machine holding a stored file (a FieldFile), for PyAV and Pillow:
    the file itself on a local disk, otherwise a temporary copy read through
    storage.open() and deleted afterwards."""
    storage, name = file.storage, file.name
    path = local_path(storage, name)
    if path is not None:
        yield path
        return
    fd, temp = tempfile.mkstemp(prefix="stored-", suffix=Path(name).suffix)
    try:
        with os.fdopen(fd, "wb") as out, storage.open(name, "rb") as source:
            shutil.copyfileobj(source, out, 1024 * 1024)
        yield Path(temp)
    finally:
        os.unlink(temp)


def read_stored(storage, name: str) -> bytes:
    """All the bytes of a stored file (small files: images)."""
    with storage.open(name, "rb") as fh:
        return fh.read()


@dataclass
class VideoInfo:
    duration: float
    width: int
    height: int
    codec: str
    frames: int
    fps: float = 0.0
    has_audio: bool = False
    audio_codec: str | None = None  # these three only when has_audio
    audio_sample_rate: int | None = None
    audio_channels: int | None = None


@contextmanager
def _reading(path: Path, what: str = "The video") -> Iterator:
    """An open container; whatever FFmpeg says about a damaged file becomes a MediaError."""
    try:
        with av.open(str(path)) as container:
            yield container
    except MediaError:
        raise
    except (av.error.FFmpegError, IndexError, ValueError, StopIteration) as exc:
        raise MediaError(f"{what} could not be read; the file may be damaged.") from exc


def _video(container):
    if not container.streams.video:
        raise MediaError("The file has no video in it.")
    stream = container.streams.video[0]
    # Frame threads decode several frames at once; PyAV's default (slice threads) leaves
    # most of the machine idle on H.264 (NOTES.md).
    stream.codec_context.thread_type = "FRAME"
    return stream


def _rate(stream) -> Fraction:
    return Fraction(stream.average_rate or stream.guessed_rate or 24)


def probe(path: Path) -> VideoInfo:
    """Duration, size, codec, frame rate and sound of a video, or MediaError when it cannot
    be decoded."""
    with _reading(path) as container:
        stream = _video(container)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        # Decoding one frame proves the stream is really readable, not just labelled.
        if next(container.decode(stream), None) is None:
            raise MediaError("The video could not be decoded.")
        info = VideoInfo(
            duration=round(duration, 3),
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            codec=stream.codec_context.name,
            frames=stream.frames or 0,
            fps=round(float(_rate(stream)), 3),
        )
        if container.streams.audio:
            audio = container.streams.audio[0].codec_context
            info.has_audio = True
            info.audio_codec, info.audio_sample_rate, info.audio_channels = (
                audio.name,
                audio.sample_rate,
                audio.channels,
            )
        return info


# --- Frames by number -----------------------------------------------------------------------
# Frames are numbered in the order they are shown (0 = first, frame_count - 1 = last), the
# order a decoder hands them out. An MP4 indexes every frame and marks its keyframes, so a
# frame near the end is reached with one seek to the keyframe before it and a short decode
# from there (NOTES.md: 0.23 s for the last frame of a 60 s 1080p clip, against 1.96 s for
# a fixed second back). Only a file without such an index is decoded from its start.


class FrameOutOfRange(MediaError, IndexError):
    """A frame number outside the clip."""


@dataclass
class _Index:
    count: int  # frames shown
    keyframes: dict[int, int]  # decode timestamp of each keyframe -> its frame number
    seek_shift: int  # add to a decode timestamp to seek to that packet (see _index)


def _index(stream) -> _Index | None:
    """Frame count and keyframe positions from the container's index, or None when the index
    does not list every frame (WebM lists only its cues)."""
    entries = stream.index_entries
    if not stream.frames or len(entries) != stream.frames:
        return None
    keyframes, count, first = {}, 0, None
    for entry in entries:
        if entry.is_discard:  # hidden by an edit list: never shown
            continue
        if first is None:
            first = entry.timestamp
        if entry.is_keyframe:
            # In decode order, a keyframe that closes its group has exactly the frames shown
            # before it in front of it: its position is its frame number (checked on use).
            keyframes[entry.timestamp] = count
        count += 1
    if not count or first not in keyframes:
        return None
    # MP4 seeks by presentation time but indexes decode times: every frame is shown this
    # much after it is decoded (the delay B-frames add), as the first one shows.
    return _Index(count, keyframes, (stream.start_time or 0) - first)


def _decode_range(container, stream, index: _Index | None, start: int, stop: int | None):
    """Frames start..stop-1 (stop None: to the end) as (number, VideoFrame) pairs, decoded
    from the keyframe at or before `start`. None when the landing point cannot be numbered
    with certainty (an open group of pictures, an index that disagrees with the decoder):
    the caller then decodes from the start."""
    number, keyframe_pts = 0, None
    packets = container.demux(stream)
    if index is not None and start > 0:
        target = max((n, ts) for ts, n in index.keyframes.items() if n <= start)
        if target[0] > 0:
            container.seek(target[1] + index.seek_shift, stream=stream, backward=True)
            packets = container.demux(stream)
            first = next((p for p in packets if p.size), None)
            if first is None or not first.is_keyframe or first.dts not in index.keyframes:
                return None
            number, keyframe_pts = index.keyframes[first.dts], first.pts
            packets = itertools.chain([first], packets)
    wanted = []
    for packet in packets:
        for frame in stream.decode(packet):
            if keyframe_pts is not None:
                # A closed group shows its keyframe first; any other frame here would need
                # pictures from before the seek, and would be numbered wrongly.
                if frame.pts != keyframe_pts:
                    return None
                keyframe_pts = None
            if number >= start and (stop is None or number < stop):
                wanted.append((number, frame))
            number += 1
            if stop is not None and number >= stop:
                return wanted
    if index is not None and stop is None and number != index.count:
        return None
    return wanted


def _frames(path: Path, start: int, stop: int | None = None) -> tuple[list, float]:
    """(number, VideoFrame) pairs for frames start..stop-1 and the time of frame 0."""
    with _reading(path) as container:
        stream = _video(container)
        origin = float((stream.start_time or 0) * stream.time_base)
        frames = _decode_range(container, stream, _index(stream), start, stop)
    if frames is None:
        with _reading(path) as container:
            frames = _decode_range(container, _video(container), None, start, stop)
    return frames, origin


def frame_count(path: Path) -> int:
    """How many frames a video shows (from the index, else by reading every packet)."""
    with _reading(path) as container:
        stream = _video(container)
        index = _index(stream)
        if index is not None:
            return index.count
        return sum(1 for packet in container.demux(stream) if packet.size and not packet.is_discard)


def last_frame(path: Path) -> Image.Image:
    """The real last decoded frame of a video: one seek to the last keyframe, then decoding
    to the end on frame threads (same pixels as decoding everything)."""
    count = frame_count(path)
    if not count:
        raise MediaError("The video has no frames.")
    frames, _ = _frames(path, count - 1)
    if not frames:
        raise MediaError("The video has no frames.")
    return frames[-1][1].to_image()


def frame_at_index(path: Path, index: int) -> Image.Image:
    """Frame number `index` (0 = the first shown), or FrameOutOfRange."""
    count = frame_count(path)
    if not 0 <= index < count:
        raise FrameOutOfRange(f"Frame {index} is not in this clip: it has {count} frames (0 to {count - 1}).")
    frames, _ = _frames(path, index, index + 1)
    if not frames:
        raise FrameOutOfRange(f"Frame {index} could not be decoded from this clip.")
    return frames[0][1].to_image()


@dataclass
class StripFrame:
    index: int  # frame number in the clip
    time: float  # seconds from the clip's first frame
    image: Image.Image
    sharpness: float  # see sharpness()


def frame_strip(path: Path, seconds: float = 1.0, min_frames: int = 12) -> list[StripFrame]:
    """The last `seconds` of a clip, at least `min_frames` frames (all the clip has if it is
    shorter), in order and ending with the true last frame: the candidates for a hand-off.
    One seek and one decode pass."""
    with _reading(path) as container:
        fps = float(_rate(_video(container)))
    count = frame_count(path)
    wanted = min(count, max(min_frames, math.ceil(seconds * fps - 1e-6)))
    frames, origin = _frames(path, count - wanted)
    strip = []
    for number, frame in frames:
        image = frame.to_image()
        time = frame.time - origin if frame.time is not None else number / fps
        strip.append(StripFrame(number, round(time, 6), image, sharpness(image)))
    return strip


def _luma(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.float32)


def sharpness(image: Image.Image) -> float:
    """Variance of the Laplacian of the luma: high for crisp detail, low for a blurred or
    smeared frame (compare frames of one clip; the figure depends on the content)."""
    y = _luma(image)
    if y.shape[0] < 3 or y.shape[1] < 3:
        return 0.0
    laplacian = y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:] - 4 * y[1:-1, 1:-1]
    return float(laplacian.var())


def frame_at(path: Path, seconds: float) -> Image.Image:
    """The first frame at or after `seconds` (or the last one if the clip is shorter)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if seconds > 0 and stream.time_base:
            container.seek(int(seconds / stream.time_base), stream=stream, backward=True)
        frame = None
        for frame in container.decode(stream):
            if frame.time is not None and frame.time >= seconds:
                break
        if frame is None:
            raise MediaError("The video has no frames.")
        return frame.to_image()


def first_frame(path: Path) -> Image.Image:
    with av.open(str(path)) as container:
        frame = next(container.decode(container.streams.video[0]), None)
        if frame is None:
            raise MediaError("The video has no frames.")
        return frame.to_image()


def thumbnail_jpeg(image: Image.Image) -> bytes:
    """A JPEG that fits in THUMBNAIL_BOX, keeping the picture's shape."""
    thumb = image.convert("RGB")
    thumb.thumbnail(THUMBNAIL_BOX, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    thumb.save(out, "JPEG", quality=85, optimize=True)
    return out.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def fit_cover(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale and centre-crop `image` to exactly `size` (how a first frame fills the shot)."""
    return ImageOps.fit(image.convert("RGB"), size, Image.Resampling.LANCZOS)


@dataclass
class CheckedImage:
    content: bytes
    extension: str
    width: int
    height: int


def check_image(data: bytes) -> CheckedImage:
    """Decode an uploaded image fully and re-encode it without its metadata.

    Raises MediaError with a plain message for anything that is not a whole JPEG, PNG or
    WebP within the size limits. verify() alone misses truncated files and Django's
    ImageField accepts them (NOTES.md), so the pixels are really decoded here."""
    limit_mb = settings.STUDIO_MAX_IMAGE_BYTES / (1024 * 1024)
    if len(data) > settings.STUDIO_MAX_IMAGE_BYTES:
        raise MediaError(f"The image is larger than {limit_mb:g} MB.")
    max_pixels = settings.STUDIO_MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            # Pillow only warns between the limit and twice the limit: make it an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            previous = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = max_pixels
            try:
                probe_img = Image.open(io.BytesIO(data))
                if probe_img.format not in IMAGE_FORMATS:
                    raise MediaError("Please use a JPEG, PNG or WebP image.")
                if probe_img.width * probe_img.height > max_pixels:
                    raise MediaError(f"The image has more than {max_pixels / 1e6:g} megapixels.")
                probe_img.verify()
                image = Image.open(io.BytesIO(data))
                image.load()
            finally:
                Image.MAX_IMAGE_PIXELS = previous
    except MediaError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise MediaError(f"The image has more than {max_pixels / 1e6:g} megapixels.")
    except (OSError, SyntaxError, ValueError) as exc:
        raise MediaError("This file is not a complete JPEG, PNG or WebP image.") from exc

    fmt = image.format
    image = ImageOps.exif_transpose(image)  # keep the picture upright once EXIF is gone
    out = io.BytesIO()
    if fmt == "JPEG":
        image.convert("RGB").save(out, "JPEG", quality=95)
        extension = "jpg"
    else:
        has_alpha = image.mode in ("RGBA", "LA") or "transparency" in image.info
        image.convert("RGBA" if has_alpha else "RGB").save(out, "PNG")
        extension = "png"
    return CheckedImage(out.getvalue(), extension, image.width, image.height)


def load_image(path: Path) -> Image.Image:
    """Open an image a provider sent us, fully decoded, or raise MediaError."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise MediaError("The image could not be read.") from exc


# PyAV's names of the containers a creator may bring: MP4/MOV share one demuxer, WebM is
# read by the Matroska one.
VIDEO_CONTAINERS = {"mov,mp4,m4a,3gp,3g2,mj2": "mp4", "matroska,webm": "webm"}


def check_video(path: Path) -> VideoInfo:
    """An MP4, MOV or WebM within the size limit that PyAV can really decode, or MediaError
    with a plain message."""
    limit = settings.STUDIO_MAX_VIDEO_BYTES
    if path.stat().st_size > limit:
        raise MediaError(f"The video is larger than {limit / 1024 / 1024:g} MB.")
    try:
        with av.open(str(path)) as container:
            if container.format.name not in VIDEO_CONTAINERS:
                raise MediaError("Please use an MP4, MOV or WebM video.")
    except av.error.FFmpegError as exc:
        raise MediaError("This file is not a video the studio can read (MP4, MOV or WebM).") from exc
    info = probe(path)
    if info.duration <= 0:
        raise MediaError("The video has no length.")
    return info


# --- Measures of frames and seams -----------------------------------------------------------

# Figures of a seam are taken on both pictures scaled to this width (the height follows the
# first picture's shape): small enough to be fast and to ignore compression noise and a
# pixel or two of motion, large enough to see a jump.
SEAM_WIDTH = 160

# Thresholds measured on continued 854x480 simulator clips (bench/media.py seams; figures in
# bench/RESULTS.md, "Seam thresholds"), difference / colour shift, min-max:
#   consecutive frames of one clip (570)        0.05-2.6    0.00-0.59
#   a true hand-off (last, or picked and cut)   1.1-1.4     0.41-0.55
#   hand-off from 6 / 12 / 24 frames earlier    9.2-26      1.6-3.8
#   colour-drifted continuation, 2 / 4 / 8 %    0.6-7.1     0.15-4.2  (8 %: 5.4+, 2.5+)
#   a cut to a different clip                   49-53       32-69
# A seam jumps above either threshold: the difference one sits twice above any smooth seam
# and below every backward jump; the colour one is the usual just-noticeable ΔE76 (2.3),
# four times any smooth seam, under every 8 % grade change.
SEAM_JUMP_DIFFERENCE = 5.0
SEAM_JUMP_COLOUR = 2.3
# drift() of step k against step 1, continuing a photo-like shot with the simulator's push-in
# (steps 2-5): no grade 0.9 1.8 3.1 7.2; a 2 % grade per hop 1.1 2.4 4.5 8.3; 4 % per hop
# 1.9 3.7 6.7 10.6. Two frames cannot tell a grade from new content (the push-in compounds to
# 1.75x by step 5, and a scene of moving shapes measures 6 from step 2 on), so this warns
# from the third hop on where a 4 % grade per hop is, and a faithful chain is not, for three hops.
DRIFT_WARN = 3.5


# sRGB (D65) to CIE XYZ, and the D65 white point.
_XYZ_FROM_RGB = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]],
    dtype=np.float32,
)
_RGB_FROM_XYZ = np.linalg.inv(_XYZ_FROM_RGB).astype(np.float32)
_WHITE = np.array([0.95047, 1.0, 1.08883], dtype=np.float32)
_EPSILON = (6 / 29) ** 3


def _lab(rgb: np.ndarray) -> np.ndarray:
    """CIE Lab of sRGB values 0-255 (any shape ending in 3)."""
    c = np.asarray(rgb, dtype=np.float32) / 255
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _XYZ_FROM_RGB.T / _WHITE
    f = np.where(xyz > _EPSILON, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1
    )


def _rgb_from_lab(lab: np.ndarray) -> np.ndarray:
    """sRGB 0-255 (not clipped) of CIE Lab values."""
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    xyz = np.where(f > 6 / 29, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * _WHITE
    linear = xyz @ _RGB_FROM_XYZ.T
    c = np.where(
        linear <= 0.0031308, 12.92 * linear, 1.055 * np.maximum(linear, 0.0031308) ** (1 / 2.4) - 0.055
    )
    return c * 255


def _small(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """The picture scaled (area average) and, if its shape differs, centre-cropped to size."""
    picture = image.convert("RGB")
    if picture.size != size:
        picture = ImageOps.fit(picture, size, Image.Resampling.BOX)
    return np.asarray(picture, dtype=np.float32)


def _seam_size(image: Image.Image) -> tuple[int, int]:
    return SEAM_WIDTH, max(1, round(SEAM_WIDTH * image.height / image.width))


@dataclass
class SeamFigures:
    difference: float  # mean absolute difference, 0-255
    colour_shift: float  # distance between the mean colours in CIE Lab (ΔE76)
    jumps: bool  # above SEAM_JUMP_DIFFERENCE or SEAM_JUMP_COLOUR


def seam_figures(before: Image.Image, after: Image.Image) -> SeamFigures:
    """How much the picture changes across a seam: `before` is the parent's hand-off frame,
    `after` the next clip's first frame."""
    size = _seam_size(before)
    a, b = _small(before, size), _small(after, size)
    difference = float(np.abs(a - b).mean())
    shift = float(np.linalg.norm(_lab(a).reshape(-1, 3).mean(0) - _lab(b).reshape(-1, 3).mean(0)))
    jumps = difference > SEAM_JUMP_DIFFERENCE or shift > SEAM_JUMP_COLOUR
    return SeamFigures(round(difference, 3), round(shift, 3), jumps)


def drift(reference: Image.Image, image: Image.Image) -> float:
    """How far a step's look has wandered from step 1's: the distance between the mean
    colours in Lab (ΔE76) plus the change in contrast (spread of L). Compare with DRIFT_WARN;
    new content moves it too (see there)."""
    looks = []
    for picture in (reference, image):
        lab = _lab(_small(picture, _seam_size(picture))).reshape(-1, 3)
        looks.append((lab.mean(0), lab[:, 0].std()))
    (mean_a, spread_a), (mean_b, spread_b) = looks
    return round(float(np.linalg.norm(mean_a - mean_b) + abs(spread_a - spread_b)), 3)


# --- Matching colour to the previous clip ---------------------------------------------------

# What the studio encodes (a colour-matched clip, a re-encoded join): x264 at a fast preset
# and a quality close to the source's.
ENCODE_PRESET = "veryfast"
ENCODE_CRF = "18"
_X264_FORMATS = ("yuv420p", "yuvj420p", "yuv422p", "yuv444p")

# A correction may push at most this fraction of channel values into 0 or 255 beyond what
# the picture already had; a stronger one is weakened until it fits.
CLIP_LIMIT = 0.002
# A flat channel stretched to a busy one (or the reverse) would mostly amplify noise.
_SPREAD_RATIO = (0.5, 2.0)
_LUT_SIZE = 33  # grid of the 3D table that carries a correction to every frame of a clip


@dataclass
class _Correction:
    """Per-channel mean and spread transfer in Lab: lab' = (lab - mean) * scale + target."""

    mean: np.ndarray
    scale: np.ndarray
    target: np.ndarray

    def rgb(self, rgb: np.ndarray) -> np.ndarray:
        return _rgb_from_lab((_lab(rgb) - self.mean) * self.scale + self.target)

    def weakened(self, strength: float) -> _Correction:
        return _Correction(
            self.mean, 1 + strength * (self.scale - 1), self.mean + strength * (self.target - self.mean)
        )


def _clipped(rgb: np.ndarray) -> float:
    """Fraction of channel values at 0 or 255 (after rounding)."""
    return float(((rgb < 0.5) | (rgb >= 254.5)).mean())


def _fit_correction(image: Image.Image, reference: Image.Image) -> _Correction:
    """The transfer that gives `image` the colour statistics of `reference`, weakened (by
    bisection on its strength) until it clips no more than CLIP_LIMIT."""
    source = _small(image, (256, max(1, round(256 * image.height / image.width))))
    lab_s = _lab(source).reshape(-1, 3)
    lab_r = _lab(_small(reference, (256, max(1, round(256 * reference.height / reference.width))))).reshape(
        -1, 3
    )
    spread_s, spread_r = lab_s.std(0), lab_r.std(0)
    scale = np.clip(spread_r / np.maximum(spread_s, 1e-3), *_SPREAD_RATIO)
    full = _Correction(lab_s.mean(0), scale, lab_r.mean(0))
    already = _clipped(source)

    def fits(correction: _Correction) -> bool:
        return _clipped(correction.rgb(source)) - already <= CLIP_LIMIT

    if fits(full):
        return full
    low, high = 0.0, 1.0
    for _ in range(8):
        middle = (low + high) / 2
        low, high = (middle, high) if fits(full.weakened(middle)) else (low, middle)
    return full.weakened(low)


def colour_transfer(image: Image.Image, reference: Image.Image) -> Image.Image:
    """`image` with the mean colour and contrast of `reference` (per-channel mean and spread
    transfer in Lab), weakened where it would clip."""
    correction = _fit_correction(image, reference)
    rgb = correction.rgb(np.asarray(image.convert("RGB"), dtype=np.float32))
    return Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8))


def _cube(correction: _Correction, path: Path) -> None:
    """Write the correction as a 3D table (.cube, red fastest) for FFmpeg's lut3d filter."""
    steps = np.linspace(0, 255, _LUT_SIZE, dtype=np.float32)
    b, g, r = np.meshgrid(steps, steps, steps, indexing="ij")
    grid = np.stack([r, g, b], axis=-1).reshape(-1, 3)
    table = np.clip(correction.rgb(grid) / 255, 0, 1)
    with path.open("w") as out:
        out.write(f"LUT_3D_SIZE {_LUT_SIZE}\n")
        np.savetxt(out, table, fmt="%.6f")


@dataclass
class ColourMatchResult:
    before: float  # seam difference of the clip's first frame against the reference
    after: float  # ...and of the corrected copy's first frame
    clipped: float  # fraction of channel values the correction pushed to 0 or 255


def colour_match_video(source: Path, reference: Image.Image, out: Path, progress=None) -> ColourMatchResult:
    """A copy of the clip at `out` corrected towards `reference` (the parent's hand-off
    frame): the correction is fitted once, on the clip's first frame, and the same one is
    applied to every frame, so the clip keeps its own movement of light. The sound is
    copied as it is."""
    with tempfile.TemporaryDirectory(prefix="colour-") as tmp, _reading(source) as container:
        stream = _video(container)
        audio = container.streams.audio[0] if container.streams.audio else None
        cc = stream.codec_context
        pix_fmt = cc.pix_fmt if cc.pix_fmt in _X264_FORMATS else "yuv420p"
        total = stream.frames or 0
        result, graph, done = None, None, 0  # result: set on the first frame
        with av.open(str(out), "w", format="mp4") as output:
            video_out = output.add_stream("libx264", rate=_rate(stream))
            video_out.width, video_out.height, video_out.pix_fmt = cc.width, cc.height, pix_fmt
            video_out.codec_context.time_base = stream.time_base
            video_out.options = {"preset": ENCODE_PRESET, "crf": ENCODE_CRF}
            video_out.codec_context.thread_type = "FRAME"
            audio_out = output.add_stream_from_template(audio) if audio is not None else None
            for packet in container.demux(*([stream] + ([audio] if audio is not None else []))):
                if packet.stream.type == "audio":  # (the end-of-file packets carry no index)
                    if packet.size:
                        packet.stream = audio_out
                        output.mux(packet)
                    continue
                for frame in stream.decode(packet):
                    rgb = frame.reformat(format="rgb24")
                    if graph is None:
                        first = rgb.to_image()
                        correction = _fit_correction(first, reference)
                        cube = Path(tmp) / "match.cube"
                        _cube(correction, cube)
                        graph = _lut_graph(cube, rgb, stream.time_base)
                    graph.push(rgb)
                    corrected = graph.pull()
                    # lut3d tags its output full-range RGB; left so, the way back to YUV
                    # would keep full range under a limited-range stream (washed colours).
                    corrected.colorspace, corrected.color_range = rgb.colorspace, rgb.color_range
                    if result is None:
                        shown = np.asarray(corrected.to_image())
                        clipped = max(0.0, _clipped(shown) - _clipped(np.asarray(first)))
                        result = ColourMatchResult(
                            seam_figures(reference, first).difference, 0.0, round(clipped, 5)
                        )
                    yuv = corrected.reformat(format=pix_fmt)
                    yuv.pts, yuv.time_base = frame.pts, frame.time_base
                    for out_packet in video_out.encode(yuv):
                        output.mux(out_packet)
                    done += 1
                    if progress and total:
                        progress(min(1.0, done / total))
            for out_packet in video_out.encode():
                output.mux(out_packet)
    if result is None:
        raise MediaError("The video has no frames.")
    # Measured on the file as written: what the seam will really show.
    result.after = seam_figures(reference, first_frame(out)).difference
    return result


def _lut_graph(cube: Path, template, time_base):
    graph = av.filter.Graph()
    source = graph.add_buffer(
        width=template.width, height=template.height, format="rgb24", time_base=time_base
    )
    lut = graph.add("lut3d", file=str(cube), interp="tetrahedral")
    sink = graph.add("buffersink")
    source.link_to(lut)
    lut.link_to(sink)
    graph.configure()
    return graph


# --- Sound ----------------------------------------------------------------------------------

AUDIO_RATE = 48000  # the studio's sound: AAC at 48 kHz, stereo


def _pcm(stream, packets) -> tuple[np.ndarray, int] | None:
    """Decoded and resampled to 48 kHz stereo: (samples, source sample of the first), or
    None when nothing decodes. FFmpeg's errors pass through (corrupt sound)."""
    resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)
    chunks, start = [], None
    for packet in [*packets, None]:
        for frame in stream.decode(packet):
            if start is None:
                start = round(frame.pts * frame.time_base * AUDIO_RATE) if frame.pts is not None else 0
            chunks += [piece.to_ndarray() for piece in resampler.resample(frame)]
    chunks += [piece.to_ndarray() for piece in resampler.resample(None)]
    if not chunks:
        return None
    pcm = np.concatenate(chunks, axis=1).astype(np.float32)
    # The last unit decodes in full, but the track ends where its packets say: past that is
    # the encoder's padding, not sound.
    last = max(packets, key=lambda p: p.pts)
    if last.duration:
        end = round((last.pts + last.duration) * last.time_base * AUDIO_RATE)
        pcm = pcm[:, : max(0, end - start)]
    return pcm, start


def sound_samples(path: Path) -> np.ndarray | None:
    """The sound of a video as 48 kHz stereo samples (2, n) from its time 0, or None when it
    has none that can be decoded."""
    with _reading(path) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        try:
            decoded = _pcm(stream, [p for p in container.demux(stream) if p.size])
        except (av.error.FFmpegError, ValueError):
            return None
    if decoded is None:
        return None
    pcm, start = decoded
    if start >= 0:
        return np.concatenate([np.zeros((2, start), dtype=np.float32), pcm], axis=1)
    return pcm[:, -start:]


# --- Joining a chain into one video ---------------------------------------------------------

# Decoders whose output we can encode again with a wheel-provided encoder; anything else is
# re-encoded to H.264, which every browser plays.
ENCODER_FOR = {"h264": "libx264", "hevc": "libx265"}


@dataclass
class JoinPart:
    path: Path
    # Frame 0 repeats the previous part's last frame (a clip continued from it): show it once.
    drop_seam: bool = False


@dataclass
class JoinResult:
    method: str  # "copy" or "reencode"
    reason: str  # why re-encoded ("" for a stream copy)
    frames: int
    duration: float
    dropped: int  # seam frames left out


@dataclass
class _PacketScan:
    signature: tuple
    time_base: Fraction
    first_pts: int
    frame_ticks: int  # one frame, in time_base units
    end_pts: int  # max pts + one frame
    last_is_final: bool  # the last packet in decoding order is the last frame shown


def _scan(path: Path) -> _PacketScan:
    """Codec parameters and packet timing of a video, without decoding it."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            cc = stream.codec_context
            rate = stream.average_rate or stream.guessed_rate or Fraction(24)
            tb = stream.time_base
            frame_ticks = max(1, round(1 / (rate * tb)))
            signature = (
                cc.name,
                cc.profile,
                cc.width,
                cc.height,
                cc.pix_fmt,
                bytes(cc.extradata or b""),
                Fraction(rate),
            )
            first_pts, max_pts, last_pts, last_duration = None, None, None, None
            for packet in container.demux(stream):
                if packet.size == 0 or packet.pts is None:
                    continue
                first_pts = packet.pts if first_pts is None else min(first_pts, packet.pts)
                if max_pts is None or packet.pts >= max_pts:
                    max_pts, last_duration = packet.pts, packet.duration
                last_pts = packet.pts
    except (av.error.FFmpegError, IndexError) as exc:
        raise MediaError("A clip of the chain could not be read; the file may be damaged.") from exc
    if max_pts is None:
        raise MediaError("A clip of the chain has no frames.")
    return _PacketScan(
        signature, tb, first_pts, frame_ticks, max_pts + (last_duration or frame_ticks), last_pts == max_pts
    )


def join_plan(parts: list[JoinPart]) -> tuple[str, str, list[_PacketScan]]:
    """Stream copy when every part has the same codec parameters and each seam frame can be
    left out without breaking another frame; otherwise re-encode (and say why)."""
    scans = [_scan(part.path) for part in parts]
    if any(scan.signature != scans[0].signature for scan in scans):
        return "reencode", "the clips differ in codec, size or frame rate", scans
    for previous, part in zip(scans, parts[1:]):
        # A continued clip starts on a keyframe every later frame depends on, so in a stream
        # copy the repeated picture is left out at the end of the previous clip instead. That
        # is only safe when no other frame refers to it: when it is the last packet decoded
        # (no B-frames after it). Otherwise only decoding and encoding again can remove it.
        if part.drop_seam and not previous.last_is_final:
            return "reencode", "the seam frames are referenced by other frames (B-frames)", scans
    return "copy", "", scans


def join_videos(parts: list[JoinPart], out_path: Path, progress=None) -> JoinResult:
    """Join videos end to end into one MP4 at `out_path` (video only), leaving out the
    repeated seam frames. `progress(fraction)` is called as the work goes on."""
    if not parts:
        raise MediaError("There is nothing to join.")
    method, reason, scans = join_plan(parts)
    if method == "copy":
        dropped = _join_by_copy(parts, scans, out_path, progress)
    else:
        dropped = _join_by_reencode(parts, out_path, progress)
    info = probe(out_path)
    frames = info.frames or _count_frames(out_path)
    return JoinResult(method, reason, frames, info.duration, dropped)


def _count_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for packet in container.demux(container.streams.video[0]) if packet.size)


def _join_by_copy(parts, scans, out_path: Path, progress) -> int:
    """Copy the packets, shifting their timestamps so each part starts where the last ended
    (the NOTES.md recipe: guard against non-increasing dts, which B-frame clips produce)."""
    tb = scans[0].time_base
    offset = 0  # where the current part starts, in `tb`
    last_dts = None
    dropped = 0
    with av.open(str(parts[0].path)) as first, av.open(str(out_path), "w", format="mp4") as out:
        out_stream = out.add_stream_from_template(first.streams.video[0])
        for index, (part, scan) in enumerate(zip(parts, scans)):
            drop_last = index + 1 < len(parts) and parts[index + 1].drop_seam
            last_pts = scan.end_pts - scan.frame_ticks
            with av.open(str(part.path)) as container:
                stream = container.streams.video[0]
                scale = stream.time_base / tb
                for packet in container.demux(stream):
                    if packet.size == 0 or packet.pts is None:
                        continue
                    if drop_last and packet.pts == last_pts:
                        dropped += 1
                        continue
                    pts = offset + round((packet.pts - scan.first_pts) * scale)
                    dts = offset + round(
                        ((packet.dts if packet.dts is not None else packet.pts) - scan.first_pts) * scale
                    )
                    if last_dts is not None and dts <= last_dts:
                        dts = last_dts + 1
                    pts = max(pts, dts)
                    packet.pts, packet.dts = pts, dts
                    packet.duration = round((packet.duration or scan.frame_ticks) * scale)
                    packet.time_base = tb
                    packet.stream = out_stream
                    out.mux(packet)
                    last_dts = dts
            span = scan.end_pts - scan.first_pts - (scan.frame_ticks if drop_last else 0)
            offset += round(span * scans[index].time_base / tb)
            if progress:
                progress((index + 1) / len(parts))
    return dropped


def _join_by_reencode(parts, out_path: Path, progress) -> int:
    """Decode every part and encode one video in the first part's format (codec, size,
    pixel format, frame rate), skipping the repeated seam frames."""
    with av.open(str(parts[0].path)) as first:
        stream = first.streams.video[0]
        cc = stream.codec_context
        width, height, pix_fmt = cc.width, cc.height, cc.pix_fmt or "yuv420p"
        rate = Fraction(stream.average_rate or stream.guessed_rate or 24)
        encoder = ENCODER_FOR.get(cc.name, "libx264")
    if encoder not in av.codecs_available:
        encoder = "libx264"
    if encoder == "libx264" and pix_fmt not in ("yuv420p", "yuvj420p", "yuv422p", "yuv444p"):
        pix_fmt = "yuv420p"
    dropped = 0
    index = 0
    frame_tb = 1 / rate
    with av.open(str(out_path), "w", format="mp4") as out:
        out_stream = out.add_stream(encoder, rate=rate)
        out_stream.width, out_stream.height, out_stream.pix_fmt = width, height, pix_fmt
        if encoder in ("libx264", "libx265"):
            out_stream.options = {"preset": "veryfast", "crf": "18"}
        for number, part in enumerate(parts):
            try:
                with av.open(str(part.path)) as container:
                    for position, frame in enumerate(container.decode(container.streams.video[0])):
                        if position == 0 and part.drop_seam and number > 0:
                            dropped += 1
                            continue
                        if (frame.width, frame.height, frame.format.name) != (width, height, pix_fmt):
                            frame = frame.reformat(width=width, height=height, format=pix_fmt)
                        frame.pts = index
                        frame.time_base = frame_tb
                        frame.pict_type = av.video.frame.PictureType.NONE
                        index += 1
                        for packet in out_stream.encode(frame):
                            out.mux(packet)
            except av.error.FFmpegError as exc:
                raise MediaError(f"Clip {number + 1} of the chain could not be decoded.") from exc
            if progress:
                progress((number + 1) / len(parts) * 0.98)
        for packet in out_stream.encode():
            out.mux(packet)
    if index == 0:
        raise MediaError("The chain has no frames to join.")
    return dropped


def is_h264_mp4(path: Path) -> bool:
    with av.open(str(path)) as container:
        return (
            container.format.name in ("mov,mp4,m4a,3gp,3g2,mj2",)
            and container.streams.video[0].codec_context.name == "h264"
        )


def to_h264_mp4(source: Path, destination: Path) -> None:
    """Re-encode a video (a WebM, a MOV in another codec) as H.264 MP4, the one format
    every provider takes for "extend a video". Picture only: extension uses no sound."""
    with av.open(str(source)) as src, av.open(str(destination), "w", format="mp4") as dst:
        in_stream = src.streams.video[0]
        rate = in_stream.average_rate or 24
        out = dst.add_stream("libx264", rate=rate)
        out.width = in_stream.codec_context.width // 2 * 2
        out.height = in_stream.codec_context.height // 2 * 2
        out.pix_fmt = "yuv420p"
        out.options = {"preset": "veryfast", "crf": "20"}
        time_base = Fraction(1, int(round(float(rate))) or 24)
        for index, frame in enumerate(src.decode(in_stream)):
            frame = frame.reformat(width=out.width, height=out.height, format="yuv420p")
            # Number the frames afresh at a constant rate: the source's own timestamps (and
            # time base) do not carry over to a new container.
            frame.pts, frame.time_base = index, time_base
            for packet in out.encode(frame):
                dst.mux(packet)
        for packet in out.encode():
            dst.mux(packet)
