"""Heatmap pictures people can read on their own: the overlay with its colour bar, and, for a download, a header
that says what the picture shows. PIL in, PIL out; no Streamlit here, like dashboard/charts.py."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from core.sources.images import png_bytes  # noqa: F401 - the pages' encoder, re-exported with the pictures

BAR_WIDTH = 18
SCALE_ENDS = {"own": ("lowest in this map", "highest in this map"),
              "prediction": ("no evidence", "the predicted class's peak")}


def _font(size: int):
    return ImageFont.load_default(size=size)


def colour_bar(height: int, scale: str) -> Image.Image:
    """A vertical jet colour bar ``height`` pixels high, labelled at both ends with what its colours mean."""
    import cv2

    ramp = np.linspace(255, 0, max(height, 2)).astype(np.uint8)[:, None].repeat(BAR_WIDTH, axis=1)
    bar = Image.fromarray(cv2.cvtColor(cv2.applyColorMap(ramp, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB))
    size = max(10, min(16, height // 22))
    low, high = SCALE_ENDS[scale]
    width = BAR_WIDTH + 8 + int(max(_font(size).getlength(t) for t in (low, high)))
    strip = Image.new("RGB", (width, height), (14, 17, 23))
    strip.paste(bar, (0, 0))
    draw = ImageDraw.Draw(strip)
    draw.text((BAR_WIDTH + 6, 0), high, fill=(230, 233, 239), font=_font(size))
    draw.text((BAR_WIDTH + 6, height - size - 4), low, fill=(230, 233, 239), font=_font(size))
    return strip


def with_colour_bar(picture: Image.Image, scale: str) -> Image.Image:
    """The overlay with its colour bar to the right."""
    bar = colour_bar(picture.height, scale)
    out = Image.new("RGB", (picture.width + 8 + bar.width, picture.height), (14, 17, 23))
    out.paste(picture.convert("RGB"), (0, 0))
    out.paste(bar, (picture.width + 8, 0))
    return out


def with_header(picture: Image.Image, lines: list[str]) -> Image.Image:
    """The picture under a header of text lines (file, prediction and probability, method and class explained),
    so that a downloaded heatmap says what it is wherever it ends up."""
    size = max(12, min(22, picture.width // 40))
    height = 10 + len(lines) * (size + 6)
    out = Image.new("RGB", (picture.width, picture.height + height), (14, 17, 23))
    draw = ImageDraw.Draw(out)
    for k, line in enumerate(lines):
        draw.text((8, 6 + k * (size + 6)), line, fill=(230, 233, 239), font=_font(size))
    out.paste(picture.convert("RGB"), (0, height))
    return out


BAR_LENGTHS_MM = (1, 2, 5, 10, 20, 50, 100)
LEAST_SCALED_SIDE = 512   # a slice with a scale bar is shown at least this large, so that the bar's label is sharp


def in_proportion(pictures: list[Image.Image], spacing_mm: tuple[float, float],
                  spaced: tuple[int, int] | None = None, least_side: int = LEAST_SCALED_SIDE,
                  most_side: int = 1024) -> tuple[list[Image.Image], float]:
    """Pictures of one size (a slice and its heatmap overlay) resized alike so that a pixel covers as many
    millimetres across as down, as a viewer shows a scan whose pixels are not square, and so that the longer side
    is at least ``least_side``; and the millimetres per pixel of the result. ``spacing_mm``: (row, column) mm per
    pixel of the scan, whose size is ``spaced`` (width, height; default: the pictures', which may be shrunk)."""
    width, height = pictures[0].size
    spaced_width, spaced_height = spaced or (width, height)
    across, down = spaced_width * spacing_mm[1], spaced_height * spacing_mm[0]
    side = min(most_side, max(least_side, width, height))
    mm_per_pixel = max(across, down) / side
    size = (max(1, round(across / mm_per_pixel)), max(1, round(down / mm_per_pixel)))
    if size == (width, height):
        return list(pictures), mm_per_pixel
    return [p.resize(size, Image.Resampling.BICUBIC) for p in pictures], mm_per_pixel


def with_scale_bar(picture: Image.Image, mm_per_pixel: float) -> Image.Image:
    """The picture with a scale bar in its lower left corner: the round length in millimetres closest to a fifth of
    its width, drawn white on a dark band, labelled."""
    out = picture.convert("RGB").copy()
    if not mm_per_pixel or mm_per_pixel <= 0:
        return out
    length = min(BAR_LENGTHS_MM, key=lambda mm: abs(mm / mm_per_pixel - out.width / 5))
    pixels = max(1, round(length / mm_per_pixel))
    size = max(10, min(18, out.width // 30))
    margin, thick = max(6, out.width // 60), max(2, out.width // 200)
    draw = ImageDraw.Draw(out)
    x0, y0 = margin, out.height - margin - thick
    draw.rectangle([x0 - 3, y0 - size - 8, x0 + max(pixels, size * 3) + 3, y0 + thick + 3], fill=(14, 17, 23))
    draw.rectangle([x0, y0, x0 + pixels, y0 + thick], fill=(255, 255, 255))
    draw.text((x0, y0 - size - 4), f"{length:g} mm", fill=(255, 255, 255), font=_font(size))
    return out
