"""Fit a checkpoint's familiarity model: how far a scan lies from the training scans, and where to warn.

    python -m training.familiarity --checkpoint outputs/my-model
    python -m training.familiarity --checkpoint outputs/my-refit --from outputs/my-model

Training already does the first for every run with a validation split: the class means and the shared
covariance of the pooled layer4 features are fitted on the training images, and the threshold is the distance
that 1% of the validation images exceed. The second is for a refit on every image (--val-fraction 0), which
has no held-out images: the threshold of --from, a run of the same recipe, is scaled to this model. Scans above
the threshold get a warning in the dashboard, and evaluation runs count them. See core/familiarity.py.
"""

from __future__ import annotations

import argparse
import logging
import sys

from training.cli import command, refit_in_place, refit_parser, refit_target


def get_args_parser() -> argparse.ArgumentParser:
    parser = refit_parser("python -m training.familiarity", __doc__,
                          "borrow the threshold of this checkpoint (same recipe, trained with a validation split, "
                          "its own familiarity model fitted)", "training images")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best available)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show progress")
    return parser


@command
def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    from tqdm.auto import tqdm

    from core.checkpoint import update_metadata
    from core.familiarity import REFITTED, fit_for_checkpoint

    target = refit_target(args.checkpoint, args.source, args.data, REFITTED)

    def fit():
        with tqdm(desc="features", unit="img", disable=not args.progress, leave=False, delay=2) as bar:
            return fit_for_checkpoint(target, args.data, args.source, args.device, progress=bar.update)

    fitted, status = refit_in_place(
        fit, lambda fitted: update_metadata(target, {"familiarity": fitted.record}, familiarity=fitted.tensors))
    if status:
        return status
    record = fitted.record
    print(f"{target}: familiarity fitted on {record['training_scores']['images']} training images "
          f"(median distance {record['training_scores']['median']:.2f})")
    if record["threshold_from"] == "validation":
        scores = record["validation_scores"]
        print(f"  threshold {record['threshold']:.2f}: exceeded by {record['flag_share']:.0%} of the "
              f"{scores['images']} validation images (their median {scores['median']:.2f})")
    else:
        borrowed = record["borrowed"]
        print(f"  threshold {record['threshold']:.2f}: {borrowed['checkpoint']}'s {borrowed['threshold']:.2f} "
              f"scaled by {borrowed['scale']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
