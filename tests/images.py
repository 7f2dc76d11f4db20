"""Real image files made in the tests."""

import io

from PIL import Image


def png_bytes(size=(320, 180), color=(200, 60, 40)) -> bytes:
    out = io.BytesIO()
    image = Image.new("RGB", size, color)
    # A second colour block, so a crop or a flip would show.
    for x in range(size[0] // 2):
        for y in range(size[1] // 3):
            image.putpixel((x, y), (20, 120, 220))
    image.save(out, "PNG")
    return out.getvalue()


def jpeg_bytes(size=(320, 180), color=(30, 160, 90)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "JPEG", quality=90)
    return out.getvalue()


def striped_png(size=(854, 480)) -> bytes:
    """Vertical stripes of several colours: any zoom or pan visibly changes the picture."""
    image = Image.new("RGB", size)
    colours = [(230, 70, 50), (40, 140, 230), (250, 220, 60), (30, 30, 30)]
    for x in range(size[0]):
        colour = colours[(x // 24) % len(colours)]
        for y in range(size[1]):
            image.putpixel((x, y), colour)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


# --- Wide-gamut pictures and the metadata cameras and editors leave in them ------------------
# Pillow's wheel carries no ICC profiles and ImageCms.createProfile makes only sRGB, LAB and
# XYZ, so the Adobe RGB (1998)-like profile is written here: an ICC v2 matrix/TRC display
# profile, the same kind cameras and editors embed.
ADOBE_RGB_PRIMARIES = ((0.64, 0.33), (0.21, 0.71), (0.15, 0.06))
SRGB_PRIMARIES = ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06))
D65 = (0.3127, 0.3290)
ADOBE_GAMMA = 563 / 256  # 2.19921875, as the u8Fixed8 in the profile stores it


def rgb_to_xyz(primaries, white=D65):
    """The 3×3 matrix from linear RGB to XYZ for these primaries and white point."""
    import numpy as np

    xyz = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in primaries]).T
    wx, wy = white
    scale = np.linalg.solve(xyz, [wx / wy, 1.0, (1 - wx - wy) / wy])
    return xyz * scale


def adobe_rgb_profile() -> bytes:
    import struct

    import numpy as np

    # ICC colorants are relative to the D50 PCS: adapt from D65 with Bradford, as lcms does.
    bradford = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])
    d65 = np.array([0.95047, 1.0, 1.08883])
    d50 = np.array([0.96420, 1.0, 0.82491])
    adapt = np.linalg.inv(bradford) @ np.diag((bradford @ d50) / (bradford @ d65)) @ bradford
    colorants = adapt @ rgb_to_xyz(ADOBE_RGB_PRIMARIES)

    def s15(v):
        return struct.pack(">i", round(v * 65536))

    def xyz_tag(values):
        return b"XYZ \0\0\0\0" + b"".join(s15(v) for v in values)

    description = b"Adobe RGB-like test profile\0"
    tags = [
        (
            b"desc",
            b"desc\0\0\0\0" + struct.pack(">I", len(description)) + description + bytes(4 + 4 + 3 + 67),
        ),
        (b"cprt", b"text\0\0\0\0No copyright, test data\0"),
        (b"wtpt", xyz_tag(d50)),
        (b"rXYZ", xyz_tag(colorants[:, 0])),
        (b"gXYZ", xyz_tag(colorants[:, 1])),
        (b"bXYZ", xyz_tag(colorants[:, 2])),
    ]
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, 563) + b"\0\0"
    tags += [(b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags:
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body + bytes(-len(body) % 4)
    size = offset + len(data)
    header = (
        struct.pack(">I", size)
        + b"lcms"
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + struct.pack(">6H", 2024, 1, 1, 0, 0, 0)
        + b"acsp"
        + bytes(24)
        + struct.pack(">I", 0)  # perceptual
        + b"".join(s15(v) for v in d50)
        + b"test"
    )
    header += bytes(128 - len(header))
    return header + struct.pack(">I", len(tags)) + table + data


def adobe_rgb_to_srgb(rgb):
    """Where an Adobe RGB colour lands in sRGB, by the colour science alone (not lcms)."""
    import numpy as np

    linear = (np.array(rgb) / 255.0) ** ADOBE_GAMMA
    srgb_linear = np.linalg.solve(rgb_to_xyz(SRGB_PRIMARIES), rgb_to_xyz(ADOBE_RGB_PRIMARIES) @ linear)
    srgb_linear = np.clip(srgb_linear, 0.0, 1.0)
    encoded = np.where(
        srgb_linear <= 0.0031308, 12.92 * srgb_linear, 1.055 * srgb_linear ** (1 / 2.4) - 0.055
    )
    return tuple(int(round(v)) for v in encoded * 255)


SECRETS = {
    "maker": b"SecretCam",
    "comment": b"shot at 12 Hidden Lane",
    "xmp": b"xmp-creator-jane",
    "iptc": b"iptc-caption-private",
    "text": b"png-text-private",
}
SATURATED = (200, 100, 50)  # inside sRGB's gamut once converted, so no clipping blurs the check
MARKER = (20, 20, 230)  # one corner, so the orientation shows


def exif_with_gps(orientation: int = 1) -> bytes:
    from PIL import ExifTags

    exif = Image.Exif()
    exif[ExifTags.Base.Make] = SECRETS["maker"].decode()
    exif[ExifTags.Base.Orientation] = orientation
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (51.0, 30.0, 26.5)
    gps[ExifTags.GPS.GPSLongitudeRef] = "W"
    gps[ExifTags.GPS.GPSLongitude] = (0.0, 7.0, 39.8)
    return exif.tobytes()


def xmp_packet() -> bytes:
    return (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" dc:creator="'
        + SECRETS["xmp"]
        + b'"/></rdf:RDF></x:xmpmeta>'
    )


def marked_picture(size=(64, 48), mode="RGB") -> Image.Image:
    """The saturated colour everywhere but a MARKER block in the stored top-left corner."""
    image = Image.new(mode, size, SATURATED + ((255,) if mode == "RGBA" else ()))
    image.paste(MARKER + ((255,) if mode == "RGBA" else ()), (0, 0, size[0] // 4, size[1] // 4))
    return image


def jpeg_with_metadata(size=(64, 48), orientation: int = 6) -> bytes:
    """A JPEG carrying EXIF (camera maker, GPS, orientation), XMP, IPTC, a comment and an
    Adobe RGB-like ICC profile."""
    out = io.BytesIO()
    marked_picture(size).save(
        out,
        "JPEG",
        quality=95,
        exif=exif_with_gps(orientation),
        comment=SECRETS["comment"],
        icc_profile=adobe_rgb_profile(),
        xmp=xmp_packet(),
    )
    return with_iptc(out.getvalue())


def with_iptc(jpeg: bytes) -> bytes:
    """The JPEG with a Photoshop APP13 segment holding an IPTC caption, as editors write it
    (Pillow reads these but cannot write them)."""
    import struct

    caption = SECRETS["iptc"]
    iptc = b"\x1c\x02\x78" + struct.pack(">H", len(caption)) + caption
    resource = b"8BIM" + struct.pack(">H", 0x0404) + b"\0\0" + struct.pack(">I", len(iptc)) + iptc
    resource += bytes(len(iptc) % 2)
    payload = b"Photoshop 3.0\0" + resource
    after_app0 = 4 + int.from_bytes(jpeg[4:6], "big") if jpeg[2:4] == b"\xff\xe0" else 2
    segment = b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:after_app0] + segment + jpeg[after_app0:]


def png_with_metadata(size=(64, 48), mode="RGB") -> bytes:
    """A PNG carrying tEXt, zTXt and iTXt (XMP) chunks, eXIf with GPS, a time stamp and an
    Adobe RGB-like iCCP profile."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", SECRETS["text"].decode())
    info.add_text("Author", SECRETS["text"].decode() + "-z", zip=True)
    info.add_itxt("XML:com.adobe.xmp", xmp_packet().decode())
    info.add(b"tIME", bytes([7, 232, 1, 2, 3, 4, 5]))
    out = io.BytesIO()
    marked_picture(size, mode).save(
        out, "PNG", pnginfo=info, exif=exif_with_gps(1), icc_profile=adobe_rgb_profile()
    )
    return out.getvalue()


def webp_with_metadata(size=(64, 48)) -> bytes:
    out = io.BytesIO()
    marked_picture(size).save(
        out,
        "WEBP",
        lossless=True,
        exif=exif_with_gps(1),
        xmp=xmp_packet(),
        icc_profile=adobe_rgb_profile(),
    )
    return out.getvalue()


def jpeg_segments(data: bytes) -> list[int]:
    """The markers of a JPEG's segments, from SOI up to the start of the scan."""
    assert data[:2] == b"\xff\xd8"
    markers, i = [], 2
    while i < len(data):
        assert data[i] == 0xFF, f"not a segment at {i}"
        marker = data[i + 1]
        markers.append(marker)
        if marker == 0xDA:  # entropy-coded data follows
            break
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return markers


def png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, i = [], 8
    while i < len(data):
        length = int.from_bytes(data[i : i + 4], "big")
        chunks.append(data[i + 4 : i + 8])
        i += 12 + length
    return chunks


def png_declaring(size) -> bytes:
    """A tiny PNG whose header claims `size`: a decompression bomb's opening move."""
    import struct
    import zlib

    data = bytearray(png_bytes(size=(8, 8)))
    ihdr = struct.pack(">II", *size) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def noisy_jpeg(size=(800, 600), **save) -> bytes:
    """A JPEG of random pixels: every byte matters, so a truncation always shows."""
    import numpy as np

    pixels = np.random.default_rng(7).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90, **save)
    return out.getvalue()
