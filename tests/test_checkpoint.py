import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

import core.checkpoint as ckpt
from core.checkpoint import (
    CheckpointError,
    check_classes_match,
    load_checkpoint,
    model_from_checkpoint,
    read_metadata,
    save_checkpoint,
)
from core.data import CLASSES
from core.model import build_resnet50


def metadata(classes=CLASSES, stride="3x3", output_stride=32):
    return {"architecture": {"name": "resnet50", "downsample_stride": stride, "output_stride": output_stride,
                             "dropout": 0.0},
            "classes": list(classes),
            "preprocessing": {"image_size": 64, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_resnet50(len(CLASSES)).eval()


def test_round_trip_keeps_tensors_metadata_and_fingerprints(tmp_path, model):
    prints = {"sha256": torch.arange(64, dtype=torch.uint8).view(2, 32)}
    path = save_checkpoint(tmp_path / "model.safetensors", model, metadata(), prints)
    loaded = load_checkpoint(tmp_path)  # a directory resolves to its model.safetensors
    assert loaded.path == path
    assert loaded.metadata["classes"] == list(CLASSES)
    assert loaded.metadata["format_version"] == ckpt.FORMAT_VERSION
    assert torch.equal(loaded.fingerprints["sha256"], prints["sha256"])
    rebuilt = model_from_checkpoint(loaded)
    for key, value in model.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(rebuilt.state_dict()[key], value), key
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar == loaded.metadata


def test_half_precision_checkpoint_is_half_the_size_and_loads_as_float32(tmp_path, model):
    full = save_checkpoint(tmp_path / "full.safetensors", model, metadata())
    half = save_checkpoint(tmp_path / "half.safetensors", model, metadata(), dtype=torch.float16)
    assert os.path.getsize(half) < 0.51 * os.path.getsize(full)
    rebuilt = model_from_checkpoint(load_checkpoint(half))
    assert rebuilt.fc.weight.dtype == torch.float32
    assert torch.allclose(rebuilt.fc.weight, model.fc.weight, atol=1e-3)


def test_head_and_class_list_disagreeing_is_explained(tmp_path):
    three = build_resnet50(3)
    save_checkpoint(tmp_path / "model.safetensors", three, metadata())
    with pytest.raises(CheckpointError, match="head has 3 outputs but the metadata names 4 classes"):
        model_from_checkpoint(load_checkpoint(tmp_path / "model.safetensors"))


def test_class_mismatch_with_the_data_is_explained():
    with pytest.raises(CheckpointError, match="3 classes .* but the data has 4"):
        check_classes_match(metadata(classes=("glioma", "meningioma", "pituitary")))


def test_tensors_of_another_network_are_refused(tmp_path):
    save_file({"weight": torch.zeros(3, 3)}, str(tmp_path / "other.safetensors"),
              metadata={ckpt.METADATA_KEY: json.dumps({"format": ckpt.FORMAT, "format_version": 1, **metadata()})})
    with pytest.raises(CheckpointError, match="tensors do not match a resnet50"):
        model_from_checkpoint(load_checkpoint(tmp_path / "other.safetensors"))


def test_foreign_safetensors_and_damaged_files_are_explained(tmp_path):
    save_file({"x": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="not one of our checkpoints"):
        read_metadata(tmp_path / "plain.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        read_metadata(tmp_path / "junk.safetensors")
    with pytest.raises(CheckpointError, match="does not exist"):
        read_metadata(tmp_path / "absent.safetensors")


def test_newer_format_asks_for_an_update(tmp_path, model):
    path = save_checkpoint(tmp_path / "model.safetensors", model, metadata())
    tensors = load_checkpoint(path)
    newer = {**tensors.metadata, "format_version": ckpt.FORMAT_VERSION + 1}
    save_file(tensors.state_dict, str(path), metadata={ckpt.METADATA_KEY: json.dumps(newer)})
    with pytest.raises(CheckpointError, match="Update the project"):
        read_metadata(path)


class _Payload:
    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_loading_never_unpickles(tmp_path):
    """A pickle disguised as a checkpoint must be refused without running its code."""
    payload = _Payload()
    payload.marker = str(tmp_path / "pwned")
    (tmp_path / "model.safetensors").write_bytes(pickle.dumps(payload))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "model.safetensors")
    assert not (tmp_path / "pwned").exists()


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, model, monkeypatch):
    path = save_checkpoint(tmp_path / "model.safetensors", model, metadata())
    before = path.read_bytes()

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr("safetensors.torch.save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, metadata())
    assert path.read_bytes() == before
    assert not list(tmp_path.glob("*.partial"))


def test_directory_with_several_checkpoints_asks_which(tmp_path, model):
    save_checkpoint(tmp_path / "a.safetensors", model, metadata())
    save_checkpoint(tmp_path / "b.safetensors", model, metadata())
    with pytest.raises(CheckpointError, match="several checkpoints"):
        load_checkpoint(tmp_path)
