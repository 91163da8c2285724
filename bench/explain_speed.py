"""What a heatmap costs: prediction plus Grad-CAM against a plain forward pass, for one uploaded scan.

    python bench/explain_speed.py [--checkpoint assets/models/default] [--repeats 30]

Three timings per method, each the median over --repeats calls on one 224 px image, with the model's own
precision (bf16 + channels_last where the CPU supports it):
  forward        the classifier's plain prediction (no heatmap);
  one pass       core.explain: prediction and heatmap from the same forward pass (this project);
  library call   pytorch-grad-cam's usual call on a gradient-enabled fp32 copy of the network (hooks, then
                 a backward pass through every layer; the library cannot read bf16 activations).
The project's target is one pass within 1.3 times the plain forward pass.

    python bench/explain_speed.py --checkpoint outputs/new-model --against assets/models/default

times the two models' prediction with its Grad-CAM heatmap (one pass each, the calls interleaved so that both
see the same machine load) and prints the ratio; issue 26's target for a new default is at most 1.5.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core import load_classifier
from core.explain import CAM_METHODS, explain_batch

ROOT = Path(__file__).resolve().parents[1]


def median_ms(call, repeats: int) -> float:
    for _ in range(3):  # warm-up: oneDNN picks its kernels on the first calls
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def compare(checkpoint: str, against: str, repeats: int) -> int:
    """Prediction with its Grad-CAM heatmap by two models, one call of each in turn, medians and their ratio."""
    models = [load_classifier(checkpoint), load_classifier(against)]
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (224, 224), dtype=np.uint8), "L")
    batches = [model.preprocess([image]) for model in models]
    for model, batch in zip(models, batches):
        for _ in range(3):
            explain_batch(model, batch)
    times: list[list[float]] = [[], []]
    for _ in range(repeats):
        for model, batch, kept in zip(models, batches, times):
            start = time.perf_counter()
            explain_batch(model, batch)
            kept.append(time.perf_counter() - start)
    ours, theirs = (1000 * statistics.median(t) for t in times)
    for model, ms in zip(models, (ours, theirs)):
        print(f"{model.path}: output stride {model.output_stride}, {model.precision} on {model.device}, "
              f"{torch.get_num_threads()} threads: prediction with Grad-CAM {ms:.1f} ms (median of {repeats})")
    print(f"ratio: {ours / theirs:.2f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(ROOT / "assets/models/default"))
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--methods", default="gradcam,gradcam++,xgradcam,layercam,eigencam")
    parser.add_argument("--against", default=None, help="a second checkpoint: time both, interleaved, and print the "
                                                          "ratio of prediction with Grad-CAM")
    args = parser.parse_args()
    if args.against:
        return compare(args.checkpoint, args.against, args.repeats)

    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    clf = load_classifier(args.checkpoint)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (224, 224), dtype=np.uint8), "L")
    batch = clf.preprocess([image])
    forward = median_ms(lambda: clf.logits(batch).softmax(1), args.repeats)
    library_model = copy.deepcopy(clf.model).float().requires_grad_(True)
    with torch.inference_mode():
        forward_fp32 = median_ms(lambda: library_model(batch), args.repeats)
    print(f"{clf.path}: {clf.precision} on {clf.device}, {torch.get_num_threads()} threads, one 224 px image")
    print(f"plain forward pass (prediction only): {forward:7.1f} ms in {clf.precision}, {forward_fp32:7.1f} ms in fp32")
    channels_last = batch.contiguous(memory_format=torch.channels_last)
    for method in args.methods.split(","):
        ours = median_ms(lambda method=method: explain_batch(clf, batch, method=method), args.repeats)
        cam_class = getattr(pytorch_grad_cam, CAM_METHODS[method].class_name)

        # pytorch-grad-cam reads activations as numpy, which has no bf16: fp32 here
        def library_call(cam_class=cam_class):
            with cam_class(model=library_model, target_layers=[library_model.layer4[-1]]) as cam:
                cam(channels_last, [ClassifierOutputTarget(0)])

        theirs = median_ms(library_call, args.repeats)
        print(f"{CAM_METHODS[method].label:<11} one pass {ours:7.1f} ms ({ours / forward:.2f} x forward) | "
              f"library call (fp32) {theirs:7.1f} ms ({theirs / forward_fp32:.2f} x the fp32 forward)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
