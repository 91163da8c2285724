"""What every command line shares: one error boundary, so that no traceback reaches the person at the terminal.

Every command's ``main`` is decorated with :func:`command`, so that it returns an exit status whatever goes
wrong, from the shell (``sys.exit(main())``) and from Python alike. The project's own errors (a bad dataset, checkpoint,
setting or file: see :func:`core.errors.is_ours`) carry a sentence written for users and
are printed as one ``error:`` line with exit status 2; an operating-system error is one line naming the file;
anything else is a bug, reported in one line that says how to see the traceback (``BRAIN_MRI_DEBUG=1``).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import sys
from collections.abc import Callable

from core.errors import is_ours
from core.sources.files import printable

DEBUG_ENV = "BRAIN_MRI_DEBUG"
USAGE, FAILURE, INTERRUPTED = 2, 1, 130


def _one_line(text) -> str:
    return printable(" ".join(str(text).split()))


def report(error: BaseException) -> int:
    """Print one line for ``error`` on stderr and return the exit status."""
    if is_ours(error):
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return USAGE
    if isinstance(error, MemoryError):
        print("error: this machine ran out of memory; use smaller batches (--batch-size) or fewer worker processes",
              file=sys.stderr)
        return FAILURE
    if isinstance(error, OSError):
        where = f" ({_one_line(error.filename)})" if error.filename else ""
        print(f"error: {_one_line(error.strerror or error)}{where}", file=sys.stderr)
        return FAILURE
    print(f"error: unexpected {type(error).__name__}: {_one_line(error)}. This is a bug; run again with "
          f"{DEBUG_ENV}=1 to see where it happened", file=sys.stderr)
    return FAILURE


def guarded(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a command's ``main(argv)`` inside the error boundary; returns its exit status."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as error:  # the boundary: every error becomes one line
        if os.environ.get(DEBUG_ENV):
            raise
        logging.getLogger(__name__).debug("error in a command line", exc_info=True)
        return report(error)


def command(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Decorate a command's ``main(argv)`` so that it runs inside the error boundary (:func:`guarded`)."""
    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        return guarded(main, argv)
    return wrapper


LOG_FORMAT, LOG_DATES = "%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"


def start_logging(level: int = logging.INFO) -> None:
    """Every command line's log lines: the time, the level and the message, on stderr."""
    logging.basicConfig(level=level, format=LOG_FORMAT, datefmt=LOG_DATES)


def add_progress(parser: argparse.ArgumentParser, what: str = "show progress") -> None:
    """``--progress/--no-progress`` (on by default): the commands that read many images show a bar."""
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help=what)


_TYPES = {"int": int, "float": float, "str": str}


def settings_parser(prog: str, description: str, settings, help_texts: dict[str, str],
                    required: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """A parser with one option per field of a settings dataclass instance (``--field-name``), whose value is the
    option's default: ``--x/--no-x`` for a yes-or-no, the field's own type otherwise, the default in the help.
    ``required`` fields must be given."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for field in dataclasses.fields(settings):
        flag, default, text = "--" + field.name.replace("_", "-"), getattr(settings, field.name), help_texts[field.name]
        if field.name in required:
            parser.add_argument(flag, required=True, help=text)
        elif isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=text)
        else:  # annotations are text here ("int | None"): the first type named is the option's
            kind = _TYPES.get(str(field.type).split("|")[0].strip(), str)
            parser.add_argument(flag, type=kind, default=default, help=f"{text} (default: {default})")
    return parser


def refit_parser(prog: str, description: str, source_help: str, images: str) -> argparse.ArgumentParser:
    """The options of a command that refits part of a checkpoint in place from held-out images: --checkpoint,
    --from (a run of the same recipe to take it from) and --data (where the ``images`` are)."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint file or its directory; updated in place")
    parser.add_argument("--from", dest="source", default=None, help=source_help)
    parser.add_argument("--data", default=None,
                        help=f"dataset root the {images} live under (default: the one recorded at training)")
    return parser


def refit_target(checkpoint: str, source: str | None, data: str | None, replacing: tuple[str, ...]):
    """The checkpoint file a refit rewrites in place, refused before any work when it lies in or around the dataset
    of the images the refit reads (--data, else the one the checkpoint, and the --from one, recorded at training).
    Only the checkpoints' metadata is read (``replacing``: the entries the refit rewrites). (A --from checkpoint is
    read whole before anything is written, so it may be the same file: the refit then says what is wrong with that.)"""
    from core.checkpoint import read_metadata, resolve_checkpoint_path
    from core.outputs import check_output

    target = resolve_checkpoint_path(checkpoint)
    donor = resolve_checkpoint_path(source) if source is not None else None
    read = {"dataset": data}
    if data is None:
        for what, path in (("dataset", target), ("--from checkpoint's dataset", donor)):
            root = read_metadata(path, replacing).get("data", {}).get("root") if path is not None else None
            read[what] = root if isinstance(root, str) and root else None  # no root recorded: nothing read there
    return check_output(target, read, option="--checkpoint")


def refit_in_place(fit: Callable[[], object], write: Callable[[object], object]) -> tuple[object, int]:
    """Fit something for a checkpoint, then rewrite the checkpoint in place with it: (the fit's result, 0), or
    (None, exit status) after one line saying that the checkpoint is unchanged, when the user interrupts or the file
    cannot be written. (An error while fitting goes to the command's error boundary as usual.)"""
    try:
        result = fit()
        try:
            write(result)
        except OSError as error:
            print(f"error: the checkpoint could not be rewritten ({error}); it is unchanged", file=sys.stderr)
            return None, USAGE
    except KeyboardInterrupt:
        print("\ninterrupted; the checkpoint is unchanged", file=sys.stderr)
        return None, INTERRUPTED
    return result, 0
