"""JSON schemas of an evaluation run's files: what readers of a run rely on (other entries are free-form). Checked
by :func:`core.runs.read_run`, together with what a schema cannot say (the curves' points, the predictions
table)."""

from __future__ import annotations

from core.data import CLASSES

SUBSETS = ("all", "duplicate_free")

_NUMBER = {"type": "number"}
_SHARE = {"type": ["number", "null"], "minimum": 0, "maximum": 1}   # a figure that may be undefined
_COUNT = {"type": "integer", "minimum": 0}
_TEXT = {"type": "string", "maxLength": 2000}
_CLASS_NAME = {"enum": list(CLASSES)}  # names from a file are shown in charts: only the project's own
_CLASSES = {"type": "array", "minItems": 2, "uniqueItems": True, "items": _CLASS_NAME}
_HISTORY = {"type": "array", "items": {"type": "object", "required": ["epoch"], "properties": {
    "epoch": {"type": "integer"}, **{k: {"type": ["number", "null"]} for k in
                                     ("train_loss", "val_loss", "train_accuracy", "val_accuracy")}}}}

RUN_SCHEMA = {
    "type": "object",
    "required": ["format", "format_version", "name", "created", "model", "dataset", "audit", "settings"],
    "properties": {
        "name": _TEXT, "created": _TEXT,
        "model": {"type": "object", "required": ["path", "classes"], "properties": {
            "path": _TEXT, "file_sha256": {"type": ["string", "null"]}, "classes": _CLASSES,
            "training": {"type": ["object", "null"], "properties": {
                "config": {"type": ["object", "null"]}, "best_epoch": {"type": ["integer", "null"]}}}}},
        "dataset": {"type": "object", "required": ["name", "evaluated", "images", "skipped"], "properties": {
            "root": _TEXT, "name": _TEXT, "evaluated": _TEXT, "images": _COUNT,
            "skipped": {"type": "array", "items": {"type": "object", "required": ["path", "reason"],
                                                   "properties": {"path": _TEXT, "reason": _TEXT}}}}},
        "audit": {"type": "object", "required": ["available"],
                  "properties": {"available": {"type": "boolean"}, "near_duplicate_bits": _COUNT,
                                 "exact_duplicates": _COUNT, "near_duplicates": _COUNT,
                                 "duplicate_free_images": _COUNT},
                  "if": {"properties": {"available": {"const": True}}},
                  "then": {"required": ["near_duplicate_bits", "exact_duplicates", "near_duplicates",
                                        "duplicate_free_images"]}},
        "settings": {"type": "object", "required": ["device", "precision"], "properties": {
            "confidence": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "precision": _TEXT, "device": _TEXT, "localisation": _TEXT}},
        "history": _HISTORY,
    },
}

_PER_CLASS = {"type": "object", "required": ["precision", "recall", "specificity", "f1", "support", "auc",
                                             "average_precision"],
              "properties": {"support": _COUNT,
                             **{k: _SHARE for k in ("precision", "recall", "specificity", "f1", "auc",
                                                    "average_precision")}}}
_BLOCK = {
    "type": "object",
    "required": ["images", "accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "macro_auc", "micro_auc",
                 "confusion_matrix", "per_class", "tumour_vs_no_tumour", "calibration"],
    "properties": {
        "images": _COUNT, **{k: _SHARE for k in ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1",
                                                 "macro_auc", "micro_auc")},
        "confusion_matrix": {"type": "array", "items": {"type": "array", "items": _COUNT}},
        "per_class": {"type": "object", "propertyNames": _CLASS_NAME, "additionalProperties": _PER_CLASS},
        "tumour_vs_no_tumour": {"type": "object", "required": ["auc", "sensitivity", "specificity"],
                                "properties": {k: _SHARE for k in ("auc", "sensitivity", "specificity")}},
        "calibration": {"type": "object", "required": ["ece", "bins"], "properties": {
            "ece": _SHARE,
            "bins": {"type": "array", "items": {"type": "object", "required": ["low", "high", "count"], "properties": {
                "low": _NUMBER, "high": _NUMBER, "count": _COUNT, "confidence": _SHARE, "accuracy": _SHARE}}}}},
        "intervals": {"type": "object", "additionalProperties": {
            "type": "array", "minItems": 2, "maxItems": 2, "items": _SHARE}},
    },
}
_LOCAL = {"type": "object", "required": ["images"], "properties": {
    "images": _COUNT, **{k: _SHARE for k in ("pointing_strict", "pointing_tolerant", "energy_in_box", "box_share")}}}
_MASK_FIGURE = {"type": "object", "required": ["mean"], "properties": {
    "mean": _SHARE, "interval": {"type": "array", "maxItems": 2, "items": _SHARE}}}
_MASK_BLOCK = {"type": "object", "required": ["images"], "properties": {
    "images": _COUNT, "patients": {"type": ["integer", "null"], "minimum": 0}},
    "additionalProperties": {"anyOf": [_MASK_FIGURE, {"type": ["integer", "null"]}]}}
_FLAGGED = {"type": "object", "required": ["images", "flagged"], "properties": {
    "images": _COUNT, "flagged": _COUNT, "share": {"anyOf": [{"type": "null"}, _SHARE]}}}
METRICS_SCHEMA = {
    "type": "object",
    "required": ["all"],
    "properties": {
        **{k: _SHARE for k in ("accuracy", "accuracy_duplicate_free", "macro_auc", "macro_auc_duplicate_free")},
        "all": _BLOCK, "duplicate_free": {"anyOf": [{"type": "null"}, _BLOCK]},
        "familiarity": {"anyOf": [{"type": "null"}, {
            "type": "object", "required": ["threshold", "all"], "properties": {
                "threshold": _NUMBER, "all": _FLAGGED, "duplicate_free": {"anyOf": [{"type": "null"}, _FLAGGED]}}}]},
        "localisation": {"anyOf": [{"type": "null"}, {
            "type": "object", "required": ["overall", "per_class", "method", "layer"], "properties": {
                "overall": _LOCAL, "per_class": {"type": "object", "propertyNames": _CLASS_NAME,
                                                 "additionalProperties": _LOCAL},
                "method": _TEXT, "layer": _TEXT, "tolerance_px_at_224": _NUMBER}}]},
        "patients": {"anyOf": [{"type": "null"}, {
            "type": "object", "required": ["patients", "per_class"], "properties": {
                "patients": _COUNT, "per_class": {"type": "object", "propertyNames": _CLASS_NAME,
                                                  "additionalProperties": {"type": "object", "properties": {
                                                      "patients": _COUNT, "right": _COUNT, "recall": _SHARE}}}}}]},
        "masks": {"anyOf": [{"type": "null"}, {
            "type": "object", "required": ["overall", "per_class", "method", "layer"], "properties": {
                "overall": _MASK_BLOCK, "per_class": {"type": "object", "propertyNames": _CLASS_NAME,
                                                      "additionalProperties": _MASK_BLOCK},
                "method": _TEXT, "layer": _TEXT, "dilation_px": _NUMBER, "heatmap_level": _NUMBER,
                "dilation_mm": {"anyOf": [{"type": "null"}, _NUMBER]},
                "margin_mm": {"anyOf": [{"type": "null"}, {
                    "type": "object", "required": ["images", "of", "median", "min", "max"], "properties": {
                        "images": _COUNT, "of": _COUNT, "median": _NUMBER, "min": _NUMBER, "max": _NUMBER}}]}}}]},
        "warnings": {"type": "array", "items": _TEXT},
    },
}
_NUMBERS = {"type": "array"}  # long: their items are checked by _check_numbers, not item by item here
_CURVE_SET = {"anyOf": [{"type": "null"}, {"type": "object", "properties": {
    "roc": {"type": "object", "propertyNames": {"enum": [*CLASSES, "micro", "macro"]},
            "additionalProperties": {"type": "object", "required": ["fpr", "tpr"],
                                     "properties": {"fpr": _NUMBERS, "tpr": _NUMBERS}}},
    "precision_recall": {"type": "object", "propertyNames": _CLASS_NAME, "additionalProperties": {
        "type": "object", "required": ["recall", "precision"],
        "properties": {"recall": _NUMBERS, "precision": _NUMBERS}}},
    "tumour_roc": {"type": "object", "properties": {"fpr": _NUMBERS, "tpr": _NUMBERS}}}}]}
CURVES_SCHEMA = {"type": "object", "properties": {subset: _CURVE_SET for subset in SUBSETS}}
