"""How closely the stored compact covariance of the familiarity model follows the full one.

    python bench/familiarity_rank.py [--checkpoint outputs/lrdecay-val] [--ranks 64 128 256 384]

The checkpoint must have a validation split (a run of the recipe trained with one). Its pooled layer4 features are
computed for its training and validation images (about 3 minutes on a 2-core CPU); the full Ledoit-Wolf covariance
and the compact one (``core.familiarity.fit_gaussian`` at each rank, directions in float16 as stored) are fitted
on the training features, and each form's distances are compared on the validation images: rank correlation, and
how many of the scans each form's own 1% threshold flags are flagged by both. Nothing outside the checkpoint's own
training and validation images is read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def full_distances(features: np.ndarray, means: np.ndarray, covariance: np.ndarray) -> np.ndarray:
    """The Mahalanobis distance to the nearest class mean under the full covariance, its whitening matrix rounded
    to float16 as the checkpoints before the compact form stored it."""
    values, vectors = np.linalg.eigh(covariance)
    whitening = torch.from_numpy((vectors / np.sqrt(values)) @ vectors.T).half().double().numpy()
    z, centres = features.astype(np.float64) @ whitening, means @ whitening
    return np.sqrt(((z[:, None] - centres[None]) ** 2).sum(-1).min(axis=1))


def main() -> None:
    from scipy.stats import spearmanr
    from sklearn.covariance import LedoitWolf

    from core.calibration import training_images, validation_images
    from core.checkpoint import load_checkpoint
    from core.familiarity import FLAG_SHARE, Familiarity, fit_gaussian, pooled_outputs
    from core.inference import classifier_from_checkpoint

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(ROOT / "outputs" / "lrdecay-val"))
    parser.add_argument("--data", default=None, help="the dataset root, when it has moved since training")
    parser.add_argument("--ranks", type=int, nargs="+", default=[64, 128, 256, 384])
    args = parser.parse_args()

    loaded = load_checkpoint(args.checkpoint)
    if not loaded.metadata.get("data", {}).get("val_files"):
        sys.exit(f"{args.checkpoint} has no validation split to compare on")
    classifier = classifier_from_checkpoint(loaded)
    paths, labels = training_images(loaded.metadata, args.data)
    train = pooled_outputs(classifier, paths)[0]
    validation = pooled_outputs(classifier, validation_images(loaded.metadata, args.data)[0])[0]
    labels = np.asarray(labels)
    classes = len(classifier.classes)

    means = np.stack([train[labels == k].mean(axis=0) for k in range(classes)]).astype(np.float64)
    covariance = LedoitWolf(assume_centered=True).fit(train - means[labels]).covariance_
    full = full_distances(validation, means, covariance)
    flagged_full = full > np.quantile(full, 1 - FLAG_SHARE)
    total_variance = np.trace(covariance)
    print(f"{len(train)} training and {len(validation)} validation images, {train.shape[1]} features; the full "
          f"form's threshold flags {flagged_full.sum()} validation images")
    print("rank  variance kept  Spearman (validation)  flagged by both  size in float16")
    for rank in args.ranks:
        fitted_means, directions, variances, residual, _ = fit_gaussian(train, labels, classes, rank=rank)
        model = Familiarity.of(fitted_means, torch.from_numpy(directions).half(), variances, residual, None)
        compact = model.distances(validation)
        flagged = compact > np.quantile(compact, 1 - FLAG_SHARE)
        print(f"{directions.shape[1]:>4}  {variances.sum() / total_variance:>13.3f}  "
              f"{spearmanr(full, compact)[0]:>21.4f}  {int((flagged & flagged_full).sum()):>8} of {flagged.sum():<4}  "
              f"{directions.size * 2 / 1e6:>10.2f} MB")


if __name__ == "__main__":
    main()
