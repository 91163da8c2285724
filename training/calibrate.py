"""Fit a checkpoint's softmax temperature so that its probabilities are calibrated.

    python -m training.calibrate --checkpoint outputs/my-model
    python -m training.calibrate --checkpoint outputs/my-refit --from outputs/my-model

Training already does the first for every run with a validation split. The second is for a refit on every
image (--val-fraction 0), which has no held-out images of its own: the temperature is fitted on the validation
split of --from, a run of the same recipe, with that run's model. The temperature changes the probabilities,
never the predicted class. See core/calibration.py.

    python -m training.calibrate --checkpoint outputs/my-refit --from outputs/my-model --mirror-below 0.9

also gives the model a second look at scans it is unsure of: below that top probability, a scan is decided on
the mean of its logits and those of its mirror image. The command prints how many validation images are wrong
without it and with it. A checkpoint that has a second look keeps its threshold when the temperature is
refitted, and the threshold is judged again; --mirror-below 0 removes it and changes nothing else.
"""

from __future__ import annotations

import argparse
import logging
import sys

from training.cli import command


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.calibrate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint file or its directory; updated in place")
    parser.add_argument("--from", dest="source", default=None,
                        help="fit on the validation split of this checkpoint instead (same recipe, trained with a "
                             "validation split)")
    parser.add_argument("--mirror-below", type=float, default=None,
                        help="average the logits of a scan with its mirror image's when its top probability is below "
                             "this (also judged on the validation split); 0 removes the setting and changes nothing "
                             "else (default: keep the checkpoint's threshold, if it has one)")
    parser.add_argument("--data", default=None,
                        help="dataset root the validation images live under (default: the one recorded at "
                             "training)")
    return parser


@command
def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    from core.calibration import borrowed_changes, choose_on_validation
    from core.checkpoint import resolve_checkpoint_path, update_metadata

    try:
        target = resolve_checkpoint_path(args.checkpoint)
        if args.mirror_below == 0:
            update_metadata(target, {"mirror_averaging": None})
            print(f"{target}: second look at the mirror image off; the temperature is unchanged")
            return 0
        below = args.mirror_below
        if below is None:
            # The threshold compares calibrated probabilities: a new temperature changes which scans it picks,
            # so a second look the checkpoint already has is judged again with the new temperature.
            below = kept_mirror_threshold(target)
        if args.source:
            changes = borrowed_changes(target, resolve_checkpoint_path(args.source), args.data, below)
        else:
            changes = choose_on_validation(target, args.data, mirror_below=below)
        update_metadata(target, changes)
    except OSError as error:
        print(f"error: the checkpoint could not be rewritten ({error}); it is unchanged", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; the checkpoint is unchanged", file=sys.stderr)
        return 130
    record = changes["calibration"]
    print(f"{target}: temperature {record['temperature']:.4f}, fitted on {record['images']} validation images "
          f"of {record['fitted_on']['checkpoint']}")
    print(f"  negative log-likelihood {record['nll_before']:.4f} -> {record['nll_after']:.4f}, "
          f"expected calibration error {record['ece_before']:.4f} -> {record['ece_after']:.4f} "
          "(on the images it was fitted on)")
    mirror = changes.get("mirror_averaging")
    if mirror:
        print(f"  second look below top probability {mirror['below']:g}: {mirror['share_mirrored']:.1%} of the "
              f"validation images get it; {mirror['errors_without']} wrong without it, {mirror['errors_with']} with it "
              "(counted on the images the threshold is judged on: optimistic if it was chosen by these counts)")
    return 0


def kept_mirror_threshold(target) -> float | None:
    """The second-look threshold a checkpoint already has, to be judged again; None when it has none. A damaged
    one is refused with the way out."""
    from core.calibration import CalibrationError
    from core.checkpoint import CheckpointError, read_metadata
    from core.inference import checkpoint_mirror_threshold

    try:
        return checkpoint_mirror_threshold(read_metadata(target, replacing=("calibration",)))
    except CheckpointError as error:
        if "mirror_averaging" not in str(error):
            raise
        raise CalibrationError(f"{error}; set a new one with --mirror-below P, or remove it with --mirror-below 0"
                               ) from None


if __name__ == "__main__":
    sys.exit(main())
