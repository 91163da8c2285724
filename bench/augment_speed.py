"""How fast the training loader makes images, with each scanner-appearance transform and without.

    python bench/augment_speed.py [--data ../shared/datasets/brain-tumor-mri/Training] [--images 200]
                                  [--probability 1.0]

One process, no worker processes and one torch thread (a DataLoader worker is one such process): each row reads,
resizes and augments the same images, as ``training.train`` does with ``--mri-transforms <row>``, and prints images
per second. With ``--probability 1.0`` (the default here) every image gets the transform, which is its cost per
use; training applies each with probability 0.25 (``--mri-probability``), so a row's extra cost there is about a
quarter of what it prints. Without the dataset, synthetic slices are made (the figures are then only roughly
those of real scans: the same size, other content).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def images_from(data: Path, count: int) -> list[Path]:
    files = sorted(p for p in data.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    step = max(1, len(files) // count)
    return files[::step][:count]


def main() -> None:
    from core.augment import MRI_TRANSFORMS
    from core.data import ImageFolderDataset, Sample, training_augmentation
    from core.runtime import cpu_description

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/datasets/brain-tumor-mri/Training")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--probability", type=float, default=1.0)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    torch.set_num_threads(1)

    if args.data.is_dir():
        paths = images_from(args.data, args.images)
        where = f"{len(paths)} images of {args.data}"
    else:
        import importlib.util
        import tempfile

        from PIL import Image

        # The tests' synthetic slices; tests/ is not a package, so its conftest is loaded from its file.
        spec = importlib.util.spec_from_file_location("conftest", ROOT / "tests" / "conftest.py")
        conftest = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(conftest)
        synthetic_slice = conftest.synthetic_slice

        folder = Path(tempfile.mkdtemp())
        paths = []
        for i in range(args.images):
            paths.append(folder / f"{i}.png")
            Image.fromarray(synthetic_slice(i % 4, seed=i, size=512)).save(paths[-1])
        where = f"{len(paths)} synthetic 512 x 512 slices ({args.data} is absent)"
    samples = [Sample(p, 0, p.name) for p in paths]
    print(f"{where}; {args.size} px; probability {args.probability}; one thread; CPU: {cpu_description()}")

    rows = [("none (geometry and ColorJitter only)", ()), *((name, (name,)) for name in MRI_TRANSFORMS),
            ("all", tuple(MRI_TRANSFORMS))]
    baseline = None
    for label, names in rows:
        augment = training_augmentation(mri=names, mri_probability=args.probability)
        dataset = ImageFolderDataset(samples, args.size, augment)
        torch.manual_seed(0)
        dataset[0]  # imports and first-call set-up are not timed
        start = time.perf_counter()
        for i in range(len(dataset)):
            dataset[i]
        rate = len(dataset) / (time.perf_counter() - start)
        baseline = baseline or rate
        print(f"  {label:<40} {rate:7.1f} images/s   {1000 / rate:6.1f} ms an image ({rate / baseline:.2f} x none)")


if __name__ == "__main__":
    main()
