"""MATLAB v7.3 files built exactly like the figshare release's (an HDF5 file behind a 512-byte MATLAB header; a
struct cjdata of column-major arrays), for the tests of core.sources.figshare."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

LABEL_CODES = {"meningioma": 1, "glioma": 2, "pituitary": 3}


def mat_bytes(image: np.ndarray, label: str, patient: str, mask: np.ndarray | None = None) -> bytes:
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w", userblock_size=512) as handle:
        group = handle.create_group("cjdata")
        group["image"] = np.asarray(image, dtype=np.int16).T          # MATLAB stores columns first
        group["label"] = np.array([[float(LABEL_CODES[label])]])
        group["PID"] = np.array([[ord(c)] for c in patient], dtype=np.uint16)
        group["tumorBorder"] = np.array([[10.0, 10.0, 20.0, 20.0]])
        if mask is not None:
            group["tumorMask"] = np.asarray(mask, dtype=np.uint8).T
    blob = bytearray(buffer.getvalue())
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    blob[:len(header)] = header
    blob[len(header):512] = b" " * (512 - len(header))
    return bytes(blob)


def cvind_bytes(folds: list[int]) -> bytes:
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w", userblock_size=512) as handle:
        handle["cvind"] = np.array([folds], dtype=np.float64)
    blob = bytearray(buffer.getvalue())
    blob[:6] = b"MATLAB"
    return bytes(blob)


def write_release(root: Path, patients: int = 10, per_patient: int = 3, size: int = 64, seed: int = 0) -> Path:
    """A small release: brainTumorDataPublic_* folders of numbered slices, every patient's slices of one class, and
    cvind.mat putting each patient wholly in one of five folds."""
    from conftest import synthetic_slice

    rng = np.random.default_rng(seed)
    classes = ["meningioma", "glioma", "pituitary"]
    folds, number = [], 0
    folders = [root / "brainTumorDataPublic_1-15", root / "brainTumorDataPublic_16-30"]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    for patient in range(patients):
        label = classes[patient % 3]
        for _ in range(per_patient):
            number += 1
            pixels = synthetic_slice([1, 0, 3][patient % 3], int(rng.integers(1 << 30)), size).astype(np.int16) * 8
            mask = np.zeros((size, size), bool)
            mask[size // 4:size // 2, size // 4:size // 2] = True
            folder = folders[0] if number <= 15 else folders[1]
            (folder / f"{number}.mat").write_bytes(mat_bytes(pixels, label, f"PID{patient:03d}", mask))
            folds.append(patient % 5 + 1)
    (root / "cvind.mat").write_bytes(cvind_bytes(folds))
    return root
