"""What every page shares: the model picker in the sidebar, the cached model, the folders the dashboard may read,
showing file-borne text safely, and the error boundary around each part of a page."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import streamlit as st

from core.checkpoint import CheckpointError, read_metadata
from core.errors import is_ours
from core.runs import RunError
from core.sources import FileRefused, is_within
from core.sources.files import printable
from dashboard.captions import md, model_captions

ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = ROOT / "assets" / "models"
RUNS_DIR = ROOT / "assets" / "runs"
OUTPUTS_DIR = ROOT / "outputs"
DEFAULT_MODEL = MODELS_DIR / "default"
MODEL_KEY = "sidebar.model_path"
DATASETS_KEY = "settings.datasets_root"
DATASETS_ENV = "BRAIN_MRI_DATASETS"
ALLOWED_ENV = "BRAIN_MRI_ALLOWED_ROOTS"
DATA_ENV = "BRAIN_MRI_DATA"       # where review sessions keep their database and uploaded scans
DATABASE_ENV = "BRAIN_MRI_DB"     # any SQLAlchemy URL for the review database, PostgreSQL included

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# What the dashboard may read


def default_datasets_root() -> str:
    """Where datasets live: $BRAIN_MRI_DATASETS, else ../shared/datasets beside the project when present."""
    if os.environ.get(DATASETS_ENV):
        return os.environ[DATASETS_ENV]
    shared = ROOT.parent / "shared" / "datasets"
    return str(shared) if shared.is_dir() else ""


def allowed_roots() -> list[str]:
    """The folders a path typed into the dashboard may point into: the project's assets and outputs, the
    configured datasets folder, and any folder listed in $BRAIN_MRI_ALLOWED_ROOTS (separated by ``os.pathsep``).
    Whoever can reach the dashboard can only ever make it read files there."""
    extra = [p for p in os.environ.get(ALLOWED_ENV, "").split(os.pathsep) if p.strip()]
    return [str(ROOT / "assets"), str(OUTPUTS_DIR), *([default_datasets_root()] if default_datasets_root() else []),
            *extra]


def check_allowed(path: str | Path, what: str) -> Path:
    """``path`` when it lies inside :func:`allowed_roots`; otherwise FileRefused with one message that does not
    depend on whether the path exists."""
    if not is_within(path, allowed_roots()):
        raise FileRefused(f"{what} {printable(path)} is outside the folders this dashboard may read (the project's "
                          f"assets and outputs, the datasets folder, and folders listed in {ALLOWED_ENV})")
    return Path(path).expanduser()


def datasets_root() -> str:
    return st.session_state.setdefault(DATASETS_KEY, default_datasets_root())


def data_dir() -> Path:
    """The folder review sessions write to (the SQLite database, uploaded scans): $BRAIN_MRI_DATA, else data/ in the
    project."""
    return Path(os.environ.get(DATA_ENV) or ROOT / "data").expanduser()


def database_url() -> str:
    """$BRAIN_MRI_DB, else a SQLite file in :func:`data_dir`."""
    if os.environ.get(DATABASE_ENV):
        return os.environ[DATABASE_ENV]
    data_dir().mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{data_dir() / 'review.sqlite'}"


def review_database():
    """The review database's engine (core.review.open_database: one per URL and process, schema brought up to
    date); raises core.review.ReviewError with a readable sentence when it cannot be opened."""
    from core.review import open_database

    return open_database(database_url())


# --------------------------------------------------------------------------------------------------
# Text from files, and errors


def reason(error: BaseException) -> str:
    """One human sentence (markdown-safe) for an error shown in the page."""
    if isinstance(error, MemoryError):
        return "the server ran out of memory for this request; try fewer or smaller files"
    if is_ours(error):
        return md(error)
    return ("an unexpected error occurred; it has been written to the server's log, and the rest of the page still "
            "works")


@contextlib.contextmanager
def error_boundary(what: str, where=None):
    """Run a part of a page; if it fails, show one sentence in its place (``where``: a container or column) and
    let the rest of the page go on. Streamlit's own stop and rerun signals are not errors and pass through."""
    try:
        yield
    except Exception as error:  # the boundary: nothing reaches the page as a traceback
        if not is_ours(error):
            log.exception("error in the dashboard: %s", what)
        (where or st).error(f"{what} could not be shown: {reason(error)}")


# --------------------------------------------------------------------------------------------------
# Runs


@st.cache_resource(show_spinner="Reading the evaluation run…", max_entries=16)
def cached_run(path: str, modified: tuple[float, float]):
    """A run, read once per process and file version (``modified`` is run.json's time), and shared by every
    session as it is: a cache_data copy would be unpickled on every rerun of every page. Never mutate it."""
    from core.runs import read_run

    return read_run(path)


def load_run(path: str | Path):
    """The run at ``path``; raises core.runs.RunError with a readable message (also for a folder outside the
    ones the dashboard may read)."""
    from core.runs import RUN_FILE

    try:
        check_allowed(path, "run folder")
    except FileRefused as error:
        raise RunError(str(error)) from None
    from core.runs import EXPLANATIONS_FILE

    run_file, added = Path(path) / RUN_FILE, Path(path) / EXPLANATIONS_FILE
    # Without run.json read_run itself raises the explanation, and the cache keeps no exceptions. The heatmap
    # measurements are added to a run later: their time is part of the key too.
    return cached_run(str(path), (run_file.stat().st_mtime if run_file.is_file() else 0.0,
                                  added.stat().st_mtime if added.is_file() else 0.0))


def found_runs() -> list[Path]:
    """The runs the dashboard finds by itself: the bundled ones (assets/runs), then those in outputs/ and
    outputs/runs/, where python -m training.evaluate is told to write them."""
    from core.runs import find_runs

    found = [*find_runs(RUNS_DIR), *find_runs(OUTPUTS_DIR), *find_runs(OUTPUTS_DIR / "runs")]
    return list(dict.fromkeys(found))


def run_title(path: str) -> str:
    """A run's label in a picker: its name, plus its folder, which keeps two runs of one name apart."""
    try:
        return f"{load_run(path).name} · {Path(path).name}"
    except RunError:
        return f"{printable(path)} (unreadable)"


def run_images_root(run) -> Path | None:
    """The folder the run's image paths are relative to: the run's dataset inside the datasets folder set in the
    sidebar (itself inside the folders the dashboard may read), when it is there."""
    root = datasets_root()
    if not root or not is_within(root, allowed_roots()):
        return None
    return run.images_root(root)


@st.cache_data(show_spinner=False, max_entries=8)
def _cached_digest(path: str, modified: float) -> str:
    from core.checkpoint import MAX_CHECKPOINT_BYTES
    from core.weights import sha256_of_file

    return sha256_of_file(path, MAX_CHECKPOINT_BYTES)


def file_digest(path: Path) -> str:
    """sha256 of a file, computed once per file version."""
    return _cached_digest(str(path), path.stat().st_mtime)


def runs_of_model(model_file: Path) -> list:
    """The bundled runs that were made with exactly this checkpoint file."""
    from core.runs import find_runs

    digest = file_digest(model_file)
    found = []
    for path in find_runs(RUNS_DIR):
        try:
            run = load_run(path)
        except RunError:
            continue
        if run.made_by(digest):
            found.append(run)
    return found


def available_models() -> list[Path]:
    """The bundled model folders (assets/models/*/ with a checkpoint), each once."""
    return sorted({p.parent for p in MODELS_DIR.glob("*/*.safetensors")})


@st.cache_resource(show_spinner="Loading the model…")
def cached_classifier(path: str, modified: float):
    """One model per checkpoint file and process, shared by every session (``modified`` busts the cache
    when the file is replaced). Never mutate what this returns."""
    from core import load_classifier
    from core.explain import warm_up

    classifier = load_classifier(path)
    warm_up(classifier)  # the first upload then answers in tens of milliseconds, not seconds
    return classifier


def current_model_path() -> Path:
    return Path(st.session_state.get(MODEL_KEY, str(DEFAULT_MODEL)))


def checkpoint_file(path: str | Path) -> Path:
    """The checkpoint file at ``path`` (a file or its folder), refused with CheckpointError when it lies outside
    the folders the dashboard may read, before anything there is looked at."""
    from core.checkpoint import resolve_checkpoint_path

    try:
        check_allowed(path, "checkpoint")
    except FileRefused as error:
        raise CheckpointError(str(error)) from None
    return resolve_checkpoint_path(path)


def classifier_at(path: str | Path):
    """The cached classifier of a checkpoint; raises CheckpointError with a readable message."""
    file = checkpoint_file(path)
    return cached_classifier(str(file), _modified(file))


def get_classifier():
    """The model selected in the sidebar, or None after telling the user what is wrong."""
    try:
        return classifier_at(current_model_path())
    except CheckpointError:
        # The reason is shown once, in the sidebar, beside the path that caused it.
        st.error("The model cannot be loaded: see the sidebar for why. Clear the checkpoint path there to go back "
                 "to the default model.")
        return None


def model_sidebar() -> None:
    models = available_models()
    with st.sidebar:
        st.subheader("Model")
        options = [str(p) for p in models] or [str(DEFAULT_MODEL)]
        # The typed path, when there is one, wins; clearing it goes back to the model chosen in the list.
        choice = st.selectbox("Checkpoint", options, format_func=lambda p: Path(p).name, key="sidebar.choice")
        typed = st.text_input("…or a checkpoint path", placeholder="/path/to/model.safetensors",
                              key="sidebar.checkpoint_path",
                              help=("Inside the project's assets or outputs folder, or a folder listed in "
                                    f"{ALLOWED_ENV}"))
        st.session_state[MODEL_KEY] = typed.strip() or choice
        with error_boundary("The model's description"):
            try:
                file = checkpoint_file(current_model_path())
                captions = model_description(str(file), _modified(file), _runs_signature())
                classifier_at(file)  # tensors that do not load are reported here too, beside the path
            except CheckpointError as error:
                st.error(md(error))
                return
            for text, detail in captions:
                st.caption(text, help=detail)


def _modified(path: Path) -> float:
    try:
        return os.path.getmtime(path)
    except OSError:
        return 0.0  # reading it then says what is wrong


def _runs_signature() -> tuple:
    """What the bundled runs are now (folders and run.json times), so that a cached description follows them."""
    from core.runs import RUN_FILE, find_runs

    return tuple((str(path), _modified(path / RUN_FILE)) for path in find_runs(RUNS_DIR))


@st.cache_data(show_spinner=False, max_entries=16)
def model_description(file: str, modified: float, runs: tuple) -> list[tuple[str, str | None]]:
    """The sidebar's description of a model (dashboard.captions.model_captions), made once per checkpoint file
    and state of the bundled runs, not on every rerun of every session: reading the metadata and the runs is
    most of what the sidebar would cost."""
    return model_captions(read_metadata(file), runs_of_model(Path(file)))
