"""Tracing a merged dataset's images to their sources, and validating on a source held out whole."""

import json
import shutil

import pytest
from PIL import Image

from conftest import write_class_tree
from core.audit import fingerprint_files
from core.config import TrainConfig
from core.data import DatasetError
from core.provenance import trace_sources
from core.split import prepare_data
from training import provenance


def merged(tmp_path):
    """A Kaggle-style release whose Training/ merges two references (alpha, beta) and images of a third source,
    with one alpha image saved again at another size (a perceptual copy, as Kaggle re-encoded figshare)."""
    alpha = write_class_tree(tmp_path / "alpha", per_class=3, seed=1)
    beta = write_class_tree(tmp_path / "beta", per_class=2, seed=2, folder_names=("notumor",))
    release = write_class_tree(tmp_path / "release" / "Training", per_class=4, seed=3)
    write_class_tree(tmp_path / "release" / "Testing", per_class=2, seed=4)
    shutil.copy(alpha / "glioma" / "glioma_000.png", release / "glioma" / "from-alpha-0.png")
    Image.open(alpha / "meningioma" / "meningioma_002.png").resize((80, 80)).save(
        release / "meningioma" / "from-alpha-1.png")
    shutil.copy(beta / "notumor" / "notumor_001.jpg", release / "notumor" / "from-beta.jpg")
    return alpha, beta, tmp_path / "release"


def test_each_image_is_traced_to_the_first_reference_it_copies(tmp_path):
    alpha, beta, release = merged(tmp_path)
    images = sorted((release / "Training").rglob("*.*"))
    prints, errors = fingerprint_files(images)
    assert not errors
    references = {name: fingerprint_files(sorted(folder.rglob("*.*")))[0] for name, folder in
                  (("alpha", alpha), ("beta", beta))}
    traced = trace_sources(prints, references, rest="other")
    by_name = dict(zip((p.name for p in images), traced.source))
    assert by_name["from-alpha-0.png"] == by_name["from-alpha-1.png"] == "alpha"
    assert by_name["from-beta.jpg"] == "beta"
    assert {source for name, source in by_name.items() if not name.startswith("from-")} == {"other"}
    # an image that copies two references is given the first named, and said to be ambiguous
    twice = trace_sources(prints, {"beta": references["beta"], "again": references["beta"]}, rest="other")
    index = [p.name for p in images].index("from-beta.jpg")
    assert twice.source[index] == "beta" and twice.ambiguous == [index]


def test_the_command_writes_one_list_per_source_and_refuses_bad_references(tmp_path, capsys):
    alpha, beta, release = merged(tmp_path)
    out = tmp_path / "sources"
    status = provenance.main(["--data", str(release), "--reference", f"alpha={alpha}", "--reference",
                              f"beta={beta}", "--rest", "other", "--out", str(out), "--no-progress"])
    assert status == 0, capsys.readouterr().err
    lists = {name: (out / f"{name}.txt").read_text().split() for name in ("alpha", "beta", "other")}
    assert sorted(lists["alpha"]) == ["Training/glioma/from-alpha-0.png", "Training/meningioma/from-alpha-1.png"]
    assert lists["beta"] == ["Training/notumor/from-beta.jpg"]
    assert len(lists["other"]) == 16 and not any("Testing/" in p for ps in lists.values() for p in ps)
    record = json.loads((out / "provenance.json").read_text())
    assert record["counts"]["alpha"] == {"glioma": 1, "meningioma": 1, "notumor": 0, "pituitary": 0}
    for bad, message in (([f"alpha {alpha}"], "is not NAME=FOLDER"), ([f"Alpha={alpha}"], "is not NAME=FOLDER"),
                         ([f"alpha={tmp_path / 'nowhere'}"], "is not a folder")):
        argv = ["--data", str(release), "--rest", "other", "--out", str(tmp_path / "x"), "--no-progress"]
        assert provenance.main(argv + [arg for item in bad for arg in ("--reference", item)]) == 2
        assert message in capsys.readouterr().err
    # the lists are not replaced without --overwrite, nor written into a reference
    assert provenance.main(["--data", str(release), "--reference", f"alpha={alpha}", "--rest", "other",
                            "--out", str(out), "--no-progress"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert provenance.main(["--data", str(release), "--reference", f"alpha={alpha}", "--rest", "other",
                            "--out", str(alpha / "lists"), "--no-progress"]) == 2
    assert "overlaps the reference folder" in capsys.readouterr().err


def test_a_listed_source_validates_and_none_of_its_copies_is_trained_on(tmp_path):
    data = write_class_tree(tmp_path / "data", per_class=8, seed=5)
    listed = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.*"))[::3]
    # a copy of a validation image, filed under another name: it must be trained on by neither side
    copy = data / "glioma" / "copy-of-validation.png"
    Image.open(data / listed[0]).save(copy)
    (tmp_path / "val.txt").write_text("".join(f"{p}\n" for p in listed))
    prepared = prepare_data(TrainConfig(data=str(data), val_files=str(tmp_path / "val.txt"), test_fraction=0.0,
                                        seed=0), progress=False)
    val = {prepared.samples[i].relpath for i in prepared.val_idx}
    train = {prepared.samples[i].relpath for i in prepared.train_idx}
    assert val == set(listed)
    assert "glioma/copy-of-validation.png" not in train | val
    assert not set(prepared.groups[prepared.train_idx]) & set(prepared.groups[prepared.val_idx])
    assert len(train) == 32 + 1 - len(listed) - 1


def test_a_list_that_names_no_training_image_is_refused(tmp_path):
    data = write_class_tree(tmp_path / "data", per_class=6, seed=6)
    (tmp_path / "val.txt").write_text("elsewhere/glioma/x.png\n")
    with pytest.raises(DatasetError, match="names none of the training images"):
        prepare_data(TrainConfig(data=str(data), val_files=str(tmp_path / "val.txt"), test_fraction=0.0),
                     progress=False)
