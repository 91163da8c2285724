"""Browse an evaluation run: headline figures with intervals, confusion matrix and its cases, curves,
per-class table, calibration, the tumour/no-tumour operating point, training history and localisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core.checkpoint import CheckpointError
from core.data import CLASS_LABELS
from core.explain import CAM_METHODS, DEFAULT_LAYER, LAYERS, explain, fast_methods, layer_description, overlay
from core.masks import margin_text
from core.metrics import NO_TUMOUR, operating_point
from core.runs import RunError
from core.sources import FileRefused, is_within, read_image
from core.tables import csv_bytes
from dashboard import charts, review
from dashboard.captions import familiar_rule, layer_label, md, model_grid, recipe_caption, warning_where_wrong
from dashboard.common import (
    ALLOWED_ENV,
    DATASETS_ENV,
    DATASETS_KEY,
    ROOT,
    allowed_roots,
    checkpoint_file,
    classifier_at,
    current_model_path,
    datasets_root,
    error_boundary,
    file_digest,
    found_runs,
    load_run,
    run_images_root,
    run_title,
)

SUBSETS = {"all": "All images", "duplicate_free": "No duplicate in training"}
MAX_CASES = 500      # cases listed for one cell (a crafted run can put millions in one)
CASE_SIDE = 1024     # a case is shown, and cached, at most this large


@st.cache_data(show_spinner=False, max_entries=256)
def thumbnail(path: str):
    """A case's thumbnail, decoded once (12 are shown for every rerun of the page). Raises ValueError for a
    file that is not a readable image."""
    image = read_image(path)
    image.thumbnail((112, 112))
    return image


st.title("Evaluation runs")


def pick_run():
    """The run chosen on this page (the runs found in assets/runs and outputs/, plus any folder the user names),
    or None. A link may name the run (``?run=<folder>``); the address follows the choice, so it can be shared."""
    found = [str(p) for p in found_runs()]
    extra = st.text_input("Another run directory", key="runs.other", persist_state="session",
                          placeholder="outputs/runs/my-run", help="Any folder written by python -m training.evaluate")
    options = found + ([extra.strip()] if extra.strip() and extra.strip() not in found else [])
    if not options:
        st.info("No evaluation runs yet. Make one with "
                "`python -m training.evaluate --data ... --out outputs/runs/...`; "
                "runs in outputs/ are found by themselves.")
        return None
    linked = [p for p in found if Path(p).name == st.query_params.get("run")]
    if linked and "runs.choice" not in st.session_state:
        st.session_state["runs.choice"] = linked[0]
    if extra.strip() and st.session_state.get("runs.last_other") != extra.strip():
        st.session_state["runs.choice"] = extra.strip()  # a newly typed folder becomes the chosen run
    st.session_state["runs.last_other"] = extra.strip()
    choice = st.selectbox("Run", options, format_func=run_title, key="runs.choice", persist_state="session")
    if choice in found:
        st.query_params["run"] = Path(choice).name
    try:
        return load_run(choice)
    except RunError as error:
        st.error(md(error))
        return None


def confidence(run) -> str:
    """The confidence level the run's intervals were computed at, as text ("95%")."""
    return f"{run.info.get('settings', {}).get('confidence', 0.95):.0%}"


def headline_cards(run) -> None:
    rows = [("all", run.metrics["all"])]
    if run.metrics.get("duplicate_free"):
        rows.append(("duplicate_free", run.metrics["duplicate_free"]))
    figures = [("Accuracy", "accuracy", "accuracy", ".2%", "The share of scans whose class the model named right."),
               ("Balanced accuracy", "balanced_accuracy", None, ".2%",
                "Accuracy with the four classes counted equally: the mean of their sensitivities."),
               ("Ranking (AUC)", "macro_auc", "macro_auc", ".4f",
                "Macro AUC: for each class, the chance that a scan of that class gets a higher probability for it than "
                "a scan of another class, averaged over the classes. 1 is perfect, 0.5 is chance."),
               ("Tumour or not (AUC)", None, "tumour_auc", ".4f",
                "The same ranking measure for 'any tumour' against 'no tumour', from one minus the no-tumour "
                "probability."),
               ("Overconfidence (ECE)", None, None, ".4f",
                "Expected calibration error: how far, on average, the stated confidence is from the share of answers "
                "that are right. 0 means the percentages can be taken at their word.")]
    level = confidence(run)
    for subset, block in rows:
        st.markdown(f"**{SUBSETS[subset]}** ({block['images']:,} images)")
        # Cards of a fixed width in a row that wraps: at any window width each figure is whole, never "99.…".
        row = st.container(horizontal=True, wrap=True)
        for title, key, interval, spec, meaning in figures:
            column = row.container(width=210)
            if key is not None:
                value = block.get(key)
            elif interval == "tumour_auc":
                value = block["tumour_vs_no_tumour"]["auc"]
            else:
                value = block["calibration"]["ece"]
            column.metric(title, charts.fmt(value, spec), border=True, help=meaning)
            low, high = block.get("intervals", {}).get(interval, [None, None]) if interval else (None, None)
            if low is not None and high is not None:
                column.caption(f"{level} CI {charts.fmt(low, spec)} – {charts.fmt(high, spec)}")
    spread = (run.info.get("crossval") or {}).get("spread")
    if isinstance(spread, dict):
        parts = []
        for title, key, spec in (("accuracy", "accuracy", ".2%"), ("macro AUC", "macro_auc", ".4f")):
            figure = spread.get(key) or {}
            folds = [v for v in figure.get("folds") or [] if isinstance(v, (int, float))]
            if folds:
                sd = f" ± {charts.fmt(figure['sd'], spec)}" if isinstance(figure.get("sd"), (int, float)) else ""
                parts.append(f"{title} {charts.fmt(figure.get('mean'), spec)}{sd} over {len(folds)} folds "
                             f"({', '.join(charts.fmt(v, spec) for v in folds)})")
        if parts:
            st.caption("Cross-validation, each fold read once by the model trained on the others: "
                       + "; ".join(parts) + ". The figures above pool every fold's answers.")
        if run.info["crossval"].get("group_by") == "image":
            st.warning("These folds split single slices: slices of one patient, and copies of one slice, sit on both "
                       "sides of a split, so the figures flatter the model (the leaky protocol of papers that split "
                       "by slice). Compare them with patient-wise folds before quoting them.")
    patients = run.metrics.get("patients")
    if patients:
        parts = [f"{CLASS_LABELS[name].lower()} right for {v['right']} of {v['patients']} patients "
                 f"({level} CI {charts.fmt(v['interval'][0], '.0%')} – {charts.fmt(v['interval'][1], '.0%')})"
                 for name, v in patients["per_class"].items()]
        st.caption(f"Per patient: {'; '.join(parts)}.", help=f"A patient's answer is {md(patients['rule'])}.")


@st.cache_data(show_spinner="Computing the heatmap…", max_entries=64)
def case_explanation(model_key: str, image_path: str, method: str, layer: str, _classifier=None):
    image = read_image(image_path)
    result = explain(_classifier, [image], method=method, layer=layer)
    image.thumbnail((CASE_SIDE, CASE_SIDE))  # what is shown: the cache keeps 64 of these, not 64 full scans
    return image, result.probabilities[0], result.heatmaps[0], int(result.targets[0])


def case_classifier(run):
    """(classifier, note): the run's own model when its file is here unchanged, else the sidebar's model
    with a note saying so, or (None, why) when neither loads."""
    try:
        if run.made_by(file_digest(classifier_file := checkpoint_file(run.model_file(ROOT)))):
            return classifier_at(classifier_file), ""
    except (CheckpointError, FileRefused, OSError):
        pass  # not here, not allowed, or not the same file: the sidebar's model explains instead
    try:
        return classifier_at(current_model_path()), (" (from the model in the sidebar: the run's own model is not "
                                                     "on this machine, or has changed since)")
    except CheckpointError as error:
        return None, f"No heatmap: the run's model is not here and the sidebar's does not load ({md(error)})."


def show_case(run, row: pd.Series, images_root: Path | None, method: str, layer: str) -> None:
    """One case: its image, the run's probabilities, and a heatmap from the run's model with the tumour box and
    outline drawn over it where the data has them."""
    left, middle, right = st.columns([1, 1, 1.2])
    probabilities = np.array([row[f"prob_{c}"] for c in run.classes])
    right.plotly_chart(charts.probability_bars(run.classes, probabilities, int(probabilities.argmax())),
                       width="stretch", config={"displayModeBar": False}, key=f"runs.case_bars.{row['path']}")
    duplicate = "yes: " + md(row.get("train_match") or "") if str(row.get("train_duplicate")) == "True" else "no"
    right.caption(f"True class **{CLASS_LABELS[row['label']]}**, predicted **{CLASS_LABELS[row['pred']]}**. "
                  f"Copy of a training image: {duplicate}.")
    if images_root is None:
        left.info("The image is not on this machine; set the datasets folder in the sidebar to see it.")
        return
    try:
        image_path = run.image_path(images_root, row["path"])
    except FileRefused as error:
        left.warning(md(error))
        return
    classifier, note = case_classifier(run)
    if classifier is None:
        middle.info(note)
        try:
            left.image(read_image(image_path), caption=md(row["path"]), width="stretch")
        except ValueError as error:
            left.warning(md(error))
        return
    try:
        image, _, heatmap, target = case_explanation(f"{classifier.path}:{classifier.path.stat().st_mtime}",
                                                     str(image_path), method, layer, _classifier=classifier)
    except ValueError as error:
        left.warning(md(error))
        return
    left.image(image, caption=md(row["path"]), width="stretch")
    drawn, notes = review.draw_truth(overlay(image, heatmap), image_path,
                                     review.mask_path(datasets_root(), run.info["dataset"]["name"], row["path"]))
    middle.image(drawn, width="stretch", caption=f"{CAM_METHODS[method].label} ({layer}) for "
                 f"{CLASS_LABELS[classifier.classes[target]]}{note}" + (f"; {'; '.join(notes)}" if notes else ""))
    case_mask_figures(run, row["path"], middle)


def case_mask_figures(run, path: str, place) -> None:
    """The case's own scores against its tumour outline, as the run measured them."""
    masks = run.masks
    if masks is None:
        return
    found = masks[masks["path"] == path]
    if found.empty:
        return
    scores, settings = found.iloc[0], run.metrics.get("masks") or {}
    peak = "on the tumour" if bool(scores["peak_in_dilated"]) else "off the tumour"
    margin = (f"{settings['dilation_mm']:g} mm" if settings.get("dilation_mm") is not None
              else f"{settings.get('dilation_px', 5):g} px at 224")
    if settings.get("dilation_mm") is None and pd.notna(scores.get("margin_mm")):
        margin += f", {scores['margin_mm']:.1f} mm on this scan"
    place.caption(f"In the run ({md(settings.get('method', ''))} at {md(settings.get('layer', ''))}, true class): the "
                  f"peak lies {peak}; {scores['energy_in_dilated']:.0%} of the heat lies on it (outline grown by "
                  f"{margin}); overlap with the outline (IoU) {scores['iou']:.2f}. A "
                  f"blob at the image centre would put {scores['blob_energy_in_dilated']:.0%} there.")


def open_case(path: str, listing: list[str], origin: str) -> None:
    """Open a case in the case view, with the list it came from for next and previous; the address links to it."""
    st.session_state["runs.open"] = {"path": path, "listing": listing, "origin": origin}
    st.query_params["case"] = path


def case_view(run, images_root: Path | None) -> None:
    """The open case, with next and previous through the list it was opened from, and the heatmap's settings."""
    opened = st.session_state.get("runs.open")
    if not opened and st.query_params.get("case") in set(run.predictions["path"]):
        opened = {"path": st.query_params["case"], "listing": sorted(run.predictions["path"]), "origin": "the link"}
    if not opened or opened["path"] not in set(run.predictions["path"]):
        return
    listing, path = opened["listing"], opened["path"]
    position = listing.index(path) if path in listing else 0
    st.subheader("Case")
    back, where, forward, close = st.columns([1, 3, 1, 1], vertical_alignment="center")
    if back.button("Previous", key="runs.case_previous", disabled=position == 0, icon=":material/arrow_back:"):
        open_case(listing[position - 1], listing, opened["origin"])
        st.rerun()
    where.caption(f"{position + 1} of {len(listing)} in {md(opened['origin'])}: {md(path)}")
    if forward.button("Next", key="runs.case_next", disabled=position >= len(listing) - 1,
                      icon=":material/arrow_forward:"):
        open_case(listing[position + 1], listing, opened["origin"])
        st.rerun()
    if close.button("Close", key="runs.case_close"):
        st.session_state.pop("runs.open", None)
        st.query_params.pop("case", None)
        st.rerun()
    method_box, layer_box = st.columns(2)
    method = method_box.selectbox("Heatmap method", fast_methods(),
                                  format_func=lambda m: CAM_METHODS[m].label, key="runs.case_method",
                                  persist_state="session")
    size, stride = model_grid(run.info.get("model") or {})
    layer = layer_box.selectbox("Layer", list(LAYERS), index=list(LAYERS).index(DEFAULT_LAYER),
                                format_func=lambda name: layer_label(name, size, stride), key="runs.case_layer",
                                help=" ".join(f"{name}: {layer_description(name, size, stride)}." for name in LAYERS),
                                persist_state="session")
    show_case(run, run.predictions[run.predictions["path"] == path].iloc[0], images_root, method, layer)


def confusion_tab(run, rows: pd.DataFrame, block: dict, images_root: Path | None) -> None:
    if st.session_state.get("runs.cell_of") != str(run.path):  # a new run opens on its most frequent mistake
        st.session_state["runs.cell_of"] = str(run.path)
        st.session_state["runs.cell_true"], st.session_state["runs.cell_pred"] = review.error_cell(rows, run.classes)
    normalise = st.toggle("Row-normalised (each true class sums to 100%)", key="runs.normalise")
    event = st.plotly_chart(charts.confusion_matrix_figure(block["confusion_matrix"], run.classes, normalise),
                            on_select="rerun", selection_mode="points", key="runs.cm_chart", width="stretch")
    points = (event or {}).get("selection", {}).get("points", []) if isinstance(event, dict) else \
        getattr(getattr(event, "selection", None), "points", []) or []
    if points and points[0].get("customdata"):
        clicked = tuple(points[0]["customdata"][:2])
        if st.session_state.get("runs.last_click") != clicked:  # apply a click once; the boxes stay editable
            st.session_state["runs.last_click"] = clicked
            st.session_state["runs.cell_true"], st.session_state["runs.cell_pred"] = clicked
    st.caption("Click a cell, or choose it here, to list its cases; it opens on the most frequent mistake.")
    a, b = st.columns(2)
    true = a.selectbox("True class", run.classes, key="runs.cell_true", format_func=charts.label)
    pred = b.selectbox("Predicted class", run.classes, key="runs.cell_pred", format_func=charts.label)
    cases = rows[(rows["label"] == true) & (rows["pred"] == pred)].sort_values("confidence", ascending=False)
    st.markdown(f"**{len(cases)} case{'s' if len(cases) != 1 else ''}**: true {charts.label(true)}, "
                f"predicted {charts.label(pred)}")
    if cases.empty:
        return
    if len(cases) > MAX_CASES:
        st.caption(f"The {MAX_CASES:,} most confident of {len(cases):,} cases are listed.")
        cases = cases.head(MAX_CASES)
    table = review.cases(run, cases, None)
    st.dataframe(table, hide_index=True, key="runs.cases", height=min(220, 35 * (len(table) + 1) + 3),
                 column_config={"confidence": st.column_config.NumberColumn(format="percent")})
    listing = cases["path"].tolist()
    origin = f"true {charts.label(true)}, predicted {charts.label(pred)}"
    if images_root is None:
        st.info(f"The images of this run ({md(run.info['dataset']['name'])}) are not on this machine. Set the datasets "
                "folder in the sidebar to the folder that holds it to see thumbnails and heatmaps; the numbers "
                "are all here.")
        return
    grid = st.columns(6)
    for i, (_, row) in enumerate(cases.head(12).iterrows()):
        with grid[i % 6]:
            try:
                st.image(thumbnail(str(run.image_path(images_root, row["path"]))),
                         caption=f"{md(Path(row['path']).name)} ({row['confidence']:.0%})")
            except ValueError:
                st.caption(f"{md(row['path'])}: not readable")
            if st.button("Open", key=f"runs.thumb.{i}", icon=":material/zoom_in:", width="stretch"):
                open_case(row["path"], listing, origin)
    if len(cases) > 12:
        st.caption(f"Thumbnails of the 12 most confident of {len(cases)} cases; Next in the case view goes on "
                   "through all of them.")


def review_tab(run, rows: pd.DataFrame) -> None:
    """A table of the run's cases for a review: the most confident errors first, and other orders."""
    views = review.available_views(run)
    view_box, true_box, pred_box = st.columns([2, 1, 1])
    view = view_box.selectbox("Show", views, format_func=review.VIEWS.get, key="runs.review_view",
                              persist_state="session")
    any_class = [None, *run.classes]
    true = true_box.selectbox("True class", any_class, key="runs.review_true",
                              format_func=lambda c: "any" if c is None else charts.label(c))
    pred = pred_box.selectbox("Predicted class", any_class, key="runs.review_pred",
                              format_func=lambda c: "any" if c is None else charts.label(c))
    table = review.cases(run, rows, view, true, pred)
    st.caption(f"{len(table):,} case{'s' if len(table) != 1 else ''}. Click a row to open it below; click a column "
               "heading to sort.")
    if table.empty:
        return
    shown = table.head(MAX_CASES)
    event = st.dataframe(shown, hide_index=True, key="runs.review_table", on_select="rerun",
                         selection_mode="single-row", height=min(400, 35 * (len(shown) + 1) + 3),
                         column_config={"confidence": st.column_config.NumberColumn(format="percent")})
    selected = list(getattr(getattr(event, "selection", None), "rows", []) or [])
    if selected and st.session_state.get("runs.review_last") != (view, true, pred, selected[0]):
        st.session_state["runs.review_last"] = (view, true, pred, selected[0])
        open_case(shown["image"].iloc[selected[0]], shown["image"].tolist(), review.VIEWS[view].lower())


def curves_tab(run, subset: str, block: dict) -> None:
    curves = (run.curves.get(subset) or {})
    aucs = {c: block["per_class"][c]["auc"] for c in run.classes}
    aucs.update(micro=block.get("micro_auc"), macro=block.get("macro_auc"))
    zoom = st.toggle("Zoom in on the near-perfect corner", key="runs.curves_zoom", persist_state="session",
                     help="A log scale on the false-positive rate, and only the top-right of the precision-recall "
                          "plot: where the curves of a model that is right almost every time differ.")
    left, right = st.columns(2)
    left.plotly_chart(charts.roc_figure(curves.get("roc", {}), aucs, zoom), width="stretch", key="runs.roc")
    right.plotly_chart(charts.precision_recall_figure(curves.get("precision_recall", {}),
                                                      {c: block["per_class"][c]["average_precision"]
                                                       for c in run.classes}, zoom), width="stretch", key="runs.pr")


def per_class_tab(run, block: dict) -> None:
    table = charts.per_class_table(block, run.classes, confidence(run))
    st.dataframe(table, hide_index=True, key="runs.per_class",
                 column_config={column: st.column_config.NumberColumn(format="%.3f")
                                for column in table.columns if column not in ("class", "support")})
    st.download_button("Download as CSV", csv_bytes(table), file_name=f"{run.path.name}-per-class.csv",
                       mime="text/csv", key="runs.per_class_csv")  # quoted and defused, as the review exports
    st.caption(f"Macro F1 {charts.fmt(block['macro_f1'], '.4f')}, "
               f"weighted F1 {charts.fmt(block['weighted_f1'], '.4f')}. "
               f"Intervals: {confidence(run)} bootstrap over the run's images, resampling whole duplicate groups.")


def operating_point_tab(run, rows: pd.DataFrame, subset: str) -> None:
    st.write("Call a scan 'tumour' when the model's probability of any tumour (one minus its no-tumour "
             "probability) reaches the threshold. Lower thresholds miss fewer tumours and raise more false alarms.")
    threshold = st.slider("Threshold", 0.0, 1.0, 0.5, 0.01, key="runs.threshold")
    truth = (rows["label"] != NO_TUMOUR).to_numpy()
    score = 1.0 - rows[f"prob_{NO_TUMOUR}"].to_numpy()
    point = operating_point(truth, score, threshold)
    a, b, c, d = st.columns(4)
    a.metric("Sensitivity", charts.fmt(point["sensitivity"], ".2%"))
    b.metric("Specificity", charts.fmt(point["specificity"], ".2%"))
    c.metric("Tumours missed", point["fn"])
    d.metric("False alarms", point["fp"])
    left, right = st.columns([1, 1.4])
    left.dataframe(pd.DataFrame({"called tumour": [point["tp"], point["fp"]],
                                 "called no tumour": [point["fn"], point["tn"]]},
                                index=["tumour", "no tumour"]), key="runs.op_table")
    right.plotly_chart(charts.operating_point_figure((run.curves.get(subset) or {}).get("tumour_roc", {}), point),
                       width="stretch", key="runs.op_roc")


def masks_section(run, images_root: Path | None) -> None:
    """Heatmaps against the tumour outlines: per class beside the centre blob, every method and layer, how
    faithful each is, whether each survives randomisation, and the worst-localised cases."""
    masks = run.metrics.get("masks")
    if not masks:
        return
    st.subheader("Against the tumour outlines")
    st.plotly_chart(charts.mask_figure(masks["per_class"], margin_text(masks)), width="stretch", key="runs.masks")
    sentences = []
    for name, block in masks["per_class"].items():
        ours, blob = block["peak_in_dilated"]["mean"], block["blob_peak_in_dilated"]["mean"]
        verdict = "no better than" if ours <= blob else "better than"
        sentences.append(f"{CLASS_LABELS[name].lower()}: on the tumour for {charts.fmt(ours, '.0%')} of "
                         f"{block['images']:,} slices, {verdict} a blob at the centre of the image "
                         f"({charts.fmt(blob, '.0%')})")
    reach = [f"{CLASS_LABELS[name].lower()} {charts.fmt(block['peak_reachable']['mean'], '.0%')} (heat on the tumour "
             f"at most {charts.fmt(block['energy_reachable']['mean'], '.2f')})"
             for name, block in masks["per_class"].items() if "energy_reachable" in block]
    if reach:
        sentences.append(f"the most a heatmap at {md(masks['layer'])} can score, since its hottest point can only lie "
                         f"near the centre of one of its cells: {', '.join(reach)}")
    resampled = "patients" if masks.get("resampled") == "patients" else "slices"
    st.caption(f"Where is the heatmap's hottest point? {'; '.join(sentences)}.",
               help=f"{md(masks['method'])} at {md(masks['layer'])}, explaining the true class. The outline is grown "
                    f"by {margin_text(masks)}; heat on the tumour is the share of the heatmap's sum inside "
                    f"it. Error bars: 95% bootstrap intervals over {resampled}.")
    explanations_tables(run)
    worst_gallery(run, images_root)


def explanations_tables(run) -> None:
    found = run.explanations
    if not found:
        st.caption("Every method and layer, faithfulness and the randomisation test: run `python -m "
                   f"training.explanations --run {md(run.path)}` to add them to this run.")
        return
    rows = []
    for row in found["by_method_and_layer"]:
        entry = {"method": CAM_METHODS[row["method"]].label if row["method"] in CAM_METHODS else row["method"],
                 "layer": row["layer"]}
        for name, block in row["per_class"].items():
            entry[f"{CLASS_LABELS[name]}: peak on tumour"] = block["peak_in_dilated"]["mean"]
            entry[f"{CLASS_LABELS[name]}: heat on tumour"] = block["energy_in_dilated"]["mean"]
        rows.append(entry)
    st.markdown(f"**Every method and layer** ({md(found['slices'])} slices)")
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="runs.methods",
                 column_config={c: st.column_config.NumberColumn(format="%.2f") for c in rows[0] if ":" in c})
    best = found["best"]
    if best.get("method"):
        st.caption(f"Best at locating the tumour among the methods that pass the sanity check below: "
                   f"{md(best['method'])} at {md(best['layer'])}.", help=md(best.get("rule", "")))
    faithful = found.get("faithfulness") or {}
    if faithful.get("scores"):
        table = pd.DataFrame([{"heatmap": r["method"], "layer": r["layer"] or "", "ROAD": r["mean"],
                               "95% CI low": r["interval"][0], "95% CI high": r["interval"][1]}
                              for r in faithful["scores"]])
        st.markdown(f"**Faithfulness** (ROAD, {md(faithful['slices'])} slices)")
        st.dataframe(table, hide_index=True, key="runs.faithfulness",
                     column_config={c: st.column_config.NumberColumn(format="%+.3f")
                                    for c in ("ROAD", "95% CI low", "95% CI high")})
        st.caption("Removing the pixels a faithful heatmap ranks highest costs the model more confidence than "
                   "removing those it ranks lowest; higher is better. A random map and the centre blob show what no "
                   "knowledge of the model scores.")
    sanity = found.get("sanity") or {}
    if sanity.get("rows"):
        steps = sanity["steps"]
        table = pd.DataFrame([{"heatmap": row["method"], "layer": row["layer"],
                               **{f"after randomising {step}": row[step]["mean"] for step in steps}}
                              for row in sanity["rows"]])
        st.markdown(f"**Sanity check** (randomised model, {md(sanity['slices'])} slices)")
        st.dataframe(table, hide_index=True, key="runs.sanity",
                     column_config={c: st.column_config.NumberColumn(format="%.2f") for c in table.columns[2:]})
        alike = sorted({f"{md(row['method'])} ({md(row['layer'])})" for row in sanity["rows"]
                        if max(row[step]["mean"] for step in steps) >= 0.5})
        st.caption("How alike each method's heatmaps stay (rank correlation, 1 = the same) when the network's "
                   "weights are replaced by random ones, first the last layers, then all. "
                   + (f"These stay much alike: {', '.join(alike)}. What they show is the image's edges and brightness "
                      "as much as what the model learned, so they are not evidence of the model's reasons."
                      if alike else "None stays much alike: the heatmaps depend on what the model learned."))


def worst_gallery(run, images_root: Path | None, count: int = 6) -> None:
    table = run.masks
    if images_root is None or table is None or not len(table):
        return
    worst = table.sort_values("energy_in_dilated").head(count)
    st.markdown("**Worst-localised cases** (least heat on the tumour; open one in the case view below)")
    columns = st.columns(count)
    for column, (_, row) in zip(columns, worst.iterrows()):
        try:
            column.image(thumbnail(str(run.image_path(images_root, row["path"]))), width="stretch",
                         caption=f"{md(row['path'])}: {row['energy_in_dilated']:.2f}")
        except (FileRefused, ValueError):
            column.caption(md(row["path"]))
        if column.button("Open", key=f"runs.worst.{row['path']}"):
            open_case(row["path"], list(worst["path"]), "the worst-localised cases")


def localisation_tab(run) -> None:
    local = run.metrics.get("localisation")
    if not local:
        if run.metrics.get("masks"):
            return
        why = "it was made with --localisation off" if run.info.get("settings", {}).get("localisation") == "off" \
            else "its dataset has neither tumour boxes nor masks"
        st.info(f"This run has no localisation scores: {why}. The bundled figshare runs have them.")
        return
    if run.metrics.get("masks"):
        st.subheader("Against the tumour boxes")
    st.plotly_chart(charts.localisation_figure(local["per_class"]), width="stretch", key="runs.localisation")
    overall = local["overall"]
    st.caption(f"Does the heatmap point at the tumour? Over {overall['images']:,} tumour scans with a tumour box, the "
               f"heatmap's hottest point fell inside the box for {charts.fmt(overall['pointing_strict'], '.0%')} of "
               f"them and near it for {charts.fmt(overall['pointing_tolerant'], '.0%')}; "
               f"{charts.fmt(overall['energy_in_box'], '.0%')} of the heat lay in the box, where a heatmap spread "
               f"evenly would put {charts.fmt(overall['box_share'], '.0%')}.",
               help=f"{md(local['method'])} at {md(local['layer'])}, explaining the true class. Pointing game: the "
                    f"maximum inside the box (strict) or within {local.get('tolerance_px_at_224', 15)} px of it at "
                    "224 px (tolerant); energy in box: the share of the heatmap's sum inside the box.")


with st.sidebar:
    st.subheader("Images")
    # Kept under a plain session key: a widget's own state is dropped when another page is shown.
    st.session_state[DATASETS_KEY] = st.text_input("Datasets folder", value=datasets_root(),
                  help="The folder that holds the evaluated datasets (brain-tumor-mri, figshare-cheng-br35h, ...). "
                       f"Set {DATASETS_ENV} to change the default; other folders must be listed in {ALLOWED_ENV}.")
    if datasets_root() and not is_within(datasets_root(), allowed_roots()):
        st.warning(f"The datasets folder {md(datasets_root())} is outside the folders this dashboard may read; "
                   f"images are shown only from the default datasets folder or folders listed in {ALLOWED_ENV}.")


def show_run(run) -> None:
    info = run.info
    model, dataset, audit = info["model"], info["dataset"], info["audit"]
    st.caption(f"Model {md(model['path'])} · dataset {md(dataset['name'] + '/' + dataset['evaluated'])} "
               f"({dataset['images']:,} images, {len(dataset['skipped'])} unreadable) · "
               f"created {md(info['created'])} · "
               f"{md(info['settings']['precision'])} on {md(info['settings']['device'])}")
    if audit["available"]:
        st.caption(f"Copies of training scans: {audit['exact_duplicates']:,} scans here are exact copies and "
                   f"{audit['near_duplicates']:,} near copies (resized or re-saved) of scans the model was trained "
                   f"on; {audit['duplicate_free_images']:,} have none, and the second row of figures counts only "
                   "those.",
                   help="Leakage audit: exact copies share file bytes or decoded pixels; near copies differ by at most "
                        f"{audit['near_duplicate_bits']} of the 256 bits of a perceptual hash.")
    familiar = run.metrics.get("familiarity")
    if familiar and familiar.get("all"):
        flagged = familiar["all"]
        low, high = flagged.get("interval") or (None, None)
        st.caption(f"The familiarity check flagged {flagged['flagged']:,} of these {flagged['images']:,} scans "
                   f"({charts.fmt(flagged['share'], '.1%')}"
                   + (f", {confidence(run)} CI {charts.fmt(low, '.1%')}–{charts.fmt(high, '.1%')}" if low is not None
                      else "") + "); on the Predict page they would get a warning instead of an answer. "
                   + (warning_where_wrong(familiar) or ""), help=familiar_rule(familiar))
    with error_boundary("The headline figures"):
        headline_cards(run)
    subsets = [s for s in SUBSETS if run.metrics.get(s)]
    subset = st.radio("Figures below for", subsets, format_func=SUBSETS.get, horizontal=True, key="runs.subset",
                      persist_state="session")
    block = run.metrics[subset]
    rows = run.rows(subset)
    images_root = run_images_root(run)
    tabs = st.tabs(["Confusion matrix", "Cases to review", "ROC and precision-recall", "Per class", "Calibration",
                    "Tumour / no tumour", "Training", "Explanations"])
    with tabs[0], error_boundary("The confusion matrix"):
        confusion_tab(run, rows, block, images_root)
    with tabs[1], error_boundary("The case table"):
        review_tab(run, rows)
    tabs = tabs[:1] + tabs[2:]
    with tabs[1], error_boundary("The curves"):
        curves_tab(run, subset, block)
    with tabs[2], error_boundary("The per-class table"):
        per_class_tab(run, block)
    with tabs[3], error_boundary("The reliability diagram"):
        st.plotly_chart(charts.reliability_figure(block["calibration"]), width="stretch", key="runs.reliability")
        st.caption("Confidence is the largest probability. Points below the diagonal: the model is more sure "
                   "than it is right; above: less sure (label smoothing in training does this).")
    with tabs[4], error_boundary("The operating point"):
        operating_point_tab(run, rows, subset)
    with tabs[5], error_boundary("The training history"):
        st.plotly_chart(charts.training_curves_figure(info.get("history", [])), width="stretch", key="runs.history")
        training = model.get("training") or {}
        config = training.get("config") or {}
        if config:
            st.caption(md(recipe_caption(config, training.get("best_epoch"))))
    with tabs[6], error_boundary("The explanations"):
        masks_section(run, images_root)
        localisation_tab(run)
    with error_boundary("The case"):
        case_view(run, images_root)


run = pick_run()
if run is not None:
    show_run(run)
