"""Fit a checkpoint's softmax temperature so that its probabilities are calibrated.

    python -m training.calibrate --checkpoint outputs/my-model
    python -m training.calibrate --checkpoint outputs/my-refit --from outputs/my-model

Training already does the first for every run with a validation split. The second is for a refit on every
image (--val-fraction 0), which has no held-out images of its own: the temperature is fitted on the validation
split of --from, a run of the same recipe, with that run's model. The temperature changes the probabilities,
never the predicted class. See core/calibration.py.
"""

from __future__ import annotations

import argparse
import sys

from training.cli import command, refit_in_place, refit_parser, refit_target, start_logging


def get_args_parser() -> argparse.ArgumentParser:
    return refit_parser("python -m training.calibrate", __doc__,
                        "fit on the validation split of this checkpoint instead (same recipe, trained with a "
                        "validation split)", "validation images")


@command
def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    start_logging()
    from core.calibration import REFITTED, borrowed_calibration, fit_on_validation
    from core.checkpoint import resolve_checkpoint_path, update_metadata

    target = refit_target(args.checkpoint, args.source, args.data, REFITTED)
    record, status = refit_in_place(
        lambda: borrowed_calibration(target, resolve_checkpoint_path(args.source), args.data) if args.source
        else fit_on_validation(target, args.data),
        lambda record: update_metadata(target, {"calibration": record}))
    if status:
        return status
    print(f"{target}: temperature {record['temperature']:.4f}, fitted on {record['images']} validation images "
          f"of {record['fitted_on']['checkpoint']}")
    print(f"  negative log-likelihood {record['nll_before']:.4f} -> {record['nll_after']:.4f}, "
          f"expected calibration error {record['ece_before']:.4f} -> {record['ece_after']:.4f} "
          "(on the images it was fitted on)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
