"""Report the default model's test figures and this machine's training and inference throughput.

    python bench/default_model.py [--checkpoint assets/models/default] [--data ../shared/datasets/brain-tumor-mri]

Test figures are computed on <data>/Testing, which training never reads: accuracy on every image, accuracy
on the images with no byte-identical copy in <data>/Training, accuracy on those with no near-duplicate
there either (perceptual hash), and macro one-vs-rest ROC AUC, all computed by core.evaluation.
Throughput compares plain fp32 with bf16 autocast + channels_last (or whatever 'auto' picks on this machine) for
ResNet-50 at 224 px, batch 32.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from core.model import build_resnet50
from core.runtime import autocast, resolve_precision

ROOT = Path(__file__).resolve().parents[1]


def test_figures(checkpoint: Path, data: Path) -> None:
    """Evaluate on <data>/Testing with the project's own evaluation (core.evaluation) and print the headline
    figures; the run itself goes to a temporary folder."""
    import tempfile

    from core.evaluation import EvaluationSettings, evaluate
    from core.runs import read_run

    with tempfile.TemporaryDirectory() as tmp:
        run = read_run(evaluate(EvaluationSettings(checkpoint=str(checkpoint), data=str(data), out=f"{tmp}/run",
                                                   progress=False)))
    p = run.predictions
    correct = p["label"] == p["pred"]
    byte_copy = p["train_duplicate_kind"] == "exact"
    near = p["train_duplicate"].astype(bool)
    bits = run.info["audit"]["near_duplicate_bits"]

    def acc(mask):
        return f"{correct[mask].mean():.4%} ({int((~correct[mask]).sum())} wrong of {int(mask.sum())})"

    m = run.metrics
    low, high = m["all"]["intervals"]["accuracy"]
    print(f"checkpoint: {run.info['model']['path']} ({run.info['settings']['precision']} inference)")
    print(f"test set: {data / 'Testing'}: {len(p)} images")
    print(f"accuracy, all test images:                      {acc(correct == correct)}  95% CI [{low:.4f}, {high:.4f}]")
    print(f"accuracy, no byte-identical copy in training:   {acc(~byte_copy)}")
    print(f"accuracy, no near-duplicate (<= {bits} bits) either: {acc(~near)}")
    print(f"macro one-vs-rest ROC AUC:                      {m['macro_auc']:.5f}  95% CI "
          f"[{m['all']['intervals']['macro_auc'][0]:.5f}, {m['all']['intervals']['macro_auc'][1]:.5f}]")
    print(f"decode + fingerprint + predict: {run.info['timing']['images_per_second']} images/s")
    for row in p[~correct].itertuples():
        print(f"  wrong: {row.path}: {row.pred} ({row.confidence:.3f})"
              f"{' [copy in training]' if row.train_duplicate_kind == 'exact' else ''}")


def throughput(precision: str, train: bool, steps: int = 6, batch: int = 32) -> float:
    device = torch.device("cpu")
    model = build_resnet50(4)
    x = torch.randn(batch, 3, 224, 224)
    y = torch.randint(0, 4, (batch,))
    if precision != "fp32":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-4)
    model.train(train)
    timings = []
    for _ in range(steps):
        start = time.perf_counter()
        if train:
            with autocast(device, precision):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        else:
            with torch.inference_mode(), autocast(device, precision):
                model(x)
        timings.append(time.perf_counter() - start)
    return batch / float(np.median(timings[2:]))  # first steps warm up oneDNN


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(ROOT / "assets/models/default"), help="checkpoint to test")
    parser.add_argument("--data", default=str(ROOT.parent / "shared/datasets/brain-tumor-mri"),
                        help="Kaggle-layout dataset with Training/ and Testing/")
    parser.add_argument("--no-throughput", action="store_true", help="skip the throughput measurements")
    args = parser.parse_args()
    if Path(args.data).is_dir():
        test_figures(Path(args.checkpoint), Path(args.data))
    else:
        print(f"{args.data} is absent: no test figures")
    if not args.no_throughput:
        fast = resolve_precision("auto", torch.device("cpu"))
        print(f"throughput on this machine ({torch.get_num_threads()} threads), ResNet-50, 224 px, batch 32:")
        for train in (False, True):
            kind = "training " if train else "inference"
            slow, quick = throughput("fp32", train), throughput(fast, train)
            print(f"  {kind}: fp32 {slow:6.1f} images/s | {fast} + channels_last {quick:6.1f} images/s "
                  f"({quick / slow:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
