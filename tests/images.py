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
