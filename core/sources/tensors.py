"""Safetensors files (checkpoints, converted ImageNet weights) read as hostile input.

A safetensors file is an 8-byte header length, a JSON header (tensor names, shapes, offsets, and free-form
``__metadata__``) and the tensor bytes. Both functions read through :func:`core.sources.open_regular` (a
regular file of bounded size), parse the header themselves with a cap on its length, and leave the tensors to
safetensors, which never unpickles anything.
"""

from __future__ import annotations

import io
import os

from core.sources.files import FileRefused, load_json, open_regular, printable, read_bytes

MAX_HEADER_BYTES = 16 << 20  # the default model's is 0.3 MB: tensor index, history, training file names


def _header(handle, path) -> dict:
    size_field = handle.read(8)
    if len(size_field) < 8:
        raise FileRefused(f"{printable(path)} is not a safetensors file (it is only {len(size_field)} bytes long)")
    length = int.from_bytes(size_field, "little")
    if length > MAX_HEADER_BYTES:
        raise FileRefused(f"{printable(path)} is not a safetensors file of ours: its header claims {length:,} bytes")
    try:
        header = load_json(handle.read(length))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise FileRefused(f"{printable(path)} is not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise FileRefused(f"{printable(path)} is not a safetensors file (its header is not a JSON object)")
    return header


def read_safetensors_header(path: str | os.PathLike, limit: int, what: str = "file") -> dict:
    """The JSON header of a safetensors file (cheap: the tensors are not read)."""
    try:
        with open_regular(path, limit, what) as handle:
            return _header(handle, path)
    except OSError as error:
        raise FileRefused(f"{what} {printable(path)} cannot be read ({error.strerror or error})") from None


def read_safetensors(path: str | os.PathLike, limit: int, what: str = "file") -> tuple[dict, dict]:
    """(header, tensors) of a safetensors file, read once into memory and parsed there."""
    from safetensors.torch import load

    raw = read_bytes(path, limit, what)
    header = _header(io.BytesIO(raw), path)
    try:
        return header, load(raw)
    except Exception as error:  # safetensors raises its own error types for damaged files
        raise FileRefused(f"{printable(path)} is damaged: its tensors cannot be read ({error})") from None
