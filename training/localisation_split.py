"""Split a dataset with tumour masks into the slices that may train a model's sense of where tumours are, those
that choose its recipe, and those that score it, keeping copies, neighbouring slices and patients on one side.

    python -m training.localisation_split --data ../shared/datasets/figshare-cheng-br35h \\
        --out assets/splits/figshare-localisation --overwrite

Writes train.txt, validation.txt and test.txt (image paths relative to --data, one a line: what
``python -m training.evaluate --files`` reads) and split.json (how the split was made, and its counts) into a new
folder outside the dataset; an existing split is replaced only with --overwrite, and nothing but a split. How
slices are grouped is described in core/localisation_split.py. The split of the figshare slices the project ships
is assets/splits/figshare-localisation; its test side is never trained on, nor are copies of its slices.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from core.localisation_split import NEIGHBOUR_BITS, TEST_FRACTION, VALIDATION_FRACTION
from training.cli import add_progress, command, start_logging


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.localisation_split", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a class-per-folder dataset (its masks need not be here)")
    parser.add_argument("--out", required=True, help="new folder to write the split into, outside the dataset")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing split at --out (only a folder this command wrote is replaced)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the group folds (default: 0)")
    parser.add_argument("--test-fraction", type=float, default=TEST_FRACTION,
                        help=f"share of the slices held out to score localisation (default: {TEST_FRACTION})")
    parser.add_argument("--validation-fraction", type=float, default=VALIDATION_FRACTION,
                        help=f"share that chooses the recipe (default: {VALIDATION_FRACTION})")
    parser.add_argument("--neighbour-bits", type=int, default=NEIGHBOUR_BITS,
                        help="perceptual-hash distance at which slices next to each other in name order join a "
                             f"group (default: {NEIGHBOUR_BITS})")
    add_progress(parser, "show progress")
    return parser


@command
def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    start_logging()
    from tqdm.auto import tqdm

    from core.audit import dataset_fingerprint, fingerprint_files
    from core.data import scan_class_folders
    from core.localisation_split import SplitError, check_slices, check_split_out, settings_problems, split_slices

    # Everything that can be refused from the settings and the file list is refused before a slice is read.
    problems = settings_problems(args.seed, args.test_fraction, args.validation_fraction, args.neighbour_bits)
    if problems:
        raise SplitError("; ".join(problems))
    root = Path(args.data).expanduser()
    out = check_split_out(args.out, root, args.overwrite)
    tree = scan_class_folders(root)
    check_slices(tree.samples, root)
    with tqdm(total=len(tree.samples), desc="fingerprints", unit="img", disable=not args.progress) as bar:
        fingerprints, errors = fingerprint_files([s.path for s in tree.samples], progress=bar.update)
    for index, reason in sorted(errors.items()):
        logging.warning("left out of the split, unreadable: %s (%s)", tree.samples[index].relpath, reason)
    keep = [i for i in range(len(tree.samples)) if i not in errors]
    samples, fingerprints = [tree.samples[i] for i in keep], [fingerprints[i] for i in keep]
    check_slices(samples, root)
    split = split_slices(samples, fingerprints, args.seed, args.test_fraction, args.validation_fraction,
                         neighbour_bits=args.neighbour_bits)
    split.record["dataset_fingerprint"] = dataset_fingerprint((s.relpath, f.sha256)
                                                              for s, f in zip(samples, fingerprints))
    split.record["unreadable"] = [tree.samples[i].relpath for i in sorted(errors)]
    split.write(out, root, args.overwrite)
    print(f"wrote {out}: {split.groups} groups (largest {split.record['largest_group']} slices)")
    for side, counts in split.record["counts"].items():
        print(f"  {side:<10} " + ", ".join(f"{name} {n}" for name, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
