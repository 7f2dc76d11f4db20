"""Images a creator brings: decoded once, within limits, and kept upright, in sRGB and
without any of the metadata they arrived with."""

import io

import pytest
from PIL import Image, ImageFile

from studio import media

from .images import (
    MARKER,
    SATURATED,
    SECRETS,
    adobe_rgb_profile,
    adobe_rgb_to_srgb,
    jpeg_bytes,
    jpeg_segments,
    jpeg_with_metadata,
    marked_picture,
    noisy_jpeg,
    png_bytes,
    png_chunks,
    png_declaring,
    png_with_metadata,
    webp_with_metadata,
)

# What a clean re-encode may hold: JFIF's APP0, quantisation and Huffman tables, the frame,
# restart interval and scan. No APPn beyond APP0 (EXIF, XMP, ICC, IPTC), no COM.
CLEAN_JPEG_MARKERS = {0xE0, 0xDB, 0xC0, 0xC1, 0xC2, 0xC4, 0xDD, 0xDA}
CLEAN_PNG_CHUNKS = {b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"}


def close_to(actual, expected, tolerance=3):
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected))


def assert_no_secrets(content: bytes):
    for name, secret in SECRETS.items():
        assert secret not in content, f"{name} survived"
    assert b"Adobe RGB-like" not in content, "the ICC profile survived"


def decoded_loads(monkeypatch) -> list:
    """The size of every image Pillow decodes from here on."""
    sizes = []
    real = ImageFile.ImageFile.load

    def load(self):
        if self.tile:  # the real decode, not a no-op call on a loaded image
            sizes.append(self.size)
        return real(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return sizes


# --- Metadata is stripped and colour converted to sRGB -----------------------------------------


def test_a_jpeg_keeps_no_comment_exif_gps_xmp_iptc_or_profile_and_comes_out_upright_in_srgb():
    checked = media.check_image(jpeg_with_metadata(size=(64, 48), orientation=6))
    assert set(jpeg_segments(checked.content)) <= CLEAN_JPEG_MARKERS
    assert_no_secrets(checked.content)
    stored = Image.open(io.BytesIO(checked.content))
    assert not stored.getexif() and not {"icc_profile", "comment", "xmp", "photoshop"} & set(stored.info)
    # Orientation 6 ("turn 90° clockwise to view"): the stored top-left corner is the top right.
    assert (checked.width, checked.height) == (48, 64) and stored.size == (48, 64)
    assert close_to(stored.getpixel((47, 0)), MARKER, 12) and close_to(
        stored.getpixel((0, 63)), SATURATED, 40
    )
    # Adobe RGB (200, 100, 50) is sRGB (227, 100, 42): the red rises by 27 levels.
    expected = adobe_rgb_to_srgb(SATURATED)
    assert expected[0] - SATURATED[0] > 20
    assert close_to(stored.getpixel((24, 40)), expected)


def test_a_png_keeps_no_text_chunks_exif_time_or_profile_and_is_converted_to_srgb():
    checked = media.check_image(png_with_metadata())
    assert checked.extension == "png"
    assert set(png_chunks(checked.content)) <= CLEAN_PNG_CHUNKS
    assert_no_secrets(checked.content)
    stored = Image.open(io.BytesIO(checked.content))
    assert stored.getpixel((40, 40)) == adobe_rgb_to_srgb(SATURATED)  # lossless: exact


def test_a_png_with_alpha_keeps_its_alpha_through_the_colour_conversion():
    checked = media.check_image(png_with_metadata(mode="RGBA"))
    stored = Image.open(io.BytesIO(checked.content))
    assert stored.mode == "RGBA" and stored.getpixel((40, 40)) == (*adobe_rgb_to_srgb(SATURATED), 255)
    assert set(png_chunks(checked.content)) <= CLEAN_PNG_CHUNKS


def test_a_webp_keeps_no_exif_xmp_or_profile_and_is_converted_to_srgb():
    checked = media.check_image(webp_with_metadata())
    assert checked.extension == "png"
    assert set(png_chunks(checked.content)) <= CLEAN_PNG_CHUNKS
    assert_no_secrets(checked.content)
    assert Image.open(io.BytesIO(checked.content)).getpixel((40, 40)) == adobe_rgb_to_srgb(SATURATED)


def test_a_profile_lcms_cannot_read_is_dropped_and_the_pixels_kept():
    out = io.BytesIO()
    marked_picture().save(out, "PNG", icc_profile=b"not a profile at all" * 10)
    checked = media.check_image(out.getvalue())
    assert set(png_chunks(checked.content)) <= CLEAN_PNG_CHUNKS
    assert Image.open(io.BytesIO(checked.content)).getpixel((40, 40)) == SATURATED


def test_a_cmyk_jpeg_is_stored_as_rgb():
    out = io.BytesIO()
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(out, "JPEG", quality=95)
    checked = media.check_image(out.getvalue())
    stored = Image.open(io.BytesIO(checked.content))
    assert stored.mode == "RGB" and close_to(stored.getpixel((16, 16)), (255, 0, 0), 8)


# --- One decode, bounded memory ----------------------------------------------------------------


def test_an_image_is_opened_and_decoded_once(monkeypatch):
    opened, sizes = [], decoded_loads(monkeypatch)
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(1) or real_open(*a, **k))
    media.check_image(jpeg_bytes(size=(320, 180)))
    assert len(opened) == 1 and sizes == [(320, 180)]


def test_check_image_takes_a_path_as_well_as_bytes(tmp_path):
    path = tmp_path / "upload.jpg"
    path.write_bytes(jpeg_with_metadata())
    from_path, from_bytes = media.check_image(path), media.check_image(path.read_bytes())
    assert from_path == from_bytes and from_path.extension == "jpg"
    assert media.check_image(str(path)) == from_path


def test_a_large_jpeg_is_decoded_at_reduced_size_and_stored_scaled_down(monkeypatch):
    monkeypatch.setattr(media, "MAX_STORED_SIDE", 100)
    sizes = decoded_loads(monkeypatch)
    checked = media.check_image(noisy_jpeg(size=(800, 600)))
    assert sizes == [(100, 75)]  # libjpeg's 1/8 scale: the full 800×600 was never in memory
    assert (checked.width, checked.height, checked.scaled_from) == (100, 75, (800, 600))
    assert Image.open(io.BytesIO(checked.content)).size == (100, 75)


def test_scaled_from_is_the_upright_size(monkeypatch):
    monkeypatch.setattr(media, "MAX_STORED_SIDE", 16)
    checked = media.check_image(jpeg_with_metadata(size=(64, 48), orientation=6))
    assert (checked.width, checked.height, checked.scaled_from) == (12, 16, (48, 64))


def test_an_image_within_the_stored_size_says_it_was_not_scaled():
    assert media.check_image(png_bytes(size=(320, 180))).scaled_from is None


def test_a_large_png_is_stored_scaled_down_too(monkeypatch):
    monkeypatch.setattr(media, "MAX_STORED_SIDE", 80)
    checked = media.check_image(png_bytes(size=(320, 180)))
    assert (checked.width, checked.height, checked.scaled_from) == (80, 45, (320, 180))


# --- Refusals stay as they were ----------------------------------------------------------------


@pytest.mark.parametrize("side", [None, 100])  # the whole decode, and the reduced one
def test_a_truncated_jpeg_is_refused_whether_or_not_it_is_decoded_at_reduced_size(monkeypatch, side):
    if side:
        monkeypatch.setattr(media, "MAX_STORED_SIDE", side)
    data = noisy_jpeg(size=(800, 600))
    with pytest.raises(media.MediaError, match="not a complete JPEG, PNG or WebP"):
        media.check_image(data[: len(data) * 2 // 3])


def test_a_truncated_progressive_jpeg_is_refused():
    data = noisy_jpeg(size=(400, 300), progressive=True)
    with pytest.raises(media.MediaError, match="not a complete"):
        media.check_image(data[: len(data) // 2])


@pytest.mark.parametrize("make", [png_with_metadata, webp_with_metadata], ids=["png", "webp"])
def test_truncated_png_and_webp_are_refused(make):
    data = make(size=(200, 150))
    with pytest.raises(media.MediaError, match="not a complete"):
        media.check_image(data[: len(data) // 2])


def test_a_truncated_file_on_disk_is_refused(tmp_path):
    path = tmp_path / "cut.jpg"
    path.write_bytes(noisy_jpeg(size=(400, 300))[:5000])
    with pytest.raises(media.MediaError, match="not a complete"):
        media.check_image(path)


@pytest.mark.parametrize(
    "size",
    [(10_000, 5_000), (30_000, 30_000)],  # over the 40 MP cap; over Pillow's own bomb limit too
    ids=["50 MP", "900 MP"],
)
def test_a_header_claiming_too_many_pixels_is_refused_before_decoding(monkeypatch, size):
    sizes = decoded_loads(monkeypatch)
    with pytest.raises(media.MediaError, match="more than 40 megapixels"):
        media.check_image(png_declaring(size))
    assert sizes == []


def test_the_pixel_cap_leaves_pillows_global_limit_alone(settings):
    before = Image.MAX_IMAGE_PIXELS
    settings.STUDIO_MAX_IMAGE_PIXELS = 100 * 100
    with pytest.raises(media.MediaError, match="megapixels"):
        media.check_image(png_bytes(size=(200, 200)))
    assert Image.MAX_IMAGE_PIXELS == before


def test_a_file_too_large_on_disk_is_refused_before_it_is_opened(tmp_path, settings, monkeypatch):
    settings.STUDIO_MAX_IMAGE_BYTES = 100
    path = tmp_path / "big.png"
    path.write_bytes(png_bytes(size=(300, 300)))
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("opened"))
    with pytest.raises(media.MediaError, match="larger than"):
        media.check_image(path)


# --- Images our providers send -----------------------------------------------------------------


def test_load_image_reads_any_format_upright_in_srgb(tmp_path):
    path = tmp_path / "last_frame"
    path.write_bytes(jpeg_with_metadata(size=(64, 48), orientation=6))
    image = media.load_image(path)
    assert image.mode == "RGB" and image.size == (48, 64) and not image.info
    assert close_to(image.getpixel((24, 40)), adobe_rgb_to_srgb(SATURATED))
    gif = tmp_path / "thumbnail"
    Image.new("RGB", (8, 8), "red").save(gif, "GIF")
    assert media.load_image(gif).size == (8, 8)


def test_load_image_refuses_a_truncated_gif_and_a_bomb(tmp_path):
    gif = tmp_path / "cut.gif"
    out = io.BytesIO()
    Image.effect_noise((200, 200), 80).convert("RGB").save(out, "GIF")
    gif.write_bytes(out.getvalue()[: len(out.getvalue()) // 2])
    with pytest.raises(media.MediaError, match="could not be read"):
        media.load_image(gif)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring((30_000, 30_000)))
    with pytest.raises(media.MediaError, match="megapixels"):
        media.load_image(bomb)


def test_the_profile_helper_builds_what_lcms_reads():
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(io.BytesIO(adobe_rgb_profile()))
    assert profile.profile.xcolor_space.strip() == "RGB"
