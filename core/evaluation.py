"""Evaluation runs: what a model predicted for every image of a dataset, and every metric that follows.

``evaluate(EvaluationSettings(checkpoint=..., data=..., out=...))`` writes a run directory;
:func:`core.runs.read_run` loads one. The format is documented in ``docs/evaluation-runs.md`` and
:mod:`core.runs`.

One pass over the images decodes each file once and from it takes the file and pixel hashes, the
perceptual hash and the network input. The hashes feed the leakage audit against the fingerprints the
checkpoint keeps of its training and validation images; every headline metric is then computed twice,
on all images and on those with no exact or near duplicate in that training data. Datasets with tumour
boxes (YOLO ``.txt`` beside each image) or tumour masks (:mod:`core.masks`: a ``-masks`` folder beside the
dataset, or ``masks=``) also get localisation scores: the heatmap of the true class, from the same forward pass
as the prediction, against the box and against the mask, with a baseline that ignores the scan. ``files=``
restricts a run to the images a list names (a held-out split).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from core import __version__
from core.audit import Audit, dataset_fingerprint, fingerprint_bytes, leakage_audit
from core.checkpoint import check_classes_match, library_versions, load_checkpoint, resolve_checkpoint_path
from core.data import (
    CLASSES,
    ClassFolderTree,
    DatasetError,
    Sample,
    find_split_dirs,
    only_listed,
    preprocess_uint8,
    read_yolo_boxes,
    scan_class_folders,
)
from core.explain import CAM_METHODS, DEFAULT_LAYER, DEFAULT_METHOD, check_choice, explain_batch, layer_grid
from core.familiarity import Familiarity, flagged_figures
from core.inference import Classifier, classifier_from_checkpoint
from core.localisation import POINTING_TOLERANCE_PX, has_box, localisation_scores, localisation_summary
from core.masks import (
    DILATION_PX,
    OPTIONAL_SCORES,
    SCORES,
    MaskError,
    find_mask_root,
    mask_summary,
    masks_for,
    read_mask,
    score_against_mask,
)
from core.metrics import BootstrapSettings, MetricWarning, bootstrap_intervals, curves, patient_figures, point_metrics
from core.runs import LOCALISATION_FILE, MASKS_FILE, RUN_FORMAT, RUN_FORMAT_VERSION, RunError, RunWriter
from core.runtime import default_workers
from core.sources import read_bytes, read_image
from core.sources.files import printable
from core.sources.images import MAX_FILE_BYTES, pixel_spacing
from core.split import join_groups
from core.weights import sha256_of_file

log = logging.getLogger(__name__)
MASK_COLUMNS = ["path", "label", "pred", "dilated_share", *SCORES, *(f"blob_{s}" for s in SCORES), *OPTIONAL_SCORES,
                "margin_mm"]


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
    localisation: str = "auto"     # auto (when boxes or masks exist) | on | off
    masks: str | None = None       # the folder of tumour masks; None: the one beside the dataset, if any
    files: str | None = None       # a text file of relative paths (one a line): evaluate only these images
    mask_dilation_px: float = DILATION_PX  # at 224 px: how far the tumour is grown for the tolerant scores
    mask_dilation_mm: float | None = None  # instead, millimetres (needs each scan's pixel spacing)
    pixel_spacing_mm: float | None = None  # the spacing of files that state none (JPEG, PNG, .mat), as published
    cam_method: str = DEFAULT_METHOD
    cam_layer: str = DEFAULT_LAYER
    volume_slice: str = "middle"   # the slice each DICOM or NIfTI file stands for: "middle" or a number from 1
    overwrite: bool = False
    progress: bool = True


# --------------------------------------------------------------------------------------------------
# Reading the images: one decode per file


class _EvaluationImages(Dataset):
    def __init__(self, paths: list[Path], size: int, boxes: bool, masks: list[Path | None] | None = None,
                 stated_spacing_mm: float | None = None):
        self.paths, self.size, self.boxes, self.masks = paths, size, boxes, masks
        self.stated_spacing_mm = stated_spacing_mm

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        try:
            raw = read_bytes(path, MAX_FILE_BYTES, "image file")
            image = read_image(raw)
            item = {"index": index, "tensor": preprocess_uint8(image, self.size),
                    "fingerprint": fingerprint_bytes(raw, image), "width": image.width, "height": image.height,
                    "spacing_mm": pixel_spacing(image, self.stated_spacing_mm)}
        except (OSError, ValueError) as error:
            return {"index": index, "error": str(error)}
        if self.boxes:  # a damaged box file costs the image its localisation score, not its prediction
            try:
                item["boxes"] = read_yolo_boxes(path)
            except ValueError as error:
                item["box_error"] = str(error)
        if self.masks is not None and self.masks[index] is not None:  # likewise a damaged mask
            try:
                item["mask"] = read_mask(self.masks[index], image.width, image.height, image.info)
            except (OSError, ValueError) as error:
                item["mask_error"] = str(error)
        return item


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


def metrics_block(labels: np.ndarray, probs: np.ndarray, groups: np.ndarray, bootstrap: BootstrapSettings
                  ) -> tuple[dict, dict]:
    """Every headline figure of a set of predictions with its bootstrap interval (resampling ``groups``), and the
    curves: one block of metrics.json and of curves.json."""
    block = point_metrics(labels, probs, list(CLASSES))
    block["intervals"] = bootstrap_intervals(labels, probs, list(CLASSES), groups, bootstrap)
    return block, curves(labels, probs, list(CLASSES))


def _metrics_block(labels: np.ndarray, probs: np.ndarray, groups: np.ndarray, settings: EvaluationSettings
                   ) -> tuple[dict, dict]:
    return metrics_block(labels, probs, groups,
                         BootstrapSettings(settings.bootstrap_resamples, settings.confidence, settings.seed))


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
    if settings.masks is not None and settings.localisation == "off":
        problems.append("--masks is only read for localisation scores; leave out --localisation off")
    if not 0 <= settings.mask_dilation_px <= 50:
        problems.append("--mask-dilation-px must be between 0 and 50 (pixels at 224)")
    if settings.localisation == "off" and (settings.mask_dilation_mm is not None or settings.pixel_spacing_mm):
        problems.append("--mask-dilation-mm and --pixel-spacing-mm are only used for localisation scores; leave out "
                        "--localisation off")
    if settings.mask_dilation_mm is not None and not 0 <= settings.mask_dilation_mm <= 50:
        problems.append("--mask-dilation-mm must be between 0 and 50 (millimetres)")
    if settings.pixel_spacing_mm is not None and not 0.01 <= settings.pixel_spacing_mm <= 10:
        problems.append("--pixel-spacing-mm must be between 0.01 and 10 (millimetres per pixel)")
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
    from core.sources.volumes import use_slice

    use_slice(settings.volume_slice)
    root = Path(settings.data).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset folder {printable(root)} does not exist; check the path")
    checkpoint_file = resolve_checkpoint_path(settings.checkpoint)
    # Checks --out (never in or around what is read, never a folder that is not a run) and makes its staging folder,
    # before any work.
    masks = settings.masks or (find_mask_root(root) if settings.localisation != "off" else None)
    read = {"dataset": root, "checkpoint": checkpoint_file, "mask folder": masks, "list of files": settings.files}
    with RunWriter(settings.out, settings.overwrite, read) as writer:
        return _evaluate(settings, root, load_checkpoint(checkpoint_file), writer)


def _evaluate(settings: EvaluationSettings, root: Path, checkpoint, writer: RunWriter) -> Path:
    steps = _Stopwatch()
    check_classes_match(checkpoint.metadata)  # the columns and labels below are in CLASSES order
    classifier = classifier_from_checkpoint(checkpoint, settings.device, settings.precision)
    images = find_images(root, settings)
    steps.lap("model and file list")
    predicted = predict_all(classifier, images, settings)
    steps.lap("images: decode, fingerprint, network")
    audit = leakage_audit(checkpoint, predicted.fingerprints, settings.near_duplicate_bits)
    steps.lap("leakage audit")
    metrics, curve_sets, tables = all_metrics(predicted, audit, settings, images)
    steps.lap("metrics, curves and bootstrap intervals")
    info = run_info(settings, root, images, checkpoint, classifier, predicted, audit)
    info["timing"]["steps"] = steps.laps
    return writer.write(info, predictions_table(predicted, audit), metrics, curve_sets, tables)


class _Stopwatch:
    """Where an evaluation's time goes (run.json's timing.steps, printed by the command and the bench)."""

    def __init__(self):
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 2)
        self._last = now


@dataclass
class Images:
    """What is evaluated: the class tree (a release's Testing/, or the whole folder) and how its images are named."""
    tree_root: Path
    tree: ClassFolderTree
    relpaths: list[str]           # relative to the dataset root, as a run records them
    has_boxes: bool
    localise: bool
    mask_root: Path | None = None  # where the tumour masks are (None: no masks)
    masks: list[Path | None] | None = None  # each image's mask file


def find_images(root: Path, settings: EvaluationSettings) -> Images:
    _, testing = find_split_dirs(root)
    tree_root = testing or root
    tree = scan_class_folders(tree_root)
    if not tree.samples:
        raise DatasetError(f"{tree_root} holds no images in class folders")
    for item in tree.refused:
        log.warning("skipping image %s: %s", item["path"], item["reason"])
    prefix = tree_root.relative_to(root).as_posix() if tree_root != root else ""
    if settings.files is not None:
        tree = only_listed(tree, prefix, settings.files)
    relpaths = [f"{prefix}/{s.relpath}" if prefix else s.relpath for s in tree.samples]
    tumours = [s for s in tree.samples if s.class_name != "notumor"]
    has_boxes = any(has_box(s.path) for s in tumours[:200])
    mask_root, masks = None, None
    if settings.localisation != "off" and tree.patients and settings.masks is None:
        mask_root, masks = tree.root, [s.path for s in tree.samples]  # the release: each .mat holds its own mask
    elif settings.localisation != "off":
        try:
            mask_root, masks = masks_for(root, tree.samples, settings.masks)
        except MaskError as error:
            raise RunError(f"--masks: {error}") from None
    if settings.localisation == "on" and not has_boxes and masks is None:
        raise RunError(f"--localisation on, but {tree_root} has neither YOLO .txt box files beside its tumour images "
                       "nor a folder of masks beside it (or --masks)")
    localise = settings.localisation == "on" or (settings.localisation == "auto" and (has_boxes or masks is not None))
    if masks is None and settings.mask_dilation_mm is not None:
        log.warning("--mask-dilation-mm %g is not used: %s has no tumour masks beside it (give --masks)",
                    settings.mask_dilation_mm, printable(tree_root))
    return Images(tree_root, tree, relpaths, has_boxes, localise, mask_root, masks)


@dataclass
class Predicted:
    """The pass over the images: for every readable one, its sample, path, fingerprint and probabilities."""
    samples: list[Sample]
    paths: list[str]
    fingerprints: list
    probs: np.ndarray
    skipped: list[dict]               # {"path", "reason"}: refused names and unreadable files
    localisation_rows: list[dict]
    box_errors: list[dict]
    mask_rows: list[dict]
    mask_errors: list[dict]
    seconds: float
    images: int                       # how many the pass went over
    familiarity: np.ndarray | None    # familiarity scores (None: the model has no familiarity model)
    familiar_model: Familiarity | None  # the familiarity model that scored them (its threshold and floor)

    @property
    def threshold(self) -> float | None:
        """Above it, a scan is unfamiliar (None: no familiarity model, or one without a threshold)."""
        return None if self.familiar_model is None else self.familiar_model.threshold

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=int)


def predict_all(classifier: Classifier, images: Images, settings: EvaluationSettings) -> Predicted:
    """One pass over the images: each file decoded once for its fingerprint and its network input; with
    localisation, Grad-CAM of the true class from the same forward pass, scored against the boxes."""
    samples, relpaths = images.tree.samples, images.relpaths
    loader = DataLoader(_EvaluationImages([s.path for s in samples], classifier.image_size, images.localise,
                                          images.masks if images.localise else None, settings.pixel_spacing_mm),
                        batch_size=settings.batch_size, shuffle=False, collate_fn=list,
                        num_workers=settings.num_workers if settings.num_workers is not None else default_workers(4))
    n = len(samples)
    probs = np.full((n, len(CLASSES)), np.nan, dtype=np.float64)
    familiarity = np.full(n, np.nan, dtype=np.float64)
    fingerprints: list = [None] * n
    errors: dict[int, str] = {}
    local_rows: list[dict] = []
    box_errors: list[dict] = []
    mask_rows: list[dict] = []
    mask_errors: list[dict] = []
    started = time.time()
    with tqdm(total=n, desc=f"evaluating {images.tree_root.name}", unit="img", disable=not settings.progress,
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
                if images.localise:
                    probs[index], scores = _explain_and_score(classifier, batch, good, images, settings,
                                                              (local_rows, box_errors, mask_rows, mask_errors))
                else:
                    features, logits = classifier.features_and_logits(batch)
                    probs[index], scores = classifier.probabilities(logits).numpy(), \
                        classifier.familiarity_scores(features, logits)
                if scores is not None:
                    familiarity[index] = scores
                for item in good:
                    fingerprints[item["index"]] = item["fingerprint"]
            bar.update(len(items))
    keep = [i for i in range(n) if i not in errors]
    if not keep:
        raise DatasetError(f"none of the {n} images in {images.tree_root} could be read")
    skipped = images.tree.refused + [{"path": relpaths[i], "reason": r} for i, r in sorted(errors.items())]
    model = classifier.familiarity
    return Predicted([samples[i] for i in keep], [relpaths[i] for i in keep], [fingerprints[i] for i in keep],
                     probs[keep], skipped, local_rows, box_errors, mask_rows, mask_errors, time.time() - started, n,
                     None if model is None else familiarity[keep], model)


def _explain_and_score(classifier, batch, good: list[dict], images: Images, settings: EvaluationSettings,
                       out: tuple[list, list, list, list]) -> tuple[np.ndarray, np.ndarray | None]:
    """Probabilities and familiarity scores of a batch, and the localisation scores of each of its tumour images
    with a box or a mask. ``out``: the box rows, box errors, mask rows and mask errors to append to."""
    local_rows, box_errors, mask_rows, mask_errors = out
    samples, relpaths = images.tree.samples, images.relpaths
    targets = [samples[item["index"]].label for item in good]
    explanation = explain_batch(classifier, batch, settings.cam_method, settings.cam_layer, targets=targets)
    for row, item in enumerate(good):
        path, sample = relpaths[item["index"]], samples[item["index"]]
        if sample.class_name == "notumor":
            continue
        heatmap, pred = explanation.heatmaps[row], CLASSES[int(explanation.probabilities[row].argmax())]
        for kind, errors in (("box", box_errors), ("mask", mask_errors)):
            if f"{kind}_error" in item:
                errors.append({"path": path, "reason": item[f"{kind}_error"]})
                log.warning("no %s localisation score for %s: %s", kind, path, item[f"{kind}_error"])
        boxes = item.get("boxes")
        if boxes:
            local_rows.append({"path": path, "label": sample.class_name, "pred": pred, "boxes": len(boxes),
                               **localisation_scores(heatmap, boxes, item["width"], item["height"])})
        if "mask" in item:
            try:
                mask_rows.append({"path": path, "label": sample.class_name, "pred": pred,
                                  **score_against_mask(heatmap, item["mask"], settings.mask_dilation_px,
                                                       layer_grid(settings.cam_layer, heatmap.shape[-1],
                                                                  classifier.output_stride),
                                                       settings.mask_dilation_mm, item["spacing_mm"])})
            except MaskError as error:
                mask_errors.append({"path": path, "reason": str(error)})
                log.warning("no mask localisation score for %s: %s", path, error)
    return explanation.probabilities, explanation.familiarity


def predictions_table(predicted: Predicted, audit: Audit) -> pd.DataFrame:
    probs, n = predicted.probs, len(predicted.samples)
    familiar = {}
    if predicted.familiarity is not None:
        familiar = {"familiarity": predicted.familiarity.round(4),
                    "unfamiliar": pd.array([pd.NA] * n, dtype="boolean") if predicted.threshold is None
                    else predicted.familiarity > predicted.threshold}
    train_labels = None if audit.train_labels is None else [CLASSES[k] for k in audit.train_labels]
    train_split = None if audit.train_split is None else ["validation" if s else "train" for s in audit.train_split]
    return pd.DataFrame({
        "path": predicted.paths,
        "label": [s.class_name for s in predicted.samples],
        "pred": [CLASSES[k] for k in probs.argmax(axis=1)],
        **{f"prob_{name}": probs[:, k].round(6) for k, name in enumerate(CLASSES)},
        "confidence": probs.max(axis=1).round(6),
        **familiar,
        "train_duplicate": audit.duplicate if audit.available else pd.array([pd.NA] * n, dtype="boolean"),
        "train_duplicate_kind": audit.kind,
        "train_nearest_bits": audit.nearest_bits,
        "train_match": [audit.matched(i, audit.seen_files or None) for i in range(n)],
        "train_match_label": [audit.matched(i, train_labels) for i in range(n)],
        "train_match_split": [audit.matched(i, train_split) for i in range(n)],
        "duplicate_group": audit.groups,
        "sha256": [f.sha256 for f in predicted.fingerprints],
    })


def all_metrics(predicted: Predicted, audit: Audit, settings: EvaluationSettings, images: Images
                ) -> tuple[dict, dict, dict[str, pd.DataFrame]]:
    """(metrics.json, curves.json, {file name: per-image table}): every figure on all images and on the
    duplicate-free ones, with the warnings the metrics gave, and the localisation tables."""
    labels, probs = predicted.labels, predicted.probs
    # Where the data names its patients (the figshare release), the bootstrap resamples patients: a patient's
    # slices, like copies of one scan, are not independent evidence.
    patients = [images.tree.patients.get(p) for p in predicted.paths] if images.tree.patients else None
    groups = audit.groups if patients is None else join_groups(audit.groups, patients)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MetricWarning)
        everything, everything_curves = _metrics_block(labels, probs, groups, settings)
        free, free_curves = None, None
        if audit.available:
            unseen = ~audit.duplicate
            free, free_curves = _metrics_block(labels[unseen], probs[unseen], groups[unseen], settings)
    metrics = {
        "accuracy": everything["accuracy"],
        "accuracy_duplicate_free": free["accuracy"] if free else None,
        "macro_auc": everything["macro_auc"],
        "macro_auc_duplicate_free": free["macro_auc"] if free else None,
        "all": everything,
        "duplicate_free": free,
        "localisation": None,
        "masks": None,
        "familiarity": None if predicted.familiarity is None else flagged_figures(
            predicted.familiarity, predicted.threshold, audit.duplicate if audit.available else None,
            settings.confidence, predicted.probs.argmax(axis=1) == predicted.labels, predicted.familiar_model),
        "warnings": sorted({str(w.message) for w in caught if issubclass(w.category, MetricWarning)}),
    }
    metrics["patients"] = patient_figures(predicted.paths, predicted.labels, predicted.probs, settings.confidence,
                                          patients if patients is not None and all(patients) else None)
    tables = {}
    explained = {"method": settings.cam_method, "layer": settings.cam_layer, "target": "true class"}
    if images.localise and images.has_boxes:
        local_table = pd.DataFrame(predicted.localisation_rows,
                                   columns=["path", "label", "pred", "boxes", "pointing_strict", "pointing_tolerant",
                                            "energy_in_box", "box_share"])
        metrics["localisation"] = {**localisation_summary(local_table), **explained,
                                   "tolerance_px_at_224": POINTING_TOLERANCE_PX}
        tables[LOCALISATION_FILE] = local_table
    if images.localise and images.masks is not None:
        mask_table = pd.DataFrame(predicted.mask_rows, columns=MASK_COLUMNS)
        metrics["masks"] = {**mask_summary(mask_table, settings.bootstrap_resamples, settings.confidence,
                                           settings.seed, settings.mask_dilation_px, settings.mask_dilation_mm),
                            **explained,
                            "folder": dataset_name(images.mask_root), "errors": predicted.mask_errors}
        tables[MASKS_FILE] = mask_table
    return metrics, {"all": everything_curves, "duplicate_free": free_curves}, tables


def run_info(settings: EvaluationSettings, root: Path, images: Images, checkpoint, classifier: Classifier,
             predicted: Predicted, audit: Audit) -> dict:
    """run.json: what was evaluated, with what, and how."""
    labels, samples = predicted.labels, predicted.samples
    evaluated = images.tree_root.relative_to(root).as_posix() if images.tree_root != root else "."
    model_name = Path(checkpoint.path).parent.name
    disagreements = sum(1 for i, sample in enumerate(samples)
                        if audit.matched(i, audit.train_labels) not in ("", str(sample.label)))
    return {
        "format": RUN_FORMAT, "format_version": RUN_FORMAT_VERSION,
        "name": settings.name or f"{dataset_name(root)}{'/' + evaluated if evaluated != '.' else ''} ({model_name})",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": _model_summary(checkpoint, Path(checkpoint.path)),
        "history": checkpoint.metadata.get("history", []),
        "dataset": {"root": settings.data, "name": dataset_name(root), "evaluated": evaluated,
                    "fingerprint": dataset_fingerprint((p, f.sha256) for p, f in zip(predicted.paths,
                                                                                     predicted.fingerprints)),
                    "images": len(samples),
                    "counts": {name: int((labels == k).sum()) for k, name in enumerate(CLASSES)},
                    "skipped": predicted.skipped, "unknown_folders": images.tree.unknown_folders,
                    "has_boxes": bool(images.has_boxes), "box_errors": predicted.box_errors,
                    "masks": dataset_name(images.mask_root) if images.masks is not None else None,
                    "files": portable_path(settings.files) if settings.files is not None else None},
        "audit": {"near_duplicate_bits": audit.bits, "reference": "the checkpoint's training and validation images",
                  "available": audit.available,
                  "exact_duplicates": int((audit.kind == "exact").sum()),
                  "near_duplicates": int((audit.kind == "near").sum()),
                  "duplicate_free_images": int((~audit.duplicate).sum()),
                  "groups_within_dataset": int(len(np.unique(audit.groups))),
                  "label_disagreements": int(disagreements)},
        "settings": {**asdict(settings), "checkpoint": portable_path(settings.checkpoint),
                     "out": portable_path(settings.out), "device": str(classifier.device),
                     "precision": classifier.precision},
        "timing": {"seconds": round(predicted.seconds, 1),
                   "images_per_second": round(predicted.images / predicted.seconds, 1) if predicted.seconds else None},
        "versions": {**library_versions(), "project": __version__},
    }
