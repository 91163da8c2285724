"""How long an evaluation run takes, against a plain fp32 loop over the same images.

    python bench/evaluation_speed.py [--checkpoint assets/models/default] [--data ../shared/datasets/brain-tumor-mri]

Both are timed as whole commands in fresh processes, imports and model loading included, one after the other in
this one run:

* ``python -m training.evaluate`` on the dataset's Testing/ folder: each image decoded once, fingerprinted for the
  leakage audit, run in bf16 with channels_last where the CPU supports it; then the audit, every metric on all
  images and on the duplicate-free ones, and 2 x 1,000 bootstrap resamples. Where its time went is printed from
  the run's ``timing.steps``.
* the plain loop: read, decode, resize and batch (32) every image and run the network in fp32, default memory
  layout, nothing else.

Say which CPU the figures come from: the speed-up differs between CPUs with AMX and without.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PLAIN_LOOP = textwrap.dedent("""
    import torch
    from core.checkpoint import load_checkpoint, model_from_checkpoint
    from core.data import normalize, preprocess_uint8, scan_class_folders
    from core.sources import read_image
    loaded = load_checkpoint({checkpoint!r})
    model = model_from_checkpoint(loaded).float().eval()
    pre = loaded.metadata["preprocessing"]
    samples = scan_class_folders({folder!r}).samples
    with torch.inference_mode():
        for start in range(0, len(samples), 32):
            batch = torch.stack([preprocess_uint8(read_image(s.path), pre["image_size"])
                                 for s in samples[start:start + 32]])
            model(normalize(batch, pre["mean"], pre["std"]))
    print(len(samples))
""")


def timed(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{command[:4]} failed: {done.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - started, done.stdout


def main() -> int:
    from core.runtime import cpu_description

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(ROOT / "assets/models/default"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared/datasets/brain-tumor-mri"))
    args = parser.parse_args()
    data = Path(args.data)
    if not (data / "Testing").is_dir():
        print(f"{data}/Testing is absent: nothing to time")
        return 0
    print(f"CPU: {cpu_description()}")
    with tempfile.TemporaryDirectory() as tmp:
        evaluation, _ = timed([sys.executable, "-m", "training.evaluate", "--checkpoint", args.checkpoint, "--data",
                               str(data), "--out", f"{tmp}/run", "--no-progress"])
        info = json.loads(Path(f"{tmp}/run/run.json").read_text())
    plain, printed = timed([sys.executable, "-c", PLAIN_LOOP.format(checkpoint=args.checkpoint,
                                                                      folder=str(data / "Testing"))])
    images = int(printed.strip().splitlines()[-1])
    print(f"python -m training.evaluate ({info['settings']['precision']}): {evaluation:6.1f} s for {images} images, "
          "the whole command")
    for name, seconds in info["timing"].get("steps", {}).items():
        print(f"    {name:<42} {seconds:6.1f} s")
    rest = evaluation - sum(info["timing"]["steps"].values())
    print(f"    {'(imports, start-up, writing the run)':<42} {rest:6.1f} s")
    print(f"plain fp32 loop (decode, resize, forward):  {plain:6.1f} s, the whole command")
    print(f"evaluation against the plain loop: {plain / evaluation:.2f} x as fast")
    return 0


if __name__ == "__main__":
    sys.exit(main())
