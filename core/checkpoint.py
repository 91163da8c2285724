"""Checkpoints: tensors in safetensors, metadata as JSON in the safetensors header.

A checkpoint is one ``.safetensors`` file. Its header carries everything needed to rebuild and use the
model (architecture, class names in output order, preprocessing, base weights) and to judge it (training
settings, dataset fingerprint, history, validation metrics, library versions). A copy of that metadata is
written beside it as ``<name>.json`` for people to read; the header is what loading trusts.

Loading never unpickles anything. Training-data fingerprints (file hashes and perceptual hashes of every
image the model was trained or selected on) are stored as uint8 tensors under ``train_fingerprints.*``
so that an evaluation can flag test images that the model has already seen, without the training data. The
familiarity model (:mod:`core.familiarity`: how far a scan lies from the training scans) is stored under
``familiarity.*``.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from core.atomic import finish_atomic_write
from core.data import CLASSES
from core.model import ARCHITECTURE, DOWNSAMPLE_STRIDES, OUTPUT_STRIDES, build_resnet50
from core.sources import FileRefused
from core.sources.files import load_json, printable
from core.sources.schema import schema_problem
from core.sources.tensors import read_safetensors, read_safetensors_header

FORMAT = "brain-tumour-mri/checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "checkpoint"
FINGERPRINT_PREFIX = "train_fingerprints."
FAMILIARITY_PREFIX = "familiarity."
DEFAULT_FILENAME = "model.safetensors"
# A ResNet-50 is 94 MB in float32; the fingerprints of a million training images would add 100 MB.
MAX_CHECKPOINT_BYTES = 512 << 20
# The network input sizes a checkpoint may ask for: a 20,000-pixel input would take gigabytes to run.
IMAGE_SIZES = (32, 512)
# The temperatures core.calibration can fit; anything else makes probabilities of 0/0.
TEMPERATURES = (0.05, 20.0)


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message says why in words."""


@dataclass
class Checkpoint:
    state_dict: dict[str, torch.Tensor]
    metadata: dict
    fingerprints: dict[str, torch.Tensor]
    path: Path
    familiarity: dict[str, torch.Tensor] = field(default_factory=dict)

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        """The tensors stored beside the network's, under their prefixes."""
        return {**{FINGERPRINT_PREFIX + k: v for k, v in self.fingerprints.items()},
                **{FAMILIARITY_PREFIX + k: v for k, v in self.familiarity.items()}}


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
    """A checkpoint file, or a directory holding exactly one (``model.safetensors`` preferred). Whether a file
    is a readable checkpoint is decided when it is read."""
    path = Path(path).expanduser()
    if path.is_dir():
        preferred = path / DEFAULT_FILENAME
        if preferred.is_file():
            return preferred
        found = sorted(path.glob("*.safetensors"))
        if len(found) == 1:
            return found[0]
        if not found:
            raise CheckpointError(f"{printable(path)} holds no .safetensors checkpoint")
        raise CheckpointError(f"{printable(path)} holds several checkpoints ({', '.join(p.name for p in found)}); "
                              "name the file")
    return path


def stored_tensors(model: nn.Module, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The network's tensors as a checkpoint stores them: on the CPU, in ``dtype`` (BatchNorm statistics stay
    float32: small running variances would lose precision in fp16), without BatchNorm's step counters."""
    tensors = {}
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue  # a counter for BatchNorm momentum=None; meaningless at inference
        wanted = (torch.float32 if "running_" in key else dtype) if value.is_floating_point() else value.dtype
        # A copy, always: the network goes on training, and these are kept as the best epoch's tensors.
        tensors[key] = value.detach().to(device="cpu", dtype=wanted, copy=True).contiguous()
    return tensors


def save_checkpoint(path: str | os.PathLike, model: nn.Module | dict[str, torch.Tensor], metadata: dict,
                    fingerprints: dict[str, torch.Tensor] | None = None,
                    dtype: torch.dtype = torch.float32,
                    familiarity: dict[str, torch.Tensor] | None = None) -> Path:
    """Write a network (or the tensors :func:`stored_tensors` made of it) with ``metadata`` atomically: a crash
    never leaves a half-written file in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = dict(model) if isinstance(model, dict) else stored_tensors(model, dtype)
    extra = Checkpoint({}, {}, fingerprints or {}, path, familiarity or {}).extra_tensors()
    tensors.update({key: value.contiguous() for key, value in extra.items()})
    return _write(path, tensors, complete_metadata(metadata, dtype))


def complete_metadata(metadata: dict, dtype: torch.dtype = torch.float32) -> dict:
    """``metadata`` with the entries every checkpoint carries: its format, version and tensor type."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata,
            "tensor_dtype": str(dtype).replace("torch.", "")}


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


def update_metadata(path: str | os.PathLike, changes: dict,
                    familiarity: dict[str, torch.Tensor] | None = None) -> Path:
    """Replace top-level metadata entries of a checkpoint (a damaged entry among them does not stop it); an entry
    changed to None is removed. ``familiarity``, when given, replaces the familiarity tensors. The other tensors
    are rewritten bit for bit, and the new metadata is checked before anything is written."""
    stored = load_checkpoint(path, replacing=changes)
    metadata = {key: value for key, value in {**stored.metadata, **changes}.items() if value is not None}
    validate_metadata(json_safe(metadata), stored.path)
    if familiarity is not None:
        stored.familiarity = {key: value.contiguous() for key, value in familiarity.items()}
    return _write(stored.path, {**stored.state_dict, **stored.extra_tensors()}, metadata)


def json_safe(value):
    """NaN and infinities (e.g. an AUC with a class absent) become null: strict JSON has no NaN."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _numbers(count: int, low: float, high: float, exclusive_low: bool = False) -> dict:
    bound = {"exclusiveMinimum": low} if exclusive_low else {"minimum": low}
    return {"type": "array", "minItems": count, "maxItems": count,
            "items": {"type": "number", **bound, "maximum": high}}


_OBJECT = {"type": "object"}
FILE_LISTS = ("seen_files", "val_files", "test_files")
_COUNTS = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}
# What the code that loads and shows a checkpoint relies on; other entries are free-form.
METADATA_SCHEMA = {
    "type": "object",
    "required": ["format", "format_version", "architecture", "classes", "preprocessing"],
    "properties": {
        "format": {"const": FORMAT},
        "format_version": {"type": "integer", "minimum": 1},
        "architecture": {"type": "object", "required": ["name"], "properties": {
            "name": {"const": ARCHITECTURE}, "downsample_stride": {"enum": list(DOWNSAMPLE_STRIDES)},
            "output_stride": {"enum": list(OUTPUT_STRIDES)},
            "dropout": {"type": "number", "minimum": 0, "exclusiveMaximum": 1}}},
        # Only the classes this project knows: names that come from a file are never shown unchecked.
        "classes": {"type": "array", "minItems": 2, "uniqueItems": True, "items": {"enum": list(CLASSES)}},
        "preprocessing": {"type": "object", "required": ["image_size", "mean", "std"], "properties": {
            "image_size": {"type": "integer", "minimum": IMAGE_SIZES[0], "maximum": IMAGE_SIZES[1]},
            "mean": _numbers(3, 0, 1), "std": _numbers(3, 0, 1, exclusive_low=True)}},
        "calibration": {"type": ["object", "null"], "required": ["temperature"], "properties": {
            "temperature": {"type": "number", "minimum": TEMPERATURES[0], "maximum": TEMPERATURES[1]},
            "refer_below": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "referral": {"type": "object", "additionalProperties": {"type": "object", "properties": {
                "images": {"type": "integer", "minimum": 0}, "correct": {"type": "integer", "minimum": 0}}}},
            "images": {"type": "integer", "minimum": 0}, "fitted_on": _OBJECT}},
        "familiarity": {"type": ["object", "null"], "required": ["threshold"], "properties": {
            "threshold": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1e6},
            "flag_share": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "threshold_from": {"enum": ["validation", "borrowed"]},
            "distance_threshold": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1e6},
            "probability_floor": {"type": ["number", "null"], "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "temperature": {"type": "number", "minimum": TEMPERATURES[0], "maximum": TEMPERATURES[1]},
            "training_scores": {"type": "object", "properties": {"median": {"type": "number", "exclusiveMinimum": 0}}},
            "fitted_on": _OBJECT}},
        "base_weights": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
        "data": {"type": "object", "properties": {
            "counts": {"type": "object", "additionalProperties": _COUNTS},
            **{key: {"type": "array"} for key in FILE_LISTS}}},  # items: see validate_metadata
        "validation": {"type": "object", "additionalProperties": {"type": ["number", "null"]}},
        "training": {"type": "object", "properties": {"config": _OBJECT, "best_epoch": {"type": "integer"}}},
        "history": {"type": "array", "items": _OBJECT},
    },
}


def validate_metadata(metadata, path: str | os.PathLike = "checkpoint") -> None:
    """Check checkpoint metadata against :data:`METADATA_SCHEMA` once, where it is read, so that every user of
    a checkpoint gets one clear :class:`CheckpointError` instead of a crash somewhere further in."""
    name = printable(path)
    if isinstance(metadata, dict) and isinstance(metadata.get("format_version"), int) \
            and metadata["format_version"] > FORMAT_VERSION and metadata.get("format") == FORMAT:
        raise CheckpointError(f"{name} has checkpoint format version {metadata['format_version']}; this code reads "
                              f"up to {FORMAT_VERSION}. Update the project to load it.")
    if isinstance(metadata, dict) and metadata.get("format") != FORMAT:
        raise CheckpointError(f"{name} is not a {FORMAT} checkpoint")
    problem = schema_problem(metadata, METADATA_SCHEMA)
    if problem is None:  # long file lists: checked here, much faster than item by item in the schema
        data = metadata.get("data") or {}
        problem = next((f"data.{key}: holds something other than file names" for key in FILE_LISTS
                        if not all(isinstance(item, str) for item in data.get(key) or [])), None)
    if problem is not None:
        problem = problem.replace("the whole", "the metadata as a whole")
        raise CheckpointError(f"{name} has unusable metadata: {problem}")


def _metadata(header: dict, path: Path, replacing=()) -> dict:
    """The checkpoint metadata in a safetensors header, checked. Entries named in ``replacing`` are about to be
    replaced and are left out first, so that a damaged one cannot block its own repair."""
    stored = header.get("__metadata__")
    if not isinstance(stored, dict) or METADATA_KEY not in stored:
        raise CheckpointError(f"{printable(path)} is a safetensors file but not one of our checkpoints (no metadata)")
    try:
        metadata = load_json(stored[METADATA_KEY])
    except (TypeError, ValueError, RecursionError) as error:
        raise CheckpointError(f"{printable(path)} has damaged metadata ({error})") from None
    if isinstance(metadata, dict):
        metadata = {key: value for key, value in metadata.items() if key not in replacing}
    validate_metadata(metadata, path)
    return metadata


def read_metadata(path: str | os.PathLike, replacing=()) -> dict:
    """Only the metadata of a checkpoint, checked against the schema (cheap: reads the header, not the
    tensors). ``replacing``: see :func:`_metadata`."""
    path = resolve_checkpoint_path(path)
    try:
        header = read_safetensors_header(path, MAX_CHECKPOINT_BYTES, "checkpoint")
    except FileRefused as error:
        raise CheckpointError(str(error)) from None
    return _metadata(header, path, replacing)


def load_checkpoint(path: str | os.PathLike, replacing=()) -> Checkpoint:
    """Tensors and checked metadata of a checkpoint. The file is read once, as a regular file of bounded size,
    and parsed by safetensors from memory: nothing is unpickled. ``replacing``: see :func:`_metadata`."""
    path = resolve_checkpoint_path(path)
    try:
        header, tensors = read_safetensors(path, MAX_CHECKPOINT_BYTES, "checkpoint")
    except FileRefused as error:
        raise CheckpointError(str(error)) from None
    metadata = _metadata(header, path, replacing)

    def under(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    state = {k: v for k, v in tensors.items() if not k.startswith((FINGERPRINT_PREFIX, FAMILIARITY_PREFIX))}
    return Checkpoint(state, metadata, under(FINGERPRINT_PREFIX), path, under(FAMILIARITY_PREFIX))


def model_from_checkpoint(checkpoint: Checkpoint) -> nn.Module:
    """Rebuild the network the metadata describes and load its tensors, checking that they fit."""
    meta = checkpoint.metadata  # checked against the schema when it was read
    arch, classes = meta["architecture"], meta["classes"]
    model = build_resnet50(len(classes), arch.get("downsample_stride", "3x3"), arch.get("dropout", 0.0),
                           arch.get("output_stride", 32))
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
    damaged = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if damaged:
        raise CheckpointError(f"{checkpoint.path}: {len(damaged)} tensors hold values that are not numbers (NaN or "
                              f"infinity), {', '.join(damaged[:3])} among them; the weights are damaged")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                          strict=False)
    return model.eval()


def check_classes_match(metadata: dict, classes=CLASSES) -> None:
    """Raise when a checkpoint's classes are not the data's (e.g. resuming on another dataset)."""
    theirs = list(metadata.get("classes", []))
    if theirs != list(classes):
        raise CheckpointError(f"the checkpoint has {len(theirs)} classes ({', '.join(theirs)}) but the data "
                              f"has {len(classes)} ({', '.join(classes)}); train a new model for this data")
