"""Augmentation for what differs between scanners and hospitals, from the field's own library (TorchIO).

torchvision's geometric transforms (:func:`core.data.training_augmentation`) cover how a patient lies in the
scanner. What changes from one hospital to the next is the image's appearance: the receive coil's smooth shading
(bias field), the contrast a sequence and its export give (gamma, the grey-level window), noise, resolution (blur,
thick slices reformatted into the plane), and artefacts of patient motion in k-space (motion, ghosting). A model
trained on one release learns that release's look; these transforms show it other looks of the same anatomy.

Each transform changes grey levels only: a pixel stays where it was, so the label and a tumour outline stay
aligned with the image (motion and ghosting move copies of the anatomy around as faint echoes, not the anatomy
itself). They act on the uint8 (3, H, W) tensors the data loader gives (grey levels repeated in three channels),
on one grey channel in [0, 1] as TorchIO expects of a 2-D slice (a volume of depth 1), and pass masks through
untouched.
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

# What each name does, in the order they act (the order an image is formed in: the coil's shading, then k-space,
# then the resolution it is reconstructed at, then noise, then how grey levels are exported).
MRI_TRANSFORMS = {
    "bias": "a smooth multiplicative shading, as a receive coil gives (TorchIO RandomBiasField, coefficients 0.4)",
    "motion": "patient motion during the acquisition, two movements of up to 5 degrees and 5 pixels "
              "(TorchIO RandomMotion)",
    "ghosting": "2 to 6 faint ghosts of the anatomy along one axis, as pulsation or motion give "
                "(TorchIO RandomGhosting, intensity 0.1 to 0.4)",
    "anisotropy": "a thick-slice acquisition reformatted into the plane: one axis down-sampled 1.5 to 4 times and "
                  "back (TorchIO RandomAnisotropy)",
    "blur": "a softer reconstruction, Gaussian blur of 0.25 to 1 pixel (TorchIO RandomBlur)",
    "noise": "Gaussian noise of up to 3% of the grey range (TorchIO RandomNoise)",
    "gamma": "another contrast curve, gamma between 0.74 and 1.35 (TorchIO RandomGamma)",
    "window": "another export window: the grey levels stretched between a random low (0th to 2nd) and high (98th "
              "to 100th) percentile of the slice",
}
MRI_TRANSFORM_PROBABILITY = 0.25


def parse_mri_transforms(text: str) -> tuple[str, ...]:
    """'none', 'all' or a comma-separated list of :data:`MRI_TRANSFORMS` names -> the names, in acting order.
    Raises ValueError naming what is unknown."""
    words = [w.strip().lower() for w in str(text).split(",") if w.strip()]
    if words in ([], ["none"]):
        return ()
    if words == ["all"]:
        return tuple(MRI_TRANSFORMS)
    unknown = [w for w in words if w not in MRI_TRANSFORMS]
    if unknown:
        raise ValueError(f"unknown MRI transform {', '.join(unknown)}; choose none, all, or from "
                         f"{', '.join(MRI_TRANSFORMS)}")
    return tuple(name for name in MRI_TRANSFORMS if name in words)


class RandomWindow:
    """Grey levels stretched between a random low and high percentile of the slice, as another export would
    window it (TorchIO's RescaleIntensity with percentiles drawn anew for each image)."""

    def __init__(self, low: tuple[float, float] = (0.0, 2.0), high: tuple[float, float] = (98.0, 100.0)):
        self.low, self.high = low, high

    def __call__(self, subject):
        import torchio as tio

        draw = torch.rand(2).tolist()
        low = self.low[0] + draw[0] * (self.low[1] - self.low[0])
        high = self.high[0] + draw[1] * (self.high[1] - self.high[0])
        return tio.RescaleIntensity(out_min_max=(0, 1), percentiles=(low, high))(subject)


def _torchio_transform(name: str):
    import torchio as tio

    return {
        "bias": lambda: tio.RandomBiasField(coefficients=0.4, order=3),
        "motion": lambda: tio.RandomMotion(degrees=5, translation=5, num_transforms=2),
        "ghosting": lambda: tio.RandomGhosting(num_ghosts=(2, 6), axes=(0, 1), intensity=(0.1, 0.4)),
        "anisotropy": lambda: tio.RandomAnisotropy(axes=(0, 1), downsampling=(1.5, 4)),
        "blur": lambda: tio.RandomBlur(std=(0.25, 1.0)),
        "noise": lambda: tio.RandomNoise(std=(0, 0.03)),
        "gamma": lambda: tio.RandomGamma(log_gamma=(-0.3, 0.3)),
        "window": RandomWindow,
    }[name]()


class MriAppearance(v2.Transform):
    """The chosen :data:`MRI_TRANSFORMS`, each applied with probability ``p``, in their acting order; an image's
    grey levels change, a mask passes through unchanged."""

    def __init__(self, names: tuple[str, ...], p: float = MRI_TRANSFORM_PROBABILITY):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError("the probability of each MRI transform must be between 0 and 1")
        self.names = tuple(names)
        self.p = p
        self.steps = [_torchio_transform(name) for name in self.names]

    def transform(self, inpt, params):
        if isinstance(inpt, tv_tensors.Mask) or not self.steps:
            return inpt
        chosen = [step for step in self.steps if torch.rand(()) < self.p]
        if not chosen:
            return inpt
        return self._apply(inpt, chosen)

    @staticmethod
    def _apply(image: torch.Tensor, steps) -> torch.Tensor:
        import torchio as tio

        grey = image.float().mean(dim=0, keepdim=True) / 255.0          # (1, H, W): the channels are copies
        subject = tio.Subject(image=tio.ScalarImage(tensor=grey[..., None]))  # TorchIO's (C, W, H, D), D = 1
        for step in steps:
            subject = step(subject)
        out = subject["image"].data[..., 0].clamp(0, 1)
        pixels = torch.round(out * 255).to(torch.uint8).expand(image.shape[0], -1, -1).clone()
        return tv_tensors.wrap(pixels, like=image) if isinstance(image, tv_tensors.Image) else pixels


def mri_augmentation(names: tuple[str, ...], p: float = MRI_TRANSFORM_PROBABILITY) -> MriAppearance | None:
    """The appearance transforms, or None when none is chosen."""
    return MriAppearance(names, p) if names else None
