"""What every page shares: the model picker in the sidebar and the cached model."""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from core.checkpoint import CheckpointError, read_metadata
from core.data import CLASS_LABELS

ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = ROOT / "assets" / "models"
RUNS_DIR = ROOT / "assets" / "runs"
DEFAULT_MODEL = MODELS_DIR / "default"
MODEL_KEY = "sidebar.model_path"
DATASETS_KEY = "settings.datasets_root"
DATASETS_ENV = "BRAIN_MRI_DATASETS"


def default_datasets_root() -> str:
    """Where datasets live: $BRAIN_MRI_DATASETS, else ../shared/datasets beside the project when present."""
    if os.environ.get(DATASETS_ENV):
        return os.environ[DATASETS_ENV]
    shared = ROOT.parent / "shared" / "datasets"
    return str(shared) if shared.is_dir() else ""


def datasets_root() -> str:
    return st.session_state.setdefault(DATASETS_KEY, default_datasets_root())


@st.cache_data(show_spinner="Reading the evaluation run…", max_entries=16)
def cached_run(path: str, modified: float):
    """A run, read once per process and file version (``modified`` is run.json's time)."""
    from core.evaluation import read_run

    return read_run(path)


def load_run(path: str | Path):
    """The run at ``path``; raises core.evaluation.RunError with a readable message."""
    from core.evaluation import RUN_FILE

    run_file = Path(path) / RUN_FILE
    # Without run.json read_run itself raises the explanation, and cache_data keeps no exceptions.
    return cached_run(str(path), run_file.stat().st_mtime if run_file.is_file() else 0.0)


def run_title(path: str) -> str:
    """A run's label in a picker: its name, plus its folder, which keeps two runs of one name apart."""
    from core.evaluation import RunError

    try:
        return f"{load_run(path).name} · {Path(path).name}"
    except RunError:
        return f"{path} (unreadable)"


def run_images_root(run) -> Path | None:
    """The folder the run's image paths are relative to, when it is on this machine."""
    dataset = run.info.get("dataset", {})
    candidates = [Path(dataset.get("root", "")), ROOT / dataset.get("root", "")]
    if datasets_root() and dataset.get("name"):
        candidates.append(Path(datasets_root()).expanduser() / dataset["name"])
    for candidate in candidates:
        if str(candidate) not in ("", ".") and candidate.is_dir() and \
                (candidate / run.predictions["path"].iloc[0]).is_file():
            return candidate
    return None


@st.cache_data(show_spinner=False, max_entries=8)
def _cached_digest(path: str, modified: float) -> str:
    from core.weights import sha256_of_file

    return sha256_of_file(path)


def file_digest(path: Path) -> str:
    """sha256 of a file, computed once per file version."""
    return _cached_digest(str(path), path.stat().st_mtime)


def runs_of_model(model_file: Path) -> list:
    """The bundled runs that were made with exactly this checkpoint file."""
    from core.evaluation import RunError, find_runs

    digest = file_digest(model_file)
    found = []
    for path in find_runs(RUNS_DIR):
        try:
            run = load_run(path)
        except RunError:
            continue
        if run.info.get("model", {}).get("file_sha256") == digest:
            found.append(run)
    return found


def available_models() -> list[Path]:
    return sorted(p.parent for p in MODELS_DIR.glob("*/*.safetensors"))


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


def classifier_at(path: str | Path):
    """The cached classifier of a checkpoint; raises CheckpointError with a readable message."""
    from core.checkpoint import resolve_checkpoint_path

    file = resolve_checkpoint_path(path)
    return cached_classifier(str(file), os.path.getmtime(file))


def get_classifier():
    """The model selected in the sidebar, or None after telling the user what is wrong."""
    try:
        return classifier_at(current_model_path())
    except CheckpointError as error:
        st.error(f"The model cannot be loaded: {error}")
        return None


def training_source(data: dict) -> str:
    """'brain-tumor-mri/Training' from the checkpoint's data record."""
    trained_on = Path(str(data.get("trained_on", ".")))
    root = Path(str(data.get("root", "?"))).name
    return root if str(trained_on) == "." else f"{root}/{trained_on.as_posix()}"


def calibration_caption(meta: dict) -> str:
    """One line on whether the model's probabilities are calibrated, for people reading them as likelihoods."""
    from core.inference import checkpoint_temperature

    record = meta.get("calibration")
    if not record:
        return ("Probabilities are not calibrated: read them as scores, not as the chance of being right "
                "(`python -m training.calibrate`).")
    try:
        temperature = checkpoint_temperature(meta)
    except CheckpointError as error:
        return f"Calibration unusable: {error}"
    images = record.get("images")
    source = f"{images:,} validation images" if isinstance(images, int) else "validation images"
    source += borrowed_from(record)
    return (f"Probabilities calibrated by temperature scaling (T = {temperature:.2f}, fitted on {source}): on "
            "held-out scans, answers given with 80% are right about 80% of the time.")


def borrowed_from(record: dict) -> str:
    """' of a run of the same recipe (name)' when a calibration-style record was fitted on another run's
    validation split; '' otherwise."""
    fitted_on = record.get("fitted_on") if isinstance(record.get("fitted_on"), dict) else {}
    if not fitted_on.get("borrowed"):
        return ""
    return f" of a run of the same recipe ({fitted_on.get('checkpoint', 'unnamed')})"


def mirror_caption(meta: dict) -> str | None:
    """One line on the model's second look at uncertain scans (its mirror image); None when it takes none."""
    from core.inference import checkpoint_mirror_threshold

    try:
        below = checkpoint_mirror_threshold(meta)
    except CheckpointError as error:
        return f"Second-look setting unusable: {error}"
    if below is None:
        return None
    record = meta["mirror_averaging"]
    text = f"Second look: a scan whose top probability is under {percent(below)} is also judged on its mirror image"
    figures = [record.get(k) for k in ("images", "share_mirrored", "errors_without", "errors_with")]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in figures):
        images, share, without, with_ = figures
        text += (f" (on {images:,} validation images{borrowed_from(record)}: {share:.1%} got it; {without} wrong "
                 f"without it, {with_} with it)")
    return text + "."


def percent(probability: float) -> str:
    """A probability as a percentage with no rounding that would hide a threshold: 0.9 -> '90%', 0.995 ->
    '99.5%'."""
    return f"{probability * 100:.4g}%"


def model_sidebar() -> None:
    models = available_models()
    with st.sidebar:
        st.subheader("Model")
        options = [str(p) for p in models]
        current = str(current_model_path())
        if current not in options:
            options.append(current)
        choice = st.selectbox("Checkpoint", options, index=options.index(current),
                              format_func=lambda p: Path(p).name if Path(p).parent == MODELS_DIR else p)
        typed = st.text_input("…or a checkpoint path", value="", placeholder="/path/to/model.safetensors")
        st.session_state[MODEL_KEY] = typed.strip() or choice
        try:
            meta = read_metadata(current_model_path())
        except CheckpointError as error:
            st.error(str(error))
            return
        st.caption("Classes: " + ", ".join(CLASS_LABELS.get(c, c) for c in meta["classes"]))
        data = meta.get("data", {})
        counts = data.get("counts", {})
        seen = sum(counts.get("train", {}).values()) + sum(counts.get("val", {}).values())
        st.caption(f"Trained on {seen:,} images from `{training_source(data)}`; "
                   f"base weights: {meta['base_weights']['name']}")
        validation = meta.get("validation", {})
        if validation.get("val_accuracy") is not None:
            auc = validation.get("val_macro_auc")
            st.caption(f"Validation accuracy {validation['val_accuracy']:.2%}"
                       + (f", macro AUC {auc:.4f}" if auc is not None else ""))
        st.caption(calibration_caption(meta))
        second_look = mirror_caption(meta)
        if second_look:
            st.caption(second_look)
        from core.checkpoint import resolve_checkpoint_path

        for run in runs_of_model(resolve_checkpoint_path(current_model_path())):
            m = run.metrics
            free = f"; {m['accuracy_duplicate_free']:.2%} without training duplicates" \
                if m.get("accuracy_duplicate_free") is not None else ""
            dataset = run.info["dataset"]
            where = dataset["name"] + ("" if dataset["evaluated"] == "." else "/" + dataset["evaluated"])
            auc = f"; macro AUC {m['macro_auc']:.5f}" if m.get("macro_auc") is not None else ""
            accuracy = f"{m['accuracy']:.2%}" if m.get("accuracy") is not None else "n/a"
            st.caption(f"Tested on {where}: accuracy {accuracy}{free}{auc}")


def recipe_caption(config: dict, best_epoch) -> str:
    """The training recipe of a run's model in one sentence (settings a run's model may predate are skipped)."""
    parts = [f"{config.get('epochs')} epochs ({config.get('head_epochs')} head-only)"]
    if config.get("low_res_epochs"):
        parts.append(f"the first {config['low_res_epochs']} at {config.get('low_res_size')} px")
    if config.get("freeze_stages"):
        frozen = "stem and layer1" + "".join(f", layer{k}" for k in range(2, int(config["freeze_stages"]) + 1))
        parts.append(f"{frozen} frozen")
    parts += [f"batch {config.get('batch_size')}", f"label smoothing {config.get('label_smoothing')}",
              f"validation share {config.get('val_fraction')}", f"seed {config.get('seed')}"]
    return ", ".join(parts) + f"; epoch kept: {best_epoch}."
