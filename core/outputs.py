"""Where a command may write: the one rule every output passes before any work is done.

An output (a run folder, a trained model's folder, a split, a cross-validation, a CSV, a checkpoint rewritten in
place, a download) must neither be, contain, nor lie inside anything the command reads: its dataset, mask folders,
checkpoints, list files. Otherwise a mistyped ``--out`` writes into a dataset (which the next scan of that dataset
then reads), or replaces the inputs themselves. :func:`check_output` applies that rule with every symbolic link
followed; :func:`check_replaceable` and :func:`put_in_place` replace an existing output only when asked, only when
it is the command's own kind of folder, and never leave half of one behind.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from core.sources.files import printable


class OutputRefused(ValueError):
    """An output path that would write into, over or around an input, or replace what is not the command's own; the
    message says which and what to do."""


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(Path(path).expanduser()))


def check_output(out: str | os.PathLike, inputs: Mapping[str, str | os.PathLike | None], option: str = "--out"
                 ) -> Path:
    """``out`` (expanded), refused unless it names something of its own and neither is, contains nor lies inside
    any of ``inputs`` (what each is, in words -> its path; None: not used this time). Only paths are compared:
    nothing is read or made, so a command can call this first."""
    out = Path(out).expanduser()
    if not out.name or out.name in (".", ".."):
        raise OutputRefused(f"{option} {printable(out)} names no folder or file of its own; give the output its own "
                            "name")
    real_out = _real(out)
    for what, path in inputs.items():
        if path is None:
            continue
        real = _real(path)
        if real_out == real or real_out.is_relative_to(real) or real.is_relative_to(real_out):
            raise OutputRefused(f"{option} {printable(out)} overlaps the {what} ({printable(path)}): nothing is "
                                f"written into, over or around what a command reads, so give {option} a path "
                                f"outside the {what}")
    return out


def check_replaceable(out: Path, overwrite: bool, is_ours: Callable[[Path], bool], kind: str, option: str = "--out"
                      ) -> None:
    """Refuse an existing ``out`` unless ``overwrite`` is given and ``is_ours(out)`` says it is the command's own
    kind of output (``kind``, in words: "an evaluation run (no readable run.json)"), so that nothing else is lost."""
    if not (out.exists() or out.is_symlink()):
        return
    if not overwrite:
        raise OutputRefused(f"{printable(out)} already exists; choose another {option} or pass --overwrite to "
                            "replace it")
    if not is_ours(out):
        raise OutputRefused(f"{printable(out)} exists and is not {kind}; --overwrite only ever replaces one, so "
                            f"choose another {option}")


def put_in_place(staging: Path, out: Path) -> Path:
    """Move a finished ``staging`` folder to ``out``, replacing what is there (already checked with
    :func:`check_replaceable`); should the move fail, the old folder is put back rather than leave nothing."""
    if not (out.exists() or out.is_symlink()):
        staging.rename(out)
        return out
    retired = out.with_name(f".{out.name}.old-{os.getpid()}")
    out.rename(retired)
    try:
        staging.rename(out)
    except OSError:
        retired.rename(out)
        raise
    shutil.rmtree(retired, ignore_errors=True)
    return out
