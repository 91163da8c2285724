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
nor are its copies elsewhere, see :func:`copies_of`), ``validation`` (chooses the recipe) and ``train``. Every side
must hold every class the data holds, or the split is refused with the side and the class named.

A split folder holds ``train.txt``, ``validation.txt``, ``test.txt`` and ``split.json``, nothing else; it is written
whole beside its destination and moved into place, and replaces only another split folder, when asked.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.audit import NEAR_DUPLICATE_BITS, Fingerprint, cross_matches, duplicate_groups, hamming_matrix, phash_array
from core.config import MAX_SEED
from core.data import CLASSES, Sample
from core.masks import patient_of
from core.outputs import check_output, check_replaceable, put_in_place
from core.sources import FileRefused, read_bytes
from core.sources.files import load_json, printable

NEIGHBOUR_BITS = 100
TEST_FRACTION = 0.25
VALIDATION_FRACTION = 0.10
SIDES = ("train", "validation", "test")
SPLIT_FILE = "split.json"
SPLIT_FILES = {SPLIT_FILE, *(f"{side}.txt" for side in SIDES)}
METHOD = "class-stratified group folds over groups of copies, neighbouring slices and patients"
MAX_HELD_OUT = 0.9  # test and validation together: at least a tenth of the slices is left to train on


class SplitError(ValueError):
    """A localisation split that cannot be made as asked; the message says what is wrong and what to do."""


def settings_problems(seed: int, test_fraction: float, validation_fraction: float, neighbour_bits: int) -> list[str]:
    """What is wrong with a split's settings, in words (empty when nothing is)."""
    problems = []
    if not 0 < test_fraction <= 0.5 or not 0 < validation_fraction <= 0.5:
        problems.append("--test-fraction and --validation-fraction must each be in (0, 0.5]")
    elif test_fraction + validation_fraction >= MAX_HELD_OUT:
        problems.append(f"--test-fraction and --validation-fraction must add up to less than {MAX_HELD_OUT}, so that "
                        "slices are left to train on")
    if not 0 <= neighbour_bits <= 256:
        problems.append("--neighbour-bits must be between 0 and 256")
    if not 0 <= seed <= MAX_SEED:
        problems.append(f"--seed must be a whole number from 0 to {MAX_SEED}")
    return problems


def is_split_folder(path: Path) -> bool:
    """Whether ``path`` is a folder this module wrote: a split.json describing a split, and only the split's files."""
    if path.is_symlink() or not path.is_dir():
        return False
    try:
        names = {item.name for item in path.iterdir()}
        record = load_json(read_bytes(path / SPLIT_FILE, 1 << 20, SPLIT_FILE))
    except (OSError, FileRefused, ValueError, RecursionError):
        return False
    return names <= SPLIT_FILES and isinstance(record, dict) and record.get("method") == METHOD


def check_split_out(out: str | Path, data: str | Path, overwrite: bool) -> Path:
    """Refuse, before any work, a split folder that would lie in or around the dataset, or replace anything but
    another split (and that only with ``overwrite``)."""
    out = check_output(out, {"dataset": data})
    check_replaceable(out, overwrite, is_split_folder,
                      f"a localisation split (a {SPLIT_FILE} beside train.txt, validation.txt and test.txt, nothing "
                      "else)")
    return out


def check_slices(samples: list[Sample], root: Path) -> None:
    """Refuse, before they are fingerprinted, slices too few to put some of each class on every side."""
    if not samples:
        raise SplitError(f"{printable(root)} holds no readable images in class folders; point --data at a dataset")
    for k, name in enumerate(CLASSES):
        count = sum(s.label == k for s in samples)
        if 0 < count < len(SIDES):
            raise SplitError(f"{printable(root)} holds {count} {name} image{'s' if count > 1 else ''}; a split puts "
                             f"some of each class on each of its {len(SIDES)} sides, so it needs at least "
                             f"{len(SIDES)} (many more for a useful score)")


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

    def write(self, out: Path, data: Path, overwrite: bool = False) -> Path:
        """Write the split into a new folder ``out`` (checked again: it may have changed while the slices were
        grouped), beside it first and then moved into place, so that no half-written split is left."""
        out = check_split_out(out, data, overwrite)
        staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            for side, paths in self.sides.items():
                (staging / f"{side}.txt").write_text("".join(f"{p}\n" for p in paths), encoding="utf-8")
            (staging / SPLIT_FILE).write_text(json.dumps(self.record, indent=2) + "\n", encoding="utf-8")
            return put_in_place(staging, out)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def split_slices(samples: list[Sample], fingerprints: list[Fingerprint], seed: int = 0,
                 test_fraction: float = TEST_FRACTION, validation_fraction: float = VALIDATION_FRACTION,
                 near_duplicate_bits: int = NEAR_DUPLICATE_BITS, neighbour_bits: int = NEIGHBOUR_BITS
                 ) -> LocalisationSplit:
    """Group the slices and split the groups (see the module docstring); a side left without some class the data
    holds is refused (:class:`SplitError`)."""
    from core.split import group_stratified_split

    problems = settings_problems(seed, test_fraction, validation_fraction, neighbour_bits)
    if problems:
        raise SplitError("; ".join(problems))
    groups = slice_groups(samples, fingerprints, near_duplicate_bits, neighbour_bits)
    labels = np.array([s.label for s in samples])
    index = np.arange(len(samples))
    rest, test = group_stratified_split(labels, groups, test_fraction, seed)
    train, validation = group_stratified_split(labels[rest], groups[rest], validation_fraction / (1 - test_fraction),
                                               seed + 1)
    chosen = {"train": rest[train], "validation": rest[validation], "test": test}
    counts = {side: {name: int((labels[chosen[side]] == k).sum()) for k, name in enumerate(CLASSES)}
              for side in SIDES}
    _check_sides(counts, int(groups.max() + 1) if len(groups) else 0)
    sides = {side: sorted(samples[i].relpath for i in index[chosen[side]]) for side in SIDES}
    record = {"method": METHOD, "seed": seed, "test_fraction": test_fraction,
              "validation_fraction": validation_fraction,
              "near_duplicate_bits": near_duplicate_bits, "neighbour_bits": neighbour_bits,
              "groups": int(groups.max() + 1) if len(groups) else 0,
              "largest_group": int(np.bincount(groups).max()) if len(groups) else 0, "counts": counts}
    return LocalisationSplit(sides, record["groups"], record)


def _check_sides(counts: dict[str, dict[str, int]], groups: int) -> None:
    """Every side holds every class the data holds: a side without one would train, choose or score blind to it."""
    present = [name for name in CLASSES if any(side[name] for side in counts.values())]
    for side in SIDES:
        missing = [name for name in present if not counts[side][name]]
        if missing:
            raise SplitError(f"the {side} side would hold no {' or '.join(missing)} slice: the {groups} groups of "
                             "copies, neighbouring slices and patients are too few to give every side each class; "
                             "add slices, or change --test-fraction and --validation-fraction")


def copies_of(held_out: list[Fingerprint], images: list[Fingerprint], near_duplicate_bits: int = NEAR_DUPLICATE_BITS
              ) -> np.ndarray:
    """Which of ``images`` (for instance a Kaggle release's Training/) are copies of a held-out slice: byte- or
    pixel-identical, or at most ``near_duplicate_bits`` apart (the audit's test, :func:`core.audit.cross_matches`).
    These must not be trained on either."""
    if not images:
        return np.zeros(0, dtype=bool)
    return cross_matches(images, [f.sha256 for f in held_out], phash_array(held_out),
                         [f.pixel_sha256 for f in held_out], near_duplicate_bits).duplicate
