"""Fit a checkpoint's familiarity model: how far a scan lies from the training scans, and where to warn.

    python -m training.familiarity --checkpoint outputs/my-model
    python -m training.familiarity --checkpoint outputs/my-refit --from outputs/my-model

Training already does the first for every run with a validation split: the class means and the shared
covariance of the pooled layer4 features are fitted on the training images, and a distance threshold and a floor
under the calibrated probability of the answer are chosen together so that 1.5% of the validation images exceed
one or the other. The second is for a refit on every image (--val-fraction 0), which has no held-out images: the
distance threshold of --from, a run of the same recipe, is scaled to this model and its floor kept. Scans beyond
either get a warning in the dashboard, and evaluation runs count them. See core/familiarity.py.
"""

from __future__ import annotations

import argparse
import sys

from training.cli import add_progress, command, refit_in_place, refit_parser, refit_target, start_logging


def get_args_parser() -> argparse.ArgumentParser:
    parser = refit_parser("python -m training.familiarity", __doc__,
                          "borrow the threshold of this checkpoint (same recipe, trained with a validation split, "
                          "its own familiarity model fitted)", "training images")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best available)")
    add_progress(parser, "show progress")
    return parser


@command
def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    start_logging()
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
    floor = record.get("probability_floor")
    if record["threshold_from"] == "validation":
        scores, flagged = record["validation_scores"], record["validation_flagged"]
        print(f"  distance threshold {record['distance_threshold']:.2f} (the validation images' median "
              f"{scores['median']:.2f}) and probability floor {floor:.1%} at temperature {record['temperature']:.3f}: "
              f"together exceeded by {flagged['flagged']} of the {flagged['images']} validation images "
              f"({flagged['by_distance']} by distance, {flagged['by_probability']} by probability)")
    else:
        borrowed = record["borrowed"]
        distance = record["threshold"] if floor is None else record["distance_threshold"]
        print(f"  distance threshold {distance:.2f}: {borrowed['checkpoint']}'s "
              f"{borrowed['distance_threshold']:.2f} scaled by {borrowed['scale']:.3f}"
              + ("" if floor is None else f"; its probability floor {floor:.1%} kept"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
