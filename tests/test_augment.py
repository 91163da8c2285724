"""Each MRI appearance transform (core/augment.py), applied to a synthetic slice: it changes what it should, keeps
the grey levels where they were (so the label and a tumour outline stay aligned), and passes masks through."""

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from conftest import synthetic_slice
from core.augment import MRI_TRANSFORMS, MriAppearance, parse_mri_transforms
from core.data import training_augmentation


def slice_tensor(size=96, seed=1) -> torch.Tensor:
    """A synthetic slice as the data loader gives it: uint8, grey levels repeated in three channels."""
    grey = torch.from_numpy(synthetic_slice(0, seed, size))
    return grey.expand(3, -1, -1).clone()


def square(size=96) -> torch.Tensor:
    """A bright square on black: what lies outside the object is exactly zero before."""
    image = torch.zeros((3, size, size), dtype=torch.uint8)
    image[:, 32:64, 32:64] = 200
    return image


def outline(size=96) -> tv_tensors.Mask:
    mask = torch.zeros((1, size, size), dtype=torch.uint8)
    mask[0, 20:40, 25:45] = 1
    return tv_tensors.Mask(mask)


def apply(name: str, image: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    out, mask = MriAppearance((name,), p=1.0)(tv_tensors.Image(image), outline(image.shape[-1]))
    return torch.as_tensor(out), torch.as_tensor(mask)


def gradient_energy(image: torch.Tensor, axis: int) -> float:
    """Mean squared difference between neighbours along ``axis``: what smoothing lowers (a sum of absolute
    differences would not: a blurred step climbs as far)."""
    grey = image[0].float()
    return float((grey.diff(dim=axis) ** 2).mean())


@pytest.mark.parametrize("name", list(MRI_TRANSFORMS))
def test_every_transform_changes_the_slice_keeps_its_form_and_leaves_the_mask_alone(name):
    image = slice_tensor()
    out, mask = apply(name, image)
    assert out.shape == image.shape and out.dtype == torch.uint8
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])  # still one grey level per pixel
    assert not torch.equal(out, image)
    assert torch.equal(mask, torch.as_tensor(outline()))


@pytest.mark.parametrize("seed", range(4))
def test_bias_field_shades_smoothly(seed):
    """On an even grey field, a bias field makes a slow shading: large across the slice, small between neighbours
    (a tenth of its range at most, where noise would jump by all of it)."""
    image = torch.full((3, 96, 96), 128, dtype=torch.uint8)
    out, _ = apply("bias", image, seed)
    grey = out[0].float()
    spread = float(grey.max() - grey.min())
    assert spread > 10
    assert max(float(grey.diff(dim=0).abs().max()), float(grey.diff(dim=1).abs().max())) <= 0.1 * spread


def test_gamma_and_window_keep_the_order_of_grey_levels():
    """A contrast curve or another window maps grey levels through one rising function: no pixel overtakes
    another, so the anatomy stays where it was."""
    ramp = torch.arange(96 * 96, dtype=torch.float32).reshape(96, 96) / (96 * 96) * 255
    image = ramp.round().to(torch.uint8).expand(3, -1, -1).clone()
    for name, seed in (("gamma", 1), ("window", 2)):
        out, _ = apply(name, image, seed)
        before, after = image[0].flatten().float(), out[0].flatten().float()
        order = torch.argsort(before, stable=True)
        assert (after[order].diff() >= 0).all(), name
        assert not torch.equal(out, image), name


def test_noise_lifts_an_even_field_without_moving_its_mean():
    image = torch.full((3, 96, 96), 100, dtype=torch.uint8)
    seeds = [s for s in range(20) if apply("noise", image, s)[0][0].float().std() > 1]
    out, _ = apply("noise", image, seeds[0])
    assert abs(out[0].float().mean() - 100) < 2


def test_blur_softens_edges():
    image = square()
    blurred, _ = apply("blur", image, seed=5)
    for axis in (0, 1):
        assert gradient_energy(blurred, axis) < 0.9 * gradient_energy(image, axis)
    assert abs(float(blurred[0].float().mean()) - float(image[0].float().mean())) < 1


@pytest.mark.parametrize("seed", range(4))
def test_anisotropy_softens_one_direction_most(seed):
    """Thick slices reformatted into the plane: one axis loses far more detail (more than twice) than the other."""
    generator = torch.Generator().manual_seed(0)
    texture = (torch.rand((96, 96), generator=generator) * 255).round().to(torch.uint8).expand(3, -1, -1).clone()
    thick, _ = apply("anisotropy", texture, seed)
    lost = sorted(gradient_energy(texture, axis) - gradient_energy(thick, axis) for axis in (0, 1))
    assert lost[0] > 0 and lost[1] > 2 * lost[0]


def test_ghosting_echoes_the_object_into_the_empty_background():
    """A k-space artefact: faint copies of the anatomy appear where there was nothing (the black background)."""
    image = square()
    background = torch.ones((96, 96), dtype=torch.bool)
    background[28:68, 28:68] = False
    out, _ = apply("ghosting", image, seed=11)
    assert image[0][background].float().mean() == 0 and out[0][background].float().mean() > 0.5


@pytest.mark.parametrize("seed", range(3))
def test_motion_smears_the_object_but_keeps_its_brightness(seed):
    """Moving during the acquisition mixes views of one object: its edges change, its brightness stays."""
    image = square()
    out, _ = apply("motion", image, seed)
    assert (out[0].float() - image[0].float()).abs().mean() > 1
    assert abs(float(out[0].float().mean()) / float(image[0].float().mean()) - 1) < 0.1


def test_the_training_pipeline_moves_masks_with_the_geometry_only():
    """With every MRI transform on, the image and its outline still move together: a flip and an affine move both,
    the appearance changes the image alone."""
    torch.manual_seed(0)
    pipeline = training_augmentation(rotation=0, scale=(1, 1), translate=0, brightness=0, contrast=0, hflip=1.0,
                                     mri=tuple(MRI_TRANSFORMS), mri_probability=1.0)
    image, mask = square(), outline()
    out, moved = pipeline(tv_tensors.Image(image), mask)
    assert torch.equal(torch.as_tensor(moved), torch.flip(torch.as_tensor(mask), dims=[-1]))
    assert torch.as_tensor(out).float()[0, 32:64, 32:64].mean() > torch.as_tensor(out).float()[0, :, :8].mean()


def test_names_are_parsed_in_acting_order_and_unknown_names_are_refused():
    assert parse_mri_transforms("none") == () and parse_mri_transforms("") == ()
    assert parse_mri_transforms("all") == tuple(MRI_TRANSFORMS)
    assert parse_mri_transforms("noise, bias") == ("bias", "noise")
    with pytest.raises(ValueError, match="unknown MRI transform sharpen"):
        parse_mri_transforms("bias,sharpen")


def test_a_transform_applied_with_probability_zero_changes_nothing():
    image = slice_tensor()
    torch.manual_seed(0)
    out = MriAppearance(tuple(MRI_TRANSFORMS), p=0.0)(image)
    assert torch.equal(out, image)
    out = np.asarray(MriAppearance(tuple(MRI_TRANSFORMS), p=1.0)(image))
    assert out.shape == (3, 96, 96)
