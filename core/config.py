"""Settings for training, as one frozen dataclass whose defaults are the recipe of the default model."""

from __future__ import annotations

from dataclasses import asdict, dataclass


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
    # machinery
    weights: str = "auto"                  # auto | torchvision | keras-npm | none
    weights_file: str | None = None
    device: str = "auto"
    precision: str = "auto"                # auto | bf16 | fp16 | fp32
    num_workers: int | None = None         # None: chosen from the CPU count
    save_dtype: str = "float32"            # float32 or float16 for the shipped checkpoint
    time_limit_minutes: float | None = None  # stop before an epoch that would end past this
    resume: bool = False
    progress: bool = True

    def to_dict(self) -> dict:
        return asdict(self)
