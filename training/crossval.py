"""Cross-validation by patient, as the papers on the figshare release report it.

    python -m training.crossval --data ../data/figshare --folds cvind --out outputs/crossval
    python -m training.crossval --data DIR --folds 5 --group-by patient --out outputs/crossval  # 5 folds made here

Trains one model per fold with the default recipe (python -m training.train's defaults) on the other folds, evaluates
it once on its own fold (outputs/crossval/fold-N/run), and writes the pooled out-of-fold predictions as an ordinary
run (outputs/crossval/pooled) with every fold's accuracy and macro AUC and their mean and spread. On a CPU each
fold takes about as long as training one model.
"""

from __future__ import annotations

import argparse
import sys

from training.cli import add_progress, command, start_logging

RECIPE_OPTIONS = {"epochs": int, "batch_size": int, "image_size": int, "precision": str, "num_workers": int,
                  "weights": str, "max_images_per_class": int, "device": str, "near_duplicate_bits": int}


@command
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.crossval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the figshare release (python -m training.download figshare)")
    parser.add_argument("--out", required=True, help="folder for the folds' models and runs and the pooled run")
    parser.add_argument("--folds", default="cvind", help="cvind (the release's own five folds) or a number of folds "
                                                         "made here, each patient in one (default: cvind)")
    parser.add_argument("--group-by", choices=["patient", "image"], default="patient",
                        help="folds made here keep each patient (and copies of a slice) in one fold (patient, the "
                             "default), or split single slices (image: the leaky protocol of papers that split by "
                             "slice, only to show how far it flatters a model)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the folds made here and of training")
    parser.add_argument("--bootstrap-resamples", type=int, default=1000, help="resamples for the intervals")
    add_progress(parser, "progress bars")
    for name, kind in RECIPE_OPTIONS.items():
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                            help=f"change the default recipe's {name.replace('_', ' ')} (default: the recipe's)")
    args = parser.parse_args(argv)
    start_logging()
    from core.crossval import CrossvalSettings, crossval
    from core.runs import read_run

    changes = {name: getattr(args, name) for name in RECIPE_OPTIONS if getattr(args, name) is not None}
    pooled = read_run(crossval(CrossvalSettings(data=args.data, out=args.out, folds=args.folds,
                                                group_by=args.group_by, seed=args.seed,
                                                train=changes, bootstrap_resamples=args.bootstrap_resamples,
                                                progress=args.progress)))
    spread = pooled.info["crossval"]["spread"]
    low, high = pooled.metrics["all"]["intervals"]["accuracy"]
    print(f"wrote {pooled.path}: {pooled.name}")
    print(f"  pooled out-of-fold accuracy {pooled.metrics['accuracy']:.4f} [{low:.4f}, {high:.4f}] "
          f"(95% interval resampling patients), {len(pooled.predictions)} slices")
    free = pooled.metrics.get("duplicate_free")
    if free:
        low, high = free["intervals"]["accuracy"]
        print(f"  without the {len(pooled.predictions) - pooled.info['audit']['duplicate_free_images']} slices copied "
              f"among their fold's training images: {free['accuracy']:.4f} [{low:.4f}, {high:.4f}]")
    for figure in ("accuracy", "macro_auc"):
        s = spread[figure]
        sd = f" ± {s['sd']:.4f} (sd)" if s["sd"] is not None else ""
        print(f"  {figure.replace('_', ' ')} per fold: " + ", ".join(f"{v:.4f}" for v in s["folds"])
              + (f"; mean {s['mean']:.4f}{sd}" if s["mean"] is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
