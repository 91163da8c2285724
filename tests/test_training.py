import shutil

import numpy as np
import pytest
import torch

from conftest import write_class_tree
from core.checkpoint import load_checkpoint, read_metadata
from core.config import ConfigError, TrainConfig
from core.data import DatasetError
from core.split import prepare_data
from core.trainer import STATE_FILENAME, TrainingError, expected_epoch_seconds, train


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
    import core.trainer as trainer

    whole = train(tiny(kaggle_layout, tmp_path / "whole", epochs=3))
    calls = {"n": 0}
    real_validate = trainer.validate

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # Ctrl-C during the third epoch
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(trainer, "validate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(kaggle_layout, tmp_path / "split", epochs=3))
    import json
    assert [h["epoch"] for h in json.loads((tmp_path / "split" / "history.json").read_text())] == [1, 2]
    monkeypatch.setattr(trainer, "validate", real_validate)
    resumed = train(tiny(kaggle_layout, tmp_path / "split", epochs=3, resume=True))

    a, b = read_metadata(whole)["history"], read_metadata(resumed)["history"]
    assert [h["epoch"] for h in b] == [1, 2, 3]
    for x, y in zip(a, b):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-4)
        assert x["lr_backbone"] == pytest.approx(y["lr_backbone"])
    final_a, final_b = load_checkpoint(whole).state_dict, load_checkpoint(resumed).state_dict
    assert all(torch.allclose(final_a[k].float(), final_b[k].float(), atol=1e-4) for k in final_a)


def test_a_run_stopped_within_an_epoch_goes_on_from_its_last_saved_step(kaggle_layout, tmp_path, monkeypatch,
                                                                         caplog):
    """With --checkpoint-minutes the state is saved within an epoch; a run killed there resumes after the last saved
    step, takes exactly the epoch's remaining steps (its learning rate at the end is the uninterrupted run's), and
    counts the epoch's images once."""
    import logging

    import core.trainer as trainer

    whole = train(tiny(kaggle_layout, tmp_path / "whole", epochs=3))
    real_save = trainer.save_state
    saved = []

    def killed_after_two(run, phase, completed, optimizer, scheduler, partial=None):
        real_save(run, phase, completed, optimizer, scheduler, partial)
        if partial is not None and partial["epoch"] == 1:
            saved.append(partial["steps"])
            if len(saved) == 2:
                raise KeyboardInterrupt  # the machine goes away in the second epoch, after its second step

    monkeypatch.setattr(trainer, "save_state", killed_after_two)
    settings = dict(epochs=3, checkpoint_minutes=1e-9)  # a save after every step
    with pytest.raises(KeyboardInterrupt):
        train(tiny(kaggle_layout, tmp_path / "split", **settings))
    monkeypatch.setattr(trainer, "save_state", real_save)
    assert saved == [1, 2]
    with caplog.at_level(logging.INFO, logger="core.trainer"):
        resumed = train(tiny(kaggle_layout, tmp_path / "split", resume=True, **settings))
    assert "epoch 2 resumes after step 2 of" in caplog.text
    a, b = read_metadata(whole)["history"], read_metadata(resumed)["history"]
    assert [h["epoch"] for h in b] == [1, 2, 3]
    assert a[0]["train_loss"] == pytest.approx(b[0]["train_loss"], rel=1e-4)  # the first epoch was whole
    for x, y in zip(a, b):
        assert x["lr_backbone"] == pytest.approx(y["lr_backbone"]) and x["lr_head"] == pytest.approx(y["lr_head"])
    assert all(0 <= h["train_accuracy"] <= 1 for h in b)


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


def test_best_epoch_tensors_are_what_the_checkpoint_holds(kaggle_layout, tmp_path, monkeypatch):
    import core.trainer as trainer

    at_epoch, real_save = {}, trainer.save_epoch

    def keeping(run, record, *args):
        at_epoch[record["epoch"]] = trainer.stored_tensors(run.model, run.save_dtype)
        real_save(run, record, *args)

    monkeypatch.setattr(trainer, "save_epoch", keeping)
    path = train(tiny(kaggle_layout, tmp_path / "best", epochs=4, head_epochs=1, backbone_lr=3e-3))
    meta, stored = read_metadata(path), load_checkpoint(path).state_dict
    best = meta["training"]["best_epoch"]
    assert meta["validation"]["val_accuracy"] == max(h["val_accuracy"] for h in meta["history"])
    assert all(torch.equal(stored[name], at_epoch[best][name]) for name in stored)
    others = [epoch for epoch in at_epoch if epoch != best]
    assert all(any(not torch.equal(stored[name], at_epoch[epoch][name]) for name in stored) for epoch in others)


def test_a_final_fit_trains_on_every_image_and_keeps_the_last_epoch(kaggle_layout, tmp_path):
    path = train(tiny(kaggle_layout, tmp_path / "final", val_fraction=0.0))
    meta = read_metadata(path)
    assert sum(meta["data"]["counts"]["train"].values()) == 56 and meta["data"]["val_files"] == []
    assert meta["training"]["best_epoch"] == 2 and meta["validation"] == {}
    assert not any(k.startswith("val_") for h in meta["history"] for k in h)
    assert int(load_checkpoint(path).fingerprints["split"].sum()) == 0


def test_epoch_time_is_estimated_from_the_last_epochs_of_the_same_phase():
    history = [{"phase": "head", "seconds": 50.0}, {"phase": "full", "seconds": 90.0},
               {"phase": "full", "seconds": 100.0}, {"phase": "full", "seconds": 110.0}]
    assert expected_epoch_seconds(history, "full") == 105.0   # the mean of the last two
    assert expected_epoch_seconds(history, "head") == 50.0
    assert expected_epoch_seconds(history[:1], "full") is None


def test_the_time_limit_stops_before_an_epoch_that_would_end_past_it(kaggle_layout, tmp_path, monkeypatch):
    import core.trainer as trainer

    clock = {"now": 1000.0}
    monkeypatch.setattr(trainer.time, "time", lambda: clock["now"])
    real_epoch = trainer.train_one_epoch

    def slow_epoch(*args, **kwargs):  # every epoch takes 100 s on the clock above
        clock["now"] += 100.0
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_one_epoch", slow_epoch)
    # 250 s allow the head epoch (100 s) and one full epoch (judged from nothing yet), not a second full one.
    path = train(tiny(kaggle_layout, tmp_path / "timed", epochs=4, time_limit_minutes=250 / 60))
    meta = read_metadata(path)
    assert [h["epoch"] for h in meta["history"]] == [1, 2] and meta["training"]["stopped_by"] == "time limit"


def test_the_one_cycle_schedule_rises_and_falls_within_the_full_phase(kaggle_layout, tmp_path):
    path = train(tiny(kaggle_layout, tmp_path / "onecycle", epochs=4, schedule="onecycle"))
    rates = [h["lr_backbone"] for h in read_metadata(path)["history"] if h["phase"] == "full"]
    peak = tiny(kaggle_layout, tmp_path).backbone_lr
    assert len(rates) == 3 and rates[0] < peak and rates[-1] < rates[0] / 10  # ends far below where it started


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
])
def test_impossible_settings_are_refused_before_reading_data(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
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
