"""Evaluate a checkpoint on a dataset and write an evaluation run (predictions, metrics, leakage audit).

    python -m training.evaluate --data ../shared/datasets/brain-tumor-mri --out outputs/runs/kaggle-test
    python -m training.evaluate --checkpoint outputs/train --data ../shared/datasets/figshare-cheng-br35h \\
        --out outputs/runs/figshare

A dataset root with a Testing/ folder has that folder evaluated; any other class-per-folder tree is
evaluated whole. Datasets with YOLO box files beside the images also get Grad-CAM localisation scores.
The run format is described in docs/evaluation-runs.md; the dashboard's Runs page reads it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.evaluation import EvaluationSettings
from core.explain import CAM_METHODS, LAYERS
from core.masks import margin_text
from training.cli import command, settings_parser, start_logging

ROOT = Path(__file__).resolve().parents[1]

HELP = {
    "checkpoint": "checkpoint file or its directory",
    "data": "dataset root (its Testing/ folder is evaluated when it has one) or a class-per-folder tree",
    "out": "run directory to create",
    "name": "display name of the run (default: dataset and model names)",
    "batch_size": "images per forward pass",
    "device": "auto, cpu, cuda or cuda:N",
    "precision": "auto (bf16 where supported), bf16, fp16 or fp32",
    "num_workers": "decoding processes (default: from the CPU count; 0 on two cores)",
    "near_duplicate_bits": "perceptual-hash distance (of 256 bits) that counts as a near duplicate of a "
                           "training image (default: the checkpoint's training setting)",
    "bootstrap_resamples": "bootstrap resamples for the confidence intervals",
    "confidence": "confidence level of the intervals",
    "seed": "seed of the bootstrap",
    "localisation": "score heatmaps against tumour boxes and masks: auto (when box files or masks exist), on or off",
    "masks": "folder of tumour masks (same stem as each image, .png; default: a folder named like the dataset with "
             "-masks beside it, as figshare-cheng-masks beside figshare-cheng-br35h)",
    "files": "text file of image paths relative to the dataset root, one a line: evaluate only these (a held-out "
             "split, as assets/splits/figshare-localisation/test.txt)",
    "mask_dilation_px": "pixels (at 224) by which a mask is grown for the tolerant scores",
    "mask_dilation_mm": "grow each mask by this many millimetres instead (from each scan's pixel spacing: DICOM and "
                        "NIfTI state it; other files need --pixel-spacing-mm)",
    "pixel_spacing_mm": "millimetres per pixel of files that state no spacing (JPEG, PNG, .mat), where the dataset's "
                        "publication gives it; DICOM and NIfTI files keep their own",
    "cam_method": f"CAM method for localisation: {', '.join(m for m, s in CAM_METHODS.items() if not s.slow)}",
    "cam_layer": f"layer the CAM explains: {', '.join(LAYERS)}",
    "volume_slice": "the slice each DICOM or NIfTI file in the dataset stands for: middle, or a number from 1 "
                    "(NIfTI volumes are cut axially)",
    "overwrite": "replace an existing run at --out",
    "progress": "show a progress bar",
}


def get_args_parser() -> argparse.ArgumentParser:
    defaults = EvaluationSettings(checkpoint=str(ROOT / "assets/models/default"), data="", out="")
    return settings_parser("python -m training.evaluate", __doc__, defaults, HELP, required=("data", "out"))


@command
def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    start_logging()
    from core.evaluation import evaluate
    from core.runs import read_run

    try:
        out = evaluate(EvaluationSettings(**vars(args)))
    except KeyboardInterrupt:
        print("\ninterrupted; no run was written", file=sys.stderr)
        return 130
    run = read_run(out)
    print(summary(run))
    return 0


def _f(value, spec: str) -> str:
    """A figure for the terminal; undefined ones (null in the run) as n/a."""
    return "n/a" if value is None else format(value, spec)


def _interval(metrics: dict, key: str, spec: str = ".4f") -> str:
    low, high = (metrics.get("intervals") or {}).get(key, [None, None])
    return f"[{_f(low, spec)}, {_f(high, spec)}]"


def _mask_figure(block: dict, key: str) -> str:
    figure = block[key]
    low, high = figure.get("interval") or (None, None)
    return f"{_f(figure['mean'], '.2f')} [{_f(low, '.2f')}, {_f(high, '.2f')}]"


def summary(run) -> str:
    """A few lines for the terminal: headline figures with their intervals, on all and duplicate-free images."""
    lines = [f"wrote {run.path}: {run.name}"]
    info = run.info
    lines.append(f"  {info['dataset']['images']} images, {len(info['dataset']['skipped'])} unreadable, "
                 f"{info['timing']['images_per_second']} images/s")
    steps = info["timing"].get("steps") or {}
    if steps:
        lines.append("  time: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in steps.items()))
    subsets = [("all images", run.metrics["all"])]
    if run.metrics.get("duplicate_free"):
        audit = info["audit"]
        subsets.append((f"no duplicate in training ({audit['duplicate_free_images']})", run.metrics["duplicate_free"]))
    for title, block in subsets:
        lines.append(f"  {title}: accuracy {_f(block['accuracy'], '.4f')} {_interval(block, 'accuracy')}, "
                     f"macro AUC {_f(block['macro_auc'], '.5f')} {_interval(block, 'macro_auc')}, "
                     f"balanced accuracy {_f(block['balanced_accuracy'], '.4f')}, "
                     f"ECE {_f(block['calibration']['ece'], '.4f')}")
    audit = info["audit"]
    if audit["available"]:
        lines.append(f"  leakage audit (perceptual hash <= {audit['near_duplicate_bits']} bits): "
                     f"{audit['exact_duplicates']} exact and {audit['near_duplicates']} near duplicates of "
                     f"training images")
    local = run.metrics.get("localisation")
    if local:
        parts = [f"{name} {_f(v['pointing_tolerant'], '.2f')}" for name, v in local["per_class"].items()]
        lines.append(f"  pointing game (tolerant, {local['method']} {local['layer']}): {', '.join(parts)}; "
                     f"overall {_f(local['overall']['pointing_tolerant'], '.2f')}")
    familiar = run.metrics.get("familiarity")
    if familiar:
        def flagged(block: dict) -> str:
            low, high = block.get("interval") or (None, None)
            return (f"{block['flagged']} of {block['images']} ({_f(block['share'], '.1%')}"
                    + (f" [{_f(low, '.1%')}, {_f(high, '.1%')}]" if low is not None else "") + ")")

        parts = [f"warned on {flagged(familiar['all'])}"]
        parts += [f"{which} answers {flagged(familiar[which])}" for which in ("wrong", "right") if familiar.get(which)]
        lines.append("  familiarity: " + "; ".join(parts))
    patients = run.metrics.get("patients")
    if patients:
        parts = [f"{name} {v['right']} of {v['patients']}" for name, v in patients["per_class"].items()]
        lines.append(f"  per patient ({patients['rule']}): right for {', '.join(parts)}")
    masks = run.metrics.get("masks")
    if masks:
        for name, block in masks["per_class"].items():
            lines.append(f"  against the masks, {name} ({block['images']}): peak in the tumour grown by "
                         f"{margin_text(masks)} {_mask_figure(block, 'peak_in_dilated')} (centre blob "
                         f"{_mask_figure(block, 'blob_peak_in_dilated')}), energy inside "
                         f"{_mask_figure(block, 'energy_in_dilated')} "
                         f"(blob {_mask_figure(block, 'blob_energy_in_dilated')})"
                         + (f"; a {masks['layer']} heatmap can peak there at all for "
                            f"{_mask_figure(block, 'peak_reachable')}, with at most "
                            f"{_mask_figure(block, 'energy_reachable')} of its heat inside"
                            if "energy_reachable" in block else ""))
    for warning in run.metrics.get("warnings", []):
        lines.append(f"  warning: {warning}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
