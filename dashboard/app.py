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

PREDICT = st.Page(ROOT / "dashboard/app_pages/predict.py", title="Predict", icon="🔍", url_path="predict")
PAGES = [PREDICT,
         st.Page(ROOT / "dashboard/app_pages/runs.py", title="Evaluation runs", icon="📊", url_path="runs"),
         st.Page(ROOT / "dashboard/app_pages/compare.py", title="Compare runs", icon="⚖️", url_path="compare"),
         st.Page(ROOT / "dashboard/app_pages/review.py", title="Review sessions", icon="🩺", url_path="review")]


def start() -> None:
    """The address without a page ("/"): on to Predict, keeping any query parameters. Streamlit serves its default
    page at "/" only, whatever its url_path, so Predict itself is not the default: that way /predict works too."""
    st.switch_page(PREDICT, query_params=st.query_params.to_dict())


navigation = st.navigation([st.Page(start, title="Start", default=True, url_path="start", visibility="hidden"),
                            *PAGES])
with error_boundary("The model panel", st.sidebar):
    model_sidebar()
with error_boundary("This page"):  # the last line of defence: a page that fails still leaves the app usable
    navigation.run()
