"""The localisation split: which slices of a masked dataset may teach a model where tumours are, which choose its
recipe, and which score it, with no patient's neighbouring slices or copies on two sides.

A localisation score is only honest on slices the model never learned from, and the figshare release holds
several slices of each of its 233 patients with no patient IDs left. So the slices are grouped before they are
split:

* **copies**: byte-, pixel- or perceptually identical slices (:func:`core.audit.duplicate_groups`, at most
  ``near_duplicate_bits`` apart) share a group;
* **neighbours**: slices are put in the order of the numbers in their names (the figshare release numbers the
  slices of a patient one after another), and two slices next in that order, of the same class, whose perceptual
  hashes lie at most :data:`NEIGHBOUR_BITS` apart join a group. Two unrelated figshare slices lie 82 bits apart or
  more in 99 of 100 random pairs; slices next to each other in the release lie 50 apart at the median;
* **patients**: where file names give the patient (``TCGA_DU_6404_...``), all their slices share a group.

Groups are then split by class-stratified group folds (seeded): ``test`` (scores localisation; never trained on,
nor are its copies elsewhere, see :func:`copies_of`), ``validation`` (chooses the recipe) and ``train``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.audit import (NEAR_DUPLICATE_BITS, Fingerprint, cross_matches, duplicate_groups, hamming_matrix,
                        phash_array)
from core.data import CLASSES, Sample
from core.masks import patient_of

NEIGHBOUR_BITS = 100
TEST_FRACTION = 0.25
VALIDATION_FRACTION = 0.10
SIDES = ("train", "validation", "test")
SPLIT_FILE = "split.json"


def natural_key(sample: Sample) -> tuple:
    """Order by class, then by the numbers in the name (``9.jpg`` before ``10.jpg``)."""
    parts = re.split(r"(\d+)", Path(sample.relpath).stem)
    return (sample.class_name, tuple(int(p) if p.isdigit() else p for p in parts))


def slice_groups(samples: list[Sample], fingerprints: list[Fingerprint], near_duplicate_bits: int = NEAR_DUPLICATE_BITS,
                 neighbour_bits: int = NEIGHBOUR_BITS) -> np.ndarray:
    """A group id per slice: copies, neighbouring slices and one patient's slices share a group (see the module
    docstring). Ids are 0..k-1."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(samples)
    copies = duplicate_groups(fingerprints, near_duplicate_bits)
    first_copy: dict[int, int] = {}
    edges = [(i, first_copy.setdefault(int(copies[i]), i)) for i in range(n)]
    order = sorted(range(n), key=lambda i: natural_key(samples[i]))
    hashes = phash_array(fingerprints)
    for a, b in zip(order, order[1:]):
        if samples[a].class_name == samples[b].class_name \
                and int(hamming_matrix(hashes[a:a + 1], hashes[b:b + 1])[0, 0]) <= neighbour_bits:
            edges.append((a, b))
    first_of_patient: dict[str, int] = {}
    for i, sample in enumerate(samples):
        patient = patient_of(sample.relpath)
        if patient is not None:
            edges.append((i, first_of_patient.setdefault(patient, i)))
    rows, cols = np.array(edges, dtype=np.int64).reshape(-1, 2).T
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


@dataclass
class LocalisationSplit:
    sides: dict[str, list[str]]   # side -> relative paths, sorted
    groups: int
    record: dict                  # split.json: how it was made, and the counts

    def write(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        for side, paths in self.sides.items():
            (out / f"{side}.txt").write_text("".join(f"{p}\n" for p in paths), encoding="utf-8")
        (out / SPLIT_FILE).write_text(json.dumps(self.record, indent=2) + "\n", encoding="utf-8")


def split_slices(samples: list[Sample], fingerprints: list[Fingerprint], seed: int = 0,
                 test_fraction: float = TEST_FRACTION, validation_fraction: float = VALIDATION_FRACTION,
                 near_duplicate_bits: int = NEAR_DUPLICATE_BITS, neighbour_bits: int = NEIGHBOUR_BITS
                 ) -> LocalisationSplit:
    """Group the slices and split the groups (see the module docstring)."""
    from core.split import group_stratified_split

    groups = slice_groups(samples, fingerprints, near_duplicate_bits, neighbour_bits)
    labels = np.array([s.label for s in samples])
    index = np.arange(len(samples))
    rest, test = group_stratified_split(labels, groups, test_fraction, seed)
    train, validation = group_stratified_split(labels[rest], groups[rest], validation_fraction / (1 - test_fraction),
                                               seed + 1)
    chosen = {"train": rest[train], "validation": rest[validation], "test": test}
    sides = {side: sorted(samples[i].relpath for i in index[chosen[side]]) for side in SIDES}
    counts = {side: {name: int((labels[chosen[side]] == k).sum()) for k, name in enumerate(CLASSES)}
              for side in SIDES}
    record = {"method": "class-stratified group folds over groups of copies, neighbouring slices and patients",
              "seed": seed, "test_fraction": test_fraction, "validation_fraction": validation_fraction,
              "near_duplicate_bits": near_duplicate_bits, "neighbour_bits": neighbour_bits,
              "groups": int(groups.max() + 1) if len(groups) else 0,
              "largest_group": int(np.bincount(groups).max()) if len(groups) else 0, "counts": counts}
    return LocalisationSplit(sides, record["groups"], record)


def copies_of(held_out: list[Fingerprint], images: list[Fingerprint], near_duplicate_bits: int = NEAR_DUPLICATE_BITS
              ) -> np.ndarray:
    """Which of ``images`` (for instance a Kaggle release's Training/) are copies of a held-out slice: byte- or
    pixel-identical, or at most ``near_duplicate_bits`` apart (the audit's test, :func:`core.audit.cross_matches`).
    These must not be trained on either."""
    if not images:
        return np.zeros(0, dtype=bool)
    return cross_matches(images, [f.sha256 for f in held_out], phash_array(held_out),
                         [f.pixel_sha256 for f in held_out], near_duplicate_bits).duplicate
