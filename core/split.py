"""The leak-free split: find the images, fingerprint them, and hold out validation (and test) images so that no
group of duplicates straddles two sides.

``prepare_data(cfg)`` scans the class folders (a Kaggle release's ``Training/``, or one tree), fingerprints every
image (unreadable ones are listed and skipped), joins byte-, pixel- and perceptually identical images into groups
(:func:`core.audit.duplicate_groups`), and splits by group, stratified by class and seeded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from core.audit import dataset_fingerprint, duplicate_groups, fingerprint_files
from core.config import TrainConfig
from core.data import (
    CLASSES,
    IMAGE_EXTENSIONS,
    DatasetError,
    Sample,
    find_split_dirs,
    only_listed,
    read_listing,
    scan_class_folders,
)
from core.sources.files import printable

log = logging.getLogger(__name__)

MIN_PER_CLASS = 4  # readable images of each class present, for a validation split to hold some


@dataclass
class PreparedData:
    root: Path                    # the class tree trained on (e.g. .../Training)
    dataset_root: Path            # what the user named
    samples: list[Sample]         # readable images only
    fingerprints: list
    groups: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray
    skipped: list[dict] = field(default_factory=list)
    unknown_folders: list[str] = field(default_factory=list)
    label_conflicts: list[list[str]] = field(default_factory=list)
    guidance: object = None       # core.guidance.Guidance, when tumour outlines guide training

    def fingerprint(self) -> str:
        """sha256 over the sorted (relative path, file sha256) pairs of every readable image."""
        return dataset_fingerprint((s.relpath, f.sha256) for s, f in zip(self.samples, self.fingerprints))

    def part(self, index: np.ndarray) -> tuple[list[Path], np.ndarray]:
        """Paths and labels of some of the images."""
        return [self.samples[i].path for i in index], np.array([self.samples[i].label for i in index], dtype=int)

    def counts(self, index: np.ndarray) -> dict[str, int]:
        labels = np.array([self.samples[i].label for i in index], dtype=int)
        return {name: int((labels == k).sum()) for k, name in enumerate(CLASSES)}


def group_stratified_split(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (rest, held_out) with about ``fraction`` held out, stratified by label, with
    every group wholly on one side."""
    from sklearn.model_selection import StratifiedGroupKFold

    index = np.arange(len(labels))
    if fraction <= 0:
        return index, index[:0]
    distinct = len(np.unique(groups))
    if distinct < 2:
        raise DatasetError(f"the {len(labels)} images form {distinct or 'no'} group (copies of one another, or one "
                           "patient's slices), which cannot be split into two sides; add other images")
    # Every class needs at least n_splits members, and there must be as many groups; tiny datasets get a coarser
    # (larger) held-out share.
    smallest = int(np.bincount(labels).min(initial=len(labels)) if len(labels) else 0)
    n_splits = max(2, min(round(1 / fraction), smallest, distinct))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    rest, held = next(splitter.split(index, labels, groups))
    return np.sort(rest), np.sort(held)


def prepare_data(cfg: TrainConfig, progress: bool = True) -> PreparedData:
    dataset_root = Path(cfg.data).expanduser()
    if not dataset_root.exists():
        raise DatasetError(f"dataset folder {dataset_root} does not exist; check the path")
    train_dir, _ = find_split_dirs(dataset_root) if dataset_root.is_dir() else (None, None)
    root = train_dir or dataset_root
    tree = scan_class_folders(root)
    if cfg.files:
        tree = only_listed(tree, tree_prefix(root, dataset_root), cfg.files)
    if tree.unknown_folders:
        log.warning("ignored folders that name no known class in %s: %s (known: %s)", root,
                    ", ".join(tree.unknown_folders), ", ".join(CLASSES))
    if tree.other_files:
        log.warning("ignored %d files that are not images (%s): %s%s", len(tree.other_files),
                    ", ".join(IMAGE_EXTENSIONS), ", ".join(tree.other_files[:5]),
                    " ..." if len(tree.other_files) > 5 else "")
    samples = tree.samples
    if cfg.max_images_per_class:
        rng = np.random.default_rng(cfg.seed)
        keep = []
        for k in range(len(CLASSES)):
            members = [i for i, s in enumerate(samples) if s.label == k]
            keep += sorted(rng.permutation(members)[:cfg.max_images_per_class].tolist())
        samples = [samples[i] for i in sorted(keep)]
    with tqdm(total=len(samples), desc="checking images", unit="img", disable=not progress,
              leave=False) as bar:
        fingerprints, errors = fingerprint_files([s.path for s in samples], progress=bar.update)
    skipped = tree.refused + [{"path": samples[i].relpath, "reason": reason} for i, reason in sorted(errors.items())]
    for item in skipped:
        log.warning("skipping unreadable image %s: %s", item["path"], item["reason"])
    good = [i for i in range(len(samples)) if i not in errors]
    samples = [samples[i] for i in good]
    fingerprints = [fingerprints[i] for i in good]
    counts = {name: sum(s.label == k for s in samples) for k, name in enumerate(CLASSES)}
    missing = [name for name, n in counts.items() if n == 0 and name in tree.folders.values()]
    if missing:
        raise DatasetError(f"no readable images left for class {', '.join(missing)} in {root}")
    too_few = [name for name, n in counts.items() if 0 < n < MIN_PER_CLASS]
    if too_few:
        raise DatasetError(f"class {', '.join(too_few)} has fewer than {MIN_PER_CLASS} readable images in {root}; "
                           "a validation split needs more")
    absent = [name for name, n in counts.items() if n == 0]
    if absent and cfg.absent_classes:
        log.warning("no image of class %s: the model keeps its %d outputs and learns that these are never the "
                    "answer here", ", ".join(absent), len(CLASSES))
    elif absent:
        raise DatasetError(f"{root} has no folder for class {', '.join(absent)}; the classifier needs all of "
                           f"{', '.join(CLASSES)}")
    groups = duplicate_groups(fingerprints, cfg.near_duplicate_bits)
    if tree.patients:  # the data names its patients (the figshare release): a patient's slices stay on one side
        groups = join_groups(groups, [tree.patients.get(s.relpath) for s in samples])
    labels = np.array([s.label for s in samples])
    conflicts = exact_label_conflicts(samples, fingerprints)
    for paths in conflicts:
        log.warning("the same image sits in different class folders: %s", ", ".join(paths))
    test_fraction = cfg.test_fraction if cfg.test_fraction is not None else (0.0 if train_dir else 0.15)
    rest, test_idx = group_stratified_split(labels, groups, test_fraction, cfg.seed)
    if cfg.val_files:
        train_idx, val_idx = listed_validation(samples, groups, rest, tree_prefix(root, dataset_root), cfg.val_files)
    else:
        rest_train, rest_val = group_stratified_split(labels[rest], groups[rest],
                                                      cfg.val_fraction / max(1e-9, 1 - test_fraction), cfg.seed + 1)
        train_idx, val_idx = rest[rest_train], rest[rest_val]
    check_training_side(labels[train_idx], labels)
    return PreparedData(root=tree.root, dataset_root=dataset_root.resolve(), samples=samples,
                        fingerprints=fingerprints, groups=groups, train_idx=train_idx,
                        val_idx=val_idx, test_idx=test_idx, skipped=skipped,
                        unknown_folders=tree.unknown_folders, label_conflicts=conflicts)


def tree_prefix(root: Path, dataset_root: Path) -> str:
    """Where the class tree trained on lies under the dataset the user named ("Training", or "" for the tree
    itself): list files name images relative to the dataset."""
    if root == dataset_root:
        return ""
    prefix = root.resolve().relative_to(dataset_root.resolve()).as_posix()
    return "" if prefix == "." else prefix


def listed_validation(samples: list[Sample], groups: np.ndarray, rest: np.ndarray, prefix: str, listing
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices among ``rest`` when a list file names the validation images (a source or
    patient group held out whole, :mod:`core.provenance`): the listed images validate, and every image that shares a
    duplicate group with one of them is trained on by neither side, so no copy of a validation image is learned."""
    wanted = read_listing(listing, "--val-files")
    if prefix:
        wanted = {name[len(prefix) + 1:] if name.startswith(prefix + "/") else name for name in wanted}
    listed = np.array([samples[i].relpath in wanted for i in rest], dtype=bool)
    if not listed.any():
        raise DatasetError(f"--val-files {printable(listing)} names none of the training images; it must name images "
                           "by their path under the dataset folder, as python -m training.provenance writes them")
    val_idx = rest[listed]
    copies = np.isin(groups[rest], groups[val_idx]) & ~listed
    if copies.any():
        log.info("left out of training: %d images that copy a validation image", int(copies.sum()))
    return rest[~listed & ~copies], val_idx


def check_training_side(train_labels: np.ndarray, labels: np.ndarray) -> None:
    """Refuse a split whose training side lacks a class the data holds (held-out shares too large for the data)."""
    missing = [CLASSES[k] for k in np.unique(labels) if not (train_labels == k).any()]
    if missing:
        raise DatasetError(f"no {' or '.join(missing)} image is left to train on once the validation and test images "
                           "are held out; lower --val-fraction or --test-fraction, or add images")


def join_pairs(groups: np.ndarray, pairs) -> np.ndarray:
    """Groups (ids per image) with each pair of groups in ``pairs`` made one, transitively (union-find); returned
    as ids 0..k-1."""
    parent = list(range(int(groups.max()) + 1 if len(groups) else 0))

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for one, other in pairs:
        parent[root(int(one))] = root(int(other))
    roots = np.array([root(g) for g in groups.tolist()], dtype=int)
    return np.unique(roots, return_inverse=True)[1]


def join_groups(groups: np.ndarray, patients: list[str | None]) -> np.ndarray:
    """Groups that also hold every image of one patient together: two duplicate groups sharing a patient become one.
    Images without a patient keep their duplicate group."""
    first_group: dict[str, int] = {}
    pairs = [(group, first_group.setdefault(patient, group))
             for group, patient in zip(groups.tolist(), patients) if patient is not None]
    return join_pairs(groups, pairs)


def exact_label_conflicts(samples: list[Sample], fingerprints: list) -> list[list[str]]:
    """Sets of byte- or pixel-identical images filed under more than one class."""
    by_pixels: dict[str, list[int]] = {}
    for index, fp in enumerate(fingerprints):
        by_pixels.setdefault(fp.pixel_sha256, []).append(index)
    return [sorted(samples[i].relpath for i in members) for members in by_pixels.values()
            if len({samples[i].label for i in members}) > 1]


def fingerprint_tensors(data: PreparedData) -> dict[str, torch.Tensor]:
    """What the checkpoint keeps of the images the model saw (training and validation parts)."""
    seen = np.sort(np.concatenate([data.train_idx, data.val_idx]))
    split = np.isin(seen, data.val_idx).astype(np.uint8)  # 0 train, 1 validation
    return {
        "sha256": torch.from_numpy(np.stack([np.frombuffer(bytes.fromhex(data.fingerprints[i].sha256), np.uint8)
                                             for i in seen])),
        "phash": torch.from_numpy(np.stack([np.frombuffer(data.fingerprints[i].phash, np.uint8) for i in seen])),
        "pixel_sha256": torch.from_numpy(np.stack([np.frombuffer(bytes.fromhex(data.fingerprints[i].pixel_sha256),
                                                                 np.uint8) for i in seen])),
        "label": torch.tensor([data.samples[i].label for i in seen], dtype=torch.uint8),
        "split": torch.from_numpy(split),
    }
