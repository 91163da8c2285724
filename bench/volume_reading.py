"""What reading a scan volume costs: a NIfTI volume cut along each axis (the Predict page re-reads the file when the
axis changes) and a DICOM series of single-slice files, both synthetic, of a typical brain MRI's size.

    python bench/volume_reading.py [--side 256] [--slices 180] [--repeats 3]

Prints the median seconds of each read over --repeats, with the CPU's name: a read is the whole path the page and
the review session take (decompression, RAS reorientation or ordering along the slice normal, the window to 8 bits).
"""

from __future__ import annotations

import argparse
import gzip
import io
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from core.sources.volumes import AXES, read_dicom, read_nifti


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def median_seconds(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def brain_like(side: int, slices: int) -> np.ndarray:
    """int16 voxels: an ellipsoid of tissue with noise, on a dark background (it compresses as a scan does)."""
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[-1:1:slices * 1j, -1:1:side * 1j, -1:1:side * 1j]
    inside = (x / 0.8) ** 2 + (y / 0.9) ** 2 + (z / 0.9) ** 2 < 1
    return np.where(inside, 400 + rng.normal(0, 40, inside.shape), rng.normal(0, 5, inside.shape)).astype(np.int16)


def dicom_series(voxels: np.ndarray) -> list[tuple[str, bytes]]:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    series, files = generate_uid(), []
    for k, pixels in enumerate(voxels):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID = series
        ds.Modality, ds.Rows, ds.Columns = "MR", *pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelSpacing, ds.SliceThickness = [0.9, 0.9], 1.0
        ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 0, 0, 0, 1, 0], [0.0, 0.0, float(k)]
        ds.InstanceNumber = k + 1
        ds.PixelData = pixels.tobytes()
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        files.append((f"IM{k:04d}", out.getvalue()))
    return files


def main() -> None:
    import nibabel

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--slices", type=int, default=180)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    voxels = brain_like(args.side, args.slices)
    print(f"CPU: {cpu_name()}; a {args.side} x {args.side} x {args.slices} volume, median of {args.repeats} reads")
    nifti = gzip.compress(nibabel.Nifti1Image(np.ascontiguousarray(voxels.transpose(2, 1, 0)),
                                              np.diag([0.9, 0.9, 1.0, 1.0])).to_bytes(), 6)
    print(f"NIfTI (.nii.gz, {len(nifti) / 1e6:.1f} MB):")
    for axis, name in sorted(AXES.items(), reverse=True):
        print(f"  cut {name:<9} {median_seconds(lambda axis=axis: read_nifti(nifti, axis), args.repeats):.2f} s")
    series = dicom_series(voxels)
    print(f"DICOM series ({len(series)} files, {sum(len(b) for _, b in series) / 1e6:.1f} MB): "
          f"{median_seconds(lambda: read_dicom(series), args.repeats):.2f} s")


if __name__ == "__main__":
    main()
