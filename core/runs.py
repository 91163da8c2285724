"""The evaluation-run format: writing a run folder safely, and reading one that may have been tampered with.

A run is a folder written by :func:`core.evaluation.evaluate` and documented in ``docs/evaluation-runs.md``:
``run.json`` (what was evaluated, with what), ``predictions.csv`` (one row per image), ``metrics.json``,
``curves.json`` and, for datasets with tumour boxes, ``localisation.csv``, with tumour masks, ``masks.csv``. This
module is all a reader of runs (the dashboard) needs.

Writing (:class:`RunWriter`) never loses data: the run is assembled in a hidden staging folder beside its
destination, created before any work so that an unwritable destination is found at once, and moved into place
at the end. An existing folder is replaced only when asked, and only when it is itself a run; a destination
that holds or equals the dataset or the checkpoint is refused.

Reading (:func:`read_run`) trusts nothing: every file is read as a regular file of bounded size, the JSON files
are checked against schemas and the predictions table column by column, so that whatever is wrong comes out
as one :class:`RunError` sentence rather than as a crash in a page. Image paths from a run are resolved only
inside the folder they are relative to (:meth:`EvaluationRun.image_path`).
"""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.data import CLASSES
from core.outputs import OutputRefused, check_output, check_replaceable, put_in_place
from core.run_schemas import CURVES_SCHEMA, METRICS_SCHEMA, RUN_SCHEMA, SUBSETS
from core.sources import FileRefused, contained_path, read_bytes
from core.sources.files import load_json, printable
from core.sources.schema import schema_problem

RUN_FORMAT = "brain-tumour-mri evaluation run"
RUN_FORMAT_VERSION = 1
RUN_FILE = "run.json"
PREDICTIONS_FILE = "predictions.csv"
METRICS_FILE = "metrics.json"
CURVES_FILE = "curves.json"
LOCALISATION_FILE = "localisation.csv"
MASKS_FILE = "masks.csv"
EXPLANATIONS_FILE = "explanations.json"  # added to a run by python -m training.explanations
TABLE_FILES = (LOCALISATION_FILE, MASKS_FILE)  # per-image localisation tables a run may hold

# Sizes far above any honest run (the bundled figshare run, 4,564 images: 0.9 MB of predictions), that keep a
# crafted run from taking the dashboard's memory and time.
MAX_JSON_BYTES = 16 << 20
MAX_TABLE_BYTES = 64 << 20
MAX_ROWS = 250_000


class RunError(ValueError):
    """A run cannot be written or read; the message says what is wrong and what to do."""


# --------------------------------------------------------------------------------------------------
# Writing


def _is_run_folder(path: Path) -> bool:
    """Whether ``path`` is a folder holding a run description (the only kind of folder ``overwrite`` replaces)."""
    if path.is_symlink() or not path.is_dir():
        return False
    try:
        info = load_json(read_bytes(path / RUN_FILE, MAX_JSON_BYTES, RUN_FILE))
    except (FileRefused, ValueError, RecursionError):
        return False
    return isinstance(info, dict) and info.get("format") == RUN_FORMAT


class RunWriter:
    """Where a new run is assembled, checked before any work is done::

        with RunWriter(out, overwrite, protected={"dataset": data_root, "checkpoint": checkpoint_file}) as writer:
            ...                       # the long part: evaluate
            writer.write(info, predictions, metrics, curves, {LOCALISATION_FILE: table, ...})

    ``protected`` names paths the run folder must neither be, contain nor lie inside (None: not used this time).
    """

    def __init__(self, out: str | os.PathLike, overwrite: bool, protected: dict[str, str | os.PathLike | None]):
        self.out = Path(out).expanduser()
        self.overwrite = overwrite
        self.protected = protected
        self.staging: Path | None = None  # named once the destination has passed check()

    def check(self) -> None:
        """Refuse a destination that would lose data, before anything is written (the rule of :mod:`core.outputs`,
        said as a :class:`RunError`, as everything a run writer refuses)."""
        try:
            check_output(self.out, self.protected)
            check_replaceable(self.out, self.overwrite, _is_run_folder, f"an evaluation run (no readable {RUN_FILE})")
        except OutputRefused as error:
            raise RunError(str(error)) from None

    def __enter__(self) -> RunWriter:
        self.check()
        self.staging = self.out.with_name(f".{self.out.name}.partial-{os.getpid()}")
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging.mkdir()
        except OSError as error:
            raise RunError(f"cannot write the run beside {printable(self.out)} ({error.strerror or error}); choose an "
                           "--out in a folder you can write to") from None
        return self

    def __exit__(self, *exc) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)

    def write(self, info: dict, predictions: pd.DataFrame, metrics: dict, curve_sets: dict,
              tables: dict[str, pd.DataFrame] | None = None) -> Path:
        """Write every file into the staging folder, then move it into place (the old run, if replaced, is put
        back should the move fail)."""
        staging = self.staging
        predictions.to_csv(staging / PREDICTIONS_FILE, index=False)
        _write_json(staging / METRICS_FILE, metrics)
        _write_json(staging / CURVES_FILE, curve_sets)
        for name, table in (tables or {}).items():
            if name not in TABLE_FILES:
                raise ValueError(f"{name} is not a table a run holds")
            table.to_csv(staging / name, index=False)
        _write_json(staging / RUN_FILE, info)  # last: a folder without run.json is not a run
        for item in staging.iterdir():
            with open(item, "rb") as handle:
                os.fsync(handle.fileno())
        if self.out.exists() or self.out.is_symlink():
            self.check()  # it may have changed during the evaluation
        return put_in_place(staging, self.out)


def _write_json(path: Path, value) -> None:
    from core.checkpoint import json_safe

    path.write_text(json.dumps(json_safe(value), indent=1, allow_nan=False) + "\n")


def _check(value, schema: dict, file: Path) -> None:
    problem = schema_problem(value, schema)
    if problem is not None:
        problem = problem.replace("the whole", "the file as a whole")
        raise RunError(f"{printable(file)} is not a usable run file: {problem}; evaluate again")


def _check_numbers(curves: dict, file: Path) -> None:
    """Every point of every curve is a finite number (at numpy's speed: a curve can have a point per image)."""
    for subset, sets in curves.items():
        for kind, named in (sets or {}).items():
            lists = named.items() if kind != "tumour_roc" else [("tumour", named)]
            for name, curve in lists:
                for axis, values in curve.items():
                    try:
                        finite = np.isfinite(np.asarray(values, dtype=np.float64)).all()
                    except (TypeError, ValueError):
                        finite = False
                    if not finite:
                        raise RunError(f"{printable(file)} is not a usable run file: {subset}.{kind}.{name}.{axis} "
                                       "holds something other than numbers; evaluate again")


# --------------------------------------------------------------------------------------------------
# Reading


@dataclass
class EvaluationRun:
    path: Path
    info: dict
    predictions: pd.DataFrame
    metrics: dict
    curves: dict
    classes: list[str] = field(default_factory=lambda: list(CLASSES))

    @functools.cached_property
    def localisation(self) -> pd.DataFrame | None:
        """The per-image localisation scores (``localisation.csv``), read when asked for; None when the run has
        none. The summary the dashboard shows is in ``metrics["localisation"]``."""
        file = self.path / LOCALISATION_FILE
        return _read_table(file) if file.exists() else None

    @functools.cached_property
    def explanations(self) -> dict | None:
        """The heatmap measurements ``python -m training.explanations`` added (``explanations.json``), or None.
        A damaged or foreign file is treated as absent: it is a supplement, not part of the run."""
        file = self.path / EXPLANATIONS_FILE
        if not file.is_file():
            return None
        try:
            data = load_json(read_bytes(file, MAX_JSON_BYTES, EXPLANATIONS_FILE))
        except (FileRefused, ValueError, RecursionError):
            return None
        return data if _usable_explanations(data) else None

    @functools.cached_property
    def masks(self) -> pd.DataFrame | None:
        """The per-image scores against tumour masks (``masks.csv``; summary in ``metrics["masks"]``), read when
        asked for; None when the run has none."""
        file = self.path / MASKS_FILE
        return _read_table(file) if file.exists() else None

    @property
    def name(self) -> str:
        return self.info.get("name") or self.path.name

    def probabilities(self, rows: pd.DataFrame | None = None) -> np.ndarray:
        rows = self.predictions if rows is None else rows
        return rows[[f"prob_{c}" for c in self.classes]].to_numpy(dtype=np.float64)

    def model_file(self, project_root: Path) -> Path:
        """Where the model that made the run was, as the run records it (a relative path is relative to the
        project, as the bundled runs name theirs)."""
        recorded = Path(self.info["model"]["path"])
        return recorded if recorded.is_absolute() else project_root / recorded

    def made_by(self, file_sha256: str) -> bool:
        """Whether the run was made with exactly the checkpoint file of this digest."""
        return self.info["model"].get("file_sha256") == file_sha256

    def rows(self, subset: str) -> pd.DataFrame:
        """The predictions of one subset: every image ("all"), or those known to have no duplicate among the
        model's training images ("duplicate_free")."""
        if subset == "all":
            return self.predictions
        if "train_duplicate" not in self.predictions:
            return self.predictions.iloc[:0]
        known_free = (self.predictions["train_duplicate"] == False).fillna(False)  # noqa: E712 - a boolean column with NA
        return self.predictions[known_free.astype(bool)]

    def images_root(self, datasets_root: str | os.PathLike) -> Path | None:
        """The folder the run's image paths are relative to: the run's dataset, found by its name inside
        ``datasets_root`` (the only place images are read from), or None when it is not there."""
        name = str(self.info["dataset"]["name"])
        try:
            root = contained_path(datasets_root, name, "dataset")
        except FileRefused:
            return None
        return root if root.is_dir() else None

    def image_path(self, images_root: Path, relative: str) -> Path:
        """Where one of the run's images is, refused (:class:`core.sources.FileRefused`) unless it lies inside
        ``images_root``."""
        return contained_path(images_root, relative, "image")


def _read_file(path: Path, limit: int) -> bytes:
    try:
        return read_bytes(path, limit, path.name)
    except FileRefused as error:
        if not path.exists() and not path.is_symlink():
            raise RunError(f"{printable(path.parent)} is not a complete evaluation run: {path.name} is missing"
                           ) from None
        raise RunError(f"{error}; evaluate again") from None


def _read_json(path: Path):
    raw = _read_file(path, MAX_JSON_BYTES)
    try:
        return load_json(raw)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise RunError(f"{printable(path)} is damaged (not valid JSON: {str(error)[:120]}); evaluate again") from None


def _usable_explanations(data) -> bool:
    """Whether an explanations.json has the parts the dashboard reads, in the current form (a file from an
    earlier version of the command, without the sanity rows or the rule behind ``best``, is not shown)."""
    if not isinstance(data, dict):
        return False
    rows, best, sanity = data.get("by_method_and_layer"), data.get("best"), data.get("sanity")
    return (isinstance(rows, list) and len(rows) > 0
            and all(isinstance(r, dict) and isinstance(r.get("per_class"), dict) for r in rows)
            and isinstance(best, dict) and ("rule" in best or best.get("method") is None)
            and isinstance(sanity, dict) and isinstance(sanity.get("rows"), list))


def _read_table(path: Path, **options) -> pd.DataFrame:
    raw = _read_file(path, MAX_TABLE_BYTES)
    try:
        table = pd.read_csv(io.BytesIO(raw), nrows=MAX_ROWS + 1, **options)
        if len(table) > MAX_ROWS:
            raise RunError(f"{printable(path)} has more than {MAX_ROWS:,} rows, more than this dashboard reads")
        return table
    except RunError:
        raise
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise RunError(f"{printable(path)} is damaged ({type(error).__name__}: {str(error)[:200]}); evaluate again"
                       ) from None


def _check_predictions(table: pd.DataFrame, classes: list[str], file: Path) -> pd.DataFrame:
    """Columns, labels and probabilities of a predictions table: what every page assumes."""
    def refuse(problem: str):
        raise RunError(f"{printable(file)} {problem}; evaluate again")

    needed = ["path", "label", "pred", *(f"prob_{c}" for c in classes), "confidence"]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        refuse(f"lacks the columns {', '.join(missing)}")
    if table.empty:
        refuse("holds no predictions (only a header)")
    table["path"] = table["path"].astype(str)
    if (table["path"] == "").any():
        refuse("has rows without an image path")
    for column in ("label", "pred"):
        unknown = sorted(set(table[column].astype(str)) - set(classes))
        if unknown:
            refuse(f"has {column} values that are not the run's classes: {', '.join(map(repr, unknown[:3]))}")
    for column in [f"prob_{c}" for c in classes] + ["confidence"]:
        values = pd.to_numeric(table[column], errors="coerce")
        if values.isna().any() or not np.isfinite(values).all() or (values < 0).any() or (values > 1).any():
            refuse(f"has {column} values that are not probabilities between 0 and 1")
        table[column] = values.astype(np.float64)
    known = {"True": True, "False": False, "": pd.NA, True: True, False: False}
    for column in ("train_duplicate", "unfamiliar"):
        if column in table:
            if not table[column].isin(list(known)).all():
                refuse(f"has {column} values other than True, False or empty")
            table[column] = table[column].map(known).astype("boolean")
    if "familiarity" in table:
        raw = table["familiarity"].astype(str)
        blank = raw == ""  # an image the model has no familiarity score for
        values = pd.to_numeric(raw.where(~blank), errors="coerce")
        if (values.isna() & ~blank).any() or (values < 0).any() or np.isinf(values).any():
            refuse("has familiarity scores that are not numbers of 0 or more")
        table["familiarity"] = values.astype(np.float64)
    return table


def read_run(path: str | os.PathLike) -> EvaluationRun:
    """Load an evaluation run directory. Raises :class:`RunError` with what to do when it is missing,
    incomplete, damaged, inconsistent or written in another format version."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise RunError(f"{printable(path)} is not a folder; point at an evaluation run directory (it holds {RUN_FILE})")
    if not (path / RUN_FILE).exists():
        raise RunError(f"{printable(path)} is not an evaluation run: {RUN_FILE} is missing (make one with "
                       "python -m training.evaluate)")
    info = _read_json(path / RUN_FILE)
    if not isinstance(info, dict) or info.get("format") != RUN_FORMAT:
        raise RunError(f"{printable(path / RUN_FILE)} is not a {RUN_FORMAT} description")
    version = info.get("format_version")
    if version != RUN_FORMAT_VERSION:
        if isinstance(version, int) and version > RUN_FORMAT_VERSION:
            raise RunError(f"{printable(path)} is in run format {version}, newer than this version of the project "
                           f"reads ({RUN_FORMAT_VERSION}); update the project")
        age = "older than" if isinstance(version, int) and not isinstance(version, bool) else "not"
        raise RunError(f"{printable(path)} is in run format {version!r}, {age} the current {RUN_FORMAT_VERSION}; "
                       "evaluate the model again with python -m training.evaluate")
    _check(info, RUN_SCHEMA, path / RUN_FILE)
    classes = list(info["model"]["classes"])
    metrics = _read_json(path / METRICS_FILE)
    _check(metrics, METRICS_SCHEMA, path / METRICS_FILE)
    for subset in SUBSETS:
        block = metrics.get(subset)
        if block and (set(classes) - set(block["per_class"]) or len(block["confusion_matrix"]) != len(classes)
                      or any(len(row) != len(classes) for row in block["confusion_matrix"])):
            raise RunError(f"{printable(path / METRICS_FILE)} does not match the run's {len(classes)} classes; "
                           "evaluate again")
    curves = _read_json(path / CURVES_FILE)
    _check(curves, CURVES_SCHEMA, path / CURVES_FILE)
    _check_numbers(curves, path / CURVES_FILE)
    predictions = _read_table(path / PREDICTIONS_FILE, keep_default_na=False,
                              dtype={"path": str, "label": str, "pred": str, "train_duplicate": str,
                                     "train_duplicate_kind": str, "train_match": str,
                                     "familiarity": str, "unfamiliar": str})
    predictions = _check_predictions(predictions, classes, path / PREDICTIONS_FILE)
    return EvaluationRun(path, info, predictions, metrics, curves, classes)


def find_runs(folder: str | os.PathLike) -> list[Path]:
    """Run directories directly inside ``folder`` (or ``folder`` itself when it is one), sorted by name."""
    folder = Path(folder).expanduser()
    if (folder / RUN_FILE).is_file():
        return [folder]
    if not folder.is_dir():
        return []
    try:
        return sorted(p for p in folder.iterdir() if (p / RUN_FILE).is_file() and not p.name.startswith("."))
    except OSError:
        return []
