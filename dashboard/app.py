"""Entry point: ``streamlit run dashboard/app.py``."""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from dashboard.common import error_boundary, model_sidebar

ROOT = Path(__file__).resolve().parents[1]

st.set_page_config(page_title="Brain-tumour MRI classifier", page_icon="🧠", layout="wide")

PREDICT = st.Page(ROOT / "dashboard/app_pages/predict.py", title="Predict", icon="🔍", url_path="predict")
ALL_PAGES = [PREDICT,
             st.Page(ROOT / "dashboard/app_pages/runs.py", title="Evaluation runs", icon="📊", url_path="runs"),
             st.Page(ROOT / "dashboard/app_pages/compare.py", title="Compare runs", icon="⚖️", url_path="compare"),
             st.Page(ROOT / "dashboard/app_pages/review.py", title="Review sessions", icon="🩺", url_path="review")]
PAGES_ENV = "BRAIN_MRI_PAGES"  # e.g. "review": a server for the readers of a blinded study, with no other page
wanted = {p.strip() for p in os.environ.get(PAGES_ENV, "").split(",") if p.strip()}
PAGES = [page for page in ALL_PAGES if not wanted or page.url_path in wanted] or ALL_PAGES
# A reader in a review (or someone joining one) sees that page alone: no page list, no model panel, nothing that
# shows the model's answers or the runs' cases before they commit their own.
READING = bool(st.query_params.get("reader") or st.query_params.get("session"))
# The presenter's page is projected to a class: no page list and no model panel on the projector either.
READING = READING or bool(st.query_params.get("present"))


def start() -> None:
    """The address without a page ("/"): on to the first page (Predict), keeping any query parameters. Streamlit
    serves its default page at "/" only, whatever its url_path, so that page itself is not the default: that way
    /predict works too."""
    st.switch_page(PAGES[0], query_params=st.query_params.to_dict())


navigation = st.navigation([st.Page(start, title="Start", default=True, url_path="start", visibility="hidden"),
                            *PAGES], position="hidden" if READING or len(PAGES) == 1 else "sidebar")
if not READING:
    with error_boundary("The model panel", st.sidebar):
        model_sidebar()
with error_boundary("This page"):  # the last line of defence: a page that fails still leaves the app usable
    navigation.run()
