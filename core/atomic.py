"""Writing files so that a crash never leaves a half-written one in place of a good one."""

from __future__ import annotations

import os
from pathlib import Path


def finish_atomic_write(tmp: Path, target: Path) -> None:
    """Flush ``tmp`` to disk, give it the usual permissions and move it over ``target`` in one step."""
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # safetensors creates files readable by the owner only
    os.replace(tmp, target)
    if hasattr(os, "O_DIRECTORY"):
        directory = os.open(target.parent, os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
