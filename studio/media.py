"""Video and image work with PyAV and Pillow: probe, last frame, thumbnail, image checks.

No ffmpeg binary is called: PyAV's wheel carries what we need (NOTES.md).
"""

from __future__ import annotations

import io
import math
import os
import shutil
import struct
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
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


def probe(path: Path) -> VideoInfo:
    """Duration, size and codec of a video, or MediaError when it cannot be decoded."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError("The file has no video in it.")
            stream = container.streams.video[0]
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration:
                duration = container.duration / av.time_base
            else:
                duration = 0.0
            # Decoding one frame proves the stream is really readable, not just labelled.
            first = next(container.decode(stream), None)
            if first is None:
                raise MediaError("The video could not be decoded.")
            return VideoInfo(
                duration=round(duration, 3),
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                codec=stream.codec_context.name,
                frames=stream.frames or 0,
            )
    except MediaError:
        raise
    except (av.error.FFmpegError, StopIteration, ValueError) as exc:
        raise MediaError("The video could not be read; the file may be damaged.") from exc


def last_frame(path: Path) -> Image.Image:
    """The real last decoded frame of a video.

    Decoding a whole clip to reach its end is slow for long files, so we seek to a keyframe
    about a second before the end and decode from there (same pixels, measured: NOTES.md).
    If that finds nothing (odd timestamps), decode everything."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frame = None
            if stream.duration and stream.time_base:
                target = stream.duration - int(1 / stream.time_base)
                if target > 0:
                    container.seek(max(target, 0), stream=stream, backward=True)
                    for frame in container.decode(stream):  # noqa: B007 (the last one is kept)
                        pass
            if frame is None:
                container.seek(0)
                for frame in container.decode(stream):  # noqa: B007 (the last one is kept)
                    pass
            if frame is None:
                raise MediaError("The video has no frames.")
            return frame.to_image()
    except av.error.FFmpegError as exc:
        raise MediaError("The video could not be read; the file may be damaged.") from exc


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


def image_preview(path: str | os.PathLike, box: tuple[int, int]) -> bytes:
    """A small JPEG of an image a creator brought, fitting in `box`. A large JPEG is decoded
    at reduced size, so a preview costs a fraction of the full picture's memory. The same
    checks and messages as check_image."""
    image, _fmt, _original = _decode(path, box, IMAGE_FORMATS)
    out = io.BytesIO()
    _clean(image, "RGB").save(out, "JPEG", quality=85)
    return out.getvalue()


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
