"""Measure the heatmaps of an evaluation run that has tumour masks: every CAM method at every layer against the
masks, how faithful each is to the model (ROAD), and whether each survives the model's randomisation.

    python -m training.explanations --run assets/runs/figshare-localisation-validation
    python -m training.explanations --run assets/runs/figshare-localisation-test --slow-per-class 2

Writes explanations.json into the run (the dashboard's Runs page shows it under "Explanations"). The method
and layer with the most peaks inside the tumour on a validation split are what the dashboard should show by
default; read that on validation, then report the test split. See core/explanation_audit.py for the methods.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from training.cli import add_progress, command, start_logging

ROOT = Path(__file__).resolve().parents[1]
FILE = "explanations.json"


def get_args_parser() -> argparse.ArgumentParser:
    from core.explain import LAYERS, fast_methods

    parser = argparse.ArgumentParser(prog="python -m training.explanations", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="an evaluation run with scores against tumour masks")
    parser.add_argument("--data", default=None, help="the dataset root, when it has moved since the run")
    parser.add_argument("--methods", nargs="+", default=fast_methods(), help="fast CAM methods to measure on "
                        "every slice (default: all of them)")
    parser.add_argument("--layers", nargs="+", default=["layer3", "layer4"], choices=list(LAYERS))
    parser.add_argument("--slow-per-class", type=int, default=0, help="slices per class on which Score-CAM is "
                        "measured beside the others, at the run's layer (about a minute a slice on a 2-core CPU; "
                        "default 0: not measured)")
    parser.add_argument("--faithfulness-per-class", type=int, default=8, help="slices per class for ROAD")
    parser.add_argument("--sanity-per-class", type=int, default=8, help="slices per class for the randomisation test")
    parser.add_argument("--seed", type=int, default=0)
    add_progress(parser, "show progress")
    return parser


def interval(values: np.ndarray, seed: int) -> dict:
    from core.masks import grouped_bootstrap

    values = np.asarray(values, dtype=np.float64)
    return {"mean": float(values.mean()) if len(values) else None, "images": int(len(values)),
            "interval": list(grouped_bootstrap(values, None, 1000, 0.95, seed))}


def locate(run, given: str | None) -> tuple[Path, Path]:
    """The run's dataset and mask folders on this machine."""
    from core.explanation_audit import ExplanationsError
    from core.masks import find_mask_root

    settings = run.info["settings"]
    data = Path(given or settings["data"]).expanduser()
    if not data.is_absolute() and not data.is_dir():
        data = ROOT / data
    if not data.is_dir():
        raise ExplanationsError(f"the run's dataset {data} is not here; give its folder with --data")
    masks = find_mask_root(data, settings.get("masks"))
    if masks is None:
        raise ExplanationsError(f"no mask folder beside {data}")
    return data, masks


@command
def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    start_logging()
    from tqdm.auto import tqdm

    from core import load_classifier
    from core.explain import check_choice, slow_methods
    from core.explanation_audit import ExplanationsError, cases_of, sample
    from core.runs import read_run

    for method in args.methods:
        check_choice(method, "layer4")
    if min(args.faithfulness_per_class, args.sanity_per_class) < 1 or args.slow_per_class < 0:
        print("error: --faithfulness-per-class and --sanity-per-class must be at least 1, --slow-per-class at least 0",
              file=sys.stderr)
        return 2
    run = read_run(args.run)
    data, masks = locate(run, args.data)
    from core.outputs import check_output
    from core.weights import sha256_of_file

    model_file = run.model_file(ROOT)
    # explanations.json goes into the run: a run never lies in or around what it was made from.
    check_output(run.path, {"dataset": data, "mask folder": masks, "checkpoint": model_file}, option="--run")
    if not model_file.is_file() or not run.made_by(sha256_of_file(model_file)):
        raise ExplanationsError(f"the run's model {model_file} is not here as it was when the run was made; "
                                "evaluate again")
    classifier = load_classifier(model_file)
    cases = cases_of(run, data, masks)
    started = time.time()
    plan = len(cases) * len(args.methods) * len(args.layers)
    with tqdm(total=plan, desc="heatmaps", unit="img", disable=not args.progress) as bar:
        table = by_method_and_layer(classifier, cases, args.methods, args.layers, args.seed, bar.update)
    run_layer = run.metrics["masks"]["layer"]
    slow = sample(cases, args.slow_per_class, args.seed) if args.slow_per_class > 0 else []
    result = {
        "run": run.name, "model": run.info["model"].get("path"),
        "slices": len(cases), "by_method_and_layer": table,
        "slow_sample": measure_sample(classifier, slow, [*args.methods, *slow_methods()], run_layer,
                                      args.seed) if slow else None,
        "faithfulness": faithfulness(classifier, sample(cases, args.faithfulness_per_class, args.seed + 1),
                                     args.methods, args.layers, args.seed),
        "sanity": sanity(classifier, sample(cases, args.sanity_per_class, args.seed + 2), args.methods, args.layers,
                         args.seed),
        "seconds": None}
    result["best"] = best_of(table, result["sanity"])
    result["seconds"] = round(time.time() - started, 1)
    (run.path / FILE).write_text(json.dumps(result, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    print(report(result))
    return 0


def by_method_and_layer(classifier, cases, methods, layers, seed, progress) -> list[dict]:
    from core.explanation_audit import heatmaps, localisation_table, summarise

    rows = []
    for layer in layers:
        for method in methods:
            maps, mask_list, _ = heatmaps(classifier, cases, method, layer, progress=progress)
            rows.append({"method": method, "layer": layer,
                         **summarise(localisation_table(cases, maps, mask_list), 1000, 0.95, seed)})
    return rows


SANITY_LIMIT = 0.5  # a map more alike than this to the trained model's after randomisation fails the check


def best_of(table: list[dict], checked: dict) -> dict:
    """The method and layer that best locate the tumour (the mean over tumour classes of the share of peaks in the
    grown outline and of the share of heat inside it), among those that explain a class and pass the sanity
    check: after each randomisation step, their maps keep a rank correlation under :data:`SANITY_LIMIT`."""
    from core.explain import CAM_METHODS

    def score(row):
        classes = row["per_class"].values()
        return float(np.mean([(c["peak_in_dilated"]["mean"] + c["energy_in_dilated"]["mean"]) / 2 for c in classes]))

    survived = {(r["method"], r["layer"]): max(r[step]["mean"] for step in checked["steps"]) for r in checked["rows"]}
    passing = [row for row in table if CAM_METHODS[row["method"]].class_specific
               and survived.get((row["method"], row["layer"]), 1.0) < SANITY_LIMIT]
    excluded = sorted(f"{r['method']} {r['layer']}" for r in table if r not in passing)
    if not passing:
        return {"method": None, "layer": None, "excluded": excluded,
                "why": "no method explains a class and passes the sanity check"}
    # Rounded, so that methods equal up to arithmetic (Grad-CAM and XGrad-CAM at layer4 of a pooled-linear network)
    # give the first listed.
    row = max(passing, key=lambda r: round(score(r), 3))
    return {"method": row["method"], "layer": row["layer"], "score": round(score(row), 4), "excluded": excluded,
            "rule": "highest mean over tumour classes of (peak in the grown outline + heat inside it) / 2, among "
                    f"class-specific methods whose maps keep a rank correlation under {SANITY_LIMIT} with the "
                    "trained model's after each randomisation step"}


def measure_sample(classifier, cases, methods, layer, seed) -> dict:
    from core.explanation_audit import heatmaps, localisation_table

    out = {"layer": layer, "slices": len(cases), "paths": [c.path for c in cases], "methods": {}}
    for method in methods:
        maps, mask_list, _ = heatmaps(classifier, cases, method, layer)
        table = localisation_table(cases, maps, mask_list)
        out["methods"][method] = {key: interval(table[key].to_numpy(dtype=float), seed)
                                  for key in ("peak_in_dilated", "energy_in_dilated", "iou")}
    return out


def faithfulness(classifier, cases, methods, layers, seed) -> dict:
    from core.explanation_audit import ROAD_PERCENTILES, baseline_maps, heatmaps, road_scores

    labels = [c.label for c in cases]
    out = {"metric": "ROAD combined (pytorch_grad_cam.metrics.road.ROADCombined), true class probability",
           "percentiles": list(ROAD_PERCENTILES), "slices": len(cases), "scores": []}
    inputs = None
    for layer in layers:
        for method in methods:
            maps, _, inputs = heatmaps(classifier, cases, method, layer)
            out["scores"].append({"method": method, "layer": layer,
                                  **interval(road_scores(classifier, inputs, maps, labels), seed)})
    for kind in ("random", "centre blob"):
        maps = baseline_maps(kind, len(cases), inputs.shape[-1], seed)
        out["scores"].append({"method": kind, "layer": None, **interval(road_scores(classifier, inputs, maps, labels),
                                                                        seed)})
    return out


def sanity(classifier, cases, methods, layers, seed) -> dict:
    from core.explanation_audit import SANITY_STEPS, heatmaps, randomised, rank_similarity

    out = {"test": "cascading randomisation (Adebayo et al. 2018): Spearman correlation of each method's heatmaps "
                   "with the trained model's", "slices": len(cases), "steps": list(SANITY_STEPS), "rows": []}
    twins = {step: randomised(classifier, parts, seed) for step, parts in SANITY_STEPS.items()}
    for layer in layers:
        for method in methods:
            trained, _, _ = heatmaps(classifier, cases, method, layer)
            out["rows"].append({"method": method, "layer": layer, **{
                step: interval(rank_similarity(trained, heatmaps(twin, cases, method, layer)[0]), seed)
                for step, twin in twins.items()}})
    return out


def report(result: dict) -> str:
    lines = [f"{result['run']}: {result['slices']} slices with masks, {result['seconds']} s"]
    lines.append("peak in the grown tumour (glioma / meningioma / pituitary), energy inside:")
    for row in result["by_method_and_layer"]:
        peaks = " / ".join(f"{c['peak_in_dilated']['mean']:.2f}" for c in row["per_class"].values())
        energy = " / ".join(f"{c['energy_in_dilated']['mean']:.2f}" for c in row["per_class"].values())
        lines.append(f"  {row['method']:<10} {row['layer']}: {peaks}   energy {energy}")
    blob = result["by_method_and_layer"][0]["blob"]
    lines.append("  centre blob       : " + " / ".join(f"{c['peak_in_dilated']['mean']:.2f}" for c in blob.values())
                 + "   energy " + " / ".join(f"{c['energy_in_dilated']['mean']:.2f}" for c in blob.values()))
    best = result["best"]
    lines.append(f"best that passes the sanity check: {best['method']} at {best['layer']}"
                 + (f" (score {best['score']:.3f})" if best.get("score") is not None else "")
                 + f"; failing it: {', '.join(best['excluded']) or 'none'}")
    lines.append("faithfulness (ROAD, higher is better):")
    for row in result["faithfulness"]["scores"]:
        lines.append(f"  {row['method']:<12} {row['layer'] or '':<7} {row['mean']:+.3f} "
                     f"[{row['interval'][0]:+.3f}, {row['interval'][1]:+.3f}]")
    lines.append("sanity: rank correlation with the trained model's maps after randomising "
                 + " / ".join(result["sanity"]["steps"]) + ":")
    for row in result["sanity"]["rows"]:
        lines.append(f"  {row['method']:<10} {row['layer']}: "
                     + " / ".join(f"{row[step]['mean']:.2f}" for step in result["sanity"]["steps"]))
    if result["slow_sample"]:
        lines.append(f"on a sample of {result['slow_sample']['slices']} slices ({result['slow_sample']['layer']}):")
        for method, figures in result["slow_sample"]["methods"].items():
            lines.append(f"  {method:<10} peak {figures['peak_in_dilated']['mean']:.2f}, energy "
                         f"{figures['energy_in_dilated']['mean']:.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
