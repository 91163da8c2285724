"""Download a public dataset.

    python -m training.download figshare --to ../data/figshare   # Cheng et al., the release as published
    python -m training.download kaggle --to ../data/kaggle       # the Kaggle Brain Tumor MRI dataset (kagglehub)

Prints where the data is and the next command to run. figshare files are checked against the MD5 figshare
publishes, and an interrupted download resumes where it stopped when the command is run again.
"""

from __future__ import annotations

import argparse
import sys

from training.cli import command


def progress_printer():
    shown = {}

    def show(name: str, done: int, total: int | None) -> None:
        step = done >> 24  # a line every 16 MB, and at the end
        if shown.get(name) != step or (total and done == total):
            shown[name] = step
            of = f" of {total / 1e6:,.1f}" if total else ""
            print(f"  {name}: {done / 1e6:,.1f}{of} MB", file=sys.stderr)

    return show


@command
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.download", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", choices=["figshare", "kaggle"], help="which dataset")
    parser.add_argument("--to", required=True, help="folder to put it in (created if needed)")
    args = parser.parse_args(argv)
    from core import download

    try:
        if args.source == "figshare":
            folder = download.figshare(args.to, progress_printer())
            print(f"the figshare release is in {folder}")
            print(f"next: python -m training.evaluate --data {folder} --out outputs/runs/figshare-release")
        else:
            folder = download.kaggle(args.to)
            print(f"the Kaggle dataset is in {folder}")
            print(f"next: python -m training.train --data {folder} --out outputs/my-model")
    except download.DownloadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
