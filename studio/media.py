"""Video, sound and image work with PyAV, Pillow and numpy: probe, frames and frame strips,
the last frame, thumbnails, seam and colour measures, colour matching, joins with sound,
repeats in extend results, image checks.

No ffmpeg binary is called: PyAV's wheel carries what we need (NOTES.md).
"""

from __future__ import annotations

import bisect
import io
import itertools
import math
import os
import shutil
import struct
import tempfile
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from django.conf import settings
from django.core.files.storage import FileSystemStorage
from PIL import ExifTags, Image, ImageCms, ImageOps

THUMBNAIL_BOX = (640, 640)
IMAGE_FORMATS = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP"}
# No video model takes a first frame larger than 4K, so a larger image is stored scaled down
# to this long side: less to decode, store and send (check_image says so in scaled_from).
MAX_STORED_SIDE = 3840


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


def _frames(path: Path, span) -> tuple[list, float, float]:
    """(number, VideoFrame) pairs for the frames span(count, fps) -> (start, stop) names
    (stop None: to the end), the time of frame 0 and the frame rate. The file is opened once when its
    index can be trusted (each open decodes a frame to learn the stream's shape)."""
    with _reading(path) as container:
        stream = _video(container)
        origin, fps = float((stream.start_time or 0) * stream.time_base), float(_rate(stream))
        index = _index(stream)
        if index is not None:
            frames = _decode_range(container, stream, index, *span(index.count, fps))
            if frames is not None:
                return frames, origin, fps
    wanted = span(frame_count(path), fps)
    with _reading(path) as container:
        return _decode_range(container, _video(container), None, *wanted), origin, fps


def frame_count(path: Path) -> int:
    """How many frames a video shows (from the index, else by reading every packet)."""
    with _reading(path) as container:
        stream = _video(container)
        index = _index(stream)
        if index is not None:
            return index.count
        return sum(1 for packet in container.demux(stream) if packet.size and not packet.is_discard)


def _last(count: int, wanted: int = 1) -> tuple[int, None]:
    if not count:
        raise MediaError("The video has no frames.")
    return max(0, count - wanted), None


def last_frame(path: Path) -> Image.Image:
    """The real last decoded frame of a video: one seek to the last keyframe, then decoding
    to the end on frame threads (same pixels as decoding everything)."""
    frames = _frames(path, lambda count, fps: _last(count))[0]
    if not frames:
        raise MediaError("The video has no frames.")
    return frames[-1][1].to_image()


def frame_at_index(path: Path, index: int) -> Image.Image:
    """Frame number `index` (0 = the first shown), or FrameOutOfRange."""

    def span(count: int, fps: float) -> tuple[int, int]:
        if not 0 <= index < count:
            raise FrameOutOfRange(
                f"Frame {index} is not in this clip: it has {count} frames (0 to {count - 1})."
            )
        return index, index + 1

    frames = _frames(path, span)[0]
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

    def span(count: int, fps: float) -> tuple[int, None]:
        return _last(count, max(min_frames, math.ceil(seconds * fps - 1e-6)))

    frames, origin, fps = _frames(path, span)
    strip = []
    for number, frame in frames:
        image = frame.to_image()
        time = frame.time - origin if frame.time is not None else number / fps
        strip.append(StripFrame(number, round(time, 6), image, sharpness(image)))
    return strip


def sharpness(image: Image.Image) -> float:
    """Variance of the Laplacian of the luma: high for crisp detail, low for a blurred or
    smeared frame (compare frames of one clip; the figure depends on the content)."""
    # In integers (exact, and twice as fast as floats on a 1080p frame of a strip).
    y = np.asarray(image.convert("L"), dtype=np.int16)
    if y.shape[0] < 3 or y.shape[1] < 3:
        return 0.0
    laplacian = y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:] - 4 * y[1:-1, 1:-1]
    count = laplacian.size
    total = int(laplacian.sum(dtype=np.int64))
    squares = int(np.einsum("ij,ij->", laplacian, laplacian, dtype=np.int64))
    return squares / count - (total / count) ** 2


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
    # The upright size the image arrived at, when it was stored smaller (MAX_STORED_SIDE).
    scaled_from: tuple[int, int] | None = None


def check_image(source: bytes | str | os.PathLike) -> CheckedImage:
    """Decode an uploaded image (its bytes, or the path of a file on disk such as an
    upload's temporary file) once, and re-encode it upright, in sRGB, without metadata,
    and at most MAX_STORED_SIDE on its long side. WebP is kept as PNG.

    Raises MediaError with a plain message for anything that is not a whole JPEG, PNG or
    WebP within the size limits."""
    image, fmt, original = _decode(source, (MAX_STORED_SIDE, MAX_STORED_SIDE), IMAGE_FORMATS)
    out = io.BytesIO()
    if fmt == "JPEG":
        _clean(image, "RGB").save(out, "JPEG", quality=95)
        extension = "jpg"
    else:
        _clean(image, image.mode).save(out, "PNG")
        extension = "png"
    scaled_from = original if image.size != original else None
    return CheckedImage(out.getvalue(), extension, image.width, image.height, scaled_from)


def load_image(path: Path) -> Image.Image:
    """Open an image a provider sent us (any format Pillow reads), fully decoded, upright and
    in sRGB, or raise MediaError."""
    image, _fmt, _original = _decode(path, None, None)
    return _clean(image, "RGB")


def _decode(
    source: bytes | str | os.PathLike, box: tuple[int, int] | None, formats: dict | None
) -> tuple[Image.Image, str, tuple[int, int]]:
    """The one decode behind the image functions: (the picture upright, in sRGB, RGB or
    RGBA, fitting in `box` when one is given; its format; its upright size before any
    scaling). `formats` are the only decoders allowed to read the file (None: any, for our
    providers' files, which also have no byte limit of their own)."""
    if formats:
        limit = settings.STUDIO_MAX_IMAGE_BYTES
        size = len(source) if isinstance(source, bytes) else os.stat(source).st_size
        if size > limit:
            raise MediaError(f"The image is larger than {limit / (1024 * 1024):g} MB.")
    max_pixels = settings.STUDIO_MAX_IMAGE_PIXELS
    too_many_pixels = MediaError(f"The image has more than {max_pixels / 1e6:g} megapixels.")
    with io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb") as fh:
        try:
            with warnings.catch_warnings():
                # The cap is the header check below, exactly at the setting. Not
                # Image.MAX_IMAGE_PIXELS: Pillow only raises at twice it (NOTES.md), and
                # changing that global would race between threads.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(fh, formats=list(formats) if formats else None)
            if image.width * image.height > max_pixels:
                raise too_many_pixels
            stored = image.size
            turned = image.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8)
            original = (stored[1], stored[0]) if turned else stored
            if box and (scale := min(box[0] / original[0], box[1] / original[1])) < 1:
                # libjpeg decodes at 1/2, 1/4 or 1/8 scale for about the cost of that size:
                # the largest that still covers the box, then resampling does the rest.
                # (Other formats ignore draft and decode whole.)
                image.draft(None, (math.ceil(stored[0] * scale), math.ceil(stored[1] * scale)))
            # The only decode. load() reads every byte, so a truncated file fails here,
            # where verify() would pass it (NOTES.md); and no second decode after verify().
            image.load()
        except MediaError:
            raise
        except Image.DecompressionBombError:
            raise too_many_pixels
        except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
            if formats:
                raise MediaError("This file is not a complete JPEG, PNG or WebP image.") from exc
            raise MediaError("The image could not be read.") from exc
    fmt = image.format
    image, profile = _working_mode(image)
    ImageOps.exif_transpose(image, in_place=True)  # upright, since the EXIF goes
    if box:
        image.thumbnail(box, Image.Resampling.LANCZOS)
    if profile is not None:
        image = _to_srgb(image, profile)
    return image, fmt, original


def _working_mode(image: Image.Image) -> tuple[Image.Image, ImageCms.ImageCmsProfile | None]:
    """The image as RGB or RGBA, or as the CMYK or grey its embedded profile describes, and
    that profile when it can be applied to these pixels (else None: it is dropped, and the
    picture looks as it does in a viewer that ignores profiles)."""
    profile = None
    if icc := image.info.get("icc_profile"):
        try:
            profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass
    space = profile.profile.xcolor_space.strip() if profile else None
    if (space, image.mode) in (("CMYK", "CMYK"), ("GRAY", "L")):
        return image, profile
    mode = "RGBA" if image.has_transparency_data else "RGB"
    if image.mode != mode:
        image = image.convert(mode)  # keeps info, so the orientation is still there
    return image, profile if space == "RGB" else None


_SRGB = ImageCms.createProfile("sRGB")


def _to_srgb(image: Image.Image, profile: ImageCms.ImageCmsProfile) -> Image.Image:
    """The picture converted from its profile to sRGB (alpha kept), so it looks the same once
    the profile is stripped."""
    out_mode = "RGBA" if image.mode == "RGBA" else "RGB"
    try:
        # Perceptual: the profile's own gamut mapping where it has one (printer CMYK);
        # matrix profiles (cameras, displays) fall back to colorimetric.
        transform = ImageCms.buildTransform(profile, _SRGB, image.mode, out_mode, ImageCms.Intent.PERCEPTUAL)
        return ImageCms.applyTransform(image, transform)
    except (ImageCms.PyCMSError, OSError, ValueError):
        return image.convert(out_mode)


def _clean(image: Image.Image, mode: str) -> Image.Image:
    """`image` in `mode` with nothing but its pixels: Pillow's encoders copy some metadata
    from `info` (a JPEG's comment, a PNG's ICC profile) unless it is gone."""
    image = image if image.mode == mode else image.convert(mode)
    image.info = {}
    return image


# PyAV's names of the containers a creator may bring: MP4/MOV share one demuxer, WebM is
# read by the Matroska one.
VIDEO_CONTAINERS = {"mov,mp4,m4a,3gp,3g2,mj2": "mp4", "matroska,webm": "webm"}


def check_video(path: Path) -> VideoInfo:
    """An MP4, MOV or WebM within the studio's limits (checked from its header first) that
    PyAV can really decode, or MediaError with a plain message."""
    check_video_limits(path)
    info = probe(path)
    if info.duration <= 0:
        raise MediaError("The video has no length.")
    return info


def check_video_limits(path: Path) -> None:
    """Refuse a video beyond the studio's limits (size, length, picture size, frame rate)
    from what its container header says, before a single frame is decoded: a small file can
    claim hours of 8K video, and decoding it would be the attack."""
    limit = settings.STUDIO_MAX_VIDEO_BYTES
    if path.stat().st_size > limit:
        raise MediaError(f"The video is larger than {limit / 1024 / 1024:g} MB.")
    try:
        with av.open(str(path)) as container:
            if container.format.name not in VIDEO_CONTAINERS:
                raise MediaError("Please use an MP4, MOV or WebM video.")
            if not container.streams.video:
                raise MediaError("The file has no video in it.")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            else:
                seconds = (container.duration or 0) / av.time_base
            rate = float(stream.average_rate or stream.guessed_rate or 0)
    except av.error.FFmpegError as exc:
        raise MediaError("This file is not a video the studio can read (MP4, MOV or WebM).") from exc
    longest = settings.STUDIO_MAX_VIDEO_SECONDS
    if seconds > longest:
        raise MediaError(f"The video is {seconds:.0f} s long; the studio takes videos up to {longest:g} s.")
    side = settings.STUDIO_MAX_VIDEO_SIDE
    if max(width, height) > side:
        raise MediaError(
            f"The video is {width} × {height}; the studio takes videos up to {side} pixels on the long side."
        )
    fps = settings.STUDIO_MAX_VIDEO_FPS
    if rate > fps:
        raise MediaError(f"The video has {rate:.0f} frames per second; the studio takes up to {fps:g}.")


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
# Each input is read once: its packets are held while its part is written. The picture is
# stream-copied when every clip shares its codec parameters. A cut that falls inside a group
# of pictures (the parent cut after its hand-off frame, repeated leading frames left out)
# re-encodes only the frames between the cut and the nearest clean group boundary; in H.264
# those frames carry their own parameter sets, listed next to the clips' own in the one
# avc1 sample description (see _Splicer). Sound is AAC 48 kHz stereo: AAC units are copied
# where a clip's own sound plays untouched, and only the units around each seam (where the
# crossfade is) or of clips in another format are encoded (see _Soundtrack).

# Decoders whose output we can encode again with a wheel-provided encoder; anything else is
# re-encoded to H.264, which every browser plays.
ENCODER_FOR = {"h264": "libx264", "hevc": "libx265"}


@dataclass
class JoinPart:
    path: Path
    # Keep only frames 0..keep_frames-1: the parent is cut right after its hand-off frame.
    keep_frames: int | None = None
    # Leave out this many leading frames: 1 when frame 0 repeats the hand-off frame, more
    # when an extend result repeats its source clip (see repeated_source_frames).
    skip_frames: int = 0
    # Frame 0 repeats the previous part's last kept frame: show that picture once. Unlike
    # skip_frames=1 the join may leave out either copy, whichever keeps more of the stream
    # copy; ignored when skip_frames is set.
    drop_seam: bool = False


@dataclass
class JoinResult:
    method: str  # "copy", "smartcut" (a copy with the frames next to cuts re-encoded) or "reencode"
    reason: str  # why anything was re-encoded ("" for a plain stream copy)
    frames: int
    duration: float  # of the picture, seconds
    dropped: int  # repeated frames left out (skip_frames and drop_seam)
    has_audio: bool = False
    audio_duration: float = 0.0
    silent_parts: list[int] = field(default_factory=list)  # parts (0-based) that play silence
    # Each part's sound: "ok", "resampled", "none" (it has none) or "corrupt" (unreadable).
    sound_states: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # plain sentences for the creator


class _Restart(Exception):
    """The stream copy cannot be frame-exact after all: join again by re-encoding."""


class _Clip:
    """One part of a join, open: header facts at once, its packets after read()."""

    def __init__(self, number: int, part: JoinPart, container):
        self.number, self.part, self.container = number, part, container
        self.video = _video(container)
        self.audio = container.streams.audio[0] if container.streams.audio else None
        self.index = _index(self.video)
        self.packets: list = []  # video, in decode order
        self.audio_packets: list = []

    @property
    def label(self) -> str:
        return f"clip {self.number + 1}"

    def signature(self) -> tuple:
        cc = self.video.codec_context
        return (
            cc.name,
            cc.profile,
            cc.width,
            cc.height,
            cc.pix_fmt,
            bytes(cc.extradata or b""),
            _rate(self.video),
        )

    def demuxed(self):
        """The video packets in decode order, read once (the sound's go to audio_packets);
        count, first and end are set once the last has been read. Times are noted before
        a packet is handed on: the join retimes packets in place."""
        streams = [self.video] + ([self.audio] if self.audio is not None else [])
        self.count, self.first, last, last_duration = 0, None, None, 0
        try:
            for packet in self.container.demux(*streams):
                if not packet.size or packet.pts is None:
                    continue
                if packet.stream_index != self.video.index:
                    self.audio_packets.append(packet)
                    continue
                pts = packet.pts
                self.count += 1
                self.first = pts if self.first is None else min(self.first, pts)
                if last is None or pts > last:
                    last, last_duration = pts, packet.duration
                yield packet
        except av.error.FFmpegError as exc:
            raise MediaError(
                f"Clip {self.number + 1} of the chain could not be read; the file may be damaged."
            ) from exc
        if not self.count:
            raise MediaError(f"Clip {self.number + 1} of the chain has no frames.")
        self.end = last + (last_duration or round(1 / (_rate(self.video) * self.video.time_base)))

    def read(self) -> None:
        """Hold all the video packets: a part with cuts is planned from them."""
        self.packets = list(self.demuxed())
        self.order = sorted(packet.pts for packet in self.packets)
        if len(set(self.order)) != len(self.order):
            raise _Restart(f"the frames of {self.label} have ambiguous timestamps")

    def pts_at(self, number: int) -> int:
        """Presentation time of frame `number` (as read: the join retimes the packets
        themselves); the clip's end for number == count."""
        if number == 0:
            return self.first
        return self.order[number] if number < self.count else self.end

    def kept(self, extra_head: int, extra_tail: int) -> tuple[int, int]:
        """Frames a..b-1 of this clip that the join shows."""
        part = self.part
        b = self.count if part.keep_frames is None else part.keep_frames
        if b > self.count:
            raise FrameOutOfRange(
                f"The hand-off frame {b - 1} is not in {self.label}: it has {self.count} frames."
            )
        a, b = part.skip_frames + extra_head, b - extra_tail
        if a >= b:
            raise MediaError(
                f"No frame of {self.label} is left to show once the repeated frames are left out."
            )
        return a, b

    def head_cost(self) -> int:
        """Frames to re-encode if frame 0 is left out in a stream copy: up to the next
        keyframe (from the index, without reading the clip)."""
        later = sorted(n for n in (self.index.keyframes.values() if self.index else ()) if n > 0)
        return (later[0] if later else self.index.count if self.index else 10**9) - 1


def _check_parts(parts: list[JoinPart]) -> None:
    for number, part in enumerate(parts, 1):
        if part.keep_frames is not None and part.keep_frames < 1:
            raise MediaError(f"Clip {number} of the chain would keep no frames.")
        if part.skip_frames < 0:
            raise MediaError(f"Clip {number} of the chain cannot skip a negative number of frames.")


def join_videos(parts: list[JoinPart], out_path: Path, progress=None) -> JoinResult:
    """Join videos end to end into one MP4 at `out_path`, with sound, showing frames
    skip_frames..keep_frames-1 of each part (a repeated seam picture once). `progress(fraction)`
    is called as the work goes on."""
    if not parts:
        raise MediaError("There is nothing to join.")
    _check_parts(parts)
    try:
        return _join(parts, out_path, progress, None)
    except _Restart as restart:
        return _join(parts, out_path, progress, str(restart))


def _join(parts, out_path: Path, progress, reencode_reason: str | None) -> JoinResult:
    with ExitStack() as stack:
        clips = []
        for number, part in enumerate(parts):
            container = stack.enter_context(_reading(part.path, f"Clip {number + 1} of the chain"))
            clips.append(_Clip(number, part, container))
        reason = reencode_reason
        if reason is None and any(c.signature() != clips[0].signature() for c in clips):
            reason = "the clips differ in codec, size or frame rate"
        # The muxer interleaves sound and picture however far the sound lags (see below).
        output = stack.enter_context(
            av.open(str(out_path), "w", format="mp4", container_options={"max_interleave_delta": "0"})
        )
        writer = _CopyWriter(clips, output) if reason is None else _EncodeWriter(clips, output, reason)
        soundtrack = _Soundtrack(output) if any(c.audio is not None for c in clips) else None
        # A part's sound (decoded whole, to catch corrupt sound, and its seam encoded) is
        # worked out on a second thread while the next part's picture is written: PyAV
        # lets go of the GIL in both.
        sound_worker = stack.enter_context(ThreadPoolExecutor(max_workers=1))
        dropped, waiting = 0, None
        for clip in clips:
            following = clips[clip.number + 1] if clip.number + 1 < len(clips) else None
            start = writer.position_seconds()
            if writer.can_stream(clip, following):
                a, b = writer.copy_whole(clip)
            else:
                clip.read()
                head, tail = writer.seam_drops(clip, following)
                a, b = clip.kept(head, tail)
                dropped += head + tail + clip.part.skip_frames
                writer.write(clip, a, b)
                clip.packets = []  # done with them: let them go
            sound = None
            if soundtrack is not None:
                sound = sound_worker.submit(soundtrack.add, clip, a, start, writer.position_seconds())
            if waiting is not None:
                writer.mux(waiting.result())
            waiting = sound
            if progress:
                progress((clip.number + 1) / len(clips) * 0.99)
        if waiting is not None:
            writer.mux(waiting.result())
        if soundtrack is not None:
            writer.mux(soundtrack.finish())
        writer.close()
        method, reason = writer.method()
        result = JoinResult(
            method, reason, writer.frames, round(float(writer.position_seconds()), 6), dropped
        )
    if soundtrack is not None:
        soundtrack.report(result)
    else:
        result.notes.append("None of the clips has sound, so the joined video is silent.")
    return result


class _Writer:
    """The picture side of a join: where the output stands, and how each part is written."""

    def __init__(self, output):
        self.output = output
        self.frames = 0

    def mux(self, packets) -> None:
        for packet in packets:
            self.output.mux(packet)

    def can_stream(self, clip: _Clip, following: _Clip | None) -> bool:
        return False


class _CopyWriter(_Writer):
    """Stream copy: packets keep their bytes and get new timestamps."""

    def __init__(self, clips: list[_Clip], output):
        super().__init__(output)
        template = clips[0].video
        self.stream = output.add_stream_from_template(template)
        self.time_base = template.time_base
        self.rate = _rate(template)
        self.offset = 0  # where the next part starts, in time_base
        self.last_dts = None
        self.reencoded = 0
        self.pending_head = 0  # the next part leaves out its frame 0 (a seam decided here)
        self.splicer, self.splice_problem = None, ""
        if any(c.part.keep_frames is not None or c.part.skip_frames or c.part.drop_seam for c in clips):
            self.splicer, self.splice_problem = _Splicer.for_stream(template)
            if self.splicer is not None:
                self.stream.codec_context.extradata = self.splicer.config

    def position_seconds(self) -> Fraction:
        return self.offset * self.time_base

    def can_stream(self, clip: _Clip, following: _Clip | None) -> bool:
        """Whether the clip is copied whole (no cut at either end), so its packets can go
        straight from the reader to the muxer instead of being held."""
        part = clip.part
        seam = following is not None and following.part.drop_seam and not following.part.skip_frames
        return (
            clip.index is not None
            and not (self.pending_head or part.skip_frames or seam)
            and part.keep_frames in (None, clip.index.count)
        )

    def copy_whole(self, clip: _Clip) -> tuple[int, int]:
        packets = clip.demuxed()
        # Frame 0 is shown first but need not be decoded first: B-frames reorder only a few
        # frames, so the first packets hold it (checked once all have been read).
        ahead = list(itertools.islice(packets, 16))
        base = min(packet.pts for packet in ahead)
        retime, _ = self._retimer(clip, base)
        for packet in itertools.chain(ahead, packets):
            self._mux_video(retime(packet))
        if clip.first != base:
            raise _Restart(f"the frames of {clip.label} are stored far out of order")
        self.offset += self._span_ticks(clip, clip.first, clip.end)
        self.frames += clip.count
        return 0, clip.count

    def seam_drops(self, clip: _Clip, following: _Clip | None) -> tuple[int, int]:
        """(frames left out at this clip's start, at its end) for repeated seam pictures:
        either copy of the picture may go, so take the one that re-encodes fewer frames."""
        head, tail, self.pending_head = self.pending_head, 0, 0
        if following is not None and following.part.drop_seam and not following.part.skip_frames:
            a, b = clip.kept(head, 0)
            extra = self._to_encode(clip, a, b - 1) - self._to_encode(clip, a, b)
            if b - 1 > a and extra <= following.head_cost():
                tail = 1
            else:
                self.pending_head = 1
        return head, tail

    def _to_encode(self, clip: _Clip, a: int, b: int) -> int:
        core = _copy_core(clip, a, b)
        return b - a if core is None else (core[2] - a) + (b - core[3])

    def _retimer(self, clip: _Clip, base: int):
        """(retime a packet, output time of a pts) for `clip`, its time `base` landing where
        the output stands. Integer arithmetic: Fractions per packet cost a tenth of a copy."""
        num, den = (clip.video.time_base / self.time_base).as_integer_ratio()
        offset, ticks = self.offset, round(1 / (self.rate * self.time_base))

        def rescaled(value: int) -> int:
            return value if num == den else (2 * value * num + den) // (2 * den)

        def retime(packet):
            dts = packet.dts if packet.dts is not None else packet.pts
            packet.pts, packet.dts = offset + rescaled(packet.pts - base), offset + rescaled(dts - base)
            packet.duration = rescaled(packet.duration) if packet.duration else ticks
            packet.time_base = self.time_base
            return packet

        return retime, lambda pts: offset + rescaled(pts - base)

    def _span_ticks(self, clip: _Clip, start: int, stop: int) -> int:
        return round((stop - start) * clip.video.time_base / self.time_base)

    def write(self, clip: _Clip, a: int, b: int) -> None:
        retime, at = self._retimer(clip, clip.pts_at(a))
        core = _copy_core(clip, a, b)
        segments = [(a, b)] if core is None else [(a, core[2]), (core[3], b)]
        segments = [(start, stop) for start, stop in segments if start < stop]
        encoded = {}
        if segments:
            if self.splicer is None:
                raise _Restart(
                    f"a cut in {clip.label} falls inside a group of pictures and {self.splice_problem}"
                )
            encoded = self.splicer.encode(clip, segments, at)
            self.reencoded += sum(stop - start for start, stop in segments)
        if core is None:
            ordered = encoded.get((a, b), [])
        else:
            copied = [retime(packet) for packet in clip.packets[core[0] : core[1]]]
            ordered = encoded.get((a, core[2]), []) + copied + encoded.get((core[3], b), [])
        for packet in ordered:
            self._mux_video(packet)
        self.offset += self._span_ticks(clip, clip.pts_at(a), clip.pts_at(b))
        self.frames += b - a

    def _mux_video(self, packet) -> None:
        # Parts whose decoders run with different delays (B-frames) would give the muxer a
        # decode time that goes back at the join; nudge it forward, never past its display.
        if self.last_dts is not None and packet.dts <= self.last_dts:
            packet.dts = self.last_dts + 1
        packet.pts = max(packet.pts, packet.dts)
        self.last_dts = packet.dts
        packet.stream = self.stream
        self.output.mux(packet)

    def close(self) -> None:
        pass

    def method(self) -> tuple[str, str]:
        if not self.reencoded:
            return "copy", ""
        count = self.reencoded
        frames = f"{count} frame next to a cut was" if count == 1 else f"{count} frames next to the cuts were"
        return "smartcut", f"{frames} re-encoded; the rest is a stream copy"


def _copy_core(clip: _Clip, a: int, b: int) -> tuple[int, int, int, int] | None:
    """(x, y, c0, c1): packets x..y-1 in decode order show exactly frames c0..c1-1, with
    a <= c0 and c1 <= b, and decode on their own: x starts a closed group (its frame number
    is its decode position, and it is an IDR picture when x > 0). The longest such run, or
    None when no clean group starts among frames a..b-1."""
    rank = {pts: number for number, pts in enumerate(clip.order)}
    ranks = [rank[packet.pts] for packet in clip.packets]
    x = next(
        (
            x
            for x, packet in enumerate(clip.packets)
            if ranks[x] == x >= a and packet.is_keyframe and (x == 0 or _starts_clean(clip, packet))
        ),
        None,
    )
    if x is None or ranks[x] >= b:
        return None
    y, top = x + 1, -1
    for j in range(x, len(ranks)):
        top = max(top, ranks[j])
        if top >= b:
            break
        if top == ranks[x] + j - x:  # x..j show a gapless run of frames
            y = j + 1
    return x, y, ranks[x], ranks[x] + y - x


def _starts_clean(clip: _Clip, packet) -> bool:
    """No later packet refers to one before this keyframe (an H.264 IDR picture). Other
    codecs' keyframes are taken at their word."""
    if clip.video.codec_context.name != "h264":
        return True
    config = bytes(clip.video.codec_context.extradata or b"")
    size = (config[4] & 3) + 1 if len(config) > 4 and config[0] == 1 else 4
    data, position = bytes(packet), 0
    while position + size < len(data):
        length = int.from_bytes(data[position : position + size], "big")
        if data[position + size] & 0x1F == 5:
            return True
        position += size + length
    return False


class _EncodeWriter(_Writer):
    """Decode every part and encode one video in the first part's format (codec, size,
    pixel format, frame rate), frame threads on both sides (NOTES.md)."""

    def __init__(self, clips: list[_Clip], output, reason: str):
        super().__init__(output)
        self.reason = reason
        first = clips[0].video
        cc = first.codec_context
        self.rate = _rate(first)
        encoder = ENCODER_FOR.get(cc.name, "libx264")
        if encoder not in av.codecs_available:
            encoder = "libx264"
        pix_fmt = cc.pix_fmt or "yuv420p"
        if encoder == "libx264" and pix_fmt not in _X264_FORMATS:
            pix_fmt = "yuv420p"
        self.shape = (cc.width, cc.height, pix_fmt)
        self.stream = output.add_stream(encoder, rate=self.rate)
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.shape
        if encoder in ("libx264", "libx265"):
            self.stream.options = {"preset": ENCODE_PRESET, "crf": ENCODE_CRF}
        self.stream.codec_context.thread_type = "FRAME"
        self.time_base = 1 / self.rate

    def position_seconds(self) -> Fraction:
        return self.frames / self.rate

    def seam_drops(self, clip: _Clip, following: _Clip | None) -> tuple[int, int]:
        # Everything is decoded anyway: the parent ends on its hand-off frame and the
        # child's repeat of it goes.
        return (1 if clip.number and clip.part.drop_seam and not clip.part.skip_frames else 0), 0

    def write(self, clip: _Clip, a: int, b: int) -> None:
        number = 0
        try:
            for packet in [*clip.packets, None]:
                for frame in clip.video.decode(packet):
                    if a <= number < b:
                        if (frame.width, frame.height, frame.format.name) != self.shape:
                            frame = frame.reformat(
                                width=self.shape[0], height=self.shape[1], format=self.shape[2]
                            )
                        frame.pts, frame.time_base = self.frames, self.time_base
                        frame.pict_type = av.video.frame.PictureType.NONE
                        self.frames += 1
                        self.mux(self.stream.encode(frame))
                    number += 1
                if number >= b:
                    break
        except av.error.FFmpegError as exc:
            raise MediaError(f"Clip {clip.number + 1} of the chain could not be decoded.") from exc
        if number < b:
            raise MediaError(f"Only {number} frames of {clip.label} could be decoded.")

    def close(self) -> None:
        self.mux(self.stream.encode())

    def method(self) -> tuple[str, str]:
        return "reencode", self.reason


# --- H.264 frames that sit between copied ones ---------------------------------------------

_X264_PROFILES = {66: "baseline", 77: "main", 100: "high"}


def _annexb_units(data: bytes) -> list[bytes]:
    # A NAL unit never contains 00 00 01 (emulation prevention) nor ends in a zero byte.
    return [unit.rstrip(b"\x00") for unit in data.split(b"\x00\x00\x01") if unit.rstrip(b"\x00")]


def _exp_golomb(data: bytes, count: int) -> list[int]:
    """The first `count` unsigned Exp-Golomb values of an RBSP."""
    bits = "".join(f"{byte:08b}" for byte in data.replace(b"\x00\x00\x03", b"\x00\x00")[:16])
    values, position = [], 0
    for _ in range(count):
        zeros = bits.index("1", position) - position
        values.append(int(bits[position + zeros : position + 2 * zeros + 1], 2) - 1)
        position += 2 * zeros + 1
    return values


def _avc_sets(config: bytes) -> tuple[list[bytes], list[bytes], bytes]:
    """SPS list, PPS list and what follows them, from an avcC record."""
    sets, position = [], 5
    for mask in (0x1F, 0xFF):  # the SPS count shares its byte with reserved bits
        count = config[position] & mask
        position += 1
        units = []
        for _ in range(count):
            length = int.from_bytes(config[position : position + 2], "big")
            units.append(config[position + 2 : position + 2 + length])
            position += 2 + length
        sets.append(units)
    return sets[0], sets[1], config[position:]


class _Splicer:
    """Encodes the frames between a cut and the nearest clean group boundary so they can sit
    in the same H.264 track as stream-copied packets. libx264 cannot reproduce another
    encoder's parameter sets, so its frames use parameter sets of their own, under ids the
    clips do not use (x264's sps-id), listed next to the clips' in the one avc1 sample
    description: every frame finds its sets there, and the switches happen at IDR pictures,
    where H.264 allows them."""

    def __init__(self, template, options: dict, config: bytes, headers: bytes):
        cc = template.codec_context
        self.width, self.height, self.pix_fmt = cc.width, cc.height, cc.pix_fmt
        self.rate, self.time_base = _rate(template), template.time_base
        self.options, self.config, self.headers = options, config, headers
        self.length_size = (config[4] & 3) + 1

    @classmethod
    def for_stream(cls, template) -> tuple[_Splicer | None, str]:
        """A splicer for clips shaped like `template`, or None and why there is none."""
        cc = template.codec_context
        config = bytes(cc.extradata or b"")
        if cc.name != "h264" or "libx264" not in av.codecs_available:
            return None, f"only H.264 can be re-encoded around a cut (these clips are {cc.name})"
        if len(config) < 7 or config[0] != 1 or config[1] not in _X264_PROFILES or config[3] < 10:
            return None, "the clips' H.264 profile cannot be matched"
        if cc.pix_fmt not in ("yuv420p", "yuvj420p"):
            return None, f"the clips' pixel format ({cc.pix_fmt}) cannot be matched"
        sps, pps, rest = _avc_sets(config)
        used = {_exp_golomb(unit[4:], 1)[0] for unit in sps} | {_exp_golomb(unit[1:], 1)[0] for unit in pps}
        free = min(set(range(1, 32)) - used)
        options = {
            "preset": ENCODE_PRESET,
            "crf": ENCODE_CRF,
            "profile": _X264_PROFILES[config[1]],
            "level": f"{config[3] / 10:.1f}",
            "x264-params": f"sps-id={free}",
        }
        splicer = cls(template, options, config, b"")
        encoder = splicer._encoder()
        splicer.headers = bytes(encoder.extradata or b"")
        units = _annexb_units(splicer.headers)
        ours_sps = [u for u in units if u[0] & 0x1F == 7]
        ours_pps = [u for u in units if u[0] & 0x1F == 8]
        if (
            len(ours_sps) != 1
            or len(ours_pps) != 1
            or ours_sps[0][1] != config[1]
            or ours_sps[0][3] > config[3]
            or _exp_golomb(ours_sps[0][4:], 1)[0] != free
        ):
            return None, "the frames re-encoded for it would not fit the clips' H.264 profile and level"

        def record(units: list[bytes]) -> bytes:
            return b"".join(len(unit).to_bytes(2, "big") + unit for unit in units)

        splicer.config = (
            config[:5]
            + bytes([0xE0 | (len(sps) + 1)])
            + record(sps + ours_sps)
            + bytes([len(pps) + 1])
            + record(pps + ours_pps)
            + rest
        )
        return splicer, ""

    def _encoder(self):
        encoder = av.CodecContext.create("libx264", "w")
        encoder.width, encoder.height, encoder.pix_fmt = self.width, self.height, self.pix_fmt
        encoder.time_base, encoder.framerate = self.time_base, self.rate
        encoder.options = dict(self.options)
        # Parameter sets out of band (in `extradata`), as MP4 wants them.
        encoder.flags |= av.codec.context.Flags.global_header
        encoder.thread_type = "FRAME"
        encoder.open()
        return encoder

    def encode(self, clip: _Clip, segments: list[tuple[int, int]], at) -> dict:
        """Packets for each (start, stop) range of frames, timed by at(pts), from one decode
        pass starting at the last clean keyframe before the first range."""
        rank = {pts: number for number, pts in enumerate(clip.order)}
        first = min(start for start, _ in segments)
        begin = max(
            x
            for x, packet in enumerate(clip.packets)
            if x == 0
            or (packet.is_keyframe and rank[packet.pts] == x <= first and _starts_clean(clip, packet))
        )
        results = {segment: [] for segment in segments}
        encoders, left = {}, len(segments)
        try:
            for packet in [*clip.packets[begin:], None]:
                for frame in clip.video.decode(packet):
                    number = rank.get(frame.pts, -1)
                    segment = next((s for s in segments if s[0] <= number < s[1]), None)
                    if segment is None:
                        continue
                    if segment not in encoders:
                        encoders[segment] = self._encoder()
                        if bytes(encoders[segment].extradata or b"") != self.headers:
                            raise _Restart("the re-encoded frames came out with other parameter sets")
                    frame.pts, frame.time_base = at(frame.pts), self.time_base
                    frame.pict_type = av.video.frame.PictureType.NONE
                    results[segment] += encoders[segment].encode(frame)
                    if number == segment[1] - 1:
                        results[segment] += encoders[segment].encode(None)
                        left -= 1
                if not left:
                    break
        except av.error.FFmpegError as exc:
            raise MediaError(f"Clip {clip.number + 1} of the chain could not be decoded.") from exc
        if left:
            raise MediaError(f"Some frames of {clip.label} could not be decoded.")
        ticks = round(1 / (self.rate * self.time_base))
        return {segment: [self._packet(p, ticks) for p in packets] for segment, packets in results.items()}

    def _packet(self, encoded, ticks: int):
        units = [u for u in _annexb_units(bytes(encoded)) if u[0] & 0x1F not in (7, 8, 9)]
        packet = av.Packet(b"".join(len(u).to_bytes(self.length_size, "big") + u for u in units))
        packet.pts, packet.dts = encoded.pts, encoded.dts
        packet.duration = encoded.duration or ticks
        packet.time_base = self.time_base
        packet.is_keyframe = encoded.is_keyframe
        return packet


# --- The joined sound ----------------------------------------------------------------------
# One AAC 48 kHz stereo track on the picture's timeline. Each part's sound is placed where
# its first kept frame lands and plays for exactly as long as its kept frames; a part
# without usable sound plays silence that long. Seams get a raised-cosine crossfade; where a
# part has no sound beyond its edge (a clip used to its end), its edge is mirrored, which
# keeps the waveform continuous through the fade.
#
# AAC unit n of the output covers samples [n*1024 - 1024, n*1024) once decoded, and is built
# from the 2048 samples from n*1024 - 1024 on (MDCT halves overlap-add). A unit is copied as
# it is when those 2048 samples are one part's own sound, untouched; the others (around
# seams, and the whole of parts in another format or without sound) are encoded from the
# mixed timeline, each run of them starting _PREROLL units early so the encoder's window
# choice has settled when the copied neighbour's overlap is met (measured: starting cold
# leaves an error of 0.13 on a 0.2 tone in the first unit; two units early, 0.009, the
# level of AAC's own noise). Copying needs every part's units on one 1024-sample grid, so a
# copied part's sound moves by up to 512 samples (10.7 ms, under a frame) and no more:
# the shift does not add up along a chain.

_UNIT = 1024  # samples per AAC unit
CROSSFADE = 240  # samples each side of a seam: a 10 ms crossfade
_PREROLL = 2
_RUN_LIMIT = 512  # units per encoding session, to bound memory on long encoded runs
_AAC_LC_48K_STEREO = b"\x11\x90"  # AudioSpecificConfig: AAC-LC, 48 kHz, 2 channels
_AUDIO_TIME_BASE = Fraction(1, AUDIO_RATE)


class _Pcm:
    """A part's decoded sound at 48 kHz stereo, in pieces by source sample. AAC already at
    48 kHz stereo keeps its decoded frames as they are: they become arrays only where a
    seam is mixed, which is all of a copied part that is ever looked at."""

    def __init__(self, pieces: list, end: int):
        self.starts = [start for start, _ in pieces]
        self.pieces = [piece for _, piece in pieces]
        self.start = self.starts[0] if pieces else 0
        self.end = end

    @classmethod
    def decoded(cls, clip: _Clip) -> _Pcm | None:
        """Decode the whole track (so that corrupt sound shows here, not in the output).
        FFmpeg's errors pass through."""
        cc = clip.audio.codec_context
        if cc.name == "aac" and (cc.sample_rate, cc.channels) == (AUDIO_RATE, 2):
            pieces = []
            num, den = clip.audio.time_base.as_integer_ratio()
            for packet in [*clip.audio_packets, None]:
                for frame in clip.audio.decode(packet):
                    start = (frame.pts * num * AUDIO_RATE + den // 2) // den if frame.pts is not None else 0
                    pieces.append((start, frame))
            if not pieces:
                return None
            end = pieces[-1][0] + pieces[-1][1].samples
        else:
            decoded = _pcm(clip.audio, clip.audio_packets)
            if decoded is None:
                return None
            pieces, end = [(decoded[1], decoded[0])], decoded[1] + decoded[0].shape[1]
        # The last unit decodes in full, but the track ends where its packets say: past
        # that is the encoder's padding, not sound.
        last = max(clip.audio_packets, key=lambda p: p.pts)
        if last.duration:
            end = min(end, round((last.pts + last.duration) * last.time_base * AUDIO_RATE))
        return cls(pieces, end)

    def read(self, low: int, high: int) -> np.ndarray:
        """Samples low..high-1 (zero where there are none)."""
        out = np.zeros((2, high - low), dtype=np.float32)
        first = max(0, bisect.bisect_right(self.starts, low) - 1)
        for number in range(first, len(self.pieces)):
            start = self.starts[number]
            if start >= min(high, self.end):
                break
            piece = self.pieces[number]
            if isinstance(piece, av.AudioFrame):
                piece = self.pieces[number] = piece.to_ndarray()
            a, b = max(low, start), min(high, start + piece.shape[1], self.end)
            if a < b:
                out[:, a - low : b - low] = piece[:, a - start : b - start]
        return out


@dataclass
class _Sound:
    start: int  # output samples where the part begins and ends
    end: int
    offset: int  # output sample = source sample + offset
    pcm: _Pcm | None
    units: dict | None  # the part's AAC units by source sample, when they can be copied
    fade_in: int = 0
    fade_out: int | None = None  # None while the next part is unknown

    def clean(self) -> tuple[int, int]:
        """Output samples where this part's own sound plays alone and untouched."""
        if self.pcm is None:
            return 0, 0
        low = max(self.start + self.fade_in, self.pcm.start + self.offset)
        fade_out = CROSSFADE if self.fade_out is None else self.fade_out
        return low, min(self.end - fade_out, self.pcm.end + self.offset)


def _decode_sound(clip: _Clip) -> tuple[_Pcm | None, str]:
    """(the sound, state): state is "none", "corrupt", "resampled" or "ok"."""
    if clip.audio is None or not clip.audio_packets:
        return None, "none"
    try:
        pcm = _Pcm.decoded(clip)
    except (av.error.FFmpegError, ValueError):
        return None, "corrupt"
    if pcm is None:
        return None, "corrupt"
    cc = clip.audio.codec_context
    return pcm, "ok" if (cc.sample_rate, cc.channels) == (AUDIO_RATE, 2) else "resampled"


def _aac_units(clip: _Clip) -> dict | None:
    """The clip's AAC units by source sample when they can go into the joined track as they
    are: AAC-LC 48 kHz stereo, one unit after another."""
    cc = clip.audio.codec_context
    if cc.name != "aac" or bytes(cc.extradata or b"")[:2] != _AAC_LC_48K_STEREO:
        return None
    units, expected = {}, None
    num, den = clip.audio.time_base.as_integer_ratio()
    for packet in clip.audio_packets:
        sample, remainder = divmod(packet.pts * num * AUDIO_RATE, den)
        if remainder or (expected is not None and sample != expected):
            return None
        units[sample] = packet
        expected = sample + _UNIT
    return units


def _raised_cosine(u: np.ndarray) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(np.pi * np.clip(u, 0, 1))


def _encode_units(pcm: np.ndarray, first: int, count: int) -> list:
    """AAC units `first`..`first + count - 1` of a fresh encoding of `pcm`."""
    encoder = av.CodecContext.create("aac", "w")
    encoder.sample_rate, encoder.layout, encoder.format = AUDIO_RATE, "stereo", "fltp"
    encoder.time_base, encoder.bit_rate = _AUDIO_TIME_BASE, 128000
    # The default coder spends ~17 ms on the few units of a seam, starting cold; "fast"
    # halves that, and a few milliseconds of sound lose nothing audible by it.
    encoder.options = {"aac_coder": "fast"}
    encoder.open()
    packets = []
    for position in range(0, pcm.shape[1], _UNIT):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm[:, position : position + _UNIT]), format="fltp", layout="stereo"
        )
        frame.sample_rate, frame.pts = AUDIO_RATE, position
        packets += encoder.encode(frame)
    packets += encoder.encode(None)
    return packets[first : first + count]


class _Soundtrack:
    def __init__(self, output):
        self.stream = output.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
        self.stream.codec_context.bit_rate = 128000
        self.parts: list[_Sound] = []
        self.next_unit = 0  # the first output unit not decided yet
        self.run: list[int] = []  # undecided units to be encoded together
        self.ready: list = []
        self.total: int | None = None
        self.copied = self.encoded = 0
        self.states: list[str] = []

    def add(self, clip: _Clip, first: int, start: Fraction, end: Fraction) -> list:
        """Place the sound of `clip`, whose frame `first` lands at output time `start`, and
        return the units that are now decided. Parts come in order, from one thread."""
        begin, stop = round(start * AUDIO_RATE), round(end * AUDIO_RATE)
        pcm, state = _decode_sound(clip)
        units = _aac_units(clip) if state == "ok" else None
        offset = round(begin - clip.pts_at(first) * clip.video.time_base * AUDIO_RATE)
        if units:
            misfit = (min(units) + offset) % _UNIT
            offset += -misfit if misfit <= _UNIT // 2 else _UNIT - misfit
        sound = _Sound(begin, stop, offset, pcm, units)
        if self.parts:
            previous = self.parts[-1]
            half = min(CROSSFADE, (previous.end - previous.start) // 2, (stop - begin) // 2)
            previous.fade_out = sound.fade_in = half
        self.parts.append(sound)
        self.states.append(state)
        clip.audio_packets = []  # the units to copy are held in `units`
        self._decide(stop - CROSSFADE)
        return self.take()

    def take(self) -> list:
        ready, self.ready = self.ready, []
        return ready

    def finish(self) -> list:
        self.parts[-1].fade_out = 0
        self.total = self.parts[-1].end
        self._decide(None)
        self._encode_run()
        return self.take()

    def _decide(self, known: int | None) -> None:
        """Decide units whose samples are all known (up to `known`; None: the end)."""
        while True:
            first_sample = self.next_unit * _UNIT - _UNIT
            if known is None and first_sample >= self.total:
                break
            if known is not None and first_sample + 2 * _UNIT > known:
                break
            unit = self._copyable(first_sample)
            if unit is None:
                self.run.append(self.next_unit)
                if len(self.run) >= _RUN_LIMIT:
                    self._encode_run()
            else:
                self._encode_run()
                self._emit(unit, self.next_unit)
                self.copied += 1
            self.next_unit += 1
        # Parts wholly behind what is still to be encoded are no longer needed.
        horizon = (self.run[0] if self.run else self.next_unit) * _UNIT - (_PREROLL + 1) * _UNIT
        for sound in self.parts[:-1]:
            if sound.end + (sound.fade_out or 0) < horizon:
                sound.pcm = sound.units = None

    def _copyable(self, first_sample: int):
        for sound in reversed(self.parts):  # the unit is (nearly always) the newest part's
            if sound.pcm is None:
                continue
            low, high = sound.clean()
            if sound.units and low <= first_sample and first_sample + 2 * _UNIT <= high:
                return sound.units.get(first_sample - sound.offset)
        return None

    def _encode_run(self) -> None:
        if not self.run:
            return
        first, count = self.run[0], len(self.run)
        begin = first * _UNIT - _UNIT - _PREROLL * _UNIT
        pcm = self._mix(begin, begin + (_PREROLL + count + 1) * _UNIT)
        units = _encode_units(pcm, _PREROLL + 1, count)
        if len(units) != count:
            raise MediaError("The sound of the chain could not be encoded.")
        for number, unit in zip(self.run, units):
            self._emit(unit, number)
        self.encoded += count
        self.run = []

    def _emit(self, packet, number: int) -> None:
        first_sample = number * _UNIT - _UNIT
        packet.pts = packet.dts = first_sample
        packet.duration = _UNIT if self.total is None else min(_UNIT, self.total - first_sample)
        packet.time_base = _AUDIO_TIME_BASE
        packet.stream = self.stream
        self.ready.append(packet)

    def _mix(self, begin: int, end: int) -> np.ndarray:
        """The timeline's samples begin..end-1: every part's sound under its envelope."""
        out = np.zeros((2, end - begin), dtype=np.float32)
        for sound in self.parts:
            if sound.pcm is None:
                continue
            fade_out = CROSSFADE if sound.fade_out is None else sound.fade_out
            low, high = max(begin, sound.start - sound.fade_in), min(end, sound.end + fade_out)
            if low >= high:
                continue
            t = np.arange(low, high)
            # Past its edges a part plays its own sound if it has more, else its edge mirrored.
            source = t - sound.offset
            outside = (t < sound.start) | (t >= sound.end)
            missing = outside & ((source < sound.pcm.start) | (source >= sound.pcm.end))
            mirrored = np.where(t < sound.start, 2 * sound.start - 1 - t, 2 * sound.end - 1 - t)
            source = np.where(missing, mirrored - sound.offset, source)
            first, last = int(source.min()), int(source.max()) + 1
            values = sound.pcm.read(first, last)[:, source - first]
            envelope = np.ones(len(t), dtype=np.float32)
            if sound.fade_in:
                envelope *= _raised_cosine((t - sound.start + sound.fade_in) / (2 * sound.fade_in))
            if fade_out:
                envelope *= 1 - _raised_cosine((t - sound.end + fade_out) / (2 * fade_out))
            out[:, low - begin : high - begin] += values * envelope
        return out

    def report(self, result: JoinResult) -> None:
        result.has_audio = True
        result.sound_states = list(self.states)
        if not any(state in ("ok", "resampled") for state in self.states):
            result.notes.append(
                "None of the clips' sound could be read: the joined video's sound track is silent."
            )
        result.audio_duration = round(self.total / AUDIO_RATE, 6)
        for number, state in enumerate(self.states):
            clip = f"Clip {number + 1}"
            if state == "none":
                result.silent_parts.append(number)
                result.notes.append(f"{clip} has no sound: it plays silence in the joined video.")
            elif state == "corrupt":
                result.silent_parts.append(number)
                result.notes.append(
                    f"The sound of {clip.lower()} could not be read: it plays silence instead."
                )
            elif state == "resampled":
                result.notes.append(f"The sound of {clip.lower()} was converted to 48 kHz stereo.")


# --- Extend results that repeat their source ------------------------------------------------

# Seam difference (see seam_figures) under which a frame of the result counts as the
# source's frame re-encoded. Measured (bench/media.py seams, bench/RESULTS.md): a repeat
# measures 1.25-1.41 against its source frame, 1.59-2.62 against the source's next frame;
# a clip's first frame against its last (where a plain continuation starts) 11-12. So the
# first and middle frames are checked against this threshold, and the end of the repeat is
# found by alignment, not by the threshold alone.
REPEAT_DIFFERENCE = 3.0
_REPEAT_CHECKED = 3  # frames aligned at the end of the repeat


def repeated_source_frames(source: Path, result: Path, requested_seconds: float | None = None) -> int:
    """How many leading frames of an extend `result` repeat its `source` clip (0 when it
    holds only the new segment). A repeat must be long enough to hold the source and more;
    when `requested_seconds` is given, last nearer source + requested than requested alone;
    and show the source's first, middle and last pictures where its length puts them. The
    repeat ends where the source's last frames align best (within two frames of where the
    frame rates put it)."""
    with _reading(source) as container:
        source_rate = _rate(_video(container))
    with _reading(result) as container:
        result_rate = _rate(_video(container))
    source_count, result_count = frame_count(source), frame_count(result)
    expected = round(source_count * result_rate / source_rate)
    if result_count <= expected:
        return 0
    if requested_seconds is not None:
        seconds = result_count / result_rate
        if abs(seconds - requested_seconds) < abs(seconds - source_count / source_rate - requested_seconds):
            return 0

    def same(a: Image.Image, b: Image.Image) -> float:
        return seam_figures(a, b).difference

    if same(first_frame(source), first_frame(result)) > REPEAT_DIFFERENCE:
        return 0
    middle = source_count // 2
    if same(
        frame_at_index(source, middle), frame_at_index(result, round(middle * result_rate / source_rate))
    ) > (REPEAT_DIFFERENCE):
        return 0
    checked = min(_REPEAT_CHECKED, source_count)
    tail = [frame.to_image() for _, frame in _frames(source, lambda count, fps: _last(count, checked))[0]]
    low, high = max(checked, expected - 2), min(expected + 2, result_count - 1)
    window = {
        n: frame.to_image() for n, frame in _frames(result, lambda count, fps: (low - checked, high))[0]
    }
    scores = {
        end: max(same(tail[k], window[end - checked + k]) for k in range(checked))
        for end in range(low, high + 1)
        if all(end - checked + k in window for k in range(checked))
    }
    if not scores:
        return 0
    end = min(scores, key=scores.get)
    return end if scores[end] <= REPEAT_DIFFERENCE else 0


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
