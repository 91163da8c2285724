"""Which release each image of a merged dataset comes from.

The Kaggle Brain Tumor MRI dataset merges three releases (figshare's slices of 233 patients, SARTAJ, Br35H) without
saying which image came from where. A validation set that is to look like a new hospital must hold out whole
sources, so the images are traced back: an image that is a copy (byte-, pixel- or perceptually identical, the audit's
test, :func:`core.audit.cross_matches`) of an image of a named reference release comes from it; the rest come from
the release that has no copy here (for the Kaggle set, SARTAJ).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.audit import NEAR_DUPLICATE_BITS, Fingerprint, cross_matches, phash_array


@dataclass(frozen=True)
class Traced:
    source: list[str]          # per image: the first reference it copies, else ``rest``
    ambiguous: list[int]       # images that copy more than one reference (given the first)


def trace_sources(images: list[Fingerprint], references: dict[str, list[Fingerprint]], rest: str,
                  threshold: int = NEAR_DUPLICATE_BITS) -> Traced:
    """Per image, the name of the first reference release (in the order given) it copies, or ``rest``."""
    copies = {}
    for name, reference in references.items():
        if not reference:
            copies[name] = np.zeros(len(images), dtype=bool)
            continue
        copies[name] = cross_matches(images, [f.sha256 for f in reference], phash_array(reference),
                                     [f.pixel_sha256 for f in reference], threshold).duplicate
    names = list(references)
    stacked = np.stack([copies[n] for n in names]) if names else np.zeros((0, len(images)), dtype=bool)
    source = [names[int(np.argmax(column))] if column.any() else rest for column in stacked.T] \
        if names else [rest] * len(images)
    ambiguous = [int(i) for i in np.flatnonzero(stacked.sum(axis=0) > 1)] if names else []
    return Traced(source, ambiguous)
