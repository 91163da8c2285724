"""Trace each image of a merged dataset back to the release it comes from, and write one list file per source.

    D=../shared/datasets/figshare-cheng-br35h
    python -m training.provenance --data ../shared/datasets/brain-tumor-mri \\
        --reference figshare=$D/glioma --reference figshare=$D/meningioma --reference figshare=$D/pituitary \\
        --reference br35h=$D/notumor --rest sartaj --out assets/splits/kaggle-sources

An image that copies an image under a reference folder (byte-, pixel- or perceptually identical) comes from that
reference; the others from --rest. Writes <source>.txt (image paths relative to --data, one a line: what
``python -m training.train --val-files`` and ``--files`` read) and provenance.json (how, and the counts per class).
Only a Kaggle-style release's Training/ folder is traced.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

from training.cli import add_progress, command, start_logging

SOURCE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.provenance", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the merged dataset (a Kaggle-style release or a class tree)")
    parser.add_argument("--reference", action="append", required=True, metavar="NAME=FOLDER",
                        help="a folder of images (searched below) of the release NAME; may be given many times, also "
                             "with the same NAME; the first that an image copies names its source")
    parser.add_argument("--rest", required=True, help="the source of the images that copy no reference")
    parser.add_argument("--out", required=True, help="folder for the list files and provenance.json")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier provenance folder at --out")
    parser.add_argument("--near-duplicate-bits", type=int, default=12,
                        help="perceptual-hash distance (of 256 bits) at which two images are copies (default: 12)")
    add_progress(parser, "show progress")
    return parser


def parse_references(given: list[str]) -> dict[str, list[Path]]:
    """NAME=FOLDER pairs -> {name: folders}, refused in a sentence when malformed."""
    from core.data import DatasetError

    references: dict[str, list[Path]] = {}
    for item in given:
        name, sep, folder = item.partition("=")
        if not sep or not SOURCE_NAME.fullmatch(name):
            raise DatasetError(f"--reference {item!r} is not NAME=FOLDER with a NAME of lower-case letters, digits, "
                               "_ or -")
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise DatasetError(f"--reference {name}: {folder} is not a folder")
        references.setdefault(name, []).append(path)
    return references


def is_provenance_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and (path / "provenance.json").is_file()


@command
def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    start_logging()
    from tqdm.auto import tqdm

    from core.audit import fingerprint_files
    from core.data import CLASSES, IMAGE_EXTENSIONS, DatasetError, find_split_dirs, scan_class_folders
    from core.outputs import check_output, check_replaceable
    from core.provenance import trace_sources

    if not SOURCE_NAME.fullmatch(args.rest):
        raise DatasetError("--rest must be a name of lower-case letters, digits, _ or -")
    if not 0 <= args.near_duplicate_bits <= 256:
        raise DatasetError("--near-duplicate-bits must be between 0 and 256")
    references = parse_references(args.reference)
    if args.rest in references:
        raise DatasetError(f"--rest {args.rest} is also a --reference name; the rest needs a name of its own")
    out = check_output(args.out, {"dataset": args.data, **{f"reference folder {p}": p for ps in references.values()
                                                           for p in ps}})
    check_replaceable(out, args.overwrite, is_provenance_folder, "a provenance folder (no provenance.json)")
    root = Path(args.data).expanduser()
    train_dir, _ = find_split_dirs(root) if root.is_dir() else (None, None)
    tree = scan_class_folders(train_dir or root)
    prefix = (train_dir.relative_to(root).as_posix() + "/") if train_dir else ""

    def fingerprints(paths: list[Path], what: str):
        with tqdm(total=len(paths), desc=what, unit="img", disable=not args.progress, leave=False) as bar:
            found, errors = fingerprint_files(paths, progress=bar.update)
        return [f for i, f in enumerate(found) if i not in errors], errors

    images, errors = fingerprints([s.path for s in tree.samples], "fingerprints")
    samples = [s for i, s in enumerate(tree.samples) if i not in errors]
    for index, reason in sorted(errors.items()):
        logging.warning("not traced, unreadable: %s (%s)", tree.samples[index].relpath, reason)
    reference_prints = {}
    for name, folders in references.items():
        paths = sorted(p for folder in folders for p in folder.rglob("*")
                       if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        reference_prints[name], _ = fingerprints(paths, f"reference {name}")
    traced = trace_sources(images, reference_prints, args.rest, args.near_duplicate_bits)
    names = [*references, args.rest]
    lists = {name: sorted(prefix + s.relpath for s, src in zip(samples, traced.source) if src == name)
             for name in names}
    counts = {name: {c: sum(1 for s, src in zip(samples, traced.source) if src == name and s.class_name == c)
                     for c in CLASSES} for name in names}
    record = {"method": "copies (byte-, pixel- or perceptually identical) of an image under a reference folder",
              "near_duplicate_bits": args.near_duplicate_bits,
              "references": {name: [str(p) for p in folders] for name, folders in references.items()},
              "rest": args.rest, "counts": counts,
              "ambiguous": sorted(prefix + samples[i].relpath for i in traced.ambiguous),
              "unreadable": sorted(prefix + tree.samples[i].relpath for i in errors)}
    staging = out.with_name(f".{out.name}.partial")
    staging.mkdir(parents=True, exist_ok=True)
    for name, paths in lists.items():
        (staging / f"{name}.txt").write_text("".join(f"{p}\n" for p in paths), encoding="utf-8")
    (staging / "provenance.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    from core.outputs import put_in_place

    put_in_place(staging, out)
    print(f"wrote {out}")
    for name in names:
        print(f"  {name:<10} {len(lists[name]):>5}: " + ", ".join(f"{c} {n}" for c, n in counts[name].items()))
    if traced.ambiguous:
        print(f"  {len(traced.ambiguous)} images copy more than one reference (given the first)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
