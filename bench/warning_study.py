"""Which warning falls on the answers a model gets wrong on a source it never saw? A study on a source-held-out run.

    python bench/warning_study.py --checkpoint outputs/ablation/a-baseline

The run must have been trained with a whole source as its validation split (``--val-files``, for example
assets/splits/kaggle-sources/sartaj.txt). Three sets of images go through the network once (pooled layer4 features
and logits; cached in ``warning_features.npz`` beside the checkpoint):
  training   the images the network was trained on, the mask-guidance slices included
  in-source  held-out scans of the training sources: the localisation split's validation side
             (assets/splits/figshare-localisation/validation.txt: whole figshare patient groups and Br35H images
             that no model here trained on), read from --mask-data
  new source the run's own validation split: a source the network never saw
The familiarity model is fitted on the first set, each warning's threshold is set on the second (it flags
core.familiarity.FLAG_SHARE of them), and the third says how many wrong and right answers each warning falls on:
the distance alone, the probability alone, and the two chosen together as core.familiarity.fit does. Nothing here
reads Testing or lgg-tcga-glioma.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

SETS = ("train", "held", "val")


def guidance_images(metadata: dict, mask_data: Path) -> tuple[list[Path], np.ndarray]:
    from core.data import CLASSES, canonical_class
    from core.guidance import GUIDE_PREFIX

    files = [f for f in metadata["data"].get("seen_files", []) if f.startswith(GUIDE_PREFIX)]
    return ([mask_data / f.removeprefix(GUIDE_PREFIX) for f in files],
            np.array([CLASSES.index(canonical_class(f.split("/")[1])) for f in files], dtype=int))


def in_source_images(mask_data: Path) -> tuple[list[Path], np.ndarray]:
    from core.data import CLASSES, canonical_class

    names = (ROOT / "assets/splits/figshare-localisation/validation.txt").read_text().split()
    return [mask_data / n for n in names], np.array([CLASSES.index(canonical_class(n.split("/")[0])) for n in names])


def outputs(classifier, metadata: dict, mask_data: Path, cache: Path) -> dict[str, tuple[dict, np.ndarray]]:
    """Features and logits of the three sets, from the cache when it is there."""
    from core.calibration import training_images, validation_images
    from core.familiarity import pooled_outputs

    if not cache.is_file():
        train, train_labels = training_images(metadata)
        guide, guide_labels = guidance_images(metadata, mask_data)
        listed = {"train": (list(train) + guide, np.concatenate([train_labels, guide_labels])),
                  "held": in_source_images(mask_data), "val": validation_images(metadata)}
        saved = {}
        for name, (paths, labels) in listed.items():
            print(f"{name}: {len(paths)} images", flush=True)
            saved[f"{name}.l4"], saved[f"{name}.logits"] = pooled_outputs(classifier, paths)
            saved[f"{name}_labels"] = np.asarray(labels)
        np.savez(cache, **saved)
    saved = dict(np.load(cache, allow_pickle=False))
    return {name: ({"l4": saved[f"{name}.l4"], "logits": saved[f"{name}.logits"]}, saved[f"{name}_labels"])
            for name in SETS}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a run trained with a whole source as validation")
    parser.add_argument("--mask-data", default=str(ROOT.parent / "shared/datasets/figshare-cheng-br35h"),
                        help="the figshare + Br35H dataset the in-source held-out scans come from")
    args = parser.parse_args(argv)

    from sklearn.metrics import roc_auc_score

    from core import load_classifier
    from core.familiarity import FLAG_SHARE, fit, top_doubt

    classifier = load_classifier(args.checkpoint, precision="fp32")
    run = Path(classifier.path).parent
    sets = outputs(classifier, classifier.metadata, Path(args.mask_data), run / "warning_features.npz")
    (train, train_labels), (held, held_labels), (new, new_labels) = (sets[n] for n in SETS)
    temperature = classifier.temperature
    fitted = fit(train["l4"], train_labels, len(classifier.classes), (held["l4"], held["logits"]),
                 {"split": "training"}, temperature)
    model = fitted.model
    wrong = new["logits"].argmax(1) != new_labels
    wrong_glioma = wrong & (new_labels == classifier.classes.index("glioma"))
    for name, (outputs_, labels) in (("in-source held-out (figshare tumours, Br35H no-tumour)", sets["held"]),
                                      ("new source", sets["val"])):
        predicted = outputs_["logits"].argmax(1)
        recall = " ".join(f"{c} {np.mean(predicted[labels == k] == k):.3f} ({int((labels == k).sum())})"
                          for k, c in enumerate(classifier.classes) if (labels == k).any())
        print(f"{name}: accuracy {np.mean(predicted == labels):.4f} of {len(labels)}; recall {recall}")
    print(f"{run.name}: temperature {temperature:.3f}; in-source held-out {len(held_labels)} scans "
          f"({int((held['logits'].argmax(1) != held_labels).sum())} wrong); new source {len(new_labels)} scans, "
          f"{int(wrong.sum())} wrong ({int(wrong_glioma.sum())} of them gliomas)")
    held_distance, new_distance = model.distances(held["l4"]), model.distances(new["l4"])
    held_doubt, new_doubt = top_doubt(held["logits"], temperature), top_doubt(new["logits"], temperature)
    rows = [("distance alone", held_distance, new_distance), ("probability alone", held_doubt, new_doubt),
            ("both, chosen together (core.familiarity)", model.scores(held["l4"], held["logits"]),
             model.scores(new["l4"], new["logits"]))]
    print(f"each warning set to flag {FLAG_SHARE:.1%} of the in-source held-out scans")
    print(f"{'warning':<42} {'in-source':>9} {'wrong':>14} {'wrong gliomas':>14} {'right':>7} {'AUC':>6}")
    for name, held_score, new_score in rows:
        threshold = 1.0 if name.startswith("both") else np.quantile(held_score, 1 - FLAG_SHARE)
        flagged = ~(new_score <= threshold)
        print(f"{name:<42} {np.mean(~(held_score <= threshold)):>9.1%} "
              f"{f'{flagged[wrong].sum()}/{wrong.sum()} {flagged[wrong].mean():.1%}':>14} "
              f"{f'{flagged[wrong_glioma].sum()}/{wrong_glioma.sum()}':>14} {flagged[~wrong].mean():>7.1%} "
              f"{roc_auc_score(wrong, np.nan_to_num(new_score, nan=np.inf)):>6.3f}")
    record = fitted.record
    print(f"chosen together: distance threshold {record['distance_threshold']:.2f}, probability floor "
          f"{record['probability_floor']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
