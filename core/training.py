"""Fine-tune an ImageNet ResNet-50 on a class-per-folder MRI dataset: ``train(TrainConfig(...))``.

Steps: find the images and fingerprint them (unreadable files are listed and skipped); split off a
stratified, seeded validation set in which no duplicate group straddles train and validation; train the
head on a frozen backbone, then the whole network with layer-wise learning rates; keep the checkpoint
that scores best on validation; stop early when validation stops improving. Every epoch leaves a
resumable state. Runs unchanged under ``torchrun`` (DistributedDataParallel; gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from core import __version__
from core.audit import dataset_fingerprint, duplicate_groups, fingerprint_files
from core.atomic import finish_atomic_write
from core.checkpoint import DEFAULT_FILENAME, IMAGE_SIZES, json_safe, library_versions, save_checkpoint
from core.config import TrainConfig
from core.data import (CLASSES, IMAGE_EXTENSIONS, DatasetError, ImageFolderDataset, Sample, find_split_dirs, normalize,
                       scan_class_folders, training_augmentation)
from core.model import (ARCHITECTURE, STAGE_PREFIXES, build_resnet50, classifier_from_imagenet,
                        freeze_backbone_batchnorm, frozen_prefixes, layerwise_parameter_groups, set_backbone_trainable)
from core.runtime import (autocast, default_workers, machinery_problems, prepare_model, resolve_device,
                          resolve_precision)
from core.sources import read_bytes
from core.sources.files import printable
from core.weights import IMAGENET_MEAN, IMAGENET_STD, resolve_imagenet_weights

log = logging.getLogger(__name__)

STATE_FILENAME = "last_state.pt"
MAX_STATE_BYTES = 2 << 30  # weights, AdamW's two moments and a moving average: about 400 MB for a ResNet-50
HISTORY_FILENAME = "history.json"


class TrainingError(RuntimeError):
    """Training cannot go on; the message says what is wrong and what to do."""


# --------------------------------------------------------------------------------------------------
# Data preparation


@dataclass
class PreparedData:
    root: Path                    # the class tree trained on (e.g. .../Training)
    dataset_root: Path            # what the user named
    samples: list[Sample]         # readable images only
    fingerprints: list
    groups: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray
    skipped: list[dict] = field(default_factory=list)
    unknown_folders: list[str] = field(default_factory=list)
    label_conflicts: list[list[str]] = field(default_factory=list)

    def fingerprint(self) -> str:
        """sha256 over the sorted (relative path, file sha256) pairs of every readable image."""
        return dataset_fingerprint((s.relpath, f.sha256) for s, f in zip(self.samples, self.fingerprints))

    def counts(self, index: np.ndarray) -> dict[str, int]:
        labels = np.array([self.samples[i].label for i in index], dtype=int)
        return {name: int((labels == k).sum()) for k, name in enumerate(CLASSES)}


def group_stratified_split(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (rest, held_out) with about ``fraction`` held out, stratified by label, with
    every group wholly on one side."""
    from sklearn.model_selection import StratifiedGroupKFold

    index = np.arange(len(labels))
    if fraction <= 0:
        return index, index[:0]
    # Every class needs at least n_splits members; tiny datasets get a coarser (larger) held-out share.
    smallest = int(np.bincount(labels).min(initial=len(labels)) if len(labels) else 0)
    n_splits = max(2, min(round(1 / fraction), smallest))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    rest, held = next(splitter.split(index, labels, groups))
    return np.sort(rest), np.sort(held)


def prepare_data(cfg: TrainConfig, progress: bool = True) -> PreparedData:
    dataset_root = Path(cfg.data).expanduser()
    if not dataset_root.exists():
        raise DatasetError(f"dataset folder {dataset_root} does not exist; check the path")
    train_dir, _ = find_split_dirs(dataset_root) if dataset_root.is_dir() else (None, None)
    root = train_dir or dataset_root
    tree = scan_class_folders(root)
    if tree.unknown_folders:
        log.warning("ignored folders that name no known class in %s: %s (known: %s)", root,
                    ", ".join(tree.unknown_folders), ", ".join(CLASSES))
    if tree.other_files:
        log.warning("ignored %d files that are not images (%s): %s%s", len(tree.other_files),
                    ", ".join(IMAGE_EXTENSIONS), ", ".join(tree.other_files[:5]), " ..." if len(tree.other_files) > 5 else "")
    samples = tree.samples
    if cfg.max_images_per_class:
        rng = np.random.default_rng(cfg.seed)
        keep = []
        for k in range(len(CLASSES)):
            members = [i for i, s in enumerate(samples) if s.label == k]
            keep += sorted(rng.permutation(members)[:cfg.max_images_per_class].tolist())
        samples = [samples[i] for i in sorted(keep)]
    with tqdm(total=len(samples), desc="checking images", unit="img", disable=not progress,
              leave=False) as bar:
        fingerprints, errors = fingerprint_files([s.path for s in samples], progress=bar.update)
    skipped = tree.refused + [{"path": samples[i].relpath, "reason": reason} for i, reason in sorted(errors.items())]
    for item in skipped:
        log.warning("skipping unreadable image %s: %s", item["path"], item["reason"])
    good = [i for i in range(len(samples)) if i not in errors]
    samples = [samples[i] for i in good]
    fingerprints = [fingerprints[i] for i in good]
    counts = {name: sum(s.label == k for s in samples) for k, name in enumerate(CLASSES)}
    missing = [name for name, n in counts.items() if n == 0 and name in tree.folders.values()]
    if missing:
        raise DatasetError(f"no readable images left for class {', '.join(missing)} in {root}")
    too_few = [name for name, n in counts.items() if 0 < n < 4]
    if too_few:
        raise DatasetError(f"class {', '.join(too_few)} has fewer than 4 readable images in {root}; "
                           "a validation split needs more")
    absent = [name for name, n in counts.items() if n == 0]
    if absent:
        raise DatasetError(f"{root} has no folder for class {', '.join(absent)}; the classifier needs all of "
                           f"{', '.join(CLASSES)}")
    groups = duplicate_groups(fingerprints, cfg.near_duplicate_bits)
    labels = np.array([s.label for s in samples])
    conflicts = exact_label_conflicts(samples, fingerprints)
    for paths in conflicts:
        log.warning("the same image sits in different class folders: %s", ", ".join(paths))
    test_fraction = cfg.test_fraction if cfg.test_fraction is not None else (0.0 if train_dir else 0.15)
    rest, test_idx = group_stratified_split(labels, groups, test_fraction, cfg.seed)
    rest_train, rest_val = group_stratified_split(labels[rest], groups[rest],
                                                  cfg.val_fraction / max(1e-9, 1 - test_fraction), cfg.seed + 1)
    return PreparedData(root=tree.root, dataset_root=dataset_root.resolve(), samples=samples,
                        fingerprints=fingerprints, groups=groups, train_idx=rest[rest_train],
                        val_idx=rest[rest_val], test_idx=test_idx, skipped=skipped,
                        unknown_folders=tree.unknown_folders, label_conflicts=conflicts)


def exact_label_conflicts(samples: list[Sample], fingerprints: list) -> list[list[str]]:
    """Sets of byte- or pixel-identical images filed under more than one class."""
    by_pixels: dict[str, list[int]] = {}
    for index, fp in enumerate(fingerprints):
        by_pixels.setdefault(fp.pixel_sha256, []).append(index)
    return [sorted(samples[i].relpath for i in members) for members in by_pixels.values()
            if len({samples[i].label for i in members}) > 1]


def fingerprint_tensors(data: PreparedData) -> dict[str, torch.Tensor]:
    """What the checkpoint keeps of the images the model saw (training and validation parts)."""
    seen = np.sort(np.concatenate([data.train_idx, data.val_idx]))
    split = np.isin(seen, data.val_idx).astype(np.uint8)  # 0 train, 1 validation
    return {
        "sha256": torch.from_numpy(np.stack([np.frombuffer(bytes.fromhex(data.fingerprints[i].sha256), np.uint8)
                                             for i in seen])),
        "phash": torch.from_numpy(np.stack([np.frombuffer(data.fingerprints[i].phash, np.uint8) for i in seen])),
        "pixel_sha256": torch.from_numpy(np.stack([np.frombuffer(bytes.fromhex(data.fingerprints[i].pixel_sha256),
                                                                 np.uint8) for i in seen])),
        "label": torch.tensor([data.samples[i].label for i in seen], dtype=torch.uint8),
        "split": torch.from_numpy(split),
    }


# --------------------------------------------------------------------------------------------------
# Distributed helpers


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device_kind: str) -> Dist:
    """Join the process group when started by ``torchrun`` (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        # NCCL moves CUDA tensors only; the small metric reductions run on CPU tensors through gloo.
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if device_kind == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _all_sum(values: list[float], ctx: Dist) -> list[float]:
    if not ctx.enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()


def _all_gather_arrays(array: np.ndarray, ctx: Dist) -> list[np.ndarray]:
    if not ctx.enabled:
        return [array]
    gathered: list = [None] * ctx.world
    dist.all_gather_object(gathered, array)
    return gathered


# --------------------------------------------------------------------------------------------------
# Loops


def warmup_cosine(total_steps: int, warmup_steps: int, floor: float = 0.0):
    """Multiplier per step: linear warm-up from ~0 to 1, then cosine down to ``floor``."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def build_optimizer(model: nn.Module, cfg: TrainConfig, phase: str, steps: int, steps_per_epoch: int):
    """AdamW plus a per-step schedule for one phase ("head": backbone frozen; "full": everything)."""
    if phase == "head":
        groups = [g for g in layerwise_parameter_groups(model, cfg.head_lr, 0.0, 1.0, cfg.weight_decay)
                  if g["name"].startswith("fc")]
    else:
        groups = layerwise_parameter_groups(model, cfg.head_lr, cfg.backbone_lr, cfg.lr_decay, cfg.weight_decay)
    groups = [g for g in groups if g["params"]]
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.999))
    warmup = max(1, min(steps // 2, int(cfg.warmup_epochs * steps_per_epoch)))
    if phase == "full" and cfg.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in groups], total_steps=steps,
            pct_start=min(0.5, max(0.05, warmup / steps)), anneal_strategy="cos",
            div_factor=25.0, final_div_factor=1e3)
    elif cfg.schedule in ("cosine", "onecycle"):
        floor = 0.1 if phase == "head" else 0.0
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps, warmup, floor))
    else:
        raise ValueError(f"unknown schedule {cfg.schedule!r}; use cosine or onecycle")
    return optimizer, scheduler


def train_one_epoch(model, loader, optimizer, scheduler, scaler, criterion, device, precision, ctx,
                    bar=None, frozen_backbone=False, ema=None, keep_frozen: tuple[str, ...] = ()) -> dict:
    model.train()
    if frozen_backbone:
        freeze_backbone_batchnorm(_unwrap(model))
    elif keep_frozen:
        freeze_backbone_batchnorm(_unwrap(model), keep_frozen)
    loss_sum = correct = seen = 0.0
    for images, labels in loader:
        images = normalize(images, IMAGENET_MEAN, IMAGENET_STD).to(device, non_blocking=True)
        images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        with autocast(device, precision):
            logits = model(images)
            loss = criterion(logits.float(), labels)
        if not torch.isfinite(loss):
            raise TrainingError(f"the loss became {loss.item()}; lower the learning rate or use --precision fp32")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(_unwrap(model))
        batch = labels.numel()
        loss_sum += loss.item() * batch
        correct += (logits.argmax(1) == labels).sum().item()
        seen += batch
        if bar is not None:
            bar.update(batch * ctx.world)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False)
    loss_sum, correct, seen = _all_sum([loss_sum, correct, seen], ctx)
    return {"train_loss": loss_sum / max(1, seen), "train_accuracy": correct / max(1, seen)}


@torch.inference_mode()
def validate(model, loader, device, precision, ctx) -> dict:
    """Loss (plain cross-entropy), accuracy, per-class recall and macro one-vs-rest AUC on validation."""
    from sklearn.metrics import roc_auc_score

    model.eval()
    probs, labels = [], []
    for images, target in loader:
        images = normalize(images, IMAGENET_MEAN, IMAGENET_STD).to(device).contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = model(images)
        probs.append(logits.float().softmax(1).cpu().numpy())
        labels.append(target.numpy())
    local = np.concatenate([np.concatenate(probs), np.concatenate(labels)[:, None]], axis=1) if probs else \
        np.zeros((0, len(CLASSES) + 1))
    merged = np.concatenate(_all_gather_arrays(local, ctx))
    prob, label = merged[:, :-1], merged[:, -1].astype(int)
    pred = prob.argmax(1)
    picked = np.clip(prob[np.arange(len(label)), label], 1e-12, 1.0)
    metrics = {"val_loss": float(-np.log(picked).mean()), "val_accuracy": float((pred == label).mean()),
               "val_images": int(len(label))}
    for k, name in enumerate(CLASSES):
        members = label == k
        metrics[f"val_recall_{name}"] = float((pred[members] == k).mean()) if members.any() else float("nan")
    present = np.unique(label)
    metrics["val_macro_auc"] = float(roc_auc_score(label, prob, multi_class="ovr", labels=list(range(len(CLASSES))))) \
        if len(present) == len(CLASSES) else float("nan")
    return metrics


def _better(new: dict, best: dict | None) -> bool:
    """Higher validation accuracy wins; ties go to the lower validation loss. Without validation (a final
    fit) the latest epoch is the one kept."""
    if best is None or "val_accuracy" not in new:
        return True
    if new["val_accuracy"] != best["val_accuracy"]:
        return new["val_accuracy"] > best["val_accuracy"]
    return new["val_loss"] < best["val_loss"]


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".partial")
    try:
        torch.save(obj, tmp)
        finish_atomic_write(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _atomic_json(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")
    finish_atomic_write(tmp, path)


@torch.no_grad()
def _sync_buffers(target: nn.Module, source: nn.Module) -> None:
    """Copy BatchNorm statistics (all buffers) from the trained network into its moving average."""
    for mine, theirs in zip(target.buffers(), source.buffers()):
        mine.copy_(theirs)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# --------------------------------------------------------------------------------------------------
# The whole run


RESUME_EXEMPT = {"data", "out", "resume", "progress", "num_workers", "time_limit_minutes", "device", "precision"}


def check_config(cfg: TrainConfig) -> None:
    """Refuse settings that cannot work, before any data is read."""
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
    problems += augmentation_problems(cfg)
    if not 0 <= cfg.val_fraction <= 0.5:
        problems.append("--val-fraction must be between 0 (a final fit on all training images, keeping the last "
                        "epoch) and 0.5")
    if cfg.test_fraction is not None and not 0 <= cfg.test_fraction <= 0.5:
        problems.append("--test-fraction must be between 0 and 0.5")
    if cfg.patience < 1:
        problems.append("--patience must be at least 1")
    if cfg.schedule not in ("cosine", "onecycle"):
        problems.append("--schedule must be cosine or onecycle")
    if cfg.weights not in SOURCES:
        problems.append(f"--weights must be one of {', '.join(SOURCES)}")
    if cfg.save_dtype not in ("float32", "float16"):
        problems.append("--save-dtype must be float32 or float16")
    if min(cfg.head_lr, cfg.backbone_lr) <= 0 or not 0 < cfg.lr_decay <= 1:
        problems.append("learning rates must be positive and --lr-decay in (0, 1]")
    if not 0 <= cfg.ema_decay < 1:
        problems.append("--ema-decay must be in [0, 1) (0 turns the moving average off)")
    if not 0 <= cfg.dropout < 1 or not 0 <= cfg.label_smoothing < 1:
        problems.append("--dropout and --label-smoothing must be in [0, 1)")
    if not 0 <= cfg.freeze_stages <= len(STAGE_PREFIXES):
        problems.append(f"--freeze-stages must be between 0 (train every stage) and {len(STAGE_PREFIXES)} (train "
                        "only the head)")
    if cfg.low_res_epochs < 0 or cfg.low_res_epochs > cfg.epochs:
        problems.append("--low-res-epochs must be between 0 and --epochs")
    if cfg.low_res_epochs and cfg.low_res_size is None:
        problems.append("--low-res-epochs needs --low-res-size")
    if cfg.low_res_size is not None and not 32 <= cfg.low_res_size <= cfg.image_size:
        problems.append("--low-res-size must be between 32 and --image-size")
    if cfg.weights_file and not Path(cfg.weights_file).is_file():
        problems.append(f"--weights-file {cfg.weights_file} does not exist")
    if problems:
        raise TrainingError("; ".join(problems))


def check_writable(out: Path) -> None:
    """Make ``out`` and prove it takes a file, before hours of work depend on it."""
    probe = out / f".write-test-{os.getpid()}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise TrainingError(f"cannot write to --out {printable(out)} ({error.strerror or error}); choose a folder "
                            "you can write to") from None


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
    return problems


def load_resume_state(path: Path, cfg: TrainConfig, world: int) -> dict:
    """Read ``last_state.pt`` (tensors and plain values only) and check that it continues this run."""
    if not path.exists() and not path.is_symlink():
        raise TrainingError(f"nothing to resume: {path} does not exist (run without --resume)")
    try:
        # A regular file of bounded size, unpickled with tensors and plain values only (no code can run).
        state = torch.load(io.BytesIO(read_bytes(path, MAX_STATE_BYTES, "training state")), map_location="cpu",
                           weights_only=True)
        required = {"model", "optimizer", "scheduler", "phase", "epoch", "history", "best", "stale", "classes",
                    "data_fingerprint", "config", "base_weights", "processes"}
        if not isinstance(state, dict) or not required <= set(state):
            raise ValueError("keys are missing")
    except Exception as error:  # torch raises several types for damaged or foreign files
        reason = str(error).split(". ")[0][:200]  # torch's own messages run to a paragraph
        raise TrainingError(f"{printable(path)} is damaged or not a training state ({type(error).__name__}: "
                            f"{reason}); start a new run with another --out") from None
    if list(state["classes"]) != list(CLASSES):
        raise TrainingError(f"{path} was trained on classes {state['classes']}, not {list(CLASSES)}")
    ours = cfg.to_dict()
    # A setting added after the run started counts as its default (what the run did without it).
    defaults = TrainConfig(data="").to_dict()
    theirs = {k: state["config"].get(k, defaults[k]) for k in ours}
    changed = [f"--{k.replace('_', '-')} {theirs[k]!r} -> {ours[k]!r}" for k in ours
               if k not in RESUME_EXEMPT and theirs[k] != ours[k]]
    if changed:
        raise TrainingError(f"the settings differ from the run being resumed ({'; '.join(changed)}); resume with "
                            "the same settings, or start a new run with another --out")
    if state["processes"] != world:
        raise TrainingError(f"the run used {state['processes']} processes and this one {world}; resume with the same "
                            "number so the data order and learning-rate schedule stay the same")
    return state


def epoch_image_size(cfg: TrainConfig, epoch: int) -> int:
    """The training image size of ``epoch`` (0-based): the low-resolution size for the first epochs, if set."""
    return cfg.low_res_size if cfg.low_res_size is not None and epoch < cfg.low_res_epochs else cfg.image_size


def expected_epoch_seconds(history: list, phase: str, size: int, default_size: int) -> float | None:
    """How long an epoch of ``phase`` at ``size`` should take, from the last epochs like it. From an epoch of the
    same phase at another size, its training part is scaled by the pixel count and the rest (validation, always
    at full size) is kept as it was; histories without ``train_seconds`` scale the whole epoch. None before any
    epoch of the phase."""
    same_phase = [h for h in history if h["phase"] == phase]
    same_size = [h["seconds"] for h in same_phase if h.get("image_size", default_size) == size][-2:]
    if same_size:
        return float(np.mean(same_size))
    if same_phase:
        last = same_phase[-1]
        training = last.get("train_seconds", last["seconds"])
        return last["seconds"] - training + training * (size / last.get("image_size", default_size)) ** 2
    return None


def _stop_for_time(cfg: TrainConfig, started: float, history: list, phase: str, size: int, ctx: Dist) -> bool:
    """Rank 0 decides (and every process follows) whether the next epoch would end past the time limit,
    judged from the last epochs of the same phase (see :func:`expected_epoch_seconds`)."""
    over = 0.0
    if ctx.main and cfg.time_limit_minutes is not None:
        expected = expected_epoch_seconds(history, phase, size, cfg.image_size)
        if expected is not None and time.time() - started + expected > cfg.time_limit_minutes * 60:
            over = 1.0
    return _all_sum([over], ctx)[0] > 0


def train(cfg: TrainConfig) -> Path:
    """Train and return the path of the best checkpoint (``<out>/model.safetensors``)."""
    started = time.time()
    check_config(cfg)
    device = resolve_device(cfg.device)
    ctx = init_distributed(device.type)
    if device.type == "cuda" and ctx.enabled:
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    precision = resolve_precision(cfg.precision, device)
    if cfg.head_epochs == cfg.epochs:
        log.warning("all %d epochs train only the head: the backbone stays frozen", cfg.epochs)
    out = Path(cfg.out)
    state_path = out / STATE_FILENAME
    checkpoint_path = out / DEFAULT_FILENAME
    resume_state = load_resume_state(state_path, cfg, ctx.world) if cfg.resume else None
    if resume_state is None and (state_path.exists() or checkpoint_path.exists()):
        raise TrainingError(f"{out} already holds a training run; add --resume to continue it or choose another "
                            "--out (a finished model is never overwritten)")
    if ctx.main:
        check_writable(out)

    torch.manual_seed(cfg.seed)
    data = prepare_data(cfg, progress=cfg.progress and ctx.main)
    data_fingerprint = data.fingerprint()
    if resume_state is not None and resume_state["data_fingerprint"] != data_fingerprint:
        raise TrainingError(f"the data in {data.root} changed since {state_path} was written; resuming would "
                            "mix two datasets. Start a new run with another --out")
    per_rank = len(data.train_idx) // ctx.world
    if per_rank < cfg.batch_size:
        raise TrainingError(f"only {per_rank} training images per process, fewer than --batch-size "
                            f"{cfg.batch_size}; lower --batch-size or add images")
    log.info("data: %s; train %s; validation %s; held-out test %d; skipped %d unreadable",
             data.root, data.counts(data.train_idx), data.counts(data.val_idx), len(data.test_idx),
             len(data.skipped))

    if resume_state is None:
        base = resolve_imagenet_weights(cfg.weights, cfg.weights_file)
        base_description = base.describe()
        model = classifier_from_imagenet(len(CLASSES), base, cfg.dropout, cfg.seed)
        del base
    else:  # the network continues as it was built, whatever weights are found on this machine now
        base_description = dict(resume_state["base_weights"])
        model = build_resnet50(len(CLASSES), base_description["downsample_stride"], cfg.dropout)
        model.load_state_dict(resume_state["model"])
    log.info("ImageNet weights: %s", base_description["name"])
    model = prepare_model(model, device)
    ema = None
    if cfg.ema_decay > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        # Parameters only: averaged BatchNorm statistics do not match the averaged weights (measured: validation
        # accuracy 0.961 with averaged statistics, 0.981 with the current ones), so the statistics are copied
        # from the trained network before each validation and save (_sync_buffers).
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=False)
        ema.requires_grad_(False)
        if resume_state is not None:
            if "ema" not in resume_state:
                raise TrainingError("the run being resumed kept no moving average; resume without --ema-decay")
            ema.load_state_dict(resume_state["ema"])
    evaluated = ema.module if ema is not None else model  # what is validated and saved

    augment = training_augmentation(cfg.rotation, (cfg.scale_min, cfg.scale_max), cfg.translate,
                                    cfg.brightness, cfg.contrast, cfg.hflip)
    keep_frozen = frozen_prefixes(cfg.freeze_stages)
    val_indices = data.val_idx[ctx.rank::ctx.world].tolist()  # a disjoint share per process, no padding
    val_set = Subset(ImageFolderDataset(data.samples, cfg.image_size), val_indices)
    workers = cfg.num_workers if cfg.num_workers is not None else default_workers(8)
    loader_args = {"batch_size": cfg.batch_size, "num_workers": workers, "pin_memory": device.type == "cuda"}
    val_loader = DataLoader(val_set, shuffle=False, **loader_args)
    steps_per_epoch = per_rank // cfg.batch_size
    n_train = len(data.train_idx)

    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    history = list(resume_state["history"]) if resume_state else []
    best = resume_state["best"] if resume_state else None
    start_epoch = int(resume_state["epoch"]) + 1 if resume_state else 0
    stale = int(resume_state["stale"]) if resume_state else 0
    save_dtype = torch.float16 if cfg.save_dtype == "float16" else torch.float32
    phase = optimizer = scheduler = None
    net = model
    stop_reason = "all epochs"
    if stale >= cfg.patience:
        start_epoch = cfg.epochs  # the resumed run had already stopped early
        stop_reason = "early stop"

    for epoch in range(start_epoch, cfg.epochs):
        wanted = "head" if epoch < cfg.head_epochs else "full"
        size = epoch_image_size(cfg, epoch)
        if _stop_for_time(cfg, started, history, wanted, size, ctx):
            log.warning("stopping before epoch %d: it would end past the %.0f-minute limit",
                        epoch + 1, cfg.time_limit_minutes)
            stop_reason = "time limit"
            break
        if wanted != phase:
            phase = wanted
            set_backbone_trainable(model, phase == "full", keep_frozen)
            phase_epochs = cfg.head_epochs if phase == "head" else cfg.epochs - cfg.head_epochs
            optimizer, scheduler = build_optimizer(model, cfg, phase, steps_per_epoch * phase_epochs,
                                                   steps_per_epoch)
            net = nn.parallel.DistributedDataParallel(model) if ctx.enabled else model
            if resume_state is not None and resume_state["phase"] == phase:
                optimizer.load_state_dict(resume_state["optimizer"])
                scheduler.load_state_dict(resume_state["scheduler"])
            resume_state = None  # consumed: a later phase change starts its optimizer afresh
        generator = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        indices = torch.randperm(n_train, generator=generator)[:per_rank * ctx.world]
        mine = data.train_idx[indices[ctx.rank::ctx.world][:steps_per_epoch * cfg.batch_size].numpy()].tolist()
        train_loader = DataLoader(Subset(ImageFolderDataset(data.samples, size, augment), mine), shuffle=False,
                                  drop_last=True, generator=generator, **loader_args)
        torch.manual_seed(cfg.seed * 1000 + epoch * 10 + ctx.rank)  # augmentation draws in the main process
        epoch_start = time.time()
        with tqdm(total=len(mine) * ctx.world, desc=f"epoch {epoch + 1}/{cfg.epochs} [{phase}, {size} px]",
                  unit="img", disable=not (cfg.progress and ctx.main), dynamic_ncols=True) as bar:
            record = train_one_epoch(net, train_loader, optimizer, scheduler, scaler, criterion, device,
                                     precision, ctx, bar, frozen_backbone=phase == "head", ema=ema,
                                     keep_frozen=keep_frozen)
        train_seconds = time.time() - epoch_start
        if ema is not None:
            _sync_buffers(ema.module, model)
        if len(data.val_idx):
            record.update(validate(evaluated, val_loader, device, precision, ctx))
        seconds = time.time() - epoch_start
        record.update({"epoch": epoch + 1, "phase": phase, "image_size": size, "seconds": round(seconds, 1),
                       "train_seconds": round(train_seconds, 1),
                       "train_images_per_second": round(len(mine) * ctx.world / train_seconds, 2),
                       "lr_head": optimizer.param_groups[0]["lr"],
                       "lr_backbone": max((g["lr"] for g in optimizer.param_groups if not g["name"].startswith("fc")),
                                          default=0.0)})
        history.append(record)
        improved = _better(record, best)
        if improved:
            best, stale = dict(record), 0
        else:
            stale += 1
        scores = (f"val loss {record['val_loss']:.4f} acc {record['val_accuracy']:.4f} "
                  f"auc {record['val_macro_auc']:.5f}" if "val_loss" in record else "no validation (final fit)")
        kept = " (best)" if len(data.val_idx) else " (saved)"
        log.info("epoch %d/%d %s: train loss %.4f acc %.4f | %s | %.0fs%s", epoch + 1, cfg.epochs, phase,
                 record["train_loss"], record["train_accuracy"], scores, seconds, kept if improved else "")
        if ctx.main:
            if improved:
                metadata = build_metadata(cfg, data, data_fingerprint, base_description, precision, history, best,
                                          ctx.world)
                save_checkpoint(checkpoint_path, evaluated, metadata, fingerprint_tensors(data), save_dtype)
            _atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                **({"ema": ema.state_dict()} if ema is not None else {}),
                                "scheduler": scheduler.state_dict(), "phase": phase, "epoch": epoch,
                                "history": history, "best": best, "stale": stale, "classes": list(CLASSES),
                                "data_fingerprint": data_fingerprint, "config": cfg.to_dict(),
                                "base_weights": base_description, "processes": ctx.world}, state_path)
            _atomic_json(history, out / HISTORY_FILENAME)
        if stale >= cfg.patience:
            log.info("early stop: no better validation score for %d epochs", stale)
            stop_reason = "early stop"
            break
    if ctx.main:
        if not checkpoint_path.is_file():
            raise TrainingError("no epoch finished, so no checkpoint was written")
        # Refresh the best checkpoint's metadata with the whole history. Its own best epoch is read from the
        # file, which stays right even if a crash once fell between writing it and writing the state.
        from core.checkpoint import load_checkpoint, model_from_checkpoint

        stored = load_checkpoint(checkpoint_path)
        best_epoch = stored.metadata["training"]["best_epoch"]
        best = next(h for h in history if h["epoch"] == best_epoch)
        final = build_metadata(cfg, data, data_fingerprint, base_description, precision, history, best, ctx.world)
        final["training"]["stopped_by"] = stop_reason
        save_checkpoint(checkpoint_path, model_from_checkpoint(stored), final, stored.fingerprints, save_dtype)
        if len(data.val_idx):
            calibrate_on_validation(checkpoint_path, cfg)
    if ctx.enabled:
        dist.barrier()
    return checkpoint_path


def calibrate_on_validation(checkpoint_path: Path, cfg: TrainConfig) -> None:
    """Fit the softmax temperature of the finished checkpoint on its validation split (core.calibration).

    Calibration is an extra: whatever goes wrong here (a tiny or degenerate validation split, a full disk) leaves
    the good checkpoint as it is, uncalibrated, with a warning that says why."""
    from core.calibration import fit_on_validation
    from core.checkpoint import update_metadata

    try:
        # Fitted at the precision inference uses by default ('auto'), on the device the user chose.
        record = fit_on_validation(checkpoint_path, cfg.data, cfg.device)
        update_metadata(checkpoint_path, {"calibration": record})
    except Exception as error:  # noqa: BLE001 - see the docstring
        log.warning("probabilities left uncalibrated: %s", error)
        return
    log.info("calibrated on %d validation images: temperature %.3f (negative log-likelihood %.4f -> %.4f, "
             "ECE %.4f -> %.4f)", record["images"], record["temperature"], record["nll_before"],
             record["nll_after"], record["ece_before"], record["ece_after"])


def build_metadata(cfg: TrainConfig, data: PreparedData, data_fingerprint: str, base: dict, precision: str,
                   history: list, best: dict, world: int) -> dict:
    seen = np.sort(np.concatenate([data.train_idx, data.val_idx]))
    return {
        "architecture": {"name": ARCHITECTURE, "downsample_stride": base["downsample_stride"],
                         "dropout": cfg.dropout, "num_classes": len(CLASSES)},
        "classes": list(CLASSES),
        "preprocessing": {"image_size": cfg.image_size, "resize": "pad_to_square_then_bilinear",
                          "color": "rgb", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "base_weights": base,
        "training": {"config": cfg.to_dict(), "precision": precision, "processes": world,
                     "epoch_seconds": round(sum(h["seconds"] for h in history), 1), "best_epoch": best["epoch"],
                     "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")},
        "data": {
            # As the user named it, and relative to it: no machine-specific absolute paths are shipped.
            "root": cfg.data, "trained_on": data.root.relative_to(data.dataset_root).as_posix()
            if data.root != data.dataset_root else ".",
            "fingerprint": data_fingerprint,
            "counts": {"train": data.counts(data.train_idx), "val": data.counts(data.val_idx),
                       "test": data.counts(data.test_idx)},
            "duplicate_groups": int(len(np.unique(data.groups))),
            "near_duplicate_bits": cfg.near_duplicate_bits,
            "skipped": data.skipped, "unknown_folders": data.unknown_folders,
            "label_conflicts": data.label_conflicts,
            "val_files": sorted(data.samples[i].relpath for i in data.val_idx),
            "test_files": sorted(data.samples[i].relpath for i in data.test_idx),
            "seen_files": [data.samples[i].relpath for i in seen],  # row order of train_fingerprints.*
        },
        "history": history,
        "validation": {k: v for k, v in best.items() if k.startswith("val_")},
        "versions": {**library_versions(), "project": __version__},
    }
