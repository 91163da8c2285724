"""How good are the heatmaps? Every CAM method and layer against the tumour masks of an evaluation run, how
faithful each is to the model, and whether it survives the model's randomisation.

* **Localisation by method and layer**: the run's tumour slices with masks, explained for their true class by
  every fast method at every layer asked for, each heatmap scored as :mod:`core.masks` scores the run's own
  (peak in the grown tumour, energy inside, IoU), per class with bootstrap intervals. Score-CAM, which needs one
  forward pass per channel, is measured with the others on a stated sample.
* **Faithfulness** (ROAD, Rong et al. 2022, as ``pytorch_grad_cam.metrics.road`` implements it): the pixels a
  heatmap ranks most relevant are removed by noisy linear imputation, then the least relevant; the score is half
  the difference of the two drops of the true class's probability, averaged over removal levels. Higher means the
  heatmap ranks pixels by what the model uses. A random map and the centre blob are scored beside the methods.
* **Sanity** (Adebayo et al. 2018, cascading randomisation): the head and ``layer4`` get random weights, then
  every layer below too, and each method's heatmaps are compared with the trained model's (Spearman rank
  correlation over the pixels). A map that stays alike when the model it explains is destroyed shows the
  image's edges, not the model.

``python -m training.explanations --run RUN`` writes the result into the run as ``explanations.json``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core.data import CLASSES
from core.explain import explain_batch
from core.masks import DILATION_PX, SCORES, centre_blob, mask_summary, read_mask, score_against_mask

ROAD_PERCENTILES = (20, 40, 60, 80)
SANITY_STEPS = {"head and layer4": ("fc", "layer4"),
                "every layer": ("fc", "layer4", "layer3", "layer2", "layer1", "conv1")}
SANITY_GRID = 56  # heatmaps are compared at this resolution


class ExplanationsError(ValueError):
    """The heatmaps of a run cannot be measured as asked; the message says why."""


@dataclass
class Case:
    path: str           # as the run names it
    file: Path          # where the scan is
    mask: Path          # where its mask is
    label: int


def cases_of(run, data_root: Path, mask_root: Path) -> list[Case]:
    """The run's tumour slices that were scored against a mask."""
    from core.masks import mask_path

    table = run.masks
    if table is None or not len(table):
        raise ExplanationsError(f"{run.path} has no scores against tumour masks; evaluate a dataset with masks "
                                "first")
    evaluated = run.info["dataset"].get("evaluated", ".")
    out = []
    for path, label in zip(table["path"], table["label"]):
        relative = path if evaluated == "." else path[len(evaluated) + 1:]
        mask = mask_path(mask_root, relative)
        if mask is not None:
            out.append(Case(path, data_root / path, mask, CLASSES.index(label)))
    return out


def sample(cases: Sequence[Case], per_class: int, seed: int) -> list[Case]:
    """Up to ``per_class`` cases of each class, drawn with a seed."""
    rng = np.random.default_rng(seed)
    chosen = []
    for label in sorted({c.label for c in cases}):
        members = [c for c in cases if c.label == label]
        chosen += [members[i] for i in sorted(rng.permutation(len(members))[:per_class])]
    return chosen


def _batches(classifier, cases: Sequence[Case], batch_size: int):
    """(cases, normalised batch, masks) in batches."""
    from core.sources import read_image

    for start in range(0, len(cases), batch_size):
        part = cases[start:start + batch_size]
        images = [read_image(c.file) for c in part]
        masks = [read_mask(c.mask, image.width, image.height, image.info) for c, image in zip(part, images)]
        yield part, classifier.preprocess(images), masks


def heatmaps(classifier, cases: Sequence[Case], method: str, layer: str, batch_size: int = 16,
             progress: Callable[[int], object] | None = None) -> tuple[np.ndarray, list[np.ndarray], torch.Tensor]:
    """Heatmaps of the true class for the cases, their masks, and the normalised inputs."""
    maps, masks, inputs = [], [], []
    for part, batch, part_masks in _batches(classifier, cases, batch_size):
        maps.append(explain_batch(classifier, batch, method, layer, targets=[c.label for c in part]).heatmaps)
        masks += part_masks
        inputs.append(batch)
        if progress is not None:
            progress(len(part))
    return np.concatenate(maps), masks, torch.cat(inputs)


def localisation_table(cases: Sequence[Case], maps: np.ndarray, masks: list[np.ndarray],
                       dilation_px: float = DILATION_PX) -> pd.DataFrame:
    rows = [{"path": c.path, "label": CLASSES[c.label], **score_against_mask(m, mask, dilation_px)}
            for c, m, mask in zip(cases, maps, masks)]
    return pd.DataFrame(rows)


def summarise(table: pd.DataFrame, resamples: int, confidence: float, seed: int, dilation_px: float = DILATION_PX
              ) -> dict:
    """Per class: the heatmap's figures with intervals (the centre blob's are the run's own)."""
    summary = mask_summary(table, resamples, confidence, seed, dilation_px)
    keep = ("images", "patients", *SCORES)
    return {"overall": {k: summary["overall"][k] for k in keep},
            "per_class": {name: {k: block[k] for k in keep} for name, block in summary["per_class"].items()},
            "blob": {name: {k: block[f"blob_{k}"] for k in SCORES} for name, block in summary["per_class"].items()}}


# Faithfulness


def _probability_model(classifier) -> Callable[[torch.Tensor], torch.Tensor]:
    from core.runtime import autocast

    def forward(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), autocast(classifier.device, classifier.precision):
            logits = classifier.model(batch.to(classifier.device).contiguous(memory_format=torch.channels_last))
        return classifier.probabilities(logits.float().cpu())
    return forward


def road_scores(classifier, inputs: torch.Tensor, maps: np.ndarray, labels: Sequence[int],
                percentiles: Sequence[int] = ROAD_PERCENTILES) -> np.ndarray:
    """ROAD per image (higher: the map ranks pixels by what the model uses), with pytorch-grad-cam's imputer."""
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    metric = ROADCombined(percentiles=list(percentiles))
    targets = [ClassifierOutputTarget(int(k)) for k in labels]
    return np.asarray(metric(inputs, untied(maps), targets, _probability_model(classifier)),
                      dtype=np.float64).reshape(-1)


def untied(maps: np.ndarray, seed: int = 0) -> np.ndarray:
    """Maps whose equal values (a CAM is exactly zero wherever the evidence is negative: a third to two thirds of
    a map) are put in a fixed random order. pytorch-grad-cam's ROAD removes the pixels under a percentile of the
    map; with ties at zero that percentile is zero for every level under the zero share, and every level would
    remove the same pixels. The nudge is a millionth of each map's range: it orders ties, not values."""
    maps = np.asarray(maps, dtype=np.float64)
    spread = np.ptp(maps.reshape(len(maps), -1), axis=1).reshape(-1, 1, 1) if len(maps) else 0.0
    noise = np.random.default_rng(seed).random(maps.shape[1:])
    return (maps + 1e-6 * np.where(spread > 0, spread, 1.0) * noise).astype(np.float32)


def baseline_maps(kind: str, count: int, size: int, seed: int) -> np.ndarray:
    if kind == "centre blob":
        return np.repeat(centre_blob(size)[None].astype(np.float32), count, axis=0)
    smooth = torch.rand((count, 1, 7, 7), generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(smooth, size=(size, size), mode="bilinear").squeeze(1).numpy()


# Sanity


def randomised(classifier, parts: Sequence[str], seed: int):
    """A copy of the classifier whose named parts have fresh random weights (Kaiming normal, zero biases: the
    network's batch norm is folded into its convolutions)."""
    twin = copy.deepcopy(classifier)
    generator = torch.Generator().manual_seed(seed)
    for name in parts:
        for module in getattr(twin.model, name).modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = module.weight[0].numel()
                fresh = torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5
                module.weight.data.copy_(fresh.to(module.weight.dtype))
                if module.bias is not None:
                    module.bias.data.zero_()
    return twin


def rank_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of each pair of maps, compared at :data:`SANITY_GRID` pixels a side."""
    from scipy.stats import spearmanr

    def small(maps):
        tensor = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[:, None]
        return torch.nn.functional.adaptive_avg_pool2d(tensor, SANITY_GRID).reshape(len(maps), -1).numpy()

    out = []
    for x, y in zip(small(a), small(b)):
        value = spearmanr(x, y)[0] if x.std() > 0 and y.std() > 0 else 0.0
        out.append(0.0 if np.isnan(value) else float(value))
    return np.asarray(out)
