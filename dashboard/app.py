"""Entry point: ``streamlit run dashboard/app.py``."""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dashboard.common import error_boundary, model_sidebar  # noqa: E402

st.set_page_config(page_title="Brain-tumour MRI classifier", page_icon="🧠", layout="wide")

navigation = st.navigation([
    st.Page(ROOT / "dashboard/app_pages/predict.py", title="Predict", icon="🔍", default=True, url_path="predict"),
    st.Page(ROOT / "dashboard/app_pages/runs.py", title="Evaluation runs", icon="📊", url_path="runs"),
    st.Page(ROOT / "dashboard/app_pages/compare.py", title="Compare runs", icon="⚖️", url_path="compare"),
])
with error_boundary("The model panel", st.sidebar):
    model_sidebar()
with error_boundary("This page"):  # the last line of defence: a page that fails still leaves the app usable
    navigation.run()
