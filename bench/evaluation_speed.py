"""How fast an evaluation run goes through a dataset, against a plain fp32 loop.

    python bench/evaluation_speed.py [--checkpoint assets/models/default] [--data ../shared/datasets/brain-tumor-mri]

Both read every image of <data>/Testing from disk and decode it. The plain loop then resizes, batches (32)
and runs the network in fp32 in the default memory layout; core.evaluation's pass also fingerprints each
file for the leakage audit and runs bf16 autocast with channels_last where the CPU supports it. Only the
pass over the images is timed (the evaluation's metrics and bootstrap come after it and are reported
separately).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from core.data import find_split_dirs, normalize, preprocess_uint8, scan_class_folders  # noqa: E402
from core.sources import read_image  # noqa: E402
from core.evaluation import EvaluationSettings, evaluate  # noqa: E402
from core.runs import read_run  # noqa: E402


def plain_fp32(checkpoint: str, folder: Path, batch_size: int = 32) -> float:
    loaded = load_checkpoint(checkpoint)
    model = model_from_checkpoint(loaded).float().eval()
    pre = loaded.metadata["preprocessing"]
    samples = scan_class_folders(folder).samples
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(samples), batch_size):
            batch = torch.stack([preprocess_uint8(read_image(s.path), pre["image_size"])
                                 for s in samples[start:start + batch_size]])
            model(normalize(batch, pre["mean"], pre["std"]))
    return len(samples) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(ROOT / "assets/models/default"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared/datasets/brain-tumor-mri"))
    parser.add_argument("--skip-plain", action="store_true", help="only time the evaluation")
    args = parser.parse_args()
    data = Path(args.data)
    if not data.is_dir():
        print(f"{data} is absent: nothing to time")
        return 0
    _, testing = find_split_dirs(data)
    folder = testing or data
    print(f"images: {folder} ({len(scan_class_folders(folder).samples)} files), {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        run = read_run(evaluate(EvaluationSettings(checkpoint=args.checkpoint, data=str(data), out=f"{tmp}/run",
                                                   progress=False)))
        total = time.perf_counter() - started
    timing = run.info["timing"]
    print(f"core.evaluation ({run.info['settings']['precision']}, channels_last, with fingerprints): "
          f"{timing['images_per_second']:6.1f} images/s over the images; whole run incl. metrics and "
          f"{run.info['settings']['bootstrap_resamples']} bootstrap resamples x 2 subsets: {total:.1f} s")
    if not args.skip_plain:
        print(f"plain fp32 loop (decode, resize, forward):              {plain_fp32(args.checkpoint, folder):6.1f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
