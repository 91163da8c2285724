"""Two evaluation runs side by side: every headline figure and the difference."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.runs import RunError
from dashboard import charts
from dashboard.charts import label
from dashboard.captions import md
from dashboard.common import error_boundary, found_runs, load_run, run_title

st.title("Compare runs")
st.write("Put two evaluation runs side by side (two models on one dataset, or one model on two datasets). "
         "The last column is B minus A.")


def figures(block: dict | None, classes: list[str]) -> dict[str, float | None]:
    if not block:
        return {}
    out = {"images": block["images"], "accuracy": block["accuracy"], "balanced accuracy": block["balanced_accuracy"],
           "macro F1": block["macro_f1"], "weighted F1": block["weighted_f1"], "macro AUC": block["macro_auc"],
           "micro AUC": block["micro_auc"], "tumour vs none AUC": block["tumour_vs_no_tumour"]["auc"],
           "tumour sensitivity": block["tumour_vs_no_tumour"]["sensitivity"],
           "tumour specificity": block["tumour_vs_no_tumour"]["specificity"],
           "calibration error (ECE)": block["calibration"]["ece"]}
    for name in classes:
        figures_of = block["per_class"][name]
        out[f"{label(name)}: sensitivity"] = figures_of["recall"]
        out[f"{label(name)}: specificity"] = figures_of["specificity"]
        out[f"{label(name)}: AUC"] = figures_of["auc"]
    return out


def comparison_table(a, b, subset: str) -> pd.DataFrame:
    fa, fb = figures(a.metrics.get(subset), a.classes), figures(b.metrics.get(subset), b.classes)
    rows = []
    for key in dict.fromkeys([*fa, *fb]):
        va, vb = fa.get(key), fb.get(key)
        diff = vb - va if isinstance(va, (int, float)) and isinstance(vb, (int, float)) else None
        rows.append({"figure": key, "A": va, "B": vb, "B - A": diff})
    return pd.DataFrame(rows)


paths = [str(p) for p in found_runs()]
extra = st.text_input("Another run directory", key="compare.other", persist_state="session", placeholder="outputs/runs/my-run")
if extra.strip() and extra.strip() not in paths:
    paths.append(extra.strip())
if len(paths) < 1:
    st.info("No evaluation runs to compare yet.")
    st.stop()


left, right = st.columns(2)
choice_a = left.selectbox("Run A", paths, index=0, format_func=run_title, key="compare.a", persist_state="session")
choice_b = right.selectbox("Run B", paths, index=min(1, len(paths) - 1), format_func=run_title, key="compare.b", persist_state="session")
try:
    run_a, run_b = load_run(choice_a), load_run(choice_b)
except RunError as error:
    st.error(md(error))
    st.stop()
subset = st.radio("Images", ["all", "duplicate_free"], horizontal=True, key="compare.subset",
                  format_func={"all": "All images", "duplicate_free": "No duplicate in training"}.get)
with error_boundary("The comparison"):
    table = comparison_table(run_a, run_b, subset)
    st.dataframe(charts.comparison_text(table), hide_index=True, key="compare.table", height=35 * (len(table) + 1) + 3)
for run, tag in ((run_a, "A"), (run_b, "B")):
    dataset = run.info["dataset"]
    st.caption(f"{tag}: model {md(run.info['model']['path'])} on {md(dataset['name'] + '/' + dataset['evaluated'])}, "
               f"created {md(run.info['created'])}")
