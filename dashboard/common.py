"""What every page shares: the model picker in the sidebar and the cached model."""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from core.checkpoint import CheckpointError, read_metadata
from core.data import CLASS_LABELS

ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = ROOT / "assets" / "models"
DEFAULT_MODEL = MODELS_DIR / "default"
MODEL_KEY = "sidebar.model_path"


def available_models() -> list[Path]:
    return sorted(p.parent for p in MODELS_DIR.glob("*/*.safetensors"))


@st.cache_resource(show_spinner="Loading the model…")
def cached_classifier(path: str, modified: float):
    """One model per checkpoint file and process, shared by every session (``modified`` busts the cache
    when the file is replaced). Never mutate what this returns."""
    from core import load_classifier

    return load_classifier(path)


def current_model_path() -> Path:
    return Path(st.session_state.get(MODEL_KEY, str(DEFAULT_MODEL)))


def get_classifier():
    """The selected model, or None after telling the user what is wrong."""
    path = current_model_path()
    try:
        from core.checkpoint import resolve_checkpoint_path

        file = resolve_checkpoint_path(path)
        return cached_classifier(str(file), os.path.getmtime(file))
    except CheckpointError as error:
        st.error(f"The model cannot be loaded: {error}")
        return None


def training_source(data: dict) -> str:
    """'brain-tumor-mri/Training' from the checkpoint's data record."""
    trained_on = Path(str(data.get("trained_on", ".")))
    root = Path(str(data.get("root", "?"))).name
    return root if str(trained_on) == "." else f"{root}/{trained_on.as_posix()}"


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
