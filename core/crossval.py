"""Cross-validation by patient: one model per fold with the default recipe, each evaluated on its held-out fold, and
the pooled out-of-fold predictions written as an ordinary evaluation run with the folds' spread beside it.

The folds are the figshare release's own (``cvind.mat``, patient-wise, as the papers the field compares against
use them) or k folds made here, stratified by class with every patient wholly in one fold, and with exact and
near-duplicate copies joined to one fold as the training split joins them (a slice filed twice under two patient
IDs cannot sit on both sides). Each fold's evaluation still audits its images against that fold's training images,
so a copy the release's own folds split is counted and left out of the duplicate-free figures. Each fold's training
side also gives its validation images, chosen the same way, for the recipe's early stopping and calibration; the
held-out fold is read once, by the evaluation.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.config import MAX_SEED, TrainConfig, check_config
from core.data import CLASSES, DatasetError, scan_class_folders
from core.evaluation import EvaluationSettings, evaluate, metrics_block
from core.metrics import BootstrapSettings, MetricWarning
from core.outputs import check_output
from core.runs import RunWriter, read_run
from core.sources.files import printable
from core.split import MIN_PER_CLASS, join_groups, join_pairs
from core.trainer import train

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CrossvalSettings:
    data: str                       # the figshare release (or any dataset whose patients are known)
    out: str                        # folder for fold-1 ... fold-k (model and run each) and the pooled run
    folds: str = "cvind"            # "cvind": the release's own five folds; or a number k of folds made here
    group_by: str = "patient"       # folds made here: "patient" (with copies joined), or "image" (leaky; to compare)
    seed: int = 42
    train: dict = field(default_factory=dict)   # TrainConfig fields to change from the default recipe (tests: tiny)
    bootstrap_resamples: int = 1000
    progress: bool = True


def copies_and_patients(tree, near_duplicate_bits: int | None) -> np.ndarray:
    """A group per image that holds together the slices of one patient and every exact or near-duplicate copy
    (perceptual hashes within ``near_duplicate_bits``; None: exact copies only). An unreadable file is a group of
    its own (training refuses it with its reason)."""
    from core.audit import duplicate_groups, fingerprint_files

    fingerprints, _ = fingerprint_files([s.path for s in tree.samples])
    readable = [i for i, f in enumerate(fingerprints) if f is not None]
    groups = np.arange(len(fingerprints)) + len(fingerprints)  # apart from every group below
    if readable:
        groups[readable] = duplicate_groups([fingerprints[i] for i in readable], near_duplicate_bits)
    return join_groups(np.unique(groups, return_inverse=True)[1],
                       [tree.patients.get(s.relpath) for s in tree.samples])


GROUPINGS = {"patient": "patient-wise folds", "image": "slice-wise folds: slices of one patient and copies of one "
             "slice fall on both sides of a split, so the figures are optimistic, as in papers that split by slice"}
MAX_FOLDS = 10


def folds_problem(folds: str, group_by: str) -> str | None:
    """What is wrong with asking for these folds, in words, or None."""
    if group_by not in GROUPINGS:
        return f"--group-by must be one of {', '.join(GROUPINGS)}, not {group_by!r}"
    if folds == "cvind":
        return None if group_by == "patient" else ("the release's own folds (cvind) are patient-wise; --group-by "
                                                   "image needs a number of folds")
    text = str(folds)
    if not (text.isascii() and text.isdigit()) or not 2 <= int(text) <= MAX_FOLDS:
        return f"--folds must be 'cvind' or a number of folds from 2 to {MAX_FOLDS}, not {printable(text)!r}"
    return None


def fold_config(settings: CrossvalSettings, fold: int) -> TrainConfig:
    """The recipe one fold's model is trained with: on the fold's training list, with nothing held out as a test."""
    folder = Path(settings.out).expanduser() / f"fold-{fold}"
    return TrainConfig(**{"data": settings.data, "out": str(folder / "model"), "files": str(folder / "train.txt"),
                          "test_fraction": 0.0, "absent_classes": True, "seed": settings.seed + fold,
                          "progress": settings.progress, **settings.train})


def check_settings(settings: CrossvalSettings) -> Path:
    """Refuse, before any work, settings that cannot work (the recipe's own included, so that they are not found
    at the first fold's training or evaluation) and an --out in or around the dataset; returns --out."""
    problems = [problem for problem in [folds_problem(settings.folds, settings.group_by)] if problem]
    if settings.bootstrap_resamples < 1:
        problems.append("--bootstrap-resamples must be at least 1 (1,000 or more for reported intervals)")
    if not 0 <= settings.seed <= MAX_SEED - MAX_FOLDS:  # each fold trains with seed + its number
        problems.append(f"--seed must be a whole number from 0 to {MAX_SEED - MAX_FOLDS}")
    if problems:
        raise DatasetError("; ".join(problems))
    check_config(fold_config(settings, 1))
    return check_output(settings.out, {"dataset": settings.data})


def check_training_sides(folds: dict[str, int], tree) -> None:
    """Refuse folds whose training side (the other folds) holds too few images of a class the data holds to train
    on: found here, before the first model is trained, rather than at the fold that lacks them."""
    label_of = {s.relpath: s.class_name for s in tree.samples}
    numbers = sorted(set(folds.values()))
    if len(numbers) < 2:
        raise DatasetError(f"the folds given put every image in fold {numbers[0] if numbers else '-'}; "
                           "cross-validation needs at least two")
    present = sorted(set(label_of.values()), key=CLASSES.index)
    for fold in numbers:
        for name in present:
            count = sum(f != fold and label_of[path] == name for path, f in folds.items())
            if count < MIN_PER_CLASS:
                raise DatasetError(f"fold {fold}'s training side (the other folds) holds {count} {name} "
                                   f"image{'' if count == 1 else 's'}, and training needs at least {MIN_PER_CLASS} "
                                   "of each class; use fewer folds or more data")


def fold_of_each(tree, folds: str, seed: int, near_duplicate_bits: int | None = TrainConfig.near_duplicate_bits,
                 group_by: str = "patient") -> dict[str, int]:
    """Relative path -> fold (1..k): the release's cvind.mat, or k folds stratified by class with each patient and
    each set of copies (:func:`copies_and_patients`) wholly in one. ``group_by="image"`` makes k folds of single
    slices instead: the leaky protocol, only to show how far it flatters a model."""
    problem = folds_problem(folds, group_by)
    if problem:
        raise DatasetError(problem)
    from sklearn.model_selection import StratifiedGroupKFold

    from core.sources.figshare import cv_folds

    if folds == "cvind":
        given = cv_folds(tree.root)
        if given is None:
            raise DatasetError(f"--folds cvind needs the release's cvind.mat in {tree.root}; give a number of folds")
        found = {}
        for sample in tree.samples:
            number = int(Path(sample.relpath).stem) if Path(sample.relpath).stem.isdigit() else None
            if number not in given:
                raise DatasetError(f"cvind.mat gives no fold for {sample.relpath}")
            found[sample.relpath] = given[number]
        return found
    labels = np.array([s.label for s in tree.samples])
    groups = (copies_and_patients(tree, near_duplicate_bits) if group_by == "patient"
              else np.arange(len(tree.samples)))
    _check_enough(int(folds), labels, groups, "patients (or sets of copies)" if group_by == "patient" else "images",
                  tree.root)
    splitter = StratifiedGroupKFold(n_splits=int(folds), shuffle=True, random_state=seed)
    found = {}
    for k, (_, held) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups), start=1):
        found.update({tree.samples[i].relpath: k for i in held})
    return found


def _check_enough(k: int, labels: np.ndarray, groups: np.ndarray, unit: str, root: Path) -> None:
    """Refuse k folds of fewer than k groups, or of a class too small to put one image in each (scikit-learn's
    folds need both)."""
    distinct, largest = len(np.unique(groups)), int(np.bincount(labels).max(initial=0))
    if distinct < k or largest < k:
        raise DatasetError(f"--folds {k} needs at least {k} {unit} to share out, and a class of at least {k} images; "
                           f"{printable(root)} holds {distinct} {unit} and at most {largest} images of a class: use "
                           "fewer folds or more data")


def crossval(settings: CrossvalSettings) -> Path:
    """Train and evaluate one model per fold, then write the pooled run; returns its folder (``out/pooled``).
    Everything that can be refused is refused before the first fold is written or trained."""
    out = check_settings(settings)
    tree = scan_class_folders(settings.data)
    folds = fold_of_each(tree, settings.folds, settings.seed,
                         settings.train.get("near_duplicate_bits", TrainConfig.near_duplicate_bits), settings.group_by)
    check_training_sides(folds, tree)
    numbers = sorted(set(folds.values()))
    runs = []
    for fold in numbers:
        folder = out / f"fold-{fold}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "train.txt").write_text("\n".join(p for p, f in folds.items() if f != fold) + "\n")
        (folder / "test.txt").write_text("\n".join(p for p, f in folds.items() if f == fold) + "\n")
        config = fold_config(settings, fold)
        log.info("fold %d of %d: training on %d images", fold, len(numbers), sum(f != fold for f in folds.values()))
        checkpoint = train(config)
        run = evaluate(EvaluationSettings(
            checkpoint=str(checkpoint), data=settings.data, out=str(folder / "run"), files=str(folder / "test.txt"),
            name=f"{Path(settings.data).name} fold {fold} of {len(numbers)}", localisation="off",
            bootstrap_resamples=settings.bootstrap_resamples, progress=settings.progress, overwrite=True,
            **{k: v for k, v in settings.train.items() if k in ("precision", "num_workers", "device")}))
        runs.append(read_run(run))
    return write_pooled(runs, tree, out / "pooled", settings)


def fold_spread(runs) -> dict:
    """Mean and standard deviation over the folds of accuracy and macro AUC (AUC over the classes present)."""
    def stats(values: list[float]) -> dict:
        values = [v for v in values if v is not None and np.isfinite(v)]
        return {"mean": float(np.mean(values)) if values else None,
                "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None, "folds": values}

    return {"accuracy": stats([r.metrics["accuracy"] for r in runs]),
            "macro_auc": stats([r.metrics["macro_auc"] for r in runs])}


def pooled_groups(table: pd.DataFrame, patients: list[str | None]) -> np.ndarray:
    """The groups the pooled run's bootstrap resamples: each patient's slices together, and a slice together with the
    copy of it that its fold's audit found among that fold's training images (a copy filed under another patient,
    which the release's folds can split), so that two copies are never drawn as independent answers."""
    groups = join_groups(np.arange(len(table)), patients) if any(patients) else np.arange(len(table))
    where = {path: k for k, path in enumerate(table["path"])}
    copies = [(groups[k], groups[where[match]])
              for k, (copied, match) in enumerate(zip(table["train_duplicate"], table["train_match"]))
              if pd.notna(copied) and bool(copied) and match in where]
    return join_pairs(groups, copies)


def write_pooled(runs, tree, out: Path, settings: CrossvalSettings) -> Path:
    """The out-of-fold predictions of every fold together, as an ordinary run (intervals resample patients), with
    each fold's figures and their spread in run.json's ``crossval``. Its duplicate-free figures leave out every
    slice that its fold's audit found copied among that fold's training images."""
    table = pd.concat([r.predictions.assign(fold=k) for k, r in enumerate(runs, start=1)], ignore_index=True)
    labels = table["label"].map(CLASSES.index).to_numpy()
    probs = table[[f"prob_{c}" for c in CLASSES]].to_numpy(dtype=np.float64)
    patients = [tree.patients.get(p) for p in table["path"]]
    groups = pooled_groups(table, patients)
    bootstrap = BootstrapSettings(settings.bootstrap_resamples, 0.95, settings.seed)
    audits = [r.info["audit"] for r in runs]
    audited = all(a.get("available") for a in audits) and table["train_duplicate"].notna().all()
    free = ~table["train_duplicate"].astype(bool).to_numpy() if audited else None
    with warnings.catch_warnings(record=True) as caught:  # kept in the run, as an evaluation keeps them
        warnings.simplefilter("always", MetricWarning)
        block, pooled_curves = metrics_block(labels, probs, groups, bootstrap)
        free_block, free_curves = (metrics_block(labels[free], probs[free], groups[free], bootstrap)
                                   if free is not None and free.any() else (None, None))
    spread = fold_spread(runs)
    metrics = {"accuracy": block["accuracy"], "accuracy_duplicate_free": free_block and free_block["accuracy"],
               "macro_auc": block["macro_auc"], "macro_auc_duplicate_free": free_block and free_block["macro_auc"],
               "all": block, "duplicate_free": free_block, "localisation": None, "masks": None, "familiarity": None,
               "patients": None,
               "warnings": sorted({str(w.message) for w in caught if issubclass(w.category, MetricWarning)})}
    if any(patients) and all(patients):
        from core.metrics import patient_figures

        metrics["patients"] = patient_figures(list(table["path"]), labels, probs, 0.95, patients)
    first = runs[0].info
    info = {**first, "name": f"{Path(settings.data).name}: {len(runs)}-fold cross-validation (pooled out-of-fold)",
            "model": {**first["model"], "path": f"one model per fold: {out.parent.name}/fold-*/model",
                      "file_sha256": None},
            "dataset": {**first["dataset"], "images": int(len(table)), "files": None,
                        "counts": {c: int((table["label"] == c).sum()) for c in CLASSES}},
            "audit": ({"available": True, "reference": "each fold's own training and validation images",
                       "near_duplicate_bits": audits[0]["near_duplicate_bits"],
                       **{key: int(sum(a[key] for a in audits))
                          for key in ("exact_duplicates", "near_duplicates", "label_disagreements")},
                       "duplicate_free_images": int(free.sum())} if free is not None else
                      {"available": False, "reference": "none: a fold's model does not list its training images"}),
            "crossval": {"folds": settings.folds, "spread": spread, "runs": [str(r.path) for r in runs],
                         "group_by": settings.group_by,
                         "protocol": f"{GROUPINGS[settings.group_by]}; each model trained with the default recipe on "
                                     "the other folds and read once on its own"},
            "settings": {**first["settings"], "out": str(out), "crossval": dataclasses.asdict(settings)}}
    with RunWriter(out, overwrite=True, protected={"dataset": settings.data}) as writer:
        return writer.write(json.loads(json.dumps(info, default=str)), table, metrics,
                            {"all": pooled_curves, "duplicate_free": free_curves})
