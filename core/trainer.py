"""Fine-tune an ImageNet ResNet-50 on a class-per-folder MRI dataset: ``train(TrainConfig(...))``.

The run is a few named steps, in the manner of torchvision's reference training script:

* :func:`set_up`: check the settings, join the processes, find and split the data (:mod:`core.split`), and
  take up an interrupted run where it stopped (``--resume``);
* :func:`build_model`: ImageNet weights and a new head, or the resumed network;
* :func:`start_phase`: the optimiser and learning-rate schedule of a phase (the head alone on a frozen backbone,
  then the whole network with layer-wise learning rates);
* :func:`fit`: the epochs, each :func:`core.epochs.train_one_epoch` and :func:`core.epochs.validate`, stopping
  early or at the time limit;
* :func:`save_epoch`: the best checkpoint so far, and the state to resume from;
* :func:`finish`: the final metadata and, with a validation split, the softmax temperature fitted on it, written
  once.

Model selection is on validation accuracy (ties: loss), with early stopping; without a validation split (a final
fit) the last epoch is kept. Runs unchanged under ``torchrun`` (DistributedDataParallel; gloo on CPU, NCCL on
GPU).
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from core import __version__
from core.atomic import finish_atomic_write
from core.augment import parse_mri_transforms
from core.checkpoint import (
    DEFAULT_FILENAME,
    Checkpoint,
    complete_metadata,
    json_safe,
    library_versions,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
    stored_tensors,
)
from core.config import REMOVED_OPTIONS, TrainConfig, check_config
from core.data import CLASSES, ImageFolderDataset, training_augmentation
from core.distributed import Dist, all_sum, init_distributed
from core.epochs import TrainingError, better, build_optimizer, train_one_epoch, validate
from core.held_out import calibrate_in_memory, familiarity_in_memory
from core.inference import Classifier
from core.model import ARCHITECTURE, build_resnet50, classifier_from_imagenet, set_backbone_trainable
from core.runtime import default_workers, prepare_model, resolve_device, resolve_precision
from core.sources import read_bytes
from core.sources.files import printable
from core.split import PreparedData, fingerprint_tensors, prepare_data
from core.weights import IMAGENET_MEAN, IMAGENET_STD, resolve_imagenet_weights

log = logging.getLogger(__name__)

STATE_FILENAME = "last_state.pt"
MAX_STATE_BYTES = 2 << 30  # weights and AdamW's two moments: about 300 MB for a ResNet-50
HISTORY_FILENAME = "history.json"
# Settings that may change when a run is resumed: where things are and how fast they go, not what is trained.
RESUME_EXEMPT = {"data", "out", "resume", "progress", "num_workers", "time_limit_minutes", "checkpoint_minutes",
                 "device", "precision"}


# --------------------------------------------------------------------------------------------------
# The output folder and the state being resumed


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
    used = [f"--{key.replace('_', '-')}" for key, off in REMOVED_OPTIONS.items()
            if state["config"].get(key, off) not in (off, None)]
    if used:
        raise TrainingError(f"the run being resumed used {', '.join(used)}, which this version no longer has; start "
                            "a new run with another --out")
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


# --------------------------------------------------------------------------------------------------
# One training run, step by step


@dataclass
class Run:
    """Everything one training run holds between its steps."""
    cfg: TrainConfig
    started: float
    device: torch.device
    precision: str
    ctx: Dist
    out: Path
    data: PreparedData
    data_fingerprint: str
    resume: dict | None                       # the state being resumed, until its optimiser has been restored
    history: list = field(default_factory=list)
    best: dict | None = None                  # the history record of the best epoch so far
    stale: int = 0                            # epochs since the best one
    base_weights: dict = field(default_factory=dict)
    model: nn.Module | None = None
    best_tensors: dict | None = None          # the best epoch's tensors as stored, when this process saw it

    @property
    def state_path(self) -> Path:
        return self.out / STATE_FILENAME

    @property
    def checkpoint_path(self) -> Path:
        return self.out / DEFAULT_FILENAME

    @property
    def save_dtype(self) -> torch.dtype:
        return torch.float16 if self.cfg.save_dtype == "float16" else torch.float32

    @property
    def per_rank(self) -> int:
        return len(self.data.train_idx) // self.ctx.world

    @property
    def steps_per_epoch(self) -> int:
        return self.per_rank // self.cfg.batch_size


def set_up(cfg: TrainConfig) -> Run:
    """Settings, processes, the output folder, the state being resumed and the split data."""
    started = time.time()
    check_config(cfg)
    device = resolve_device(cfg.device)
    ctx = init_distributed(device.type)
    if device.type == "cuda" and ctx.enabled:
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if cfg.head_epochs == cfg.epochs:
        log.warning("all %d epochs train only the head: the backbone stays frozen", cfg.epochs)
    out = Path(cfg.out)
    resume = load_resume_state(out / STATE_FILENAME, cfg, ctx.world) if cfg.resume else None
    if resume is None and ((out / STATE_FILENAME).exists() or (out / DEFAULT_FILENAME).exists()):
        raise TrainingError(f"{out} already holds a training run; add --resume to continue it or choose another "
                            "--out (a finished model is never overwritten)")
    if ctx.main:
        check_writable(out)
    torch.manual_seed(cfg.seed)
    data = prepare_data(cfg, progress=cfg.progress and ctx.main)
    if cfg.mask_data is not None:
        from core.guidance import prepare_guidance

        with tqdm(desc="guidance: fingerprints", unit="img", disable=not (cfg.progress and ctx.main),
                  leave=False) as bar:
            data.guidance = prepare_guidance(data, cfg.mask_data, cfg.masks, cfg.mask_split, cfg.near_duplicate_bits,
                                             bar.update)
    run = Run(cfg, started, device, resolve_precision(cfg.precision, device), ctx, out, data, data.fingerprint(),
              resume)
    if resume is not None:
        if resume["data_fingerprint"] != run.data_fingerprint:
            raise TrainingError(f"the data in {data.root} changed since {run.state_path} was written; resuming would "
                                "mix two datasets. Start a new run with another --out")
        run.history, run.best, run.stale = list(resume["history"]), resume["best"], int(resume["stale"])
    if run.per_rank < cfg.batch_size:
        raise TrainingError(f"only {run.per_rank} training images per process, fewer than --batch-size "
                            f"{cfg.batch_size}; lower --batch-size or add images")
    log.info("data: %s; train %s; validation %s; held-out test %d; skipped %d unreadable", data.root,
             data.counts(data.train_idx), data.counts(data.val_idx), len(data.test_idx), len(data.skipped))
    return run


def build_model(run: Run) -> None:
    """The network: ImageNet weights with a fresh head, or, when resuming, the network as it was built then
    (whatever weights are found on this machine now)."""
    cfg = run.cfg
    if run.resume is None:
        base = resolve_imagenet_weights(cfg.weights, cfg.weights_file)
        run.base_weights = base.describe()
        model = classifier_from_imagenet(len(CLASSES), base, cfg.dropout, cfg.seed, cfg.output_stride)
    else:
        run.base_weights = dict(run.resume["base_weights"])
        model = build_resnet50(len(CLASSES), run.base_weights["downsample_stride"], cfg.dropout, cfg.output_stride)
        model.load_state_dict(run.resume["model"])
    log.info("ImageNet weights: %s", run.base_weights["name"])
    run.model = prepare_model(model, run.device)


def start_phase(run: Run, phase: str):
    """(network to train, optimiser, schedule) for a phase; a resumed run's optimiser and schedule are restored
    when it stopped in this phase."""
    cfg = run.cfg
    set_backbone_trainable(run.model, phase == "full")
    epochs = cfg.head_epochs if phase == "head" else cfg.epochs - cfg.head_epochs
    optimizer, scheduler = build_optimizer(run.model, cfg, phase, run.steps_per_epoch * epochs, run.steps_per_epoch)
    if run.resume is not None and run.resume["phase"] == phase:
        optimizer.load_state_dict(run.resume["optimizer"])
        scheduler.load_state_dict(run.resume["scheduler"])
    run.resume = None  # consumed: a later phase starts its optimiser afresh
    net = nn.parallel.DistributedDataParallel(run.model) if run.ctx.enabled else run.model
    return net, optimizer, scheduler


def loader_settings(run: Run) -> dict:
    workers = run.cfg.num_workers if run.cfg.num_workers is not None else default_workers(8)
    return {"batch_size": run.cfg.batch_size, "num_workers": workers, "pin_memory": run.device.type == "cuda"}


def epoch_loader(run: Run, epoch: int, augment, skip_steps: int = 0) -> DataLoader:
    """This process's share of the training images for ``epoch``, in a seeded order every process agrees on; with
    ``skip_steps``, without the batches of the steps already taken (a run resumed within the epoch)."""
    cfg, ctx = run.cfg, run.ctx
    generator = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
    indices = torch.randperm(len(run.data.train_idx), generator=generator)[:run.per_rank * ctx.world]
    mine = run.data.train_idx[indices[ctx.rank::ctx.world][:run.steps_per_epoch * cfg.batch_size].numpy()].tolist()
    mine = mine[skip_steps * cfg.batch_size:]
    masks = run.data.guidance.masks if run.data.guidance is not None else None
    return DataLoader(Subset(ImageFolderDataset(run.data.samples, cfg.image_size, augment, masks), mine),
                      shuffle=False, drop_last=True, generator=generator, **loader_settings(run))


def expected_epoch_seconds(history: list, phase: str) -> float | None:
    """How long an epoch of ``phase`` should take, from the last two of that phase; None before any."""
    same = [h["seconds"] for h in history if h["phase"] == phase][-2:]
    return float(np.mean(same)) if same else None


def stop_for_time(run: Run, phase: str) -> bool:
    """Rank 0 decides (and every process follows) whether the next epoch would end past the time limit."""
    over = 0.0
    if run.ctx.main and run.cfg.time_limit_minutes is not None:
        expected = expected_epoch_seconds(run.history, phase)
        if expected is not None and time.time() - run.started + expected > run.cfg.time_limit_minutes * 60:
            over = 1.0
    return all_sum([over], run.ctx)[0] > 0


def save_epoch(run: Run, record: dict, improved: bool, optimizer, scheduler) -> None:
    """After each epoch (main process): the checkpoint when the epoch is the best so far, the state to resume from
    and the history. Each is written atomically."""
    if improved:
        run.best_tensors = stored_tensors(run.model, run.save_dtype)
        save_checkpoint(run.checkpoint_path, run.best_tensors, build_metadata(run), fingerprint_tensors(run.data),
                        run.save_dtype)
    save_state(run, record["phase"], record["epoch"] - 1, optimizer, scheduler)
    _atomic_json(run.history, run.out / HISTORY_FILENAME)


def save_state(run: Run, phase: str, completed: int, optimizer, scheduler, partial: dict | None = None) -> None:
    """The state to resume from: after epoch ``completed`` (0-based), or within the next one (``partial``: its
    steps taken, running sums and seconds so far)."""
    _atomic_torch_save({"model": run.model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "phase": phase, "epoch": completed,
                        "history": run.history, "best": run.best, "stale": run.stale, "classes": list(CLASSES),
                        "data_fingerprint": run.data_fingerprint, "config": run.cfg.to_dict(),
                        "base_weights": run.base_weights, "processes": run.ctx.world, "partial": partial},
                       run.state_path)


def fit(run: Run) -> str:
    """The epochs; returns why they ended: "all epochs", "early stop" or "time limit"."""
    cfg, ctx = run.cfg, run.ctx
    augment = training_augmentation(cfg.rotation, (cfg.scale_min, cfg.scale_max), cfg.translate,
                                    cfg.brightness, cfg.contrast, cfg.hflip, parse_mri_transforms(cfg.mri_transforms),
                                    cfg.mri_probability)
    val_indices = run.data.val_idx[ctx.rank::ctx.world].tolist()  # a disjoint share per process, no padding
    val_loader = DataLoader(Subset(ImageFolderDataset(run.data.samples, cfg.image_size), val_indices),
                            shuffle=False, **loader_settings(run))
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    scaler = torch.amp.GradScaler(run.device.type) if run.precision == "fp16" else None
    start = int(run.resume["epoch"]) + 1 if run.resume else 0
    partial = (run.resume or {}).get("partial")  # read before start_phase consumes the resumed state
    if run.stale >= cfg.patience:
        return "early stop"  # the resumed run had already stopped early
    phase = None
    within = cfg.checkpoint_minutes > 0 and ctx.world == 1  # several processes: epochs' ends only
    for epoch in range(start, cfg.epochs):
        wanted = "head" if epoch < cfg.head_epochs else "full"
        if stop_for_time(run, wanted):
            log.warning("stopping before epoch %d: it would end past the %.0f-minute limit", epoch + 1,
                        cfg.time_limit_minutes)
            return "time limit"
        if wanted != phase:
            phase = wanted
            net, optimizer, scheduler = start_phase(run, phase)
        done = None
        if partial is not None and partial["epoch"] == epoch:  # resumed within this epoch: on from where it was
            done = (int(partial["steps"]), [float(v) for v in partial["sums"]])
            log.info("epoch %d resumes after step %d of %d", epoch + 1, done[0], run.steps_per_epoch)
        skipped = done[0] if done else 0
        earlier = float(partial["train_seconds"]) if done else 0.0
        loader = epoch_loader(run, epoch, augment, skipped)
        # Augmentation draws in the main process; a resumed epoch's rest draws afresh (not bit-identical to a run
        # that was never stopped, which nothing here relies on).
        torch.manual_seed(cfg.seed * 1000 + epoch * 10 + ctx.rank + 100_003 * skipped)
        began = time.time()

        def save_within(steps: int, sums: list[float], epoch=epoch, phase=phase, optimizer=optimizer,
                        scheduler=scheduler, began=began, earlier=earlier) -> None:
            save_state(run, phase, epoch - 1, optimizer, scheduler,
                       {"epoch": epoch, "steps": steps, "sums": sums,
                        "train_seconds": earlier + time.time() - began})

        with tqdm(total=len(loader.dataset) * ctx.world, desc=f"epoch {epoch + 1}/{cfg.epochs} [{phase}]",
                  unit="img", disable=not (cfg.progress and ctx.main), dynamic_ncols=True) as bar:
            record = train_one_epoch(net, loader, optimizer, scheduler, scaler, criterion, run.device, run.precision,
                                     ctx, bar, frozen_backbone=phase == "head",
                                     guidance=(cfg.mask_weight, cfg.mask_margin_px) if cfg.mask_data else None,
                                     done=done, checkpoint=save_within if within else None,
                                     checkpoint_seconds=60 * cfg.checkpoint_minutes)
        this_run = time.time() - began
        train_seconds = earlier + this_run
        if len(run.data.val_idx):
            record.update(validate(run.model, val_loader, run.device, run.precision, ctx))
        seconds = earlier + time.time() - began
        record.update({"epoch": epoch + 1, "phase": phase, "seconds": round(seconds, 1),
                       "train_seconds": round(train_seconds, 1),
                       "train_images_per_second": round(len(loader.dataset) * ctx.world / this_run, 2),
                       "lr_head": optimizer.param_groups[0]["lr"],
                       "lr_backbone": max((g["lr"] for g in optimizer.param_groups if not g["name"].startswith("fc")),
                                          default=0.0)})
        run.history.append(record)
        improved = better(record, run.best)
        run.best, run.stale = (dict(record), 0) if improved else (run.best, run.stale + 1)
        scores = (f"val loss {record['val_loss']:.4f} acc {record['val_accuracy']:.4f} "
                  f"auc {record['val_macro_auc']:.5f}" if "val_loss" in record else "no validation (final fit)")
        kept = " (best)" if len(run.data.val_idx) else " (saved)"
        log.info("epoch %d/%d %s: train loss %.4f acc %.4f | %s | %.0fs%s", epoch + 1, cfg.epochs, phase,
                 record["train_loss"], record["train_accuracy"], scores, seconds, kept if improved else "")
        if ctx.main:
            save_epoch(run, record, improved, optimizer, scheduler)
        if run.stale >= cfg.patience:
            log.info("early stop: no better validation score for %d epochs", run.stale)
            return "early stop"
    return "all epochs"


def finish(run: Run, stopped_by: str) -> None:
    """The checkpoint's final metadata (the whole history, why training stopped) and, with a validation split, the
    softmax temperature fitted on it in memory: one write. The best epoch's tensors come from memory when this
    process saved them, else from the checkpoint written before an interruption (read once)."""
    if run.best_tensors is None:
        if not run.checkpoint_path.is_file():
            raise TrainingError("no epoch finished, so no checkpoint was written")
        stored = load_checkpoint(run.checkpoint_path)
        run.best_tensors = stored.state_dict
        # Its own best epoch is read from the file, which stays right even if a crash once fell between writing
        # it and writing the state.
        run.best = next(h for h in run.history if h["epoch"] == stored.metadata["training"]["best_epoch"])
    metadata = build_metadata(run)
    metadata["training"]["stopped_by"] = stopped_by
    familiarity = None
    classifier = held_out_classifier(run, metadata) if len(run.data.val_idx) else None
    if classifier is not None:
        train, validation = run.data.part(run.data.train_idx), run.data.part(run.data.val_idx)
        calibration = calibrate_in_memory(classifier, validation)
        if calibration is not None:
            metadata["calibration"] = calibration
            classifier.temperature = float(calibration["temperature"])  # the familiarity's floor is read at it
        fitted_on = {"split": "training", "checkpoint": run.checkpoint_path.parent.name,
                     "data_fingerprint": run.data_fingerprint, "precision": classifier.precision}
        familiarity = familiarity_in_memory(classifier, train, validation, fitted_on)
        if familiarity is not None:
            metadata["familiarity"] = familiarity.record
    save_checkpoint(run.checkpoint_path, run.best_tensors, metadata, fingerprint_tensors(run.data), run.save_dtype,
                    familiarity.tensors if familiarity is not None else None)


def held_out_classifier(run: Run, metadata: dict) -> Classifier | None:
    """The best network as stored, ready to be judged on held-out images (at the precision inference uses by
    default, on the device the user chose); None with a warning if it cannot be built: that never costs the
    checkpoint, which is written next."""
    try:
        checkpoint = Checkpoint(run.best_tensors, complete_metadata(metadata, run.save_dtype), {}, run.checkpoint_path)
        return Classifier(model_from_checkpoint(checkpoint), checkpoint.metadata, run.checkpoint_path, run.cfg.device)
    except Exception as error:  # see the docstring
        log.warning("neither calibrated nor given a familiarity model: %s", error)
        return None


def train(cfg: TrainConfig) -> Path:
    """Train and return the path of the best checkpoint (``<out>/model.safetensors``)."""
    from core.sources.volumes import use_slice

    use_slice(cfg.volume_slice)
    run = set_up(cfg)
    build_model(run)
    stopped_by = fit(run)
    if run.ctx.main:
        finish(run, stopped_by)
    if run.ctx.enabled:
        dist.barrier()
    return run.checkpoint_path


# --------------------------------------------------------------------------------------------------
# Writing


def build_metadata(run: Run) -> dict:
    cfg, data, best = run.cfg, run.data, run.best
    seen = np.sort(np.concatenate([data.train_idx, data.val_idx]))
    return {
        "architecture": {"name": ARCHITECTURE, "downsample_stride": run.base_weights["downsample_stride"],
                         "output_stride": cfg.output_stride, "dropout": cfg.dropout, "num_classes": len(CLASSES)},
        "classes": list(CLASSES),
        "preprocessing": {"image_size": cfg.image_size, "resize": "pad_to_square_then_bilinear",
                          "color": "rgb", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "base_weights": run.base_weights,
        "training": {"config": cfg.to_dict(), "precision": run.precision, "processes": run.ctx.world,
                     "epoch_seconds": round(sum(h["seconds"] for h in run.history), 1), "best_epoch": best["epoch"],
                     "finished": datetime.now(UTC).isoformat(timespec="seconds")},
        "data": {
            # As the user named it, and relative to it: no machine-specific absolute paths are shipped.
            "root": cfg.data, "trained_on": data.root.relative_to(data.dataset_root).as_posix()
            if data.root != data.dataset_root else ".",
            "fingerprint": run.data_fingerprint,
            "counts": {"train": data.counts(data.train_idx), "val": data.counts(data.val_idx),
                       "test": data.counts(data.test_idx)},
            "duplicate_groups": int(len(np.unique(data.groups))),
            "near_duplicate_bits": cfg.near_duplicate_bits,
            "skipped": data.skipped, "unknown_folders": data.unknown_folders,
            "label_conflicts": data.label_conflicts,
            "val_files": sorted(data.samples[i].relpath for i in data.val_idx),
            "test_files": sorted(data.samples[i].relpath for i in data.test_idx),
            "seen_files": [data.samples[i].relpath for i in seen],  # row order of train_fingerprints.*
            "guidance": data.guidance.record if data.guidance is not None else None,
        },
        "history": run.history,
        "validation": {k: v for k, v in best.items() if k.startswith("val_")},
        "versions": {**library_versions(), "project": __version__},
    }


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
