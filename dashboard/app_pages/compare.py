"""Evaluation runs side by side: every headline figure of two and the difference, their settings, the images
where two runs of the same data disagree (with McNemar's test), and the curves of several on one chart."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.runs import RunError
from dashboard import charts
from dashboard.captions import md
from dashboard.charts import label
from dashboard.common import error_boundary, found_runs, load_run, run_title

st.title("Compare runs")
st.write("Put two evaluation runs side by side (two models on one dataset, or one model on two datasets). "
         "The table's last column is B minus A; below it, what differs in how they were made, where they disagree, "
         "and the curves of as many runs as you pick.")


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
extra = st.text_input("Another run directory", key="compare.other", persist_state="session",
                      placeholder="outputs/runs/my-run")
if extra.strip() and extra.strip() not in paths:
    paths.append(extra.strip())
if len(paths) < 1:
    st.info("No evaluation runs to compare yet.")
    st.stop()


left, right = st.columns(2)
choice_a = left.selectbox("Run A", paths, index=0, format_func=run_title, key="compare.a", persist_state="session")
choice_b = right.selectbox("Run B", paths, index=min(1, len(paths) - 1), format_func=run_title, key="compare.b",
                           persist_state="session")
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


def disagreements(a, b, subset: str) -> None:
    """The images two runs of the same data answered differently, and whether their accuracies differ."""
    from core.metrics import paired_comparison

    def source(run) -> tuple:
        dataset = run.info["dataset"]
        return dataset.get("name"), dataset.get("evaluated")

    if source(a) != source(b):
        st.info("These runs are of different data, so their answers cannot be paired image by image.")
        return
    joined = a.rows(subset)[["path", "label", "pred", "confidence"]].merge(
        b.rows(subset)[["path", "label", "pred", "confidence"]], on="path", suffixes=(" A", " B"))
    if joined.empty:
        st.info("The two runs share no image in this subset, so their answers cannot be paired.")
        return
    if (joined["label A"] != joined["label B"]).any():
        st.warning("Some images carry different true classes in the two runs; the pairing below uses run A's.")
    right_a = (joined["pred A"] == joined["label A"]).to_numpy()
    right_b = (joined["pred B"] == joined["label A"]).to_numpy()
    result = paired_comparison(right_a, right_b)
    verdict = ("they answered every shared image alike" if result["p_value"] is None else
               f"{result['test']}: p = {result['p_value']:.3g}"
               + (" (a difference this large would be unusual if the two were equally accurate)"
                  if result["p_value"] < 0.05 else " (no evidence that their accuracies differ)"))
    st.markdown(f"**{result['images']:,} images in both runs.** A alone right on {result['only_a_right']}, B alone "
                f"right on {result['only_b_right']}, both wrong on {result['both_wrong']}; {verdict}.")
    differ = joined[joined["pred A"] != joined["pred B"]]
    if len(differ):
        table = pd.DataFrame({"image": differ["path"], "true class": differ["label A"].map(label),
                              "A says": differ["pred A"].map(label), "A confidence": differ["confidence A"],
                              "B says": differ["pred B"].map(label), "B confidence": differ["confidence B"]})
        st.dataframe(table.head(500), hide_index=True, key="compare.disagree",
                     height=min(400, 35 * (min(len(table), 500) + 1) + 3),
                     column_config={c: st.column_config.NumberColumn(format="percent")
                                    for c in ("A confidence", "B confidence")})


with error_boundary("The differences in settings"):
    st.subheader("How they were made")
    differences = charts.settings_differences(run_a.info, run_b.info)
    if differences.empty:
        st.caption("Same model file, data and settings.")
    else:
        st.dataframe(differences, hide_index=True, key="compare.settings",
                     height=min(400, 35 * (len(differences) + 1) + 3))
with error_boundary("The disagreements"):
    st.subheader("Where they disagree")
    disagreements(run_a, run_b, subset)
with error_boundary("The curves"):
    st.subheader("Curves of several runs")
    chosen = st.multiselect("Runs", paths, default=list(dict.fromkeys([choice_a, choice_b])), format_func=run_title,
                            key="compare.overlay")
    runs = []
    for path in chosen:
        try:
            runs.append(load_run(path))
        except RunError as error:
            st.warning(md(error))
    if runs:
        curve_choice, zoom_box = st.columns([2, 1], vertical_alignment="bottom")
        curve = curve_choice.selectbox("Curve", ["macro", "micro", *runs[0].classes], key="compare.curve",
                                       format_func=lambda c: f"{c}-average" if c in ("macro", "micro") else label(c))
        zoom = zoom_box.toggle("Zoom in on the near-perfect corner", key="compare.zoom")
        named = [(r.name, r.curves.get(subset) or {}) for r in runs]
        left, right = st.columns(2)
        left.plotly_chart(charts.overlaid_curves(named, "roc", curve, zoom), width="stretch", key="compare.roc")
        pr_curve = curve if curve in runs[0].classes else runs[0].classes[0]
        right.plotly_chart(charts.overlaid_curves(named, "precision_recall", pr_curve, zoom), width="stretch",
                           key="compare.pr")
        left, right = st.columns(2)
        left.plotly_chart(charts.overlaid_reliability([(r.name, (r.metrics.get(subset) or {}).get("calibration"))
                                                       for r in runs]), width="stretch", key="compare.reliability")
        right.plotly_chart(charts.overlaid_training([(r.name, r.info.get("history", [])) for r in runs]),
                           width="stretch", key="compare.training")
