"""Chart builders: data in, plotly figure out. No Streamlit here, so each can be tried in a notebook."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.data import CLASS_LABELS

CLASS_COLOURS = {"glioma": "#e4572e", "meningioma": "#f3a712", "notumor": "#76b041", "pituitary": "#4fa3e0"}
AVERAGE_COLOURS = {"micro": "#c6c6c6", "macro": "#ffffff"}


def fmt(value, spec: str) -> str:
    """A figure as text; undefined ones (None in a run, NaN) as 'n/a'."""
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    return format(value, spec)


def label(name: str) -> str:
    return CLASS_LABELS.get(name, name)


def _layout(figure: go.Figure, height: int = 380, **extra) -> go.Figure:
    settings = {"height": height, "margin": dict(l=10, r=10, t=40, b=10), "legend": dict(orientation="v")}
    settings.update(extra)
    figure.update_layout(**settings)
    return figure


def probability_bars(classes: list[str], probabilities: np.ndarray, highlight: int | None = None,
                     muted: bool = False) -> go.Figure:
    """Horizontal bars, one per class, with the percentage written on each; all grey when ``muted`` (a scan the
    model does not recognise: the bars are not an answer)."""
    colours = [CLASS_COLOURS.get(c, "#888") if not muted and (highlight is None or k == highlight) else "#55606e"
               for k, c in enumerate(classes)]
    figure = go.Figure(go.Bar(x=probabilities, y=[label(c) for c in classes], orientation="h", marker_color=colours,
                              text=[f"{p:.1%}" for p in probabilities], textposition="outside", textangle=0,
                              cliponaxis=False,
                              hovertemplate="%{y}: %{x:.2%}<extra></extra>"))
    figure.update_xaxes(range=[0, 1], tickformat=".0%")
    figure.update_yaxes(autorange="reversed")
    return _layout(figure, height=200, margin=dict(l=0, r=56, t=10, b=0))  # room for a label outside a full bar


def answer_spread_figure(classes: list[str], counts: dict[str, int], reference: str | None) -> go.Figure:
    """How many readers gave each class for one case (the class's spread at a reveal), the reference's bar in its
    class colour and the others grey, each bar with its count and share written on it."""
    total = max(1, sum(counts.values()))
    values = [int(counts.get(c, 0)) for c in classes]
    colours = [CLASS_COLOURS.get(c, "#888") if c == reference or reference is None else "#55606e" for c in classes]
    names = [label(c) + (" (reference)" if c == reference else "") for c in classes]
    figure = go.Figure(go.Bar(x=values, y=names, orientation="h", marker_color=colours,
                              text=[f"{v} ({v / total:.0%})" for v in values], textposition="outside", textangle=0,
                              cliponaxis=False,
                              textfont=dict(size=18), hovertemplate="%{y}: %{x}<extra></extra>"))
    figure.update_xaxes(range=[0, max(1, max(values))], dtick=1 if max(values) <= 10 else None, title="readers")
    figure.update_yaxes(autorange="reversed", tickfont=dict(size=16))
    return _layout(figure, height=260, margin=dict(l=0, r=96, t=10, b=0))


def confusion_matrix_figure(matrix: list[list[int]], classes: list[str], normalise: bool = False,
                            axes: tuple[str, str] = ("true class", "predicted class")) -> go.Figure:
    """Counts or row-normalised shares (each true class sums to 1). Every cell is also a clickable point
    whose ``customdata`` is (true class, predicted class). ``axes``: the titles of the rows and the columns."""
    counts = np.asarray(matrix, dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    values = shares if normalise else counts
    names = [label(c) for c in classes]
    text = [[f"{shares[i, j]:.1%}<br>({int(counts[i, j])})" if normalise else f"{int(counts[i, j])}"
             for j in range(len(classes))] for i in range(len(classes))]
    # The numbers live on the heatmap; an almost invisible marker on each cell takes the clicks (plotly
    # reports clicks on scatter points, not on heatmap cells), and a selection does not dim the numbers.
    figure = go.Figure(go.Heatmap(z=values, x=names, y=names, colorscale="Blues", showscale=False,
                                  text=text, texttemplate="%{text}", textfont=dict(size=14),
                                  hoverinfo="skip", zmin=0, zmax=1 if normalise else max(1.0, values.max())))
    true_idx, pred_idx = np.meshgrid(range(len(classes)), range(len(classes)), indexing="ij")
    figure.add_trace(go.Scatter(
        x=[names[j] for j in pred_idx.ravel()], y=[names[i] for i in true_idx.ravel()], mode="markers",
        text=[text[i][j] for i, j in zip(true_idx.ravel(), pred_idx.ravel())],
        marker=dict(size=60, symbol="square", opacity=0.01, color="#000"),
        selected=dict(marker=dict(opacity=0.25, color="#f3a712")), unselected=dict(marker=dict(opacity=0.01)),
        customdata=[[classes[i], classes[j]] for i, j in zip(true_idx.ravel(), pred_idx.ravel())],
        hovertemplate="true %{y}, predicted %{x}: %{text}<br>click to list these cases<extra></extra>",
        showlegend=False))
    figure.update_xaxes(title=axes[1], side="bottom", type="category")
    figure.update_yaxes(title=axes[0], autorange="reversed", type="category")
    return _layout(figure, height=420, clickmode="event+select", dragmode=False)


def roc_figure(roc: dict, aucs: dict[str, float | None], zoom: bool = False) -> go.Figure:
    """One-vs-rest ROC curves per class plus the micro and macro averages; AUCs in the legend. ``zoom`` puts the
    false-positive rate on a log scale, where a near-perfect model's curves differ (on a linear one they all hug
    the top-left corner)."""
    figure = go.Figure()
    for name, curve in roc.items():
        auc = aucs.get(name)
        legend = f"{label(name) if name not in AVERAGE_COLOURS else name + '-average'}" + \
            (f" (AUC {auc:.4f})" if auc is not None else "")
        figure.add_trace(go.Scatter(x=curve["fpr"], y=curve["tpr"], mode="lines", name=legend,
                                    line=dict(color=CLASS_COLOURS.get(name, AVERAGE_COLOURS.get(name)),
                                              dash="dot" if name in AVERAGE_COLOURS else "solid", width=2)))
    if zoom:
        smallest = min([x for curve in roc.values() for x in curve["fpr"] if x > 0], default=1e-3)
        chance = np.logspace(np.log10(smallest), 0, 50)
        figure.add_trace(go.Scatter(x=chance, y=chance, mode="lines", name="chance",
                                    line=dict(color="#666", dash="dash")))
        figure.update_xaxes(title="false-positive rate (1 - specificity), log scale", type="log",
                            range=[np.log10(smallest) - 0.1, 0])
        lowest = min([y for curve in roc.values() for x, y in zip(curve["fpr"], curve["tpr"]) if x >= smallest],
                     default=0.0)
        figure.update_yaxes(title="true-positive rate (sensitivity)", range=[max(0.0, lowest - 0.02), 1.005])
    else:
        figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance",
                                    line=dict(color="#666", dash="dash")))
        figure.update_xaxes(title="false-positive rate (1 - specificity)", range=[0, 1])
        figure.update_yaxes(title="true-positive rate (sensitivity)", range=[0, 1.02])
    return _layout(figure, height=440, title="ROC, one class against the rest")


def precision_recall_figure(curves: dict, average_precision: dict[str, float | None], zoom: bool = False
                            ) -> go.Figure:
    """Precision against recall per class, average precision in the legend; ``zoom`` shows only the top-right
    corner, where a near-perfect model's curves differ."""
    figure = go.Figure()
    for name, curve in curves.items():
        ap = average_precision.get(name)
        figure.add_trace(go.Scatter(x=curve["recall"], y=curve["precision"], mode="lines",
                                    name=label(name) + (f" (AP {ap:.4f})" if ap is not None else ""),
                                    line=dict(color=CLASS_COLOURS.get(name), width=2)))
    low = 0.9 if zoom else 0.0
    figure.update_xaxes(title="recall (sensitivity)", range=[low, 1.005 if zoom else 1])
    figure.update_yaxes(title="precision", range=[low, 1.005 if zoom else 1.02])
    return _layout(figure, height=440, title="Precision-recall" + (" (top-right corner)" if zoom else ""))


def reliability_figure(calibration: dict) -> go.Figure:
    """Accuracy against confidence per bin, with the bin sizes as bars; the diagonal is perfect calibration."""
    bins = [b for b in calibration.get("bins", []) if b["count"]]
    figure = go.Figure()
    figure.add_trace(go.Bar(x=[(b["low"] + b["high"]) / 2 for b in bins], y=[b["count"] for b in bins],
                            width=[b["high"] - b["low"] for b in bins], name="images in bin", yaxis="y2",
                            marker_color="#3a4556", opacity=0.6))
    figure.add_trace(go.Scatter(x=[b["confidence"] for b in bins], y=[b["accuracy"] for b in bins],
                                mode="lines+markers", name="accuracy in bin", line=dict(color="#4fa3e0", width=2)))
    figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                                line=dict(color="#888", dash="dash")))
    ece = calibration.get("ece")
    # Each axis is set by name: update_yaxes would give the count axis the accuracy axis's title and range.
    most = max([b["count"] for b in bins], default=1)
    figure.update_layout(
        yaxis=dict(title="accuracy in bin", range=[0, 1.02], tickformat=".0%"),
        yaxis2=dict(overlaying="y", side="right", showgrid=False, title="images in bin (log scale)", type="log",
                    range=[-0.3, np.log10(most) + 0.3], tickformat=",d"),  # a bin of 1 image still shows
        legend=dict(orientation="h", y=-0.2))
    figure.update_xaxes(title="confidence (largest probability)", range=[0, 1], tickformat=".0%")
    return _layout(figure, height=420,
                   title="Reliability diagram" + (f": expected calibration error {ece:.4f}" if ece is not None else ""))


def operating_point_figure(tumour_roc: dict, point: dict) -> go.Figure:
    """The tumour-versus-no-tumour ROC curve with the chosen operating point marked."""
    figure = go.Figure(go.Scatter(x=tumour_roc.get("fpr", []), y=tumour_roc.get("tpr", []), mode="lines",
                                  name="tumour vs no tumour", line=dict(color="#e4572e", width=2)))
    if point.get("specificity") is not None and point.get("sensitivity") is not None:
        figure.add_trace(go.Scatter(x=[1 - point["specificity"]], y=[point["sensitivity"]], mode="markers",
                                    name=f"threshold {point['threshold']:.2f}",
                                    marker=dict(size=14, color="#f3a712", line=dict(color="white", width=2))))
    figure.update_xaxes(title="false-positive rate (1 - specificity)", range=[0, 1])
    figure.update_yaxes(title="sensitivity", range=[0, 1.02])
    return _layout(figure, height=400, title="Any tumour against no tumour")


def training_curves_figure(history: list[dict]) -> go.Figure:
    """Loss and accuracy per epoch (training, and validation where the run had it)."""
    frame = pd.DataFrame(history)
    figure = go.Figure()
    if frame.empty:
        return _layout(figure, title="No training history in this run")
    for column, name, dash, axis in (("train_loss", "training loss", "solid", "y"),
                                     ("val_loss", "validation loss", "dot", "y"),
                                     ("train_accuracy", "training accuracy", "solid", "y2"),
                                     ("val_accuracy", "validation accuracy", "dot", "y2")):
        if column in frame:
            figure.add_trace(go.Scatter(x=frame["epoch"], y=frame[column], name=name, yaxis=axis, mode="lines+markers",
                                        line=dict(dash=dash, color="#e4572e" if "loss" in column else "#4fa3e0")))
    accuracies = pd.concat([frame[c] for c in ("train_accuracy", "val_accuracy") if c in frame]).dropna()
    low = float(accuracies.min()) if len(accuracies) else 0.0
    figure.update_layout(yaxis=dict(title="loss", rangemode="tozero"),
                         yaxis2=dict(title="accuracy", overlaying="y", side="right", showgrid=False, tickformat=".0%",
                                     range=[max(0.0, np.floor(low * 20) / 20 - 0.05), 1.005]))
    figure.update_xaxes(title="epoch", dtick=1)
    return _layout(figure, height=380, title="Training history")


def localisation_figure(per_class: dict) -> go.Figure:
    """Per tumour class: pointing game (strict, tolerant), heatmap energy in the box, and the box's share
    of the image (what a uniform heatmap would score)."""
    names = list(per_class)
    figure = go.Figure()
    for key, title, colour in (("pointing_strict", "pointing game, strict", "#4fa3e0"),
                               ("pointing_tolerant", "pointing game, 15 px tolerance", "#76b041"),
                               ("energy_in_box", "heatmap energy in the box", "#f3a712"),
                               ("box_share", "box share of the image (uniform heatmap)", "#888")):
        figure.add_trace(go.Bar(x=[label(n) for n in names], y=[per_class[n][key] for n in names], name=title,
                                marker_color=colour, text=[fmt(per_class[n][key], ".2f") for n in names],
                                textposition="outside"))
    figure.update_yaxes(range=[0, 1.1], title="share")
    return _layout(figure, height=400, barmode="group", title="Does the heatmap point at the tumour?")


def mask_figure(per_class: dict, margin: str) -> go.Figure:
    """Per tumour class: how often the heatmap's peak lies on the tumour (grown by ``margin``, in words) and its share
    of heat there, beside a blob at the image centre that ignores the scan; 95% intervals as error bars."""
    names = list(per_class)
    figure = go.Figure()
    for key, title, colour in (("peak_in_dilated", "peak on the tumour: heatmap", "#4fa3e0"),
                               ("blob_peak_in_dilated", "peak on the tumour: centre blob", "#9bbbd4"),
                               ("energy_in_dilated", "heat on the tumour: heatmap", "#f3a712"),
                               ("blob_energy_in_dilated", "heat on the tumour: centre blob", "#e8cf9a")):
        means = [per_class[n][key]["mean"] for n in names]
        bounds = [per_class[n][key]["interval"] or [None, None] for n in names]
        lows = [m - (m if low is None else low) for m, (low, _) in zip(means, bounds)]
        highs = [(m if high is None else high) - m for m, (_, high) in zip(means, bounds)]
        figure.add_trace(go.Bar(x=[label(n) for n in names], y=means, name=title, marker_color=colour,
                                error_y=dict(type="data", symmetric=False, array=highs, arrayminus=lows),
                                text=[fmt(m, ".2f") for m in means], textposition="outside"))
    figure.update_yaxes(range=[0, 1.1], title="share of slices / of heat")
    return _layout(figure, height=420, barmode="group",
                   title=f"Does the heatmap lie on the tumour? (outline grown by {margin})")


def per_class_table(block: dict, classes: list[str], level: str = "95%") -> pd.DataFrame:
    """Per-class figures with their intervals (computed at ``level``), one row per class."""
    intervals = block.get("intervals", {})
    rows = []
    for name in classes:
        figures = block["per_class"][name]

        def ci(key: str, title: str, name: str = name) -> dict:
            low, high = intervals.get(f"{key}/{name}", [None, None])
            return {f"{title} {level} CI low": low, f"{title} {level} CI high": high}

        rows.append({"class": label(name), "support": figures["support"], "precision": figures["precision"],
                     "sensitivity (recall)": figures["recall"], **ci("sensitivity", "sensitivity"),
                     "specificity": figures["specificity"], **ci("specificity", "specificity"),
                     "F1": figures["f1"], "AUC": figures["auc"], **ci("auc", "AUC"),
                     "average precision": figures["average_precision"]})
    return pd.DataFrame(rows)


def figure_text(name: str, value, signed: bool = False) -> str:
    """A compared figure as people read it: image counts whole, accuracies and rates as percentages with two
    decimals, AUCs with five (a near-perfect model's differences are in the fourth), calibration error with four.
    A difference that rounds to nothing reads 0, never -0.0000."""
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    if name == "images":
        return f"{round(value):+,d}" if signed else f"{round(value):,d}"
    scale, spec, unit = (1, ".5f", "") if "AUC" in name else (1, ".4f", "") if "ECE" in name else (100, ".2f", "%")
    text = format(value * scale, ("+" if signed else "") + spec)
    if signed and float(text) == 0:
        text = format(0.0, spec)
    return text + (" pt" if signed and unit else unit)


def comparison_text(table: pd.DataFrame) -> pd.DataFrame:
    """The compare table with each figure written by :func:`figure_text` (differences of percentages in points)."""
    return pd.DataFrame({"figure": table["figure"],
                         "A": [figure_text(f, v) for f, v in zip(table["figure"], table["A"])],
                         "B": [figure_text(f, v) for f, v in zip(table["figure"], table["B"])],
                         "B - A": [figure_text(f, v, signed=True) for f, v in zip(table["figure"], table["B - A"])]})


RUN_COLOURS = ("#4fa3e0", "#e4572e", "#76b041", "#f3a712", "#b084e0", "#e0e0e0")


def overlaid_curves(runs: list[tuple[str, dict]], kind: str, curve: str, zoom: bool = False) -> go.Figure:
    """One curve of several runs on one chart. ``kind``: "roc" or "precision_recall"; ``curve``: a class name or
    "macro"/"micro" (ROC). ``runs``: (name, the run's curves for one subset)."""
    figure = go.Figure()
    x_key, y_key = ("fpr", "tpr") if kind == "roc" else ("recall", "precision")
    for k, (name, curves) in enumerate(runs):
        data = (curves or {}).get(kind, {}).get(curve)
        if data:
            figure.add_trace(go.Scatter(x=data[x_key], y=data[y_key], mode="lines", name=html.escape(name),
                                        line=dict(color=RUN_COLOURS[k % len(RUN_COLOURS)], width=2)))
    title = ("ROC" if kind == "roc" else "Precision-recall") + f": {label(curve) if curve in CLASS_LABELS else curve}"
    if kind == "roc":
        if zoom:
            figure.update_xaxes(type="log", title="false-positive rate, log scale")
        else:
            figure.update_xaxes(range=[0, 1], title="false-positive rate (1 - specificity)")
        figure.update_yaxes(title="sensitivity", range=[0.9 if zoom else 0, 1.005])
    else:
        low = 0.9 if zoom else 0.0
        figure.update_xaxes(title="recall (sensitivity)", range=[low, 1.005])
        figure.update_yaxes(title="precision", range=[low, 1.005])
    return _layout(figure, height=400, title=title, legend=dict(orientation="h", y=-0.25))


def overlaid_reliability(runs: list[tuple[str, dict]]) -> go.Figure:
    """Accuracy against confidence per bin for several runs (``runs``: name, the run's calibration block)."""
    figure = go.Figure()
    for k, (name, calibration) in enumerate(runs):
        bins = [b for b in (calibration or {}).get("bins", []) if b["count"]]
        ece = (calibration or {}).get("ece")
        figure.add_trace(go.Scatter(x=[b["confidence"] for b in bins], y=[b["accuracy"] for b in bins],
                                    mode="lines+markers",
                                    name=html.escape(name) + (f" (ECE {ece:.4f})" if ece is not None else ""),
                                    customdata=[b["count"] for b in bins],
                                    hovertemplate="confidence %{x:.1%}: right %{y:.1%} of %{customdata:,d} images"
                                                  "<extra></extra>",
                                    line=dict(color=RUN_COLOURS[k % len(RUN_COLOURS)], width=2)))
    figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                                line=dict(color="#888", dash="dash")))
    figure.update_layout(xaxis=dict(title="confidence", range=[0, 1], tickformat=".0%"),
                         yaxis=dict(title="accuracy in bin", range=[0, 1.02], tickformat=".0%"))
    return _layout(figure, height=400, title="Reliability", legend=dict(orientation="h", y=-0.25))


def overlaid_training(runs: list[tuple[str, list[dict]]]) -> go.Figure:
    """Validation (else training) accuracy per epoch of several runs' models."""
    figure = go.Figure()
    for k, (name, history) in enumerate(runs):
        frame = pd.DataFrame(history)
        column = "val_accuracy" if "val_accuracy" in frame and frame["val_accuracy"].notna().any() else \
            "train_accuracy" if "train_accuracy" in frame else None
        if column is None:
            continue
        figure.add_trace(go.Scatter(x=frame["epoch"], y=frame[column], mode="lines+markers",
                                    name=f"{html.escape(name)} "
                                         f"({'validation' if column == 'val_accuracy' else 'training'})",
                                    line=dict(color=RUN_COLOURS[k % len(RUN_COLOURS)], width=2)))
    figure.update_layout(xaxis=dict(title="epoch", dtick=1), yaxis=dict(title="accuracy", tickformat=".0%"))
    return _layout(figure, height=400, title="Training", legend=dict(orientation="h", y=-0.25))


def settings_differences(a: dict, b: dict) -> pd.DataFrame:
    """The evaluation and training settings in which two runs differ (flattened keys, values as text)."""
    def flat(info: dict) -> dict:
        out = {f"evaluation: {k}": v for k, v in (info.get("settings") or {}).items()
               if k not in ("out", "name", "progress")}
        training = ((info.get("model") or {}).get("training") or {}).get("config") or {}
        out.update({f"training: {k}": v for k, v in training.items() if k not in ("out", "progress")})
        out["model file sha256"] = (info.get("model") or {}).get("file_sha256")
        out["dataset"] = f"{(info.get('dataset') or {}).get('name')}/{(info.get('dataset') or {}).get('evaluated')}"
        return out

    fa, fb = flat(a), flat(b)
    rows = [{"setting": key, "A": str(fa.get(key, "")), "B": str(fb.get(key, ""))}
            for key in sorted(set(fa) | set(fb)) if fa.get(key) != fb.get(key)]
    return pd.DataFrame(rows, columns=["setting", "A", "B"])
