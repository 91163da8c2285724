"""What one epoch does: the optimiser and learning-rate schedule of a phase, a training pass, a validation pass,
and which epoch is better. :mod:`core.trainer` runs them."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from core.config import TrainConfig
from core.data import CLASSES, normalize
from core.distributed import all_gather_arrays, all_sum
from core.model import freeze_backbone_batchnorm, head_linear, layerwise_parameter_groups
from core.runtime import autocast
from core.weights import IMAGENET_MEAN, IMAGENET_STD


class TrainingError(RuntimeError):
    """Training cannot go on; the message says what is wrong and what to do."""


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
    if phase == "full" and cfg.schedule == "onecycle" and steps >= 4:
        # At least two rising steps: with fewer, torch's schedule divides by zero.
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in groups], total_steps=steps,
            pct_start=min(0.5, max(0.05, max(2, warmup) / steps)), anneal_strategy="cos",
            div_factor=25.0, final_div_factor=1e3)
    elif cfg.schedule in ("cosine", "onecycle"):
        floor = 0.1 if phase == "head" else 0.0
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps, warmup, floor))
    else:
        raise ValueError(f"unknown schedule {cfg.schedule!r}; use cosine or onecycle")
    return optimizer, scheduler


def train_one_epoch(model, loader, optimizer, scheduler, scaler, criterion, device, precision, ctx,
                    bar=None, frozen_backbone=False, guidance: tuple[float, float] | None = None,
                    done: tuple[int, list[float]] | None = None, checkpoint=None,
                    checkpoint_seconds: float = 0.0) -> dict:
    """One pass over the training images. ``guidance`` (weight, margin in px at 224): the loader gives tumour
    outlines too, and the share of the true class's Grad-CAM evidence outside them is added to the loss
    (:mod:`core.guidance`). ``done``: (steps, running sums) of the part of the epoch done before a resume (the
    loader then holds only the rest); ``checkpoint(steps, sums)`` is called every ``checkpoint_seconds`` with the
    steps taken in the epoch so far and the running sums (loss, right, seen, outside share, guided images)."""
    import time

    from core.guidance import class_activation_maps, outside_share

    model.train()
    bare = _unwrap(model)
    if frozen_backbone:
        freeze_backbone_batchnorm(bare)
    captured = {}
    hook = bare.layer4.register_forward_hook(lambda _m, _i, out: captured.update(acts=out)) if guidance else None
    steps, (loss_sum, correct, seen, mask_sum, guided) = done if done is not None else (0, [0.0] * 5)
    last_saved = time.monotonic()
    try:
        for batch in loader:
            images, labels = batch[0], batch[1]
            images = normalize(images, IMAGENET_MEAN, IMAGENET_STD).to(device, non_blocking=True)
            images = images.contiguous(memory_format=torch.channels_last)
            labels = labels.to(device, non_blocking=True)
            with autocast(device, precision):
                logits = model(images)
                loss = criterion(logits.float(), labels)
                if guidance is not None:
                    outlines, has = batch[2].to(device), batch[3].to(device)
                    if has.any():
                        cams = class_activation_maps(captured["acts"][has], head_linear(bare), labels[has])
                        share = outside_share(cams, outlines[has], guidance[1]).mean()
                        loss = loss + guidance[0] * share
                        mask_sum += share.item() * int(has.sum())
                        guided += int(has.sum())
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
            size = labels.numel()
            loss_sum += loss.item() * size
            correct += (logits.argmax(1) == labels).sum().item()
            seen += size
            if bar is not None:
                bar.update(size * ctx.world)
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False)
            steps += 1
            if checkpoint is not None and time.monotonic() - last_saved >= checkpoint_seconds:
                checkpoint(steps, [loss_sum, correct, seen, mask_sum, guided])
                last_saved = time.monotonic()
    finally:
        if hook is not None:
            hook.remove()
    loss_sum, correct, seen, mask_sum, guided = all_sum([loss_sum, correct, seen, mask_sum, guided], ctx)
    record = {"train_loss": loss_sum / max(1, seen), "train_accuracy": correct / max(1, seen)}
    if guidance is not None:
        record.update(train_outside_share=mask_sum / guided if guided else None, train_guided_images=int(guided))
    return record


@torch.inference_mode()
def validate(model, loader, device, precision, ctx) -> dict:
    """Loss (plain cross-entropy), accuracy, per-class recall and macro one-vs-rest AUC on validation, from
    :func:`core.metrics.point_metrics` (which warns, with a MetricWarning, when a class is absent)."""
    from core.metrics import point_metrics

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
    merged = np.concatenate(all_gather_arrays(local, ctx))
    prob, label = merged[:, :-1], merged[:, -1].astype(int)
    figures = point_metrics(label, prob, list(CLASSES))
    picked = np.clip(prob[np.arange(len(label)), label], 1e-12, 1.0)
    return {"val_loss": float(-np.log(picked).mean()) if len(label) else float("nan"),
            "val_accuracy": figures["accuracy"], "val_images": int(len(label)),
            **{f"val_recall_{name}": figures["per_class"][name]["recall"] for name in CLASSES},
            "val_macro_auc": figures["macro_auc"]}


def better(new: dict, best: dict | None) -> bool:
    """Higher validation accuracy wins; ties go to the lower validation loss. Without validation (a final
    fit) the latest epoch is the one kept."""
    if best is None or "val_accuracy" not in new:
        return True
    if new["val_accuracy"] != best["val_accuracy"]:
        return new["val_accuracy"] > best["val_accuracy"]
    return new["val_loss"] < best["val_loss"]


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
