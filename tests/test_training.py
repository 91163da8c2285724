import shutil

import numpy as np
import pytest
import torch

from conftest import write_class_tree
from core.checkpoint import load_checkpoint, read_metadata
from core.config import TrainConfig
from core.data import DatasetError
from core.training import STATE_FILENAME, TrainingError, expected_epoch_seconds, prepare_data, train


def tiny(data, out, **overrides):
    settings = dict(data=str(data), out=str(out), image_size=48, epochs=2, head_epochs=1, batch_size=8,
                    weights="none", num_workers=0, progress=False, precision="fp32", seed=3)
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.fixture(scope="module")
def trained(kaggle_layout, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    path = train(tiny(kaggle_layout, out))
    return out, path


def test_training_writes_a_complete_checkpoint(trained, kaggle_layout):
    out, path = trained
    meta = read_metadata(path)
    assert meta["classes"] == ["glioma", "meningioma", "notumor", "pituitary"]
    assert meta["base_weights"]["name"].startswith("none")
    assert meta["architecture"]["name"] == "resnet50"
    assert [h["epoch"] for h in meta["history"]] == [1, 2]
    assert {"train_loss", "val_loss", "val_accuracy", "lr_head", "seconds"} <= set(meta["history"][0])
    assert meta["history"][0]["phase"] == "head" and meta["history"][1]["phase"] == "full"
    assert meta["training"]["config"]["epochs"] == 2
    assert len(meta["data"]["fingerprint"]) == 64
    assert sum(meta["data"]["counts"]["train"].values()) + sum(meta["data"]["counts"]["val"].values()) == 56
    assert {"torch", "torchvision", "python"} <= set(meta["versions"])
    assert (out / "history.json").is_file() and (out / STATE_FILENAME).is_file()
    prints = load_checkpoint(path).fingerprints
    assert prints["sha256"].shape == (56, 32) and prints["phash"].shape == (56, 32)
    assert int(prints["split"].sum()) == sum(meta["data"]["counts"]["val"].values())


def test_testing_folder_is_never_used(trained):
    meta = read_metadata(trained[1])
    seen = meta["data"]["seen_files"]
    assert meta["data"]["trained_on"] == "Training"
    assert all(not f.startswith("Testing") for f in seen) and meta["data"]["test_files"] == []


def test_an_interrupted_run_resumes_to_the_same_result(kaggle_layout, tmp_path, monkeypatch):
    import core.training as training

    whole = train(tiny(kaggle_layout, tmp_path / "whole", epochs=3))
    calls = {"n": 0}
    real_validate = training.validate

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # Ctrl-C during the third epoch
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(training, "validate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(kaggle_layout, tmp_path / "split", epochs=3))
    import json
    assert [h["epoch"] for h in json.loads((tmp_path / "split" / "history.json").read_text())] == [1, 2]
    monkeypatch.setattr(training, "validate", real_validate)
    resumed = train(tiny(kaggle_layout, tmp_path / "split", epochs=3, resume=True))

    a, b = read_metadata(whole)["history"], read_metadata(resumed)["history"]
    assert [h["epoch"] for h in b] == [1, 2, 3]
    for x, y in zip(a, b):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-4)
        assert x["lr_backbone"] == pytest.approx(y["lr_backbone"])
    final_a, final_b = load_checkpoint(whole).state_dict, load_checkpoint(resumed).state_dict
    assert all(torch.allclose(final_a[k].float(), final_b[k].float(), atol=1e-4) for k in final_a)


def test_resume_with_other_settings_is_refused(trained, tmp_path, kaggle_layout):
    out = tmp_path / "copy"
    shutil.copytree(trained[0], out)
    with pytest.raises(TrainingError, match="--epochs 2 -> 3"):
        train(tiny(kaggle_layout, out, epochs=3, resume=True))


def test_a_damaged_training_state_is_explained(trained, tmp_path, kaggle_layout):
    out = tmp_path / "damaged"
    shutil.copytree(trained[0], out)
    (out / STATE_FILENAME).write_bytes(b"garbage")
    with pytest.raises(TrainingError, match="damaged or not a training state"):
        train(tiny(kaggle_layout, out, resume=True))


def test_best_epoch_tensors_are_what_the_checkpoint_holds(trained):
    meta = read_metadata(trained[1])
    best = meta["training"]["best_epoch"]
    assert meta["validation"]["val_accuracy"] == next(h for h in meta["history"] if h["epoch"] == best)["val_accuracy"]
    assert meta["validation"]["val_accuracy"] == max(h["val_accuracy"] for h in meta["history"])


def test_a_final_fit_trains_on_every_image_and_keeps_the_last_epoch(kaggle_layout, tmp_path):
    path = train(tiny(kaggle_layout, tmp_path / "final", val_fraction=0.0))
    meta = read_metadata(path)
    assert sum(meta["data"]["counts"]["train"].values()) == 56 and meta["data"]["val_files"] == []
    assert meta["training"]["best_epoch"] == 2 and meta["validation"] == {}
    assert not any(k.startswith("val_") for h in meta["history"] for k in h)
    assert int(load_checkpoint(path).fingerprints["split"].sum()) == 0


def test_a_moving_average_of_the_weights_is_what_gets_validated_and_saved(kaggle_layout, tmp_path):
    path = train(tiny(kaggle_layout, tmp_path / "ema", ema_decay=0.9, val_fraction=0.0))
    saved = load_checkpoint(path).state_dict
    state = torch.load(tmp_path / "ema" / STATE_FILENAME, weights_only=True)
    averaged = {k[len("module."):]: v for k, v in state["ema"].items() if k.startswith("module.")}
    weight = "layer4.2.conv3.weight"
    assert torch.allclose(saved[weight].float(), averaged[weight].float(), atol=1e-6)
    assert not torch.allclose(saved[weight].float(), state["model"][weight].float(), atol=1e-6)
    statistics = "layer4.2.bn3.running_mean"  # BatchNorm statistics are the trained network's own
    assert torch.allclose(saved[statistics].float(), state["model"][statistics].float(), atol=1e-6)


def test_frozen_stages_keep_their_weights_and_statistics_and_early_epochs_run_smaller(kaggle_layout, tmp_path,
                                                                                      monkeypatch):
    import core.training as training

    initial = {}
    real_build = training.classifier_from_imagenet

    def remember_initial_weights(*args, **kwargs):
        model = real_build(*args, **kwargs)
        initial.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return model

    monkeypatch.setattr(training, "classifier_from_imagenet", remember_initial_weights)
    path = train(tiny(kaggle_layout, tmp_path / "frozen", epochs=3, freeze_stages=1, low_res_size=32,
                      low_res_epochs=2))
    meta = read_metadata(path)
    assert [h["image_size"] for h in meta["history"]] == [32, 32, 48]
    assert meta["preprocessing"]["image_size"] == 48  # the model is used at the full size
    saved = load_checkpoint(path).state_dict
    for name in ("conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer1.2.bn3.running_var",
                 "layer1.2.bn3.weight"):
        assert torch.equal(saved[name], initial[name]), f"{name} changed although its stage is frozen"
    for name in ("layer2.0.conv1.weight", "layer2.0.bn1.running_mean", "fc.weight"):
        assert not torch.equal(saved[name], initial[name]), f"{name} did not train"


def test_epoch_time_is_estimated_from_epochs_like_it():
    history = [{"phase": "head", "image_size": 160, "seconds": 50.0},
               {"phase": "full", "image_size": 160, "seconds": 100.0},
               {"phase": "full", "image_size": 160, "seconds": 110.0}]
    assert expected_epoch_seconds(history, "full", 160, 224) == 105.0   # the mean of the last two alike
    assert expected_epoch_seconds(history, "full", 320, 224) == 440.0   # 110 s scaled by (320 / 160) ** 2
    # Validation runs at full size whatever the training size: only the training part is scaled.
    timed = [{"phase": "full", "image_size": 160, "seconds": 110.0, "train_seconds": 80.0}]
    assert expected_epoch_seconds(timed, "full", 320, 224) == 30.0 + 80.0 * 4
    assert expected_epoch_seconds(history, "head", 160, 224) == 50.0
    assert expected_epoch_seconds(history[:1], "full", 224, 224) is None
    assert expected_epoch_seconds([{"phase": "full", "seconds": 30.0}], "full", 224, 224) == 30.0  # older runs


def test_an_existing_run_is_not_overwritten(trained, kaggle_layout, tmp_path):
    with pytest.raises(TrainingError, match="--resume"):
        train(tiny(kaggle_layout, trained[0]))
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    shutil.copy(trained[1], shipped / "model.safetensors")  # a finished model without its training state
    with pytest.raises(TrainingError, match="never overwritten"):
        train(tiny(kaggle_layout, shipped))


@pytest.mark.parametrize("overrides, message", [
    ({"val_fraction": 0.6}, "--val-fraction must be between 0"),
    ({"batch_size": 0}, "--batch-size must be at least 1"),
    ({"epochs": 0}, "--epochs must be at least 1"),
    ({"schedule": "linear"}, "--schedule must be cosine or onecycle"),
    ({"weights_file": "/nonexistent/weights.safetensors"}, "does not exist"),
    ({"freeze_stages": 5}, "--freeze-stages must be between 0"),
    ({"low_res_epochs": 1}, "--low-res-epochs needs --low-res-size"),
    ({"low_res_size": 64, "low_res_epochs": 1}, "--low-res-size must be between 32 and --image-size"),
    ({"low_res_size": 32, "low_res_epochs": 3}, "--low-res-epochs must be between 0 and --epochs"),
])
def test_impossible_settings_are_refused_before_reading_data(tmp_path, overrides, message):
    with pytest.raises(TrainingError, match=message):
        train(tiny(tmp_path / "not-even-read", tmp_path / "out", **overrides))


def test_too_few_images_for_one_batch_is_explained(kaggle_layout, tmp_path):
    with pytest.raises(TrainingError, match="fewer than --batch-size 64"):
        train(tiny(kaggle_layout, tmp_path / "out", batch_size=64))


def test_resume_without_a_run_is_explained(tmp_path, kaggle_layout):
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(tiny(kaggle_layout, tmp_path / "empty", resume=True))


def test_resume_on_other_classes_is_refused(trained, tmp_path, kaggle_layout):
    out = tmp_path / "other"
    shutil.copytree(trained[0], out)
    state = torch.load(out / STATE_FILENAME, weights_only=True)
    state["classes"] = ["glioma", "meningioma", "pituitary"]
    torch.save(state, out / STATE_FILENAME)
    with pytest.raises(TrainingError, match="trained on classes"):
        train(tiny(kaggle_layout, out, resume=True))


def test_split_is_seeded_stratified_and_keeps_duplicates_together(tmp_path):
    root = write_class_tree(tmp_path / "tree", per_class=20)
    # plant copies: byte-identical ones and resized re-encodings in the same class folders
    for folder in ("glioma", "pituitary"):
        for source in sorted((root / folder).glob("*.png"))[:4]:
            shutil.copy(source, source.with_name(source.stem + "_copy.png"))
            from PIL import Image
            Image.open(source).resize((96, 96)).save(source.with_name(source.stem + "_small.jpg"))
    cfg = TrainConfig(data=str(root), val_fraction=0.25, test_fraction=0.2, seed=5)
    data = prepare_data(cfg, progress=False)
    side = np.zeros(len(data.samples), dtype=int)
    side[data.val_idx] = 1
    side[data.test_idx] = 2
    assert len(set(data.train_idx) | set(data.val_idx) | set(data.test_idx)) == len(data.samples)
    for group in np.unique(data.groups):
        assert len(set(side[data.groups == group])) == 1, "a duplicate group straddles two splits"
    planted = [i for i, s in enumerate(data.samples) if s.path.stem.endswith("_copy")]
    assert len(planted) == 8 and all((data.groups == data.groups[i]).sum() >= 3 for i in planted)
    for k in range(4):  # every class on every side
        assert all((np.array([data.samples[i].label for i in idx]) == k).any()
                   for idx in (data.train_idx, data.val_idx, data.test_idx))
    again = prepare_data(cfg, progress=False)
    assert np.array_equal(again.val_idx, data.val_idx) and np.array_equal(again.test_idx, data.test_idx)
    other = prepare_data(TrainConfig(data=str(root), val_fraction=0.25, test_fraction=0.2, seed=6), progress=False)
    assert not np.array_equal(other.val_idx, data.val_idx)


def test_unreadable_images_are_listed_and_skipped(tmp_path):
    root = write_class_tree(tmp_path / "tree", per_class=10)
    (root / "glioma" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    path = train(tiny(root, tmp_path / "out", epochs=1, test_fraction=0.0))
    skipped = read_metadata(path)["data"]["skipped"]
    assert [s["path"] for s in skipped] == ["glioma/broken.jpg"]
    assert "not a readable image" in skipped[0]["reason"]


def test_missing_dataset_and_missing_class_are_explained(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        train(tiny(tmp_path / "nowhere", tmp_path / "out"))
    root = write_class_tree(tmp_path / "three", per_class=6, folder_names=("glioma", "meningioma", "notumor"))
    with pytest.raises(DatasetError, match="no folder for class pituitary"):
        train(tiny(root, tmp_path / "out2"))


def test_single_tree_holds_out_a_recorded_test_set(tmp_path):
    root = write_class_tree(tmp_path / "tree", per_class=14)
    path = train(tiny(root, tmp_path / "out", epochs=1))
    data = read_metadata(path)["data"]
    assert len(data["test_files"]) > 0
    assert not set(data["test_files"]) & set(data["seen_files"])
