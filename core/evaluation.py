"""Evaluation runs: what a model predicted for every image of a dataset, and every metric that follows.

``evaluate(EvaluationSettings(checkpoint=..., data=..., out=...))`` writes a run directory;
:func:`core.runs.read_run` loads one. The format is documented in ``docs/evaluation-runs.md`` and
:mod:`core.runs`.

One pass over the images decodes each file once and from it takes the file and pixel hashes, the
perceptual hash and the network input. The hashes feed the leakage audit against the fingerprints the
checkpoint keeps of its training and validation images; every headline metric is then computed twice,
on all images and on those with no exact or near duplicate in that training data. Datasets with tumour
boxes (YOLO ``.txt`` beside each image) also get localisation scores: the Grad-CAM heatmap of the true
class, from the same forward pass as the prediction, against the box.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from core import __version__
from core.audit import (NEAR_DUPLICATE_BITS, cross_matches, dataset_fingerprint, duplicate_groups, fingerprint_bytes)
from core.checkpoint import (check_classes_match, library_versions, load_checkpoint, model_from_checkpoint,
                             resolve_checkpoint_path)
from core.data import CLASSES, DatasetError, find_split_dirs, preprocess_uint8, read_yolo_boxes, \
    scan_class_folders
from core.explain import CAM_METHODS, DEFAULT_LAYER, DEFAULT_METHOD, check_choice, explain_batch, \
    localisation_scores
from core.inference import Classifier
from core.metrics import BootstrapSettings, MetricWarning, bootstrap_intervals, curves, point_metrics
from core.runtime import default_workers
from core.runs import RUN_FORMAT, RUN_FORMAT_VERSION, RunError, RunWriter
from core.sources import read_bytes, read_image
from core.sources.files import printable
from core.sources.images import MAX_FILE_BYTES
from core.weights import sha256_of_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationSettings:
    checkpoint: str
    data: str                      # dataset root: its Testing/ is evaluated when it has one, else the tree
    out: str
    name: str | None = None        # shown in the dashboard; default: "<dataset name> (<model name>)"
    batch_size: int = 32
    device: str = "auto"
    precision: str = "auto"
    num_workers: int | None = None
    near_duplicate_bits: int | None = None  # None: the checkpoint's own training setting
    bootstrap_resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0
    localisation: str = "auto"     # auto (when boxes exist) | on | off
    cam_method: str = DEFAULT_METHOD
    cam_layer: str = DEFAULT_LAYER
    overwrite: bool = False
    progress: bool = True


# --------------------------------------------------------------------------------------------------
# Reading the images: one decode per file


class _EvaluationImages(Dataset):
    def __init__(self, paths: list[Path], size: int, boxes: bool):
        self.paths, self.size, self.boxes = paths, size, boxes

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        try:
            raw = read_bytes(path, MAX_FILE_BYTES, "image file")
            image = read_image(raw)
            item = {"index": index, "tensor": preprocess_uint8(image, self.size),
                    "fingerprint": fingerprint_bytes(raw, image), "width": image.width, "height": image.height}
        except (OSError, ValueError) as error:
            return {"index": index, "error": str(error)}
        if self.boxes:  # a damaged box file costs the image its localisation score, not its prediction
            try:
                item["boxes"] = read_yolo_boxes(path)
            except ValueError as error:
                item["box_error"] = str(error)
        return item


def _has_box(path: Path) -> bool:
    try:
        return bool(read_yolo_boxes(path))
    except ValueError:
        return True  # a box file is there, if damaged: the image is reported when it is read


def _keep_list(items: list[dict]) -> list[dict]:
    return items


# --------------------------------------------------------------------------------------------------
# Helpers


def dataset_name(root: Path) -> str:
    """How the dashboard finds a dataset again on another machine: the path below a folder called
    ``datasets`` when there is one (``brain-tumor-mri``), else the folder's own name."""
    parts = root.resolve().parts
    if "datasets" in parts[:-1]:
        last = len(parts) - 1 - parts[::-1].index("datasets")
        return "/".join(parts[last + 1:])
    return root.resolve().name


PROJECT_ROOT = Path(__file__).resolve().parents[1]


def portable_path(path: str | os.PathLike) -> str:
    """A path inside the project as relative to the project root (so shipped runs name no machine's
    folders); any other path as given."""
    try:
        return Path(path).resolve().relative_to(PROJECT_ROOT).as_posix()
    except ValueError:
        return str(path)


def _model_summary(checkpoint, path: Path) -> dict:
    meta = checkpoint.metadata
    data = dict(meta.get("data", {}))
    for bulky in ("seen_files", "val_files", "test_files"):  # file lists stay in the checkpoint
        data.pop(bulky, None)
    return {"path": portable_path(path), "file_sha256": sha256_of_file(path), "classes": meta["classes"],
            "architecture": meta.get("architecture"), "preprocessing": meta.get("preprocessing"),
            "base_weights": meta.get("base_weights"), "training": meta.get("training"), "data": data,
            "validation": meta.get("validation"), "calibration": meta.get("calibration"),
            "versions": meta.get("versions")}


def _metrics_block(labels: np.ndarray, probs: np.ndarray, groups: np.ndarray, settings: EvaluationSettings
                   ) -> tuple[dict, dict]:
    block = point_metrics(labels, probs, list(CLASSES))
    block["intervals"] = bootstrap_intervals(
        labels, probs, list(CLASSES), groups,
        BootstrapSettings(settings.bootstrap_resamples, settings.confidence, settings.seed))
    return block, curves(labels, probs, list(CLASSES))


def _localisation_summary(table: pd.DataFrame) -> dict:
    def summarise(rows: pd.DataFrame) -> dict:
        return {"images": int(len(rows)),
                "pointing_strict": float(rows["pointing_strict"].mean()) if len(rows) else float("nan"),
                "pointing_tolerant": float(rows["pointing_tolerant"].mean()) if len(rows) else float("nan"),
                "energy_in_box": float(rows["energy_in_box"].mean()) if len(rows) else float("nan"),
                "box_share": float(rows["box_share"].mean()) if len(rows) else float("nan")}

    return {"overall": summarise(table),
            "per_class": {name: summarise(table[table["label"] == name]) for name in CLASSES
                          if (table["label"] == name).any()},
            "correctly_classified": summarise(table[table["label"] == table["pred"]])}


# --------------------------------------------------------------------------------------------------
# The run


def check_settings(settings: EvaluationSettings) -> None:
    from core.runtime import machinery_problems

    problems = machinery_problems(settings.device, settings.precision, settings.num_workers)
    if settings.batch_size < 1:
        problems.append("--batch-size must be at least 1")
    if settings.bootstrap_resamples < 1:
        problems.append("--bootstrap must be at least 1 resample (1,000 or more for reported intervals)")
    if not 0 < settings.confidence < 1:
        problems.append("--confidence must be between 0 and 1")
    if settings.localisation not in ("auto", "on", "off"):
        problems.append("--localisation must be auto, on or off")
    if settings.near_duplicate_bits is not None and not 0 <= settings.near_duplicate_bits <= 256:
        problems.append("--near-duplicate-bits must be between 0 and 256")
    try:
        check_choice(settings.cam_method, settings.cam_layer)
    except ValueError as error:
        problems.append(str(error))
    if settings.localisation != "off" and settings.cam_method in CAM_METHODS and CAM_METHODS[settings.cam_method].slow:
        problems.append(f"{CAM_METHODS[settings.cam_method].label} is too slow to score a whole dataset; "
                        "use --cam-method gradcam (or another gradient method)")
    if problems:
        raise RunError("; ".join(problems))


def evaluate(settings: EvaluationSettings) -> Path:
    """Evaluate a checkpoint on a dataset and write the run directory; returns its path.

    Nothing is left half-written: the run is assembled in a temporary folder beside ``out`` and moved into
    place at the end. An existing run is replaced only with ``overwrite``.
    """
    check_settings(settings)
    root = Path(settings.data).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset folder {printable(root)} does not exist; check the path")
    checkpoint_file = resolve_checkpoint_path(settings.checkpoint)
    # Checks --out (never the data, never a folder that is not a run) and makes its staging folder, before any work.
    with RunWriter(settings.out, settings.overwrite, {"dataset": root, "checkpoint": checkpoint_file}) as writer:
        return _evaluate(settings, root, load_checkpoint(checkpoint_file), writer)


def _evaluate(settings: EvaluationSettings, root: Path, checkpoint, writer: RunWriter) -> Path:
    check_classes_match(checkpoint.metadata)  # the columns and labels below are in CLASSES order
    classifier = Classifier(model_from_checkpoint(checkpoint), checkpoint.metadata, checkpoint.path,
                            settings.device, settings.precision)
    _, testing = find_split_dirs(root)
    tree_root = testing or root
    tree = scan_class_folders(tree_root)
    if not tree.samples:
        raise DatasetError(f"{tree_root} holds no images in class folders")
    for item in tree.refused:
        log.warning("skipping image %s: %s", item["path"], item["reason"])
    prefix = tree_root.relative_to(root).as_posix() if tree_root != root else ""
    relpaths = [f"{prefix}/{s.relpath}" if prefix else s.relpath for s in tree.samples]
    has_boxes = any(_has_box(s.path) for s in tree.samples[:200] if s.class_name != "notumor")
    localise = settings.localisation == "on" or (settings.localisation == "auto" and has_boxes)
    if settings.localisation == "on" and not has_boxes:
        raise RunError(f"--localisation on, but {tree_root} has no YOLO .txt box files beside its tumour images")

    loader = DataLoader(_EvaluationImages([s.path for s in tree.samples], classifier.image_size, localise),
                        batch_size=settings.batch_size, shuffle=False, collate_fn=_keep_list,
                        num_workers=settings.num_workers if settings.num_workers is not None else default_workers(4))
    n = len(tree.samples)
    probs = np.full((n, len(CLASSES)), np.nan, dtype=np.float64)
    fingerprints: list = [None] * n
    errors: dict[int, str] = {}
    local_rows: list[dict] = []
    labels_all = np.array([s.label for s in tree.samples])
    box_errors: list[dict] = []
    started = time.time()  # the pass over the images: decoding, fingerprints, network
    with tqdm(total=n, desc=f"evaluating {tree_root.name}", unit="img", disable=not settings.progress,
              dynamic_ncols=True) as bar:
        for items in loader:
            good = [item for item in items if "error" not in item]
            for item in items:
                if "error" in item:
                    errors[item["index"]] = item["error"]
                    log.warning("skipping unreadable image %s: %s", relpaths[item["index"]], item["error"])
            if good:
                index = [item["index"] for item in good]
                batch = classifier.normalise(torch.stack([item["tensor"] for item in good]))
                if localise:
                    explanation = explain_batch(classifier, batch, settings.cam_method, settings.cam_layer,
                                                targets=labels_all[index].tolist())
                    probs[index] = explanation.probabilities
                    for row, item in enumerate(good):
                        if "box_error" in item:
                            box_errors.append({"path": relpaths[item["index"]], "reason": item["box_error"]})
                            log.warning("no localisation score for %s: %s", relpaths[item["index"]], item["box_error"])
                        boxes = item.get("boxes")
                        if tree.samples[item["index"]].class_name == "notumor" or not boxes:
                            continue
                        scores = localisation_scores(explanation.heatmaps[row], boxes, item["width"], item["height"])
                        local_rows.append({"path": relpaths[item["index"]],
                                           "label": tree.samples[item["index"]].class_name,
                                           "pred": CLASSES[int(explanation.probabilities[row].argmax())],
                                           "boxes": len(boxes), **scores})
                else:
                    probs[index] = classifier.probabilities(classifier.logits(batch)).numpy()
                for item in good:
                    fingerprints[item["index"]] = item["fingerprint"]
            bar.update(len(items))
    seconds = time.time() - started

    keep = np.array([i not in errors for i in range(n)])
    if not keep.any():
        raise DatasetError(f"none of the {n} images in {tree_root} could be read")
    samples = [s for s, k in zip(tree.samples, keep) if k]
    paths = [p for p, k in zip(relpaths, keep) if k]
    fps = [f for f, k in zip(fingerprints, keep) if k]
    probs = probs[keep]
    labels = labels_all[keep]

    # Leakage audit against the model's own training (and validation) images.
    meta = checkpoint.metadata
    bits = settings.near_duplicate_bits
    if bits is None:
        bits = int(meta.get("data", {}).get("near_duplicate_bits", NEAR_DUPLICATE_BITS))
    train = checkpoint.fingerprints
    seen_files = meta.get("data", {}).get("seen_files") or []
    has_train_prints = bool(train) and "sha256" in train and "phash" in train
    if has_train_prints:
        train_sha = [bytes(row).hex() for row in train["sha256"].numpy()]
        # Checkpoints from before pixel hashes were kept match exact copies by file bytes only.
        train_pixels = [bytes(row).hex() for row in train["pixel_sha256"].numpy()] if "pixel_sha256" in train else []
        matches = cross_matches(fps, train_sha, train["phash"].numpy(), train_pixels, threshold=bits)
        duplicate = matches.duplicate
        kind = matches.kind()
        nearest = matches.nearest_bits.astype(int)
        match_index = matches.nearest_index
        train_labels = train["label"].numpy() if "label" in train else None
        train_split = train["split"].numpy() if "split" in train else None
    else:
        warnings.warn("the checkpoint does not list its training images: the leakage audit and the "
                      "duplicate-free figures are unavailable", MetricWarning, stacklevel=2)
        duplicate = np.zeros(len(fps), dtype=bool)
        kind = np.array([""] * len(fps))
        nearest = np.full(len(fps), -1)
        match_index = np.full(len(fps), -1)
        train_labels = train_split = None
    groups = duplicate_groups(fps, bits)

    def match_field(i: int, source) -> str:
        if not duplicate[i] or match_index[i] < 0 or source is None:
            return ""
        return str(source[match_index[i]])

    predictions = pd.DataFrame({
        "path": paths,
        "label": [s.class_name for s in samples],
        "pred": [CLASSES[k] for k in probs.argmax(axis=1)],
        **{f"prob_{name}": probs[:, k].round(6) for k, name in enumerate(CLASSES)},
        "confidence": probs.max(axis=1).round(6),
        "train_duplicate": duplicate if has_train_prints else pd.array([pd.NA] * len(fps), dtype="boolean"),
        "train_duplicate_kind": kind,
        "train_nearest_bits": nearest,
        "train_match": [match_field(i, seen_files if has_train_prints and len(seen_files) == len(train_sha)
                                    else None) for i in range(len(fps))],
        "train_match_label": [match_field(i, None if train_labels is None else [CLASSES[k] for k in train_labels])
                              for i in range(len(fps))],
        "train_match_split": [match_field(i, None if train_split is None else
                                          ["validation" if s else "train" for s in train_split])
                              for i in range(len(fps))],
        "duplicate_group": groups,
        "sha256": [f.sha256 for f in fps],
    })

    captured: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MetricWarning)
        everything, everything_curves = _metrics_block(labels, probs, groups, settings)
        unseen = ~duplicate
        if has_train_prints:
            free, free_curves = _metrics_block(labels[unseen], probs[unseen], groups[unseen], settings)
        else:
            free, free_curves = None, None
        captured = sorted({str(w.message) for w in caught if issubclass(w.category, MetricWarning)})
    metrics = {
        "accuracy": everything["accuracy"],
        "accuracy_duplicate_free": free["accuracy"] if free else None,
        "macro_auc": everything["macro_auc"],
        "macro_auc_duplicate_free": free["macro_auc"] if free else None,
        "all": everything,
        "duplicate_free": free,
        "localisation": None,
        "warnings": captured,
    }
    local_table = None
    if localise:
        local_table = pd.DataFrame(local_rows, columns=["path", "label", "pred", "boxes", "pointing_strict",
                                                        "pointing_tolerant", "energy_in_box", "box_share"])
        metrics["localisation"] = {**_localisation_summary(local_table), "method": settings.cam_method,
                                   "layer": settings.cam_layer, "target": "true class",
                                   "tolerance_px_at_224": 15}

    evaluated = tree_root.relative_to(root).as_posix() if tree_root != root else "."
    model_name = Path(checkpoint.path).parent.name
    info = {
        "format": RUN_FORMAT, "format_version": RUN_FORMAT_VERSION,
        "name": settings.name or f"{dataset_name(root)}{'/' + evaluated if evaluated != '.' else ''} ({model_name})",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": _model_summary(checkpoint, Path(checkpoint.path)),
        "history": meta.get("history", []),
        "dataset": {"root": settings.data, "name": dataset_name(root), "evaluated": evaluated,
                    "fingerprint": dataset_fingerprint((p, f.sha256) for p, f in zip(paths, fps)),
                    "images": int(len(paths)), "counts": {name: int((labels == k).sum()) for k, name in enumerate(CLASSES)},
                    "skipped": tree.refused + [{"path": relpaths[i], "reason": r} for i, r in sorted(errors.items())],
                    "unknown_folders": tree.unknown_folders, "has_boxes": bool(has_boxes),
                    "box_errors": box_errors},
        "audit": {"near_duplicate_bits": bits, "reference": "the checkpoint's training and validation images",
                  "available": has_train_prints,
                  "exact_duplicates": int((kind == "exact").sum()), "near_duplicates": int((kind == "near").sum()),
                  "duplicate_free_images": int((~duplicate).sum()),
                  "groups_within_dataset": int(len(np.unique(groups))),
                  "label_disagreements": int(sum(1 for i in range(len(fps)) if duplicate[i] and train_labels is not None
                                                 and CLASSES[train_labels[match_index[i]]] != samples[i].class_name))},
        "settings": {**asdict(settings), "checkpoint": portable_path(settings.checkpoint),
                     "out": portable_path(settings.out), "device": str(classifier.device), "precision": classifier.precision},
        "timing": {"seconds": round(seconds, 1), "images_per_second": round(n / seconds, 1) if seconds else None},
        "versions": {**library_versions(), "project": __version__},
    }
    return writer.write(info, predictions, metrics, {"all": everything_curves, "duplicate_free": free_curves},
                        local_table)
