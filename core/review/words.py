"""The words and figures of review sessions, one way everywhere: on the pages, in the CSV exports and in the PDF
reports. A class is "No tumour", a heatmap rating "somewhere else", a share "75.0% (95% CI 30.1–95.4%)" as the
runs pages write an interval, a kappa "0.62 (95% CI 0.41–0.80)", a reading time "12 s"."""

from __future__ import annotations

import math

from core.data import CLASS_LABELS

MISSING = "—"
RATINGS = {"right": "on the tumour", "partly": "partly on it", "wrong": "somewhere else"}
LEVEL = "95%"  # the confidence level of every interval of the review statistics (core.metrics.CONFIDENCE)


def _defined(value) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def class_name(name: str | None, missing: str = MISSING) -> str:
    """A class as people read it ("No tumour"); ``missing`` for none."""
    return CLASS_LABELS.get(name, str(name)) if isinstance(name, str) and name else missing


def rating_name(rating: str | None, missing: str = MISSING) -> str:
    return RATINGS.get(rating, str(rating)) if isinstance(rating, str) and rating else missing


def _figure(value, low, high, times: float, spec: str, unit: str) -> str:
    """``value`` (times ``times``, in ``spec``, then ``unit``) with its interval when both ends are defined."""
    if not _defined(value):
        return "n/a"
    text = f"{times * float(value):{spec}}{unit}"
    if _defined(low) and _defined(high):
        text += f" ({LEVEL} CI {times * float(low):{spec}}–{times * float(high):{spec}}{unit})"
    return text


def share(value, low=None, high=None) -> str:
    """A share as a percentage with its interval: "75.0% (95% CI 30.1–95.4%)"; "n/a" when undefined."""
    return _figure(value, low, high, 100, ".1f", "%")


def kappa(value, low=None, high=None) -> str:
    """A kappa with its interval: "0.62 (95% CI 0.41–0.80)"; "n/a" when undefined."""
    return _figure(value, low, high, 1, ".2f", "")


def seconds(value) -> str:
    """A reading time: "12 s", "2 min 05 s"; a dash for none."""
    if not _defined(value):
        return MISSING
    whole = round(float(value))
    return f"{whole} s" if whole < 120 else f"{whole // 60} min {whole % 60:02d} s"
