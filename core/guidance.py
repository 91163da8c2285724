"""Mask guidance: teaching the network where the evidence for a tumour should lie.

A model trained on labels alone may find a tumour class by anything that comes with it (the scanner, the slice
level, the skull); its heatmaps then show those shortcuts. Guidance adds tumour outlines as a second signal.

**Which slices guide, and which must never be trained on.** The outlines come from a dataset with masks (the
figshare slices) and its localisation split (:mod:`core.localisation_split`):

* its ``validation`` and ``test`` slices score the model's localisation, so they, and every copy of them among
  the training images (byte-, pixel- or perceptually identical, the audit's test), are left out of training;
* its ``train`` slices guide. A training image that is a copy of one (the Kaggle release re-published most
  figshare meningiomas and pituitary tumours) receives that slice's outline when the two line up: the slice,
  resized to the image, must correlate with it at :data:`ALIGNMENT` or more, else the outline is not transferred
  (a crop or a shift would put it in the wrong place). A guiding slice with no copy among the training images
  and none among the release's test images is added to training with its outline (most figshare gliomas).

**The loss.** For a ResNet with global average pooling and a linear head, Grad-CAM at ``layer4`` is the class
activation map: the head's weights for the class times the 7 x 7 activations, negative evidence set to zero.
:func:`outside_share` is the share of the true class's evidence (the map before the ReLU, resized to the image as
Grad-CAM resizes it and spread over its pixels by a softmax) lying outside the outline grown by a margin, per guided
image; training adds ``mask_weight`` times its
mean to the cross-entropy (in the spirit of GAIN, Li et al. 2018, and of HiResCAM's mask loss, Draelos and Carin
2020). Images without an outline, and every no-tumour image, are trained on their label alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from core.audit import NEAR_DUPLICATE_BITS, fingerprint_files, nearest_matches, phash_array
from core.data import CLASSES, DatasetError, Sample, find_split_dirs, read_listing, scan_class_folders
from core.localisation_split import SIDES, copies_of
from core.masks import find_mask_root, mask_path

log = logging.getLogger(__name__)

ALIGNMENT = 0.9          # correlation of a slice (resized) with its copy that a transferred outline needs
ALIGNMENT_SIDE = 64      # compared at this size
GUIDE_PREFIX = "guide/"  # how added slices are named in the checkpoint's file lists


class GuidanceError(ValueError):
    """Guidance cannot be set up as asked; the message says why."""


@dataclass
class Guidance:
    masks: dict[int, Path] = field(default_factory=dict)   # sample index -> outline file
    record: dict = field(default_factory=dict)              # what the checkpoint says of it


def read_split(folder: str | Path) -> dict[str, set[str]]:
    """The sides of a localisation split folder (train.txt, validation.txt, test.txt)."""
    folder = Path(folder).expanduser()
    sides = {}
    for side in SIDES:
        file = folder / f"{side}.txt"
        if not file.is_file():
            raise GuidanceError(f"the localisation split {folder} has no {side}.txt (python -m "
                                "training.localisation_split writes one)")
        sides[side] = read_listing(file, f"the localisation split's {side}.txt")
    return sides


def aligned(slice_path: Path, copy_path: Path) -> float:
    """The correlation of a slice, resized to its copy's size, with the copy (both grey, at a small size); 0 for
    a copy of other proportions (a crop: the outline cannot be moved onto it by resizing)."""
    from core.sources import read_image

    a = read_image(slice_path).convert("L")
    b = read_image(copy_path).convert("L")
    if abs(a.width / a.height - b.width / b.height) > 0.01:
        return 0.0
    a = np.asarray(a.resize(b.size, Image.Resampling.BILINEAR).resize((ALIGNMENT_SIDE,) * 2), dtype=np.float64)
    b = np.asarray(b.resize((ALIGNMENT_SIDE,) * 2), dtype=np.float64)
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def prepare_guidance(data, mask_data: str, masks: str | None, split: str, bits: int = NEAR_DUPLICATE_BITS,
                     progress=None) -> Guidance:
    """Leave copies of held-out slices out of ``data``'s training images, transfer outlines to copies of guiding
    slices, and add the guiding slices that have no copy (``data``: :class:`core.split.PreparedData`, changed in
    place). Returns the outline of each guided training image and the record of what was done."""
    root = Path(mask_data).expanduser()
    if not root.is_dir():
        raise GuidanceError(f"--mask-data {root} is not a folder")
    mask_root = find_mask_root(root, masks)
    if mask_root is None:
        raise GuidanceError(f"no mask folder beside {root}; give one with --masks")
    sides = read_split(split)
    tree = scan_class_folders(root)
    by_path = {s.relpath: s for s in tree.samples}
    unknown = sorted((sides["train"] | sides["validation"] | sides["test"]) - set(by_path))
    if unknown:
        raise GuidanceError(f"the split names {len(unknown)} images that are not in {root}, e.g. {unknown[0]}")
    held = [by_path[p] for p in sorted(sides["validation"] | sides["test"])]
    guides = [(s, m) for s in (by_path[p] for p in sorted(sides["train"])) if s.class_name != "notumor"
              for m in [mask_path(mask_root, s.relpath)] if m is not None]
    held_prints = _prints([s.path for s in held], progress)
    guide_prints = _prints([s.path for s, _ in guides], progress)

    train = np.asarray(data.train_idx)
    excluded = copies_of(held_prints, [data.fingerprints[i] for i in train], bits)
    data.train_idx = train[~excluded]
    # The split grouped slices at its own distance; at a looser one, a guiding slice may copy a held-out one.
    near_held = copies_of(held_prints, guide_prints, bits)
    guides = [g for g, near in zip(guides, near_held) if not near]
    guide_prints = [f for f, near in zip(guide_prints, near_held) if not near]
    guidance = Guidance()
    transferred, misaligned = _transfer(data, guides, guide_prints, bits, guidance)
    added = _add_uncopied(data, guides, guide_prints, bits, guidance, progress)
    guidance.record = {
        "mask_data": str(mask_data), "masks": mask_root.name, "split": str(split),
        "left_out_copies_of_held_out_slices": int(excluded.sum()),
        "guides_left_out_as_copies_of_held_out_slices": int(near_held.sum()),
        "transferred": _counts([data.samples[i] for i in transferred]),
        "not_aligned": _counts([data.samples[i] for i in misaligned]), "alignment": ALIGNMENT,
        "added": _counts([data.samples[i] for i in added]),
        "guided_images": len(guidance.masks)}
    log.info("guidance: %d training images left out as copies of held-out slices; outlines transferred to %d "
             "copies (%d not aligned), %d slices added", excluded.sum(), len(transferred), len(misaligned), len(added))
    return guidance


def _prints(paths: list[Path], progress) -> list:
    prints, errors = fingerprint_files(paths, progress=progress)
    if errors:
        first = min(errors)
        raise DatasetError(f"{paths[first]} cannot be read ({errors[first]})")
    return prints


def _counts(samples: list[Sample]) -> dict[str, int]:
    return {name: sum(s.class_name == name for s in samples) for name in CLASSES if name != "notumor"}


def _transfer(data, guides, guide_prints, bits: int, guidance: Guidance) -> tuple[list[int], list[int]]:
    """Give each training image that copies a guiding slice of its class that slice's outline, when they align."""
    train = list(data.train_idx)
    if not train or not guides:
        return [], []
    distance, nearest = nearest_matches(phash_array([data.fingerprints[i] for i in train]), phash_array(guide_prints))
    transferred, misaligned = [], []
    for index, d, j in zip(train, distance, nearest):
        slice_sample, outline = guides[int(j)]
        if d > bits or data.samples[index].label != slice_sample.label:
            continue
        if aligned(slice_sample.path, data.samples[index].path) >= ALIGNMENT:
            guidance.masks[index] = outline
            transferred.append(index)
        else:
            misaligned.append(index)
    return transferred, misaligned


def _add_uncopied(data, guides, guide_prints, bits: int, guidance: Guidance, progress) -> list[int]:
    """Add the guiding slices with no copy among the training images nor the release's test images."""
    others = list(data.fingerprints)
    _, testing = find_split_dirs(data.dataset_root)
    if testing is not None:
        others += _prints([s.path for s in scan_class_folders(testing).samples], progress)
    copied = copies_of(others, guide_prints, bits)  # guide j copies (or is copied by) one of the others
    added = []
    next_group = int(np.max(data.groups)) + 1 if len(data.groups) else 0
    for (sample, outline), fingerprint, is_copy in zip(guides, guide_prints, copied):
        if is_copy:
            continue
        index = len(data.samples)
        data.samples.append(Sample(sample.path, sample.label, GUIDE_PREFIX + sample.relpath))
        data.fingerprints.append(fingerprint)
        data.groups = np.append(data.groups, next_group)
        next_group += 1
        data.train_idx = np.append(data.train_idx, index)
        guidance.masks[index] = outline
        added.append(index)
    return added


def class_activation_maps(activations: torch.Tensor, head: torch.nn.Linear, labels: torch.Tensor) -> torch.Tensor:
    """The class activation map at the last block of a pooled-linear network, before Grad-CAM's ReLU: the head's
    weights for each image's class times its activations, summed over channels (n, h, w). Its mean plus the bias is
    the class's logit; Grad-CAM at ``layer4`` is this map with negative evidence set to zero."""
    weights = head.weight[labels].to(activations.dtype)  # (n, channels)
    return torch.einsum("nchw,nc->nhw", activations, weights).float()


def outside_share(maps: torch.Tensor, masks: torch.Tensor, margin_px: float) -> torch.Tensor:
    """Per image, the share of the class's evidence outside the outline grown by ``margin_px`` (at 224 px), taken on
    the grid a reader sees: ``maps`` (n, h, w) from :func:`class_activation_maps` are resized to the outlines'
    grid as Grad-CAM resizes its heatmap (bilinear), and the evidence is spread over its pixels by a softmax;
    ``masks`` (n, 1, H, W) are 0 and 1 on the network's input grid.

    On that grid, not the 7 x 7 map's: a second guided run that counted every 32-pixel cell touched by the outline
    grown by 16 px as inside drove that share to nothing on held-out pituitary tumours while the heatmap's peak lay
    in the tumour for only about half of them (a cell's centre, where the resized map peaks, can lie well outside a
    small tumour that touches the cell).

    A softmax, not Grad-CAM's ReLU and sum: a share of positive evidence can be driven to zero by having none
    (a map that is negative everywhere, which still gives the class its logit through the others' and the bias); a
    first mask-guided run found exactly that for gliomas, whose Grad-CAM became blank. The softmax ignores a shift
    of the whole map and always sums to one, so the only way to lower it is to make the evidence inside the outline
    larger than outside."""
    size = masks.shape[-1]
    radius = int(round(margin_px * size / 224))
    grown = F.max_pool2d(masks.float(), 2 * radius + 1, stride=1, padding=radius) if radius > 0 else masks.float()
    seen = F.interpolate(maps[:, None].float(), size=masks.shape[-2:], mode="bilinear", align_corners=False)
    spread = torch.softmax(seen.flatten(1), dim=1)
    return (spread * (1 - grown.flatten(1))).sum(dim=1)
