"""Leakage audit: which test images (or images of another dataset) also sit in a training set.

    python -m training.audit --data ../shared/datasets/brain-tumor-mri
    python -m training.audit --data ../shared/datasets/brain-tumor-mri \\
        --against ../shared/datasets/figshare-cheng-br35h

Without --against, the dataset's Testing/ folder is audited against its Training/ folder. With it, every
image of the other dataset is audited against --data's Training/ folder (or the whole --data tree when
it has no Training/): a second source is only a fair test for images the model never saw.

Exact duplicates share file bytes or decoded pixels; near duplicates differ by at most --bits of a 256-bit
perceptual hash (resized, re-encoded or lightly edited copies of a slice).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from core.sources.files import printable
from training.cli import add_progress, command


def get_args_parser() -> argparse.ArgumentParser:
    from core.audit import NEAR_DUPLICATE_BITS

    parser = argparse.ArgumentParser(prog="python -m training.audit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset root with Training/ and Testing/, or a class tree")
    parser.add_argument("--against", default=None, help="another dataset to audit against --data's training images")
    parser.add_argument("--bits", type=int, default=NEAR_DUPLICATE_BITS,
                        help=f"near-duplicate threshold in bits of 256 (default: {NEAR_DUPLICATE_BITS})")
    parser.add_argument("--show", type=int, default=10, help="example pairs to print (default: 10)")
    parser.add_argument("--csv", default=None, help="write one row per audited image to this CSV file (a new file)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --csv, only if it is an audit table this command wrote")
    add_progress(parser, "show progress")
    return parser


def _sets(args):
    from core.data import DatasetError, find_split_dirs, scan_class_folders

    data = Path(args.data).expanduser()
    if not data.is_dir():
        raise DatasetError(f"dataset folder {data} does not exist; check the path")
    training, testing = find_split_dirs(data)
    if args.against:
        other = Path(args.against).expanduser()
        if not other.is_dir():
            raise DatasetError(f"dataset folder {other} does not exist; check the path")
        reference_root = training or data
        return scan_class_folders(other), scan_class_folders(reference_root), other, reference_root
    if training is None or testing is None:
        raise DatasetError(f"{data} has no Training/ and Testing/ folders to audit against each other; "
                           "use --against to compare two datasets")
    return scan_class_folders(testing), scan_class_folders(training), testing, training


def _print_report(result, trees, args) -> None:
    """The audit's summary, per-class counts, distance histogram and example pairs, on stdout."""
    from core.audit import distance_histogram

    (audited, audited_root), (reference, reference_root) = trees
    m = result.matches
    n = len(result.images)
    byte_images = int(m.byte_identical.sum())
    pixel_only = int((m.pixel_identical & ~m.byte_identical).sum())
    near_only = int((m.near & ~m.byte_identical & ~m.pixel_identical).sum())
    print(f"audited:   {audited_root} ({n} readable images)")
    print(f"reference: {reference_root} ({len(result.reference)} readable images)")
    refused = [(f"{root}/{item['path']}", item["reason"]) for tree, root in trees for item in tree.refused]
    for path, reason in refused + result.unreadable:
        print(f"  unreadable, skipped: {printable(path)}: {reason}")
    print(f"byte-identical copies in the reference: {byte_images} images ({len(result.pairs)} pairs)")
    print(f"same pixels, other file bytes:          {pixel_only} more images")
    print(f"near duplicates (<= {args.bits} of 256 bits):   {near_only} more images")
    print(f"any duplicate:                          {int(m.duplicate.sum())} of {n} "
          f"({m.duplicate.mean():.1%}); {n - int(m.duplicate.sum())} images are duplicate-free")
    disagree = result.label_disagreements()
    print(f"duplicates filed under another class in the reference: {len(disagree)}")
    print("per class (duplicates / images):")
    labels = np.array([s.label for s in result.images])
    for k in np.unique(labels):
        members = labels == k
        print(f"  {result.images[int(np.flatnonzero(members)[0])].class_name:<11} "
              f"{int(m.duplicate[members].sum()):5d} / {int(members.sum())}")
    print("distance to the nearest reference image (bits of 256):")
    for row in distance_histogram(m.nearest_bits):
        print(f"  {row['from']:3d}-{row['to']:3d}: {row['count']:5d}")
    shown = np.flatnonzero(m.duplicate)[:args.show]
    if len(shown):
        print("examples:")
    for i in shown:
        j = int(m.nearest_index[i])
        kind = "bytes" if m.byte_identical[i] else "pixels" if m.pixel_identical[i] else f"{m.nearest_bits[i]} bits"
        print(f"  {result.images[i].relpath}  ~  {result.reference[j].relpath}  ({kind})")
    for i in disagree[:args.show]:
        j = int(m.nearest_index[i])
        print(f"  label disagreement: {result.images[i].relpath} ({result.images[i].class_name}) ~ "
              f"{result.reference[j].relpath} ({result.reference[j].class_name})")


def _write_csv(result, path: str) -> None:
    """One row per audited image: its nearest reference image and how close it is. File names are the dataset's own
    and the file is for a spreadsheet, so its cells are quoted and defused (core.tables.csv_bytes)."""
    import pandas as pd

    from core.atomic import finish_atomic_write
    from core.tables import csv_bytes

    m = result.matches
    kinds = m.kind()
    table = pd.DataFrame({
        "path": [s.relpath for s in result.images], "label": [s.class_name for s in result.images],
        "duplicate": m.duplicate, "kind": kinds, "byte_identical": m.byte_identical,
        "nearest_bits": m.nearest_bits.astype(int),
        "nearest": [result.reference[int(j)].relpath for j in m.nearest_index],
        "nearest_label": [result.reference[int(j)].class_name for j in m.nearest_index],
    })
    out = Path(path).expanduser()
    staging = out.with_name(f".{out.name}.part-{os.getpid()}")
    try:
        staging.write_bytes(csv_bytes(table))
        finish_atomic_write(staging, out)  # whole or not at all
    finally:
        staging.unlink(missing_ok=True)
    print(f"wrote {path}")


CSV_COLUMNS = ("path", "label", "duplicate", "kind", "byte_identical", "nearest_bits", "nearest", "nearest_label")


def _is_audit_table(path: Path) -> bool:
    """Whether ``path`` is a table this command wrote (its first line is the header the audit writes)."""
    import pandas as pd

    from core.tables import csv_bytes

    if not path.is_file():  # checked before opening: a named pipe would block the read
        return False
    header = csv_bytes(pd.DataFrame(columns=list(CSV_COLUMNS))).splitlines()[0]
    try:
        with path.open("rb") as handle:
            return handle.readline(4096).rstrip(b"\r\n") == header
    except OSError:
        return False


@command
def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    from tqdm.auto import tqdm

    from core.audit import audit_sets

    if not 0 <= args.bits <= 256:
        print("error: --bits must be between 0 and 256", file=sys.stderr)
        return 2
    if args.csv:
        from core.outputs import check_output, check_replaceable

        csv_path = check_output(args.csv, {"dataset": args.data, "other dataset": args.against}, option="--csv")
        check_replaceable(csv_path, args.overwrite, _is_audit_table, "an audit table (its first line is not the "
                          "audit's header)", option="--csv")
    audited, reference, audited_root, reference_root = _sets(args)
    if not audited.samples or not reference.samples:
        empty = audited_root if not audited.samples else reference_root
        print(f"error: {empty} holds no images in class folders", file=sys.stderr)
        return 2
    total = len(audited.samples) + len(reference.samples)
    with tqdm(total=total, desc="fingerprinting", unit="img", disable=not args.progress, leave=False) as bar:
        result = audit_sets(audited.samples, reference.samples, args.bits, progress=bar.update)

    _print_report(result, ((audited, audited_root), (reference, reference_root)), args)
    if args.csv:
        _write_csv(result, args.csv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
