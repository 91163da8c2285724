"""What an acceptable image is, and decoding one into bounded memory.

Every image that reaches the model passes :func:`prepare_image` (files and uploads through
:func:`read_image`, in-memory PIL images through :func:`core.data.preprocess_uint8`). It refuses, with one
sentence each:

* files over :data:`MAX_FILE_BYTES`, and formats other than :data:`FORMATS` (PIL would otherwise also try EPS,
  which runs Ghostscript, and a dozen formats no scanner exports);
* animations and stacks (several frames): which slice was meant is not ours to guess;
* more than :data:`MAX_PIXELS` pixels (a decompression bomb: a 140 KB PNG can claim 12,000 x 12,000), a side
  under :data:`MIN_SIDE` pixels (too little detail for a 224-pixel network), a side more than
  :data:`MAX_ASPECT` times the other (not a slice; and padding it to a square would cost the longer side
  squared);
* pixel values that are not numbers (NaN or infinity in a float TIFF).

An accepted image is then at most :data:`WORKING_SIDE` pixels on its longer side: larger ones are decoded at a
reduced scale where the format allows it (JPEG) and otherwise shrunk by whole-pixel averaging before anything
else is made of them, so no later step (conversion, padding, overlays) allocates more than a few tens of
megabytes, whatever the file claimed.
"""

from __future__ import annotations

import io
import math
import os
import warnings

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from core.sources.figshare import is_mat, mat_image
from core.sources.files import ImageRefused, read_bytes, size_text
from core.sources.volumes import MAX_SCAN_BYTES, dataset_slice, is_volume_bytes

FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP")
VOLUME_SUFFIXES = (".dcm", ".nii", ".nii.gz", ".mat")  # read through core.sources.volumes or .figshare
MAX_FILE_BYTES = 64 << 20     # the dashboard's upload limit (.streamlit/config.toml) is 50 MB
MAX_PIXELS = 40_000_000       # e.g. 6,300 x 6,300; a 4,096 x 4,096 scan is 16.8 million
MIN_SIDE = 64
MAX_ASPECT = 4.0
WORKING_SIDE = 2048           # the largest dataset image is 1,920 pixels wide, so none is shrunk

# PIL's own guard warns above MAX_IMAGE_PIXELS and refuses above twice that; ours refuses above it, first.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False

# Modes Image.reduce cannot average: convert them first (a palette's indices cannot be averaged).
_BEFORE_REDUCE = {"1": "L", "I;16": "I", "I;16L": "I", "I;16B": "I", "I;16N": "I", "CMYK": "RGB",
                  "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}
_HIGH_DEPTH = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


# EXIF orientation (tag 0x0112) -> the transposition that shows the image upright (EXIF 2.3, section 4.6.4).
ORIENTATION_TAG = 0x0112
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}


def check_geometry(width: int, height: int) -> None:
    """Refuse images too large, too small or too far from square to be a slice (see the module docstring)."""
    if width * height > MAX_PIXELS:
        raise ImageRefused(f"{width:,} x {height:,} pixels is over the {MAX_PIXELS / 1e6:.0f}-megapixel limit")
    if min(width, height) < MIN_SIDE:
        raise ImageRefused(f"{width} x {height} pixels is too small: an image must be at least {MIN_SIDE} pixels on "
                           "each side for the model to see anything in it")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageRefused(f"{width} x {height} pixels is not shaped like a slice: one side is more than "
                           f"{MAX_ASPECT:g} times the other")


def read_image(source: str | os.PathLike | bytes) -> Image.Image:
    """An image file (a path, or its bytes) -> an accepted 8-bit RGB image (see the module docstring).
    Raises :class:`ImageRefused`, or :class:`core.sources.FileRefused` for a path that is no readable file."""
    volume_name = not isinstance(source, bytes) and str(source).lower().endswith(VOLUME_SUFFIXES)
    limit = MAX_SCAN_BYTES if volume_name else MAX_FILE_BYTES
    raw = source if isinstance(source, bytes) else read_bytes(source, limit, "image file")
    if not raw:
        raise ImageRefused("the file is empty (0 bytes)")
    if is_volume_bytes(raw) or is_mat(raw):  # the slice a scan stands for, checked like any picture
        name = "scan" if isinstance(source, bytes) else os.path.basename(source)
        picture = mat_image(raw) if is_mat(raw) else dataset_slice(raw, name)
        check_geometry(*picture.size)
        prepared = prepare_image(picture)
        prepared.info.update({key: picture.info.get(key) for key in ("spacing_mm", "slice", "patient", "volume_kind",
                                                                      "volume_shape")}, source_size=picture.size)
        return prepared
    if len(raw) > MAX_FILE_BYTES:
        raise ImageRefused(f"the file is {size_text(len(raw))}, over the {size_text(MAX_FILE_BYTES)} limit")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw), formats=FORMATS) as image:
                frames = getattr(image, "n_frames", 1)
                if frames > 1:
                    raise ImageRefused(f"the file holds {frames} frames (an animation or a stack); save the one slice "
                                       "to classify as an image of its own")
                check_geometry(*image.size)
                stored = image.size  # before a JPEG is drafted at a smaller scale
                _draft(image)
                image.load()
                orientation = image.getexif().get(ORIENTATION_TAG, 1)
                size = stored[::-1] if orientation in (5, 6, 7, 8) else stored
                # Shrunk first, turned upright after: turning a large image would copy it at full size.
                prepared = prepare_image(image, orientation)
                prepared.info["source_size"] = size  # as stored in the file, upright; the image may be smaller
                return prepared
    except ImageRefused:
        raise
    except UnidentifiedImageError:
        raise ImageRefused(f"not a readable image: the content is none of {', '.join(FORMATS)}") from None
    except Image.DecompressionBombError:
        raise ImageRefused(f"refused as a decompression bomb: its header claims far more than the "
                           f"{MAX_PIXELS / 1e6:.0f}-megapixel limit") from None
    except MemoryError:
        raise ImageRefused("the image needs more memory to decode than this machine has free") from None
    except Exception as error:  # damaged files raise many types: OSError, SyntaxError, struct.error, ...
        raise ImageRefused(f"not a readable image: it is damaged or truncated ({type(error).__name__}: {error})"
                           ) from None


def png_bytes(image: Image.Image, compress_level: int = 1) -> bytes:
    """An image as PNG bytes. The default, the fastest zlib level, suits pictures a page shows and offers for download
    as they are (three times faster than zlib's default for 15% more bytes); files kept for good pass 6."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=compress_level)
    return buffer.getvalue()


def pixel_spacing(image: Image.Image, stated_mm: float | None = None) -> tuple[float, float] | None:
    """The (row, column) size in millimetres of one pixel of an image :func:`read_image` returned: the spacing its
    file states (a DICOM or NIfTI slice), else ``stated_mm`` (a dataset's spacing, given by hand, for square pixels
    of the file as stored), scaled to the image where it was shrunk; None when neither is known."""
    given = image.info.get("spacing_mm") or ((stated_mm, stated_mm) if stated_mm else None)
    if not given:
        return None
    width, height = image.info.get("source_size", image.size)
    return (float(given[0]) * height / image.height, float(given[1]) * width / image.width)


def _draft(image: Image.Image) -> None:
    """Let a large JPEG decode at 1/2, 1/4 or 1/8 scale, as long as it stays at least WORKING_SIDE wide."""
    longest = max(image.size)
    if image.format == "JPEG" and longest > WORKING_SIDE:
        scale = WORKING_SIDE / longest
        image.draft(image.mode, (math.ceil(image.width * scale), math.ceil(image.height * scale)))


def prepare_image(image: Image.Image, orientation: int = 1) -> Image.Image:
    """Any PIL image -> an accepted 8-bit RGB image at most :data:`WORKING_SIDE` on its longer side.

    Checks the geometry, shrinks a large image before anything else is made of it, turns it upright by its EXIF
    ``orientation`` (1: as stored), then converts: grayscale is replicated to three channels, transparency
    composited onto black (the background of an MRI slice), 16-bit and float images windowed to their own
    minimum-maximum range. Raises :class:`ImageRefused`.
    """
    check_geometry(*image.size)
    image = _shrink(image)
    if orientation in _UPRIGHT:
        image = image.transpose(_UPRIGHT[orientation])
    return _to_rgb(image)


def _shrink(image: Image.Image) -> Image.Image:
    longest = max(image.size)
    if longest <= WORKING_SIDE:
        return image
    factor = longest // WORKING_SIDE
    if factor >= 2:
        image = _reduce_in_strips(image, factor)
    elif image.mode == "P" or image.mode in _BEFORE_REDUCE:
        image = image.convert(_reducible_mode(image))
    scale = WORKING_SIDE / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
    return image


def _reducible_mode(image: Image.Image) -> str:
    if image.mode == "P":
        return "RGBA" if "transparency" in image.info else "RGB"
    return _BEFORE_REDUCE.get(image.mode, image.mode)


def _reduce_in_strips(image: Image.Image, factor: int, rows: int = 256) -> Image.Image:
    """``image.reduce(factor)`` (a box average), done a strip of ``rows`` output rows at a time. PIL converts
    a whole image for some modes before reducing it (RGBA to premultiplied alpha, palettes and 16 bits to
    averageable modes): strip by strip, those copies are a strip high instead of the whole image."""
    mode = _reducible_mode(image)
    width, height = image.size
    out = Image.new(mode, (-(-width // factor), -(-height // factor)))
    for top in range(0, height, rows * factor):
        strip = image.crop((0, top, width, min(height, top + rows * factor)))
        if strip.mode != mode:
            strip = strip.convert(mode)
        out.paste(strip.reduce(factor), (0, top // factor))
    return out


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _HIGH_DEPTH:
        array = np.asarray(image, dtype=np.float64)
        if not np.isfinite(array).all():
            raise ImageRefused("the image holds pixel values that are not numbers (NaN or infinity)")
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
        image = Image.fromarray(scaled.round().astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB") if image.mode != "RGB" else image
