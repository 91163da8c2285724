"""Duplicate detection: exact copies and perceptual near-duplicates of images.

Three fingerprints per image:

* ``sha256`` of the file bytes (byte-identical copies);
* ``pixel_sha256`` of the decoded 8-bit grayscale pixels and size (same picture, other container);
* ``phash``: the 256-bit (16 x 16) DCT perceptual hash of ``imagehash`` (the same slice resized or
  re-encoded). Two images are near-duplicates when their hashes differ in at most ``threshold`` bits
  (:data:`NEAR_DUPLICATE_BITS` by default). The usual 64-bit hash is too coarse for MRI: slices share a
  black background and a similar outline, so distinct scans of ``brain-tumor-mri`` collide at 0-8 bits.
  With 256 bits, the distance from each ``Testing`` image to its nearest ``Training`` image shows 275
  images at 0 bits, 198 at 1-9, then a sparse valley (29 images at 10-19) before the bulk of distinct
  scans (20-100 bits); 12 bits sits in that valley.

Groups are the connected components of the "is a duplicate of" relation, so a split that keeps each
group on one side is leak-free.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from core.sources import read_bytes, read_image
from core.sources.images import MAX_FILE_BYTES

NEAR_DUPLICATE_BITS = 12
PHASH_SIZE = 16  # hash side: 16 x 16 = 256 bits


@dataclass(frozen=True)
class Fingerprint:
    sha256: str
    pixel_sha256: str
    phash: bytes  # 256-bit perceptual hash, 32 bytes


def fingerprint_bytes(raw: bytes, image=None) -> Fingerprint:
    """Fingerprint an image file's bytes; ``image`` is the decoded image when the caller already has it.
    Raises ``ValueError`` when the bytes are not a readable image."""
    import imagehash

    if image is None:
        image = read_image(raw)
    gray = image.convert("L")
    pixels = hashlib.sha256(f"{gray.size}".encode() + gray.tobytes()).hexdigest()
    phash = np.packbits(imagehash.phash(gray, hash_size=PHASH_SIZE).hash.flatten()).tobytes()
    return Fingerprint(hashlib.sha256(raw).hexdigest(), pixels, phash)


def fingerprint_file(path) -> Fingerprint:
    """Fingerprint one image file. Raises ``ValueError`` when it is not a readable image."""
    return fingerprint_bytes(read_bytes(path, MAX_FILE_BYTES, "image file"))


def dataset_fingerprint(pairs: Iterable[tuple[str, str]]) -> str:
    """sha256 over the sorted (relative path, file sha256) pairs of a dataset's readable images."""
    digest = hashlib.sha256()
    for rel, sha in sorted(pairs):
        digest.update(f"{rel}\t{sha}\n".encode())
    return digest.hexdigest()


def fingerprint_files(paths: Iterable, progress: Callable | None = None
                      ) -> tuple[list[Fingerprint | None], dict[int, str]]:
    """Fingerprint many files; returns the fingerprints (None where unreadable) and {index: reason}."""
    fingerprints: list[Fingerprint | None] = []
    errors: dict[int, str] = {}
    for index, path in enumerate(paths):
        try:
            fingerprints.append(fingerprint_file(path))
        except (ValueError, OSError) as error:
            fingerprints.append(None)
            errors[index] = str(error)
        if progress is not None:
            progress(1)
    return fingerprints, errors


def phash_array(fingerprints: list[Fingerprint]) -> np.ndarray:
    """(n, 32) uint8 array of the perceptual hashes."""
    if not fingerprints:
        return np.empty((0, PHASH_SIZE * PHASH_SIZE // 8), dtype=np.uint8)
    return np.stack([np.frombuffer(fp.phash, dtype=np.uint8) for fp in fingerprints])


_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def hamming_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit distances between every packed hash of ``a`` (n, k) and of ``b`` (m, k): an (n, m) array."""
    xor = np.bitwise_xor(a[:, None, :], b[None, :, :])
    return _POPCOUNT8[xor].sum(axis=-1, dtype=np.uint16)


def near_pairs(a: np.ndarray, b: np.ndarray | None = None, threshold: int = NEAR_DUPLICATE_BITS,
               block: int = 256) -> np.ndarray:
    """Index pairs (i, j) with ``hamming(a[i], b[j]) <= threshold``; within ``a`` alone when ``b`` is None
    (then only i < j). Returns an (k, 2) int array."""
    same = b is None
    b = a if same else b
    found = []
    for start in range(0, len(a), block):
        distances = hamming_matrix(a[start:start + block], b)
        rows, cols = np.nonzero(distances <= threshold)
        rows = rows + start
        if same:
            keep = rows < cols
            rows, cols = rows[keep], cols[keep]
        found.append(np.stack([rows, cols], axis=1))
    return np.concatenate(found) if found else np.empty((0, 2), dtype=int)


def nearest_matches(a: np.ndarray, b: np.ndarray, block: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """For every packed hash of ``a``, the bit distance to its nearest hash in ``b`` and that hash's index
    (distance 65535 and index -1 when ``b`` is empty)."""
    distance = np.full(len(a), np.iinfo(np.uint16).max, dtype=np.uint16)
    index = np.full(len(a), -1, dtype=np.int64)
    if len(b) == 0:
        return distance, index
    for start in range(0, len(a), block):
        d = hamming_matrix(a[start:start + block], b)
        index[start:start + block] = d.argmin(axis=1)
        distance[start:start + block] = d.min(axis=1)
    return distance, index


@dataclass
class CrossMatches:
    """How each image of one set relates to a reference set (for instance a model's training data)."""
    byte_identical: np.ndarray   # (n,) bool: the same file bytes occur in the reference
    pixel_identical: np.ndarray  # (n,) bool: the same decoded pixels occur there (any container)
    nearest_bits: np.ndarray     # (n,) perceptual-hash distance to the nearest reference image
    nearest_index: np.ndarray    # (n,) that reference image's index
    threshold: int

    @property
    def near(self) -> np.ndarray:
        return self.nearest_bits <= self.threshold

    @property
    def duplicate(self) -> np.ndarray:
        """Exact or near duplicate of a reference image."""
        return self.byte_identical | self.pixel_identical | self.near

    def kind(self) -> np.ndarray:
        """"exact" (bytes or pixels), "near" (perceptual hash only) or "" per image."""
        exact = self.byte_identical | self.pixel_identical
        return np.where(exact, "exact", np.where(self.near, "near", ""))


def cross_matches(images: list[Fingerprint], reference_sha256: Iterable[str], reference_phash: np.ndarray,
                  reference_pixel_sha256: Iterable[str] = (), threshold: int = NEAR_DUPLICATE_BITS) -> CrossMatches:
    """Compare fingerprints against a reference set given by its file hashes, perceptual hashes and
    (when known) pixel hashes."""
    shas, pixels = set(reference_sha256), set(reference_pixel_sha256)
    distance, index = nearest_matches(phash_array(images), reference_phash)
    return CrossMatches(np.array([fp.sha256 in shas for fp in images], dtype=bool),
                        np.array([fp.pixel_sha256 in pixels for fp in images], dtype=bool),
                        distance, index, threshold)


def duplicate_groups(fingerprints: list[Fingerprint], threshold: int | None = NEAR_DUPLICATE_BITS
                     ) -> np.ndarray:
    """Group id per image: images joined by an exact copy or (unless ``threshold`` is None) a
    near-duplicate share a group. Ids are 0..k-1 in order of first appearance."""
    parent = list(range(len(fingerprints)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)

    for key in ("sha256", "pixel_sha256"):
        first: dict[str, int] = {}
        for index, fp in enumerate(fingerprints):
            union(index, first.setdefault(getattr(fp, key), index))
    if threshold is not None and fingerprints:
        for i, j in near_pairs(phash_array(fingerprints), threshold=threshold):
            union(int(i), int(j))
    roots = [find(i) for i in range(len(fingerprints))]
    ids: dict[int, int] = {}
    return np.array([ids.setdefault(r, len(ids)) for r in roots], dtype=np.int64)


def exact_pairs(images: list[Fingerprint], reference: list[Fingerprint]) -> list[tuple[int, int]]:
    """Every (image index, reference index) pair with byte-identical files."""
    by_sha: dict[str, list[int]] = {}
    for j, fp in enumerate(reference):
        by_sha.setdefault(fp.sha256, []).append(j)
    return [(i, j) for i, fp in enumerate(images) for j in by_sha.get(fp.sha256, [])]


def distance_histogram(distances: np.ndarray, edges=(0, 1, 5, 9, 13, 17, 25, 33, 65, 257)) -> list[dict]:
    """Counts of nearest-neighbour distances in bins [edges[i], edges[i + 1]): the valley between copies
    and distinct scans is where a threshold belongs."""
    counts, _ = np.histogram(distances, bins=np.asarray(edges))
    return [{"from": int(lo), "to": int(hi) - 1, "count": int(c)} for lo, hi, c in zip(edges[:-1], edges[1:], counts)]


@dataclass
class SetAudit:
    """One image set audited against a reference set (a training split, or another dataset)."""
    images: list            # core.data.Sample of the audited set (readable ones)
    reference: list         # core.data.Sample of the reference set (readable ones)
    fingerprints: list[Fingerprint]
    reference_fingerprints: list[Fingerprint]
    matches: CrossMatches
    pairs: list[tuple[int, int]]   # byte-identical (image, reference) pairs
    unreadable: list[tuple[str, str]]

    def label_disagreements(self) -> np.ndarray:
        """Indices of duplicates whose nearest reference image is filed under another class."""
        dup = np.flatnonzero(self.matches.duplicate)
        return np.array([i for i in dup if self.images[i].label != self.reference[self.matches.nearest_index[i]].label],
                        dtype=int)


def audit_sets(images: list, reference: list, threshold: int = NEAR_DUPLICATE_BITS,
               progress: Callable | None = None) -> SetAudit:
    """Fingerprint two lists of samples (``core.data.Sample``) and find every exact and near duplicate of
    the first in the second. Unreadable files are reported, not fatal."""
    fps_ref, err_ref = fingerprint_files([s.path for s in reference], progress)
    fps, err = fingerprint_files([s.path for s in images], progress)
    unreadable = [(str(reference[i].path), e) for i, e in err_ref.items()] + \
        [(str(images[i].path), e) for i, e in err.items()]
    reference = [s for i, s in enumerate(reference) if i not in err_ref]
    fps_ref = [f for f in fps_ref if f is not None]
    images = [s for i, s in enumerate(images) if i not in err]
    fps = [f for f in fps if f is not None]
    matches = cross_matches(fps, [f.sha256 for f in fps_ref], phash_array(fps_ref),
                            [f.pixel_sha256 for f in fps_ref], threshold)
    return SetAudit(images, reference, fps, fps_ref, matches, exact_pairs(fps, fps_ref), unreadable)


# --------------------------------------------------------------------------------------------------
# An evaluated set against a model's training images


@dataclass
class Audit:
    """How each evaluated image relates to the model's own training (and validation) images."""
    available: bool                   # the checkpoint keeps fingerprints of its training images
    bits: int                         # the near-duplicate threshold
    duplicate: np.ndarray             # (n,) bool
    kind: np.ndarray                  # (n,) "exact", "near" or ""
    nearest_bits: np.ndarray          # (n,) distance to the nearest training image (-1: unknown)
    match_index: np.ndarray           # (n,) that image's row in the checkpoint's fingerprints (-1: none)
    train_labels: np.ndarray | None
    train_split: np.ndarray | None    # 0 train, 1 validation
    seen_files: list[str]
    groups: np.ndarray                # duplicate groups within the evaluated images

    def matched(self, i: int, values) -> str:
        """``values[match]`` for a duplicate image, "" otherwise (or when the checkpoint does not say)."""
        if values is None or not self.duplicate[i] or self.match_index[i] < 0:
            return ""
        return str(values[self.match_index[i]])


def leakage_audit(checkpoint, fingerprints: list[Fingerprint], bits: int | None = None) -> Audit:
    """Every evaluated image (by its fingerprint) against the fingerprints a checkpoint keeps of its training and
    validation images: exact copies and near duplicates (within ``bits``; default: the checkpoint's own training
    setting), and the duplicate groups within the evaluated images themselves."""
    from core.metrics import MetricWarning

    meta = checkpoint.metadata
    if bits is None:
        bits = int(meta.get("data", {}).get("near_duplicate_bits", NEAR_DUPLICATE_BITS))
    train, n = checkpoint.fingerprints, len(fingerprints)
    groups = duplicate_groups(fingerprints, bits)
    seen_files = meta.get("data", {}).get("seen_files") or []
    if not (train and "sha256" in train and "phash" in train):
        warnings.warn("the checkpoint does not list its training images: the leakage audit and the "
                      "duplicate-free figures are unavailable", MetricWarning, stacklevel=3)
        return Audit(False, bits, np.zeros(n, dtype=bool), np.array([""] * n), np.full(n, -1), np.full(n, -1),
                     None, None, [], groups)
    train_sha = [bytes(row).hex() for row in train["sha256"].numpy()]
    # Checkpoints from before pixel hashes were kept match exact copies by file bytes only.
    train_pixels = [bytes(row).hex() for row in train["pixel_sha256"].numpy()] if "pixel_sha256" in train else []
    matches = cross_matches(fingerprints, train_sha, train["phash"].numpy(), train_pixels, threshold=bits)
    return Audit(True, bits, matches.duplicate, matches.kind(), matches.nearest_bits.astype(int),
                 matches.nearest_index, train["label"].numpy() if "label" in train else None,
                 train["split"].numpy() if "split" in train else None,
                 seen_files if len(seen_files) == len(train_sha) else [], groups)
