"""Bad and hostile inputs, made in the test: image files, special files, checkpoints and evaluation runs.

Each input says what it is and what must become of it: a regular expression its refusal must match, or None
when it must be accepted (and then read correctly). tests/test_hostile_inputs.py feeds them to every entry
point that takes them.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import synthetic_slice

TRIED: dict[str, set] = {"inputs": set(), "pairs": set()}


def tried(entry_point: str, what: str) -> None:
    """Count a bad or hostile input fed to an entry point, from any test module (tests/conftest.py prints the
    totals at the end of the session)."""
    TRIED["inputs"].add(what)
    TRIED["pairs"].add((entry_point, what))


@dataclass(frozen=True)
class Hostile:
    name: str                                  # the file name it arrives under
    what: str                                  # what it is, in words
    expect: str | None                         # regex of its refusal; None: it must be accepted
    data: bytes | None = None                  # its content; None for special files made by ``make``
    make: Callable[[Path], None] | None = None  # makes a special file (FIFO, link, sparse file) at a path

    def place(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.make is not None:
            self.make(path)
        else:
            path.write_bytes(self.data)
        return path


# --------------------------------------------------------------------------------------------------
# Building blocks


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def scan(size: int = 128, seed: int = 1) -> Image.Image:
    return Image.fromarray(np.kron(synthetic_slice(1, seed=seed, size=size // 2), np.ones((2, 2), np.uint8)), "L")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG of a 1-bit all-black image of any claimed size whose pixel data compresses to almost nothing."""
    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def png_with_text_bomb() -> bytes:
    """A valid 128 px PNG carrying a compressed text chunk that inflates to 200 MB."""
    good = encode(scan())
    bomb = _chunk(b"zTXt", b"comment\x00\x00" + zlib.compress(b"A" * (200 << 20), 9))
    return good[:33] + bomb + good[33:]  # after the signature and IHDR


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header claims another size."""
    data = bytearray(encode(scan().convert("RGB"), "JPEG"))
    at = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, at + 5, height, width)
    return bytes(data)


class Payload:
    """Unpickling this creates a marker file: proof that a pickle ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def pickle_bytes(marker: Path) -> bytes:
    return pickle.dumps(Payload(marker))


def _frames(count: int, fmt: str) -> bytes:
    frames = [scan(seed=k) for k in range(count)]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:])


def _float_tiff(value: float) -> bytes:
    array = np.asarray(scan(), dtype=np.float32).copy()
    array[10:20, 10:20] = value
    return encode(Image.fromarray(array, "F"), "TIFF")


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    return encode(scan().resize((128, 96)).convert("RGB"), "JPEG", exif=exif.tobytes())


def _palette_with_alpha() -> bytes:
    """A palette image whose colour 0 (orange, the top-left corner) is transparent and colour 1 (white) is not."""
    image = Image.fromarray((np.asarray(scan()) > 100).astype(np.uint8), "P")
    image.putpalette([200, 100, 50, 255, 255, 255] + [0] * 762)
    return encode(image, "PNG", transparency=0)


def _gradient(size: int, mode: str) -> Image.Image:
    return Image.fromarray(np.add.outer(np.arange(size) % 256, np.arange(size) % 256).astype(np.uint8)).convert(mode)


def _symlink(target: str) -> Callable[[Path], None]:
    return lambda path: os.symlink(target, path)


def _sparse(size: int) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        with open(path, "wb") as handle:
            handle.truncate(size)
    return make


def _loop(path: Path) -> None:
    os.symlink(path.with_name("loop-b.png"), path)
    os.symlink(path, path.with_name("loop-b.png"))


# --------------------------------------------------------------------------------------------------
# Image files


def image_inputs(marker: Path) -> list[Hostile]:
    """Files that arrive as scans: by content (an upload can be any of these) and, at the end, special files
    that only a folder on disk can hold."""
    too_small = "too small"
    unknown = "none of PNG, JPEG"
    return [
        Hostile("empty.png", "zero bytes", "empty", b""),
        Hostile("truncated.jpg", "a JPEG cut in half", "damaged or truncated",
                encode(scan().convert("RGB"), "JPEG")[:700]),
        Hostile("truncated.png", "a PNG cut in half", "damaged or truncated", encode(scan())[:400]),
        Hostile("bomb.png", "a 20 KB PNG claiming 12,000 x 12,000 pixels", "megapixel|decompression bomb",
                png_claiming(12_000, 12_000)),
        Hostile("bomb.jpg", "a JPEG header claiming 65,000 x 65,000 pixels", "megapixel|decompression bomb",
                jpeg_claiming(65_000, 65_000)),
        Hostile("text-bomb.png", "a PNG whose text chunk inflates to 200 MB", "[Dd]ecompressed", png_with_text_bomb()),
        Hostile("line-60000.png", "a 196-byte 1 x 60,000 PNG", too_small, png_claiming(1, 60_000)),
        Hostile("line-20000.png", "a 20,000 x 1 PNG", too_small, png_claiming(20_000, 1)),
        Hostile("dot.png", "a 1 x 1 image", too_small, encode(Image.new("L", (1, 1), 128))),
        Hostile("thumb.png", "a 40 x 40 thumbnail", too_small, encode(scan().resize((40, 40)))),
        Hostile("strip.tif", "a 2,000 x 100 strip", "not shaped like a slice",
                encode(_gradient(2000, "L").crop((0, 0, 2000, 100)), "TIFF")),
        Hostile("drawing.png", "an SVG renamed .png", unknown,
                b'<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"><image href="http://127.0.0.1:9/x.png"/></svg>'),
        Hostile("notes.png", "a text file renamed .png", unknown, b"patient notes, not an image\n" * 20),
        Hostile("page.jpg", "an HTML page renamed .jpg", unknown, b"<html><img src='http://127.0.0.1:9/beacon.png'></html>"),
        Hostile("payload.png", "a pickle renamed .png", unknown, pickle_bytes(marker)),
        Hostile("script.png", "PostScript (PIL would run Ghostscript on it)", unknown,
                b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n"),
        Hostile("animated.gif", "an animated GIF of 3 frames", "3 frames", _frames(3, "GIF")),
        Hostile("stack.tif", "a multi-page TIFF of 4 slices", "4 frames", _frames(4, "TIFF")),
        Hostile("nan.tif", "a float TIFF holding NaN", "not numbers", _float_tiff(float("nan"))),
        Hostile("inf.tif", "a float TIFF holding infinity", "not numbers", _float_tiff(float("inf"))),
        Hostile("huge.png", "a 65 MB file", "over the 64 MB limit", b"\x89PNG\r\n\x1a\n" + bytes(65 << 20)),
        # Awkward but legitimate: each must be read, and read right.
        Hostile("sixteen-bit.png", "16-bit grayscale", None,
                encode(Image.fromarray((np.asarray(scan(), np.uint16) * 200).astype(np.uint16)))),
        Hostile("cmyk.jpg", "a CMYK JPEG", None, encode(scan().convert("CMYK"), "JPEG")),
        Hostile("palette-alpha.png", "a palette PNG with transparency", None, _palette_with_alpha()),
        Hostile("rotated.jpg", "a JPEG with EXIF orientation 6", None, _exif_rotated()),
        Hostile("gray-alpha.png", "grayscale with alpha", None, encode(scan().convert("LA"))),
        Hostile("one-bit.png", "a 1-bit PNG", None, encode(scan().convert("1"))),
        Hostile("float.tif", "a float TIFF", None,
                encode(Image.fromarray(np.asarray(scan(), np.float32), "F"), "TIFF")),
        Hostile("big-rgba.png", "a 6,000 x 6,000 RGBA PNG (36 megapixels)", None, encode(_gradient(6000, "RGBA"))),
        Hostile("big.jpg", "a 5,000 x 5,000 JPEG", None, encode(_gradient(5000, "RGB"), "JPEG", quality=80)),
        Hostile("big-16bit.png", "a 6,000 x 6,000 16-bit PNG", None,
                encode(Image.fromarray(np.add.outer(np.arange(6000), np.arange(6000)).astype(np.uint16)))),
    ]


def special_files() -> list[Hostile]:
    """What only a folder can hold: each must be refused without blocking, reading without end or crashing."""
    return [
        Hostile("fifo.png", "a named pipe", "named pipe", make=os.mkfifo),
        Hostile("zero.jpg", "a link to /dev/zero", "character device", make=_symlink("/dev/zero")),
        Hostile("loop-a.png", "two links pointing at each other", "loops", make=_loop),
        Hostile("dangling.png", "a link to nothing", "does not exist", make=_symlink("/nonexistent/scan.png")),
        Hostile("sparse.png", "a 100 MB sparse file", "over the 64 MB limit", make=_sparse(100 << 20)),
    ]


NON_UTF8_NAME = os.fsdecode(b"scan-\xff\xfe.png")  # Latin-1 bytes, as an old export names files


# --------------------------------------------------------------------------------------------------
# Checkpoints


def _safetensors(header: dict | list | str, tensors: bytes = b"") -> bytes:
    text = header if isinstance(header, str) else json.dumps(header)
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw + tensors


def _with_metadata(metadata) -> bytes:
    """A safetensors file with one small tensor and the given checkpoint metadata (a dict, or any JSON text)."""
    text = metadata if isinstance(metadata, str) else json.dumps(metadata)
    header = {"__metadata__": {"checkpoint": text}, "fc.bias": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    return _safetensors(header, bytes(16))


def good_metadata(**changes) -> dict:
    from core.checkpoint import FORMAT, FORMAT_VERSION

    meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "architecture": {"name": "resnet50", "downsample_stride": "3x3", "dropout": 0.0},
            "classes": ["glioma", "meningioma", "notumor", "pituitary"],
            "preprocessing": {"image_size": 64, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}
    for path, value in changes.items():
        *parents, last = path.split("__")
        target = meta
        for key in parents:
            target = target[key]
        target[last] = value
    return meta


def checkpoint_inputs(marker: Path, torch_file: bytes) -> list[Hostile]:
    return [
        Hostile("empty.safetensors", "zero bytes", "not a safetensors file", b""),
        Hostile("noise.safetensors", "random bytes", "not a safetensors file|not a checkpoint of ours",
                np.random.default_rng(0).bytes(4096)),
        Hostile("pickle.safetensors", "a pickle that runs code when loaded", "not a safetensors file|not a checkpoint",
                pickle_bytes(marker)),
        Hostile("model.pt", "a torch.save file (a zip of pickles)", "not a safetensors file|not a checkpoint",
                torch_file),
        Hostile("foreign.safetensors", "safetensors without our metadata", "not one of our checkpoints",
                _safetensors({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(4))),
        Hostile("claims.safetensors", "a header claiming 10 GB", "claims", struct.pack("<Q", 10 << 30) + b"{}"),
        Hostile("header.safetensors", "a header that is not JSON", "not JSON", _safetensors("{not json")),
        Hostile("nested.safetensors", "a header nested 100,000 deep", "not JSON|damaged", _safetensors("[" * 100_000)),
        Hostile("list.safetensors", "metadata that is a JSON list", "the metadata as a whole", _with_metadata([1, 2])),
        Hostile("size.safetensors", "image_size 20000", "preprocessing.image_size",
                _with_metadata(good_metadata(preprocessing__image_size=20_000))),
        Hostile("zero.safetensors", "image_size 0", "preprocessing.image_size",
                _with_metadata(good_metadata(preprocessing__image_size=0))),
        Hostile("text.safetensors", "image_size 'abc'", "preprocessing.image_size",
                _with_metadata(good_metadata(preprocessing__image_size="abc"))),
        Hostile("mean.safetensors", "a two-value mean", "preprocessing.mean",
                _with_metadata(good_metadata(preprocessing__mean=[0.5, 0.5]))),
        Hostile("null.safetensors", "preprocessing null", "preprocessing",
                _with_metadata(good_metadata(preprocessing=None))),
        Hostile("five.safetensors", "five class names for a five-output head", "classes",
                _with_metadata(good_metadata(classes=["glioma", "meningioma", "notumor", "pituitary", "other"]))),
        Hostile("markdown.safetensors", "a class name carrying a markdown image", "classes",
                _with_metadata(good_metadata(classes=["glioma", "![x](http://127.0.0.1:9/beacon.png)"]))),
        Hostile("cold.safetensors", "temperature 1e-300", "calibration.temperature",
                _with_metadata(good_metadata(calibration={"temperature": 1e-300}))),
        Hostile("nan-t.safetensors", "temperature NaN", "not a number JSON allows|damaged metadata",
                _with_metadata(json.dumps(good_metadata(calibration={"temperature": float("nan")})))),
        Hostile("vit.safetensors", "another architecture", "architecture.name",
                _with_metadata(good_metadata(architecture={"name": "vit_b_16"}))),
        Hostile("future.safetensors", "a newer format version", "Update the project",
                _with_metadata(good_metadata(format_version=99))),
        Hostile("fifo.safetensors", "a named pipe", "named pipe", make=os.mkfifo),
        Hostile("zero-link.safetensors", "a link to /dev/zero", "character device", make=_symlink("/dev/zero")),
        Hostile("loop-a.safetensors", "a symbolic link loop", "loops", make=_loop),
        Hostile("sparse.safetensors", "a 1 GB sparse file", "over the 512 MB limit", make=_sparse(1 << 30)),
    ]


# --------------------------------------------------------------------------------------------------
# Evaluation runs: each is a copy of a good run with one thing changed


def _edit_json(name: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    """Change a JSON file of the run in place (``change`` edits the parsed value)."""
    def apply(run: Path) -> None:
        value = json.loads((run / name).read_text())
        change(value)
        (run / name).write_text(json.dumps(value))
    return apply


def _edit_table(change: Callable) -> Callable[[Path], None]:
    import pandas as pd

    def apply(run: Path) -> None:
        table = pd.read_csv(run / "predictions.csv", keep_default_na=False, dtype=str)
        changed = change(table)  # edits the table, or returns a new one
        (table if changed is None else changed).to_csv(run / "predictions.csv", index=False)
    return apply


def _write(name: str, content: bytes) -> Callable[[Path], None]:
    return lambda run: (run / name).write_bytes(content)


def _special(name: str, make: Callable[[Path], None]) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        (run / name).unlink()
        make(run / name)
    return apply


@dataclass(frozen=True)
class HostileRun:
    what: str
    expect: str
    change: Callable[[Path], None]

    def place(self, good: Path, folder: Path) -> Path:
        shutil.copytree(good, folder)
        self.change(folder)
        return folder


def run_inputs() -> list[HostileRun]:
    def blank(table):
        table["prob_glioma"] = ""

    def header_only(table):
        return table.iloc[:0]

    return [
        HostileRun("run.json that is not JSON", "not valid JSON", _write("run.json", b"{'name': oops")),
        HostileRun("run.json that is a list", "not a brain-tumour-mri evaluation run", _write("run.json", b"[1, 2]")),
        HostileRun("run.json without 'dataset'", "dataset", _edit_json("run.json", lambda v: v.pop("dataset"))),
        HostileRun("a class the project does not know", "model.classes",
                   _edit_json("run.json", lambda v: v["model"].update(classes=["glioma", "![x](http://127.0.0.1:9/b.png)"]))),
        HostileRun("run.json nested 100,000 deep", "not valid JSON", _write("run.json", b"[" * 100_000)),
        HostileRun("NaN in metrics.json", "not valid JSON", _write("metrics.json", b'{"all": NaN}')),
        HostileRun("a number too large for a float (1e400, read as infinity)", "too large",
                   _write("metrics.json", b'{"accuracy": 1e400}')),
        HostileRun("metrics.json without its blocks", "metrics.json",
                   _edit_json("metrics.json", lambda v: v.pop("all"))),
        HostileRun("a confusion matrix of the wrong size", "does not match",
                   _edit_json("metrics.json", lambda v: v["all"].update(confusion_matrix=[[1, 2], [3, 4]]))),
        HostileRun("an HTML link as a class in the per-class figures (charts render some HTML)", "per_class",
                   _edit_json("metrics.json", lambda v: v["all"]["per_class"].update(
                       {"<a href='http://127.0.0.1:9/'>x</a>": v["all"]["per_class"]["glioma"]}))),
        HostileRun("history entries that are not records", "history",
                   _edit_json("run.json", lambda v: v.update(history=["epoch one"]))),
        HostileRun("predictions.csv with only a header", "holds no predictions", _edit_table(header_only)),
        HostileRun("blank probabilities", "prob_glioma values that are not probabilities", _edit_table(blank)),
        HostileRun("probabilities above 1", "prob_glioma values",
                   _edit_table(lambda t: t.__setitem__("prob_glioma", "7"))),
        HostileRun("a label that is no class", "label values", _edit_table(lambda t: t.__setitem__("label", "cat"))),
        HostileRun("predictions.csv as a named pipe", "named pipe", _special("predictions.csv", os.mkfifo)),
        HostileRun("curves.json as a link to /dev/zero", "character device",
                   _special("curves.json", _symlink("/dev/zero"))),
        HostileRun("a 200 MB sparse metrics.json", "over the 16 MB limit",
                   _special("metrics.json", _sparse(200 << 20))),
        HostileRun("300,000 predictions (a run's table may not be made to take the dashboard's memory)",
                   "more than 250,000 rows", _edit_table(lambda t: t.iloc[[0] * 300_000])),
    ]
