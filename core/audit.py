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
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from core.data import load_image

NEAR_DUPLICATE_BITS = 12
PHASH_SIZE = 16  # hash side: 16 x 16 = 256 bits


@dataclass(frozen=True)
class Fingerprint:
    sha256: str
    pixel_sha256: str
    phash: bytes  # 256-bit perceptual hash, 32 bytes

    @property
    def phash_hex(self) -> str:
        return self.phash.hex()


def fingerprint_file(path) -> Fingerprint:
    """Fingerprint one image file. Raises ``ValueError`` when it is not a readable image."""
    import imagehash

    with open(path, "rb") as handle:
        raw = handle.read()
    image = load_image(io.BytesIO(raw))
    gray = image.convert("L")
    pixels = hashlib.sha256(f"{gray.size}".encode() + gray.tobytes()).hexdigest()
    phash = np.packbits(imagehash.phash(gray, hash_size=PHASH_SIZE).hash.flatten()).tobytes()
    return Fingerprint(hashlib.sha256(raw).hexdigest(), pixels, phash)


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
