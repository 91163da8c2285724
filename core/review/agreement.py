"""What a session's answers say: each reader's accuracy beside the model's on the same cases, Cohen's kappa of
reader and reference and of reader and model, Fleiss' kappa across readers, the reader's confusion matrix, how hard
each case was, where reader and model disagree, and how readers rated the heatmaps.

scikit-learn (Cohen) and statsmodels (Fleiss) give every point estimate. The intervals are as in evaluation runs:
Wilson for a proportion, and a percentile bootstrap over cases for a kappa; a bootstrap needs thousands of kappas,
so those are computed in one vectorised step from resampled confusion counts (the same formulas; a test holds them
to the libraries' values).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from core.metrics import BOOTSTRAP_RESAMPLES, CONFIDENCE, wilson_interval
from core.review.store import RATINGS, CaseView

NAN = float("nan")
MAX_UNDEFINED = 0.05   # the share of bootstrap resamples in which a kappa may be undefined before it gets no interval


def answers_table(cases: Sequence[CaseView], answers: Sequence[dict]) -> pd.DataFrame:
    """One row per answer, with its case's reference and model answer beside it (``model_answered``: False where the
    model's class is only a guess, on a scan unlike its training scans), in reader then case order."""
    by_id = {c.id: c for c in cases}
    rows = []
    for a in answers:
        case = by_id[a["case_id"]]
        rows.append({"reader": a["reader"], "case": case.position + 1, "image": case.title,
                     "reference": case.reference, "model": case.model_label,
                     "model_answered": case.model_answered if case.model_label is not None else None,
                     "answer": a["label"],
                     "confidence": a["confidence"], "note": a["note"], "heatmap": a["heatmap_rating"],
                     "changed_to": a["revised_label"], "changed_note": a["revised_note"],
                     "answered_at": a["answered_at"], "reading_seconds": a.get("reading_seconds")})
    table = pd.DataFrame(rows, columns=["reader", "case", "image", "reference", "model", "model_answered", "answer",
                                        "confidence", "note", "heatmap", "changed_to", "changed_note", "answered_at",
                                        "reading_seconds"])
    table["reading_seconds"] = table["reading_seconds"].astype(float)
    known = table["reference"].notna()
    table["reader_right"] = (table["answer"] == table["reference"]).where(known)
    table["model_right"] = (table["model"] == table["reference"]).where(known & table["model"].notna())
    table["agrees_with_model"] = (table["answer"] == table["model"]).where(table["model"].notna())
    return table


# The answers' columns as the CSV export names them: the words the pages use.
PEOPLE_COLUMNS = {"reader": "reader", "case": "case", "image": "title", "reference": "reference",
                  "model": "model's answer", "model_answered": "model answered", "answer": "answer",
                  "confidence": "confidence", "note": "note", "heatmap": "heatmap rating",
                  "changed_to": "changed mind to", "changed_note": "why changed", "answered_at": "answered at (UTC)",
                  "reading_seconds": "reading time (s)", "reader_right": "answer right",
                  "model_right": "model right", "agrees_with_model": "agrees with the model"}


def answers_for_people(table: pd.DataFrame) -> pd.DataFrame:
    """The answers table in the words of the pages and the report: class names ("No tumour"), confidence and
    heatmap ratings as the reader chose them ("4 - sure", "somewhere else"), yes/no, times in UTC, reading times
    to a tenth of a second."""
    from core.review import words
    from core.review.store import CONFIDENCES

    out = table[list(PEOPLE_COLUMNS)].copy().astype(object)
    for column in ("reference", "model", "answer", "changed_to"):
        out[column] = [words.class_name(v, missing="") for v in table[column]]
    out["confidence"] = [CONFIDENCES.get(int(v), v) for v in table["confidence"]]
    out["heatmap"] = [words.rating_name(v, missing="") for v in table["heatmap"]]
    for column in ("model_answered", "reader_right", "model_right", "agrees_with_model"):
        out[column] = ["" if v is None or pd.isna(v) else ("yes" if v else "no") for v in table[column]]
    out["answered_at"] = [v.strftime("%Y-%m-%d %H:%M:%S") if v is not None and not pd.isna(v) else ""
                          for v in table["answered_at"]]
    out["reading_seconds"] = ["" if pd.isna(v) else f"{v:.1f}" for v in table["reading_seconds"]]
    for column in ("note", "changed_note"):
        out[column] = ["" if v is None or pd.isna(v) else v for v in table[column]]
    return out.rename(columns=PEOPLE_COLUMNS)


# --------------------------------------------------------------------------------------------------
# Kappas


def cohen_kappa(a: Sequence[str], b: Sequence[str], classes: Sequence[str]) -> float:
    """Cohen's kappa of two raters over the same items (scikit-learn); NaN when undefined (chance agreement of 1,
    as when both gave one class to everything) or with no items."""
    from sklearn.metrics import cohen_kappa_score

    if len(a) == 0:
        return NAN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = cohen_kappa_score(list(a), list(b), labels=list(classes))
    return float(value) if np.isfinite(value) else NAN


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa (statsmodels) of a subjects x classes table of how many raters gave each class (every subject
    rated by the same number of raters); NaN when undefined."""
    from statsmodels.stats.inter_rater import fleiss_kappa as statsmodels_fleiss

    counts = np.asarray(counts, dtype=float)
    if counts.shape[0] == 0 or counts.sum(axis=1)[0] < 2:
        return NAN
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        value = statsmodels_fleiss(counts, method="fleiss")
    return float(value) if np.isfinite(value) else NAN


@functools.lru_cache(maxsize=32)
def _resample_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """How often each of ``n`` items is drawn in each bootstrap resample (resamples x n); the same for every reader
    with ``n`` cases, so made once (read-only)."""
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(float)
    weights.flags.writeable = False
    return weights


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """The percentile interval of bootstrap values; none (NaN) when the figure is undefined in more than
    :data:`MAX_UNDEFINED` of the resamples, where the defined ones would describe a different question."""
    defined = np.isfinite(values)
    if len(values) == 0 or defined.mean() < 1 - MAX_UNDEFINED:
        return NAN, NAN
    values = values[defined]
    tail = 100 * (1 - confidence) / 2
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def cohen_kappas_weighted(a_index: np.ndarray, b_index: np.ndarray, k: int, weights: np.ndarray) -> np.ndarray:
    """Cohen's kappa for each row of ``weights`` (how often each item counts), from the weighted confusion counts."""
    pairs = np.zeros((len(a_index), k * k))
    pairs[np.arange(len(a_index)), a_index * k + b_index] = 1
    confusion = (weights @ pairs).reshape(-1, k, k)
    total = confusion.sum(axis=(1, 2))
    with np.errstate(all="ignore"):
        observed = np.trace(confusion, axis1=1, axis2=2) / total
        expected = (confusion.sum(axis=2) * confusion.sum(axis=1)).sum(axis=1) / total ** 2
        return (observed - expected) / (1 - expected)


def cohen_interval(a: Sequence[str], b: Sequence[str], classes: Sequence[str], resamples: int = BOOTSTRAP_RESAMPLES,
                   confidence: float = CONFIDENCE, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of Cohen's kappa, resampling items."""
    if len(a) < 2:
        return NAN, NAN
    index = {c: i for i, c in enumerate(classes)}
    a_index, b_index = np.array([index[x] for x in a]), np.array([index[x] for x in b])
    weights = _resample_weights(len(a), resamples, seed)
    return _percentiles(cohen_kappas_weighted(a_index, b_index, len(classes), weights), confidence)


def fleiss_kappas_weighted(counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Fleiss' kappa for each row of ``weights`` (how often each subject counts)."""
    counts = np.asarray(counts, dtype=float)
    raters = counts.sum(axis=1)[0]
    agreement = ((counts ** 2).sum(axis=1) - raters) / (raters * (raters - 1))   # P_i of each subject
    total = weights.sum(axis=1)
    with np.errstate(all="ignore"):
        shares = (weights @ counts) / (total * raters)[:, None]                  # p_j of each class
        observed = (weights @ agreement) / total
        expected = (shares ** 2).sum(axis=1)
        return (observed - expected) / (1 - expected)


def fleiss_interval(counts: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, confidence: float = CONFIDENCE,
                    seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of Fleiss' kappa, resampling subjects."""
    counts = np.asarray(counts, dtype=float)
    if counts.shape[0] < 2 or counts.sum(axis=1)[0] < 2:
        return NAN, NAN
    return _percentiles(fleiss_kappas_weighted(counts, _resample_weights(len(counts), resamples, seed)), confidence)


# --------------------------------------------------------------------------------------------------
# Summaries


def _share(right: pd.Series, confidence: float) -> dict:
    known = right.dropna().astype(bool)
    count, total = int(known.sum()), int(len(known))
    low, high = wilson_interval(count, total, confidence) if total else (NAN, NAN)
    return {"right": count, "of": total, "value": count / total if total else NAN, "low": low, "high": high}


def reader_summary(table: pd.DataFrame, classes: Sequence[str], confidence: float = CONFIDENCE,
                   seed: int = 0) -> pd.DataFrame:
    """Per reader: cases answered, accuracy against the reference and the model's on the same cases (Wilson
    intervals), Cohen's kappa with the reference and with the model (bootstrap intervals), mean confidence, changes
    of mind, and the median reading time of the answers that have one (NaN for none)."""
    rows = []
    for reader, mine in table.groupby("reader", sort=False):
        known = mine[mine["reference"].notna()]
        with_model = mine[mine["model"].notna()]
        reader_acc, model_acc = _share(known["reader_right"], confidence), _share(known["model_right"], confidence)
        kappa_ref = cohen_kappa(known["answer"], known["reference"], classes)
        kappa_model = cohen_kappa(with_model["answer"], with_model["model"], classes)
        ref_low, ref_high = cohen_interval(list(known["answer"]), list(known["reference"]), classes,
                                           confidence=confidence, seed=seed)
        mod_low, mod_high = cohen_interval(list(with_model["answer"]), list(with_model["model"]), classes,
                                           confidence=confidence, seed=seed)
        rows.append({"reader": reader, "answered": len(mine), "with_reference": reader_acc["of"],
                     "accuracy": reader_acc["value"], "accuracy_low": reader_acc["low"],
                     "accuracy_high": reader_acc["high"], "model_accuracy": model_acc["value"],
                     "model_accuracy_low": model_acc["low"], "model_accuracy_high": model_acc["high"],
                     "kappa_reference": kappa_ref, "kappa_reference_low": ref_low, "kappa_reference_high": ref_high,
                     "kappa_model": kappa_model, "kappa_model_low": mod_low, "kappa_model_high": mod_high,
                     "mean_confidence": float(mine["confidence"].mean()),
                     "changed_mind": int(mine["changed_to"].notna().sum()),
                     "median_reading_seconds": float(mine["reading_seconds"].median())})
    return pd.DataFrame(rows)


def pooled_summary(table: pd.DataFrame, confidence: float = CONFIDENCE, seed: int = 0) -> dict | None:
    """All readers together, against the reference: the share of their answers that are right, with a bootstrap
    interval that resamples cases (answers to one case are not independent of each other), beside the model's
    accuracy on the same cases (Wilson, one answer per case). None without answers to cases with a reference."""
    known = table[table["reference"].notna()]
    if known.empty:
        return None
    per_case = known.groupby("case").agg(right=("reader_right", lambda s: float(s.astype(bool).sum())),
                                         answers=("reader", "size"), model=("model_right", "first"))
    right, answers = per_case["right"].to_numpy(), per_case["answers"].to_numpy(dtype=float)
    low, high = NAN, NAN
    if len(per_case) >= 2:
        weights = _resample_weights(len(per_case), BOOTSTRAP_RESAMPLES, seed)
        low, high = _percentiles((weights @ right) / (weights @ answers), confidence)
    model = _share(per_case["model"], confidence)
    return {"readers": int(known["reader"].nunique()), "cases": int(len(per_case)), "answers": int(answers.sum()),
            "accuracy": float(right.sum() / answers.sum()), "low": low, "high": high,
            "model_accuracy": model["value"], "model_low": model["low"], "model_high": model["high"]}


def fleiss_summary(table: pd.DataFrame, classes: Sequence[str], confidence: float = CONFIDENCE, seed: int = 0,
                   cases: int | None = None) -> dict | None:
    """Fleiss' kappa across readers, on the cases all of them answered. With ``cases`` (the session's number), the
    readers who answered every case when there are two or more of them, so that one late joiner does not shrink the
    common cases to a handful; the others are named in ``left_out``. None with fewer than two readers."""
    answered = table.groupby("reader", sort=False)["case"].nunique()
    readers = list(answered.index)
    finished = [r for r in readers if cases is not None and answered[r] >= cases]
    if len(finished) >= 2:
        readers = finished
    if len(readers) < 2:
        return None
    table = table[table["reader"].isin(readers)]
    answered_by = table.groupby("case")["reader"].nunique()
    common = answered_by.index[answered_by == len(readers)]
    shared = table[table["case"].isin(common)]
    counts = pd.crosstab(shared["case"], shared["answer"]).reindex(columns=list(classes), fill_value=0).to_numpy()
    low, high = fleiss_interval(counts, confidence=confidence, seed=seed)
    return {"readers": int(len(readers)), "cases": int(len(common)), "kappa": fleiss_kappa(counts), "low": low,
            "high": high, "left_out": [r for r in answered.index if r not in readers]}


def confusion(table: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """Reference (rows) against the reader's answer (columns), counts, over answers with a reference."""
    known = table[table["reference"].notna()]
    return pd.crosstab(known["reference"], known["answer"]).reindex(index=list(classes), columns=list(classes),
                                                                   fill_value=0)


def case_difficulty(table: pd.DataFrame) -> pd.DataFrame:
    """Per case with a reference: how many readers answered, how many were wrong and their share, the model's
    answer, the median reading time; hardest first."""
    known = table[table["reference"].notna()]
    if known.empty:
        return pd.DataFrame(columns=["case", "image", "reference", "model", "readers", "wrong", "share_wrong",
                                     "median_reading_seconds"])
    grouped = known.groupby(["case", "image", "reference"], dropna=False)
    out = grouped.agg(model=("model", "first"), readers=("reader", "nunique"),
                      wrong=("reader_right", lambda s: int((~s.astype(bool)).sum())),
                      median_reading_seconds=("reading_seconds", "median")).reset_index()
    out["share_wrong"] = out["wrong"] / out["readers"]
    out = out[["case", "image", "reference", "model", "readers", "wrong", "share_wrong", "median_reading_seconds"]]
    return out.sort_values(["share_wrong", "case"], ascending=[False, True], kind="stable").reset_index(drop=True)


def disagreements(table: pd.DataFrame) -> pd.DataFrame:
    """The answers that differ from the model's, in reader then case order."""
    return table[table["agrees_with_model"] == False].reset_index(drop=True)  # noqa: E712 - NA stays out


def heatmap_ratings(table: pd.DataFrame) -> pd.DataFrame:
    """How readers rated the heatmaps: counts per rating, split by whether the model was right."""
    rated = table[table["heatmap"].notna()]
    verdict = rated["model_right"].map({True: "model right", False: "model wrong"}).fillna("no reference")
    counts = pd.crosstab(rated["heatmap"], verdict)
    return counts.reindex(index=list(RATINGS), fill_value=0)


def session_summary(table: pd.DataFrame, classes: Sequence[str], confidence: float = CONFIDENCE,
                    cases: int | None = None) -> dict:
    """Everything the summary page, the CSV export and the session report show. ``single_class_reference``: the
    reference holds one class only, where a kappa against it says nothing of skill (it is 0 or undefined)."""
    references = table["reference"].dropna().unique()
    return {"answers": int(len(table)), "readers": reader_summary(table, classes, confidence),
            "pooled": pooled_summary(table, confidence),
            "fleiss": fleiss_summary(table, classes, confidence, cases=cases), "difficulty": case_difficulty(table),
            "disagreements": disagreements(table), "ratings": heatmap_ratings(table),
            "single_class_reference": len(references) == 1}
