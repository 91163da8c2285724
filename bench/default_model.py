"""Report the default model's test figures and this machine's training and inference throughput.

    python bench/default_model.py [--checkpoint assets/models/default] [--data ../shared/datasets/brain-tumor-mri]

Test figures are computed on <data>/Testing, which training never reads: accuracy on every image, accuracy
on the images with no byte-identical copy in <data>/Training, accuracy on those with no near-duplicate
there either (perceptual hash), and macro one-vs-rest ROC AUC. Throughput compares plain fp32 with bf16
autocast + channels_last (or whatever 'auto' picks on this machine) for ResNet-50 at 224 px, batch 32.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import load_classifier  # noqa: E402
from core.audit import NEAR_DUPLICATE_BITS, fingerprint_files, hamming_matrix, phash_array  # noqa: E402
from core.data import load_image, scan_class_folders  # noqa: E402
from core.model import build_resnet50  # noqa: E402
from core.runtime import autocast, resolve_precision  # noqa: E402


def test_figures(checkpoint: Path, data: Path) -> None:
    from sklearn.metrics import roc_auc_score

    clf = load_classifier(checkpoint)
    test = scan_class_folders(data / "Testing")
    train = scan_class_folders(data / "Training")
    started = time.time()
    images = [load_image(s.path) for s in test.samples]
    probs = clf.predict_proba(images)
    seconds = time.time() - started
    labels = np.array([clf.classes.index(s.class_name) for s in test.samples])
    pred = probs.argmax(1)
    test_fp, _ = fingerprint_files([s.path for s in test.samples])
    train_fp, _ = fingerprint_files([s.path for s in train.samples])
    train_bytes = {f.sha256 for f in train_fp if f}
    exact = np.array([f.sha256 in train_bytes for f in test_fp])
    nearest = hamming_matrix(phash_array(test_fp), phash_array(train_fp)).min(axis=1)
    near = exact | (nearest <= NEAR_DUPLICATE_BITS)

    def acc(mask):
        return f"{(pred[mask] == labels[mask]).mean():.4%} ({int((pred[mask] != labels[mask]).sum())} wrong of {int(mask.sum())})"

    everything = np.ones(len(labels), bool)
    print(f"checkpoint: {clf.path} ({clf.precision} inference)")
    print(f"test set: {data / 'Testing'}: {len(labels)} images")
    print(f"accuracy, all test images:                      {acc(everything)}")
    print(f"accuracy, no byte-identical copy in Training:   {acc(~exact)}")
    print(f"accuracy, no near-duplicate (<= {NEAR_DUPLICATE_BITS} bits) either: {acc(~near)}")
    print(f"macro one-vs-rest ROC AUC:                      {roc_auc_score(labels, probs, multi_class='ovr'):.5f}")
    print(f"decode + predict: {len(labels) / seconds:.1f} images/s")
    wrong = np.nonzero(pred != labels)[0]
    for i in wrong:
        print(f"  wrong: {test.samples[i].relpath}: {clf.classes[pred[i]]} ({probs[i].max():.3f})"
              f"{' [copy in Training]' if exact[i] else ''}")


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
