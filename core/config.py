"""Settings for training, as one frozen dataclass whose defaults are the recipe of the default model, and the
check that refuses settings that cannot work."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

# The largest seed taken: numpy's and scikit-learn's RandomState take up to 2**32 - 1, which leaves room for the
# seed + 1 of a validation side and the seed + fold of a cross-validation.
MAX_SEED = 2**31 - 1


class ConfigError(ValueError):
    """Training settings that cannot work; the message lists every one and what it must be."""


@dataclass(frozen=True)
class TrainConfig:
    data: str                              # dataset root (Kaggle layout: its Training/ is used) or class tree
    out: str = "outputs/train"             # run directory: checkpoint, history, resumable state
    # data and split
    image_size: int = 224
    val_fraction: float = 0.1
    test_fraction: float | None = None     # held out of a single tree; None: 0.15 there, 0 with Testing/
    near_duplicate_bits: int = 12          # perceptual-hash distance that joins images into one group
    max_images_per_class: int | None = None  # cap per class (quick experiments and tests)
    volume_slice: str = "middle"           # the slice each DICOM or NIfTI file stands for: "middle" or a number from 1
    files: str | None = None               # a list file of image paths: train (and validate) on these images only
    val_files: str | None = None           # a list file of the images that validate (a source held out whole)
    absent_classes: bool = False           # train though a class has no image (the figshare release has no no-tumour)
    seed: int = 42
    # optimisation
    epochs: int = 8                        # in total, head-only epochs included
    head_epochs: int = 1                   # epochs with a frozen backbone first
    batch_size: int = 32
    head_lr: float = 1e-3
    backbone_lr: float = 3e-4              # layer4's peak rate; earlier stages get lr_decay times less each
    lr_decay: float = 0.7                  # chosen on validation over 0.5 and 1.0 (see README)
    weight_decay: float = 0.05
    schedule: str = "cosine"               # "cosine" (linear warm-up then cosine) or "onecycle"
    warmup_epochs: float = 0.3
    label_smoothing: float = 0.05
    dropout: float = 0.0
    patience: int = 4                      # epochs without a better validation score before stopping
    # augmentation
    rotation: float = 10.0
    scale_min: float = 0.9
    scale_max: float = 1.1
    translate: float = 0.05
    brightness: float = 0.2
    contrast: float = 0.2
    hflip: float = 0.5
    mri_transforms: str = "none"           # scanner appearance (core/augment.py): none, all, or names joined by commas
    mri_probability: float = 0.25          # the chance each chosen MRI transform acts on an image
    # mask guidance (core/guidance.py): tumour outlines as a second signal of where the evidence should lie
    mask_data: str | None = None           # a dataset with tumour masks (its localisation split's train side guides)
    masks: str | None = None               # its mask folder (default: the one beside it)
    mask_split: str | None = None          # the localisation split folder: train.txt guides, the rest is held out
    mask_weight: float = 0.0               # weight of the share of evidence outside the outline, added to the loss
    mask_margin_px: float = 5.0            # how far (at 224 px) the outline is grown: the margin localisation is
                                           # scored at
    # architecture
    output_stride: int = 32                # 16: a dilated layer4, whose heatmaps are 14 x 14 at 224 px instead of 7 x 7
    # machinery
    weights: str = "auto"                  # auto | torchvision | keras-npm | none
    weights_file: str | None = None
    device: str = "auto"
    precision: str = "auto"                # auto | bf16 | fp16 | fp32
    num_workers: int | None = None         # None: chosen from the CPU count
    save_dtype: str = "float32"            # float32 or float16 for the shipped checkpoint
    time_limit_minutes: float | None = None  # stop before an epoch that would end past this
    checkpoint_minutes: float = 10.0       # within an epoch, the state to resume from is saved this often (0: never)
    resume: bool = False
    progress: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def check_config(cfg: TrainConfig) -> None:
    """Refuse settings that cannot work, before any data is read."""
    from core.checkpoint import IMAGE_SIZES
    from core.runtime import machinery_problems
    from core.weights import SOURCES

    problems = machinery_problems(cfg.device, cfg.precision, cfg.num_workers)
    if cfg.epochs < 1:
        problems.append("--epochs must be at least 1")
    if not 0 <= cfg.head_epochs <= cfg.epochs:
        problems.append("--head-epochs must be between 0 and --epochs")
    if cfg.batch_size < 1:
        problems.append("--batch-size must be at least 1")
    low, high = IMAGE_SIZES
    if not low <= cfg.image_size <= high:
        problems.append(f"--image-size must be between {low} and {high}")
    if not 0 <= cfg.near_duplicate_bits <= 256:
        problems.append("--near-duplicate-bits must be between 0 and 256")
    if cfg.max_images_per_class is not None and cfg.max_images_per_class < 1:
        problems.append("--max-images-per-class must be at least 1")
    if cfg.warmup_epochs < 0 or cfg.weight_decay < 0:
        problems.append("--warmup-epochs and --weight-decay must not be negative")
    if cfg.time_limit_minutes is not None and cfg.time_limit_minutes <= 0:
        problems.append("--time-limit-minutes must be positive")
    if not cfg.checkpoint_minutes >= 0:
        problems.append("--checkpoint-minutes must be 0 (never) or positive")
    problems += augmentation_problems(cfg)
    if cfg.mask_data is not None and cfg.mask_split is None:
        problems.append("--mask-data needs --mask-split, the localisation split whose held-out slices must not be "
                        "trained on (python -m training.localisation_split)")
    if cfg.mask_weight < 0 or (cfg.mask_weight > 0 and cfg.mask_data is None):
        problems.append("--mask-weight must not be negative, and needs --mask-data")
    if cfg.output_stride not in (16, 32):
        problems.append("--output-stride must be 32 (a plain ResNet-50) or 16 (a dilated layer4)")
    if not 0 <= cfg.mask_margin_px <= 112:
        problems.append("--mask-margin-px must be between 0 and 112")
    if not 0 <= cfg.val_fraction <= 0.5:
        problems.append("--val-fraction must be between 0 (a final fit on all training images, keeping the last "
                        "epoch) and 0.5")
    if cfg.test_fraction is not None and not 0 <= cfg.test_fraction <= 0.5:
        problems.append("--test-fraction must be between 0 and 0.5")
    if cfg.patience < 1:
        problems.append("--patience must be at least 1")
    if not 0 <= cfg.seed <= MAX_SEED:
        problems.append(f"--seed must be a whole number from 0 to {MAX_SEED}")
    if cfg.schedule not in ("cosine", "onecycle"):
        problems.append("--schedule must be cosine or onecycle")
    if cfg.weights not in SOURCES:
        problems.append(f"--weights must be one of {', '.join(SOURCES)}")
    if cfg.save_dtype not in ("float32", "float16"):
        problems.append("--save-dtype must be float32 or float16")
    if min(cfg.head_lr, cfg.backbone_lr) <= 0 or not 0 < cfg.lr_decay <= 1:
        problems.append("learning rates must be positive and --lr-decay in (0, 1]")
    if not 0 <= cfg.dropout < 1 or not 0 <= cfg.label_smoothing < 1:
        problems.append("--dropout and --label-smoothing must be in [0, 1)")
    if cfg.weights_file and not Path(cfg.weights_file).is_file():
        problems.append(f"--weights-file {cfg.weights_file} does not exist")
    if problems:
        raise ConfigError("; ".join(problems))


def augmentation_problems(cfg: TrainConfig) -> list[str]:
    """Augmentation settings outside the ranges that make sense for MRI slices (and that torchvision accepts)."""
    problems = []
    if not 0 <= cfg.rotation <= 180:
        problems.append("--rotation must be between 0 and 180 degrees")
    if not 0 < cfg.scale_min <= cfg.scale_max <= 4:
        problems.append("--scale-min and --scale-max must satisfy 0 < scale-min <= scale-max <= 4")
    if not 0 <= cfg.translate < 1:
        problems.append("--translate must be in [0, 1), a fraction of the image side")
    if not 0 <= cfg.brightness < 1 or not 0 <= cfg.contrast < 1:
        problems.append("--brightness and --contrast must be in [0, 1), fractions of change")
    if not 0 <= cfg.hflip <= 1:
        problems.append("--hflip must be a probability between 0 and 1")
    try:
        from core.augment import parse_mri_transforms

        parse_mri_transforms(cfg.mri_transforms)
    except ValueError as error:
        problems.append(f"--mri-transforms: {error}")
    if not 0 <= cfg.mri_probability <= 1:
        problems.append("--mri-probability must be a probability between 0 and 1")
    return problems


# Options tried on validation and removed (README, recipe table); a run that used one cannot be resumed.
REMOVED_OPTIONS = {"ema_decay": 0.0, "freeze_stages": 0, "low_res_size": None, "low_res_epochs": 0}
