"""Checkpoints: tensors in safetensors, metadata as JSON in the safetensors header.

A checkpoint is one ``.safetensors`` file. Its header carries everything needed to rebuild and use the
model (architecture, class names in output order, preprocessing, base weights) and to judge it (training
settings, dataset fingerprint, history, validation metrics, library versions). A copy of that metadata is
written beside it as ``<name>.json`` for people to read; the header is what loading trusts.

Loading never unpickles anything. Training-data fingerprints (file hashes and perceptual hashes of every
image the model was trained or selected on) are stored as uint8 tensors under ``train_fingerprints.*``
so that an evaluation can flag test images that the model has already seen, without the training data.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from core.atomic import finish_atomic_write
from core.data import CLASSES
from core.model import ARCHITECTURE, DOWNSAMPLE_STRIDES, build_resnet50

FORMAT = "brain-tumour-mri/checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "checkpoint"
FINGERPRINT_PREFIX = "train_fingerprints."
DEFAULT_FILENAME = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message says why in words."""


@dataclass
class Checkpoint:
    state_dict: dict[str, torch.Tensor]
    metadata: dict
    fingerprints: dict[str, torch.Tensor]
    path: Path


def library_versions() -> dict[str, str]:
    import numpy
    import PIL
    import torchvision

    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "torchvision": torchvision.__version__, "numpy": numpy.__version__, "pillow": PIL.__version__}
    try:
        import safetensors

        versions["safetensors"] = safetensors.__version__
    except (ImportError, AttributeError):
        pass
    return versions


def resolve_checkpoint_path(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a directory holding exactly one (``model.safetensors`` preferred)."""
    path = Path(path).expanduser()
    if path.is_dir():
        preferred = path / DEFAULT_FILENAME
        if preferred.is_file():
            return preferred
        found = sorted(path.glob("*.safetensors"))
        if len(found) == 1:
            return found[0]
        if not found:
            raise CheckpointError(f"{path} holds no .safetensors checkpoint")
        raise CheckpointError(f"{path} holds several checkpoints ({', '.join(p.name for p in found)}); "
                              "name the file")
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path


def save_checkpoint(path: str | os.PathLike, model: nn.Module, metadata: dict,
                    fingerprints: dict[str, torch.Tensor] | None = None,
                    dtype: torch.dtype = torch.float32) -> Path:
    """Write ``model`` with ``metadata`` atomically: a crash never leaves a half-written file in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue  # a counter for BatchNorm momentum=None; meaningless at inference
        value = value.detach().cpu()
        # BatchNorm statistics stay float32: small running variances would lose precision in fp16.
        wanted = torch.float32 if "running_" in key else dtype
        tensors[key] = (value.to(wanted) if value.is_floating_point() else value).contiguous()
    for key, value in (fingerprints or {}).items():
        tensors[FINGERPRINT_PREFIX + key] = value.contiguous()
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata,
                "tensor_dtype": str(dtype).replace("torch.", "")}
    return _write(path, tensors, metadata)


def _write(path: Path, tensors: dict[str, torch.Tensor], metadata: dict) -> Path:
    """Tensors and metadata to ``path``, and the readable metadata copy beside it, each atomically."""
    from safetensors.torch import save_file

    metadata = json_safe(metadata)
    header = {METADATA_KEY: json.dumps(metadata, sort_keys=True, allow_nan=False)}
    tmp = path.with_name(path.name + ".partial")
    try:
        save_file(tensors, str(tmp), metadata=header)
        finish_atomic_write(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    sidecar = path.with_suffix(".json")
    tmp_json = sidecar.with_name(sidecar.name + ".partial")
    tmp_json.write_text(json.dumps(metadata, indent=2, sort_keys=True, allow_nan=False) + "\n")
    finish_atomic_write(tmp_json, sidecar)
    return path


def update_metadata(path: str | os.PathLike, changes: dict) -> Path:
    """Replace top-level metadata entries of a checkpoint; its tensors are rewritten bit for bit."""
    stored = load_checkpoint(path)
    tensors = {**stored.state_dict, **{FINGERPRINT_PREFIX + k: v for k, v in stored.fingerprints.items()}}
    return _write(stored.path, tensors, {**stored.metadata, **changes})


def json_safe(value):
    """NaN and infinities (e.g. an AUC with a class absent) become null: strict JSON has no NaN."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def read_metadata(path: str | os.PathLike) -> dict:
    """Only the metadata of a checkpoint (cheap: reads the header, not the tensors)."""
    from safetensors import safe_open

    path = resolve_checkpoint_path(path)
    try:
        with safe_open(str(path), "pt") as handle:
            header = handle.metadata() or {}
    except Exception as error:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"{path} is not a readable safetensors file ({error})") from None
    if METADATA_KEY not in header:
        raise CheckpointError(f"{path} is a safetensors file but not one of our checkpoints (no metadata)")
    try:
        metadata = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} has damaged metadata ({error})") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} checkpoint")
    version = metadata.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {version}; this code reads up to "
                              f"{FORMAT_VERSION}. Update the project to load it.")
    return metadata


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    from safetensors.torch import load_file

    path = resolve_checkpoint_path(path)
    metadata = read_metadata(path)
    try:
        tensors = load_file(str(path))
    except Exception as error:
        raise CheckpointError(f"{path} is damaged: its tensors cannot be read ({error})") from None
    fingerprints = {k[len(FINGERPRINT_PREFIX):]: v for k, v in tensors.items() if k.startswith(FINGERPRINT_PREFIX)}
    state = {k: v for k, v in tensors.items() if not k.startswith(FINGERPRINT_PREFIX)}
    return Checkpoint(state, metadata, fingerprints, path)


def model_from_checkpoint(checkpoint: Checkpoint) -> nn.Module:
    """Rebuild the network the metadata describes and load its tensors, checking that they fit."""
    meta = checkpoint.metadata
    arch = meta.get("architecture", {})
    if arch.get("name") != ARCHITECTURE:
        raise CheckpointError(f"{checkpoint.path}: architecture {arch.get('name')!r} is not supported "
                              f"(only {ARCHITECTURE})")
    classes = meta.get("classes")
    if not classes or not isinstance(classes, list):
        raise CheckpointError(f"{checkpoint.path}: the metadata lists no class names")
    stride = arch.get("downsample_stride", "3x3")
    if stride not in DOWNSAMPLE_STRIDES:
        raise CheckpointError(f"{checkpoint.path}: unknown downsample_stride {stride!r}")
    model = build_resnet50(len(classes), stride, arch.get("dropout", 0.0))
    expected = {k: v.shape for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    state = checkpoint.state_dict
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{checkpoint.path}: tensors do not match a {ARCHITECTURE}; missing "
                              f"{missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}")
    head = [k for k in expected if k.startswith("fc.") and k.endswith("weight")][-1]
    if state[head].shape[0] != len(classes):
        raise CheckpointError(f"{checkpoint.path}: the head has {state[head].shape[0]} outputs but the "
                              f"metadata names {len(classes)} classes ({', '.join(classes)})")
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(shape)}" for k, shape in expected.items()
             if tuple(state[k].shape) != tuple(shape)]
    if wrong:
        raise CheckpointError(f"{checkpoint.path}: tensor shapes differ from a {ARCHITECTURE}: {wrong[:3]}")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                          strict=False)
    return model.eval()


def check_classes_match(metadata: dict, classes=CLASSES) -> None:
    """Raise when a checkpoint's classes are not the data's (e.g. resuming on another dataset)."""
    theirs = list(metadata.get("classes", []))
    if theirs != list(classes):
        raise CheckpointError(f"the checkpoint has {len(theirs)} classes ({', '.join(theirs)}) but the data "
                              f"has {len(classes)} ({', '.join(classes)}); train a new model for this data")
