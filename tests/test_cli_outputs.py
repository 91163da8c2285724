"""Command lines that write, against hostile settings: every output passes one guard (core.outputs) before any work,
so that nothing is written into, over or around what a command reads, and the degenerate settings of the split and
cross-validation commands get one sentence each instead of a crash or a silent, useless result.

Each command runs in process (its ``main``), and the tree it was pointed at is compared file by file (bytes and
modification times) before and after.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import ROOT, write_class_tree
from hostile import tried
from test_hostile_inputs import snapshot

SPLIT = "command line: python -m training.localisation_split"
CROSSVAL = "command line: python -m training.crossval"
TINY = ["--image-size", "48", "--epochs", "1", "--batch-size", "2", "--weights", "none", "--num-workers", "0",
        "--no-progress"]


def refused(main, argv: list[str], expect: str, capsys) -> str:
    """Run a command line: it must answer with exit status 2 and one ``error:`` line holding ``expect``."""
    status = main([str(a) for a in argv])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], (argv, lines)
    assert "bug" not in lines[0] and "Error" not in lines[0], lines
    return lines[0]


@pytest.fixture
def dataset(tmp_path) -> Path:
    """A four-class tree whose glioma folder already holds someone's test.txt."""
    data = write_class_tree(tmp_path / "home" / "data", per_class=6, size=64)
    (data / "glioma" / "test.txt").write_text("a list someone keeps here\n")
    return data


@pytest.fixture
def no_training(monkeypatch):
    """Cross-validation must refuse before any fold is trained or evaluated: reaching either fails the test."""
    import core.crossval

    def reached(*args, **kwargs):
        raise AssertionError("a fold was trained or evaluated before the settings were refused")

    monkeypatch.setattr(core.crossval, "train", reached)
    monkeypatch.setattr(core.crossval, "evaluate", reached)


# --------------------------------------------------------------------------------------------------
# The split command


def test_a_split_is_never_written_in_or_around_the_dataset(dataset, tmp_path, capsys):
    from training.localisation_split import main

    link = tmp_path / "link-into-data"
    link.symlink_to(dataset / "glioma")
    before = snapshot(tmp_path)
    for out, what in ((dataset / "glioma", "a class folder holding a test.txt"), (dataset, "the dataset itself"),
                      (dataset.parent, "a folder holding the dataset"), (dataset / "notumor" / "split", "a new "
                       "folder inside the dataset"), (Path("/"), "the root folder"), (Path("."), "the current folder")):
        tried(f"{SPLIT} --out", f"--out {what}")
        refused(main, ["--data", dataset, "--out", out, "--no-progress"],
                "names no folder" if what in ("the root folder", "the current folder") else "overlaps the dataset",
                capsys)
    tried(f"{SPLIT} --out", "--out a link leading into the dataset")
    refused(main, ["--data", dataset, "--out", link / "split", "--no-progress"], "overlaps the dataset", capsys)
    assert snapshot(tmp_path) == before


def test_an_existing_folder_is_replaced_only_when_it_is_a_split_and_asked(dataset, tmp_path, capsys):
    from core.localisation_split import SPLIT_FILE
    from training.localisation_split import main

    out = tmp_path / "split"
    arguments = ["--data", dataset, "--out", out, "--neighbour-bits", "0", "--no-progress"]
    assert main([str(a) for a in arguments]) == 0
    capsys.readouterr()
    first = json.loads((out / SPLIT_FILE).read_text())
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "thesis.txt").write_text("years of work")
    before = snapshot(tmp_path)
    tried(f"{SPLIT} --out", "an existing split, without --overwrite")
    refused(main, arguments, "already exists", capsys)
    tried(f"{SPLIT} --out --overwrite", "a folder of notes that is not a split")
    refused(main, ["--data", dataset, "--out", notes, "--overwrite", "--no-progress"], "not a localisation split",
            capsys)
    assert snapshot(tmp_path) == before
    (out / "reading.txt").write_text("kept beside the split")
    before = snapshot(tmp_path)
    tried(f"{SPLIT} --out --overwrite", "a split folder holding another file")
    refused(main, [*arguments, "--overwrite"], "not a localisation split", capsys)
    assert snapshot(tmp_path) == before
    (out / "reading.txt").unlink()
    assert main([str(a) for a in [*arguments, "--overwrite", "--seed", "3"]]) == 0
    assert json.loads((out / SPLIT_FILE).read_text())["seed"] == 3 != first["seed"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "notes", "split"]  # no staging folder left


def test_degenerate_split_settings_and_datasets_get_a_sentence_before_any_work(dataset, tmp_path, capsys):
    from training.localisation_split import main

    one = write_class_tree(tmp_path / "one", per_class=1, folder_names=("glioma",))
    two = write_class_tree(tmp_path / "two", per_class=2, size=64)
    one_class = write_class_tree(tmp_path / "one-class", per_class=2, folder_names=("glioma",))
    empty = tmp_path / "empty"
    (empty / "glioma").mkdir(parents=True)
    cases = [
        ("one image file as --data", ["--data", dataset / "glioma" / "glioma_000.png"], "is a file, not a dataset"),
        ("a dataset of one image", ["--data", one], "holds 1 glioma image"),
        ("a dataset of two images a class", ["--data", two], "holds 2 glioma images"),
        ("a dataset of one class with two images", ["--data", one_class], "needs at least 3"),
        ("an empty class folder", ["--data", empty], "holds no images"),
        ("a folder without class folders", ["--data", tmp_path / "one" / "glioma"], "no class folders"),
        ("--seed -1", ["--data", dataset, "--seed", "-1"], "--seed must be a whole number from 0"),
        ("--seed 2**32 + 1", ["--data", dataset, "--seed", str(2**32 + 1)], "--seed must be a whole number from 0"),
        ("--test-fraction 0.5 --validation-fraction 0.5",
         ["--data", dataset, "--test-fraction", "0.5", "--validation-fraction", "0.5"], "add up to less than 0.9"),
        ("--test-fraction 0", ["--data", dataset, "--test-fraction", "0"], "must each be in (0, 0.5]"),
        ("--validation-fraction -0.1", ["--data", dataset, "--validation-fraction", "-0.1"], "must each be in"),
        ("--neighbour-bits 300", ["--data", dataset, "--neighbour-bits", "300"], "--neighbour-bits"),
    ]
    before = snapshot(tmp_path)
    for what, arguments, expect in cases:
        tried(SPLIT, what)
        refused(main, [*arguments, "--out", tmp_path / "split", "--no-progress"], expect, capsys)
    assert snapshot(tmp_path) == before and not (tmp_path / "split").exists()


def test_a_split_that_would_leave_a_side_without_a_class_names_the_side_and_the_class(dataset, tmp_path, capsys):
    """Held-out shares this large leave nothing of some class to train on (the data form few groups): refused, where
    before the command exited 0 with a training side of three slices of one class."""
    from training.localisation_split import main

    before = snapshot(tmp_path)
    tried(SPLIT, "--test-fraction 0.45 --validation-fraction 0.4 on few groups")
    line = refused(main, ["--data", dataset, "--out", tmp_path / "split", "--test-fraction", "0.45",
                          "--validation-fraction", "0.4", "--no-progress"], "side would hold no", capsys)
    assert "the train side" in line and "slice" in line
    assert snapshot(tmp_path) == before


def test_a_dataset_of_one_class_is_split_when_each_side_can_hold_it(tmp_path, capsys):
    """One class is a dataset's whole (the LGG release is all glioma): with groups enough for three sides it is split,
    and every side holds it."""
    from core.localisation_split import SPLIT_FILE
    from training.localisation_split import main

    data = write_class_tree(tmp_path / "glioma-only", per_class=8, folder_names=("glioma",))
    tried(SPLIT, "a dataset of one class with enough slices")
    assert main(["--data", str(data), "--out", str(tmp_path / "split"), "--neighbour-bits", "0", "--no-progress"]) == 0
    counts = json.loads((tmp_path / "split" / SPLIT_FILE).read_text())["counts"]
    assert all(counts[side]["glioma"] > 0 for side in ("train", "validation", "test"))
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------------------------------
# Cross-validation


def test_crossval_refuses_an_out_in_or_around_the_dataset_before_training_a_fold(dataset, no_training, capsys):
    from training.crossval import main

    before = snapshot(dataset.parent.parent)
    for out, what in ((dataset / "glioma" / "cv", "a new folder in a class folder"), (dataset, "the dataset"),
                      (dataset.parent.parent, "a folder holding the dataset")):
        tried(f"{CROSSVAL} --out", f"--out {what}")
        refused(main, ["--data", dataset, "--out", out, "--folds", "2", *TINY], "overlaps the dataset", capsys)
    assert snapshot(dataset.parent.parent) == before


def test_degenerate_crossval_settings_and_datasets_get_a_sentence_before_any_work(dataset, tmp_path, no_training,
                                                                                   capsys):
    from training.crossval import main

    two = write_class_tree(tmp_path / "two", per_class=2, size=64)
    one_class = write_class_tree(tmp_path / "one-class", per_class=3, folder_names=("glioma",))
    empty = tmp_path / "empty"
    (empty / "glioma").mkdir(parents=True)
    cases = [
        ("one image file as --data", ["--data", dataset / "glioma" / "glioma_000.png"], "is a file, not a dataset"),
        ("two images a class", ["--data", two], "training needs at least 4 of each class"),
        ("one class of three images", ["--data", one_class], "training needs at least 4 of each class"),
        ("an empty class folder", ["--data", empty], "holds no images"),
        ("--folds 1", ["--data", dataset, "--folds", "1"], "from 2 to 10"),
        ("--folds 0", ["--data", dataset, "--folds", "0"], "from 2 to 10"),
        ("--folds '²' (a digit Python's int() refuses)", ["--data", dataset, "--folds", "²"], "from 2 to 10"),
        ("--folds 10, more than a class has images", ["--data", dataset, "--folds", "10"], "use fewer folds"),
        ("--folds 5 --group-by image on four images a class",
         ["--data", write_class_tree(tmp_path / "four", per_class=4), "--folds", "5", "--group-by", "image"],
         "a class of at least 5 images"),
        ("--bootstrap-resamples 0", ["--data", dataset, "--bootstrap-resamples", "0"], "--bootstrap-resamples"),
        ("--bootstrap-resamples -3", ["--data", dataset, "--bootstrap-resamples", "-3"], "--bootstrap-resamples"),
        ("--seed 2**32 + 1", ["--data", dataset, "--seed", str(2**32 + 1)], "--seed must be a whole number"),
        ("--seed -1", ["--data", dataset, "--seed", "-1"], "--seed must be a whole number"),
        ("--epochs 0 (the recipe's own check)", ["--data", dataset, "--epochs", "0"], "--epochs"),
    ]
    before = snapshot(tmp_path)
    for what, arguments, expect in cases:
        tried(CROSSVAL, what)
        folds = [] if "--folds" in arguments else ["--folds", "2"]
        refused(main, [*TINY, *arguments, *folds, "--out", tmp_path / "cv"], expect, capsys)
    assert snapshot(tmp_path) == before and not (tmp_path / "cv").exists()


@pytest.mark.parametrize("folds, shown", [([1.5, 3.7], "1.5"), ([0, 2], "0"), ([float("nan"), 2], "nan"),
                                          ([-1, 2], "-1"), ([2, 11], "11")])
def test_fold_numbers_in_cvind_that_are_not_whole_numbers_from_1_are_refused(tmp_path, folds, shown, no_training,
                                                                            capsys):
    """MATLAB stores cvind.mat's folds as doubles: 1.5 and 3.7 used to become folds 1 and 3."""
    from core.sources.figshare import MatRefused, cv_folds
    from figshare_files import cvind_bytes, write_release
    from training.crossval import main

    release = write_release(tmp_path / "release", patients=10, per_patient=3, size=64)
    given = [*folds, *([1, 2, 3, 4, 5] * 6)][:30]
    (release / "cvind.mat").write_bytes(cvind_bytes(given))
    what = f"cvind.mat holding the fold {shown}"
    tried("core.sources.figshare.cv_folds", what)
    with pytest.raises(MatRefused, match=f"holds {shown} where a fold number should be"):
        cv_folds(release)
    tried(CROSSVAL, what)
    before = snapshot(tmp_path)
    refused(main, ["--data", release, "--out", tmp_path / "cv", "--folds", "cvind", *TINY],
            "where a fold number should be", capsys)
    assert snapshot(tmp_path) == before


def test_whole_fold_numbers_in_cvind_are_read_as_given(tmp_path):
    from core.sources.figshare import cv_folds
    from figshare_files import cvind_bytes, write_release

    release = write_release(tmp_path / "release", patients=10, per_patient=3, size=64)
    (release / "cvind.mat").write_bytes(cvind_bytes([1.0, 2.0, 10.0]))
    assert cv_folds(release) == {1: 1, 2: 2, 3: 10}


# --------------------------------------------------------------------------------------------------
# Training, evaluation, the refits, the audit and the explanations


def test_training_never_writes_in_or_around_what_it_reads(dataset, tmp_path, capsys):
    from training.train import main

    masks = tmp_path / "home" / "figshare-masks"
    (masks / "glioma").mkdir(parents=True)
    split = tmp_path / "home" / "split"
    split.mkdir()
    (split / "train.txt").write_text("glioma/glioma_000.png\n")
    before = snapshot(tmp_path)
    guided = ["--mask-data", tmp_path / "home" / "figshare", "--mask-split", split]
    cases = [(["--out", dataset / "glioma" / "model"], "overlaps the dataset", "--out inside a class folder"),
             (["--out", dataset.parent], "overlaps the dataset", "--out holding the dataset"),
             (["--out", masks / "model", *guided], "overlaps the mask folder", "--out inside the guiding masks"),
             (["--out", split / "model", *guided], "overlaps the localisation split", "--out inside the split"),
             (["--out", tmp_path / "model", "--seed", "-1"], "--seed must be a whole number", "--seed -1")]
    for arguments, expect, what in cases:
        tried("command line: python -m training.train", what)
        refused(main, ["--data", dataset, *arguments, *TINY], expect, capsys)
    assert snapshot(tmp_path) == before


def test_training_refuses_held_out_shares_that_leave_a_class_nothing_to_train_on(tmp_path, capsys):
    """--val-fraction 0.5 --test-fraction 0.5 on a small dataset whose slices come in pairs of copies: for some seeds
    a class has nothing left on the training side. Each seed either keeps every class there or says which is lost."""
    from core.config import TrainConfig
    from core.data import DatasetError
    from core.split import prepare_data
    from training.train import main

    data = write_class_tree(tmp_path / "data", per_class=4, size=64)
    for image in sorted(data.glob("*/*_00[13].*")):  # 1 and 3 become copies of 0 and 2: two groups a class
        twin = image.with_name(image.name.replace("_001", "_000").replace("_003", "_002"))
        twin = next(twin.parent.glob(twin.stem + ".*"))
        image.unlink()
        shutil.copy(twin, image.with_suffix(twin.suffix))
    refusing = []
    for seed in range(12):
        cfg = TrainConfig(data=str(data), val_fraction=0.5, test_fraction=0.5, seed=seed, progress=False)
        try:
            prepared = prepare_data(cfg, progress=False)
        except DatasetError as error:
            assert "left to train on" in str(error)
            refusing.append(seed)
            continue
        trained = {prepared.samples[i].label for i in prepared.train_idx}
        assert trained == {0, 1, 2, 3}, seed
    assert refusing, "no seed left a class off the training side: the test no longer tries what it says"
    tried("command line: python -m training.train", "--val-fraction 0.5 --test-fraction 0.5 leaving a class out")
    before = snapshot(data)
    refused(main, ["--data", data, "--out", tmp_path / "model", "--val-fraction", "0.5", "--test-fraction", "0.5",
                   "--seed", refusing[0], *TINY], "left to train on", capsys)
    assert snapshot(data) == before


def test_evaluation_never_writes_into_the_mask_folder_or_around_a_list_of_files(dataset, tmp_path, capsys):
    """The mask folder found beside the dataset, and a --files list, are read too: --out stays clear of them. The
    checkpoint is not even a model here: the refusal comes before it is read."""
    from training.evaluate import main

    masks = dataset.parent / "data-masks"
    (masks / "glioma").mkdir(parents=True)
    listed = tmp_path / "lists"
    listed.mkdir()
    (listed / "test.txt").write_text("glioma/glioma_000.png\n")
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"not read before --out is checked")
    before = snapshot(tmp_path)
    for out, expect, what in ((masks / "run", "overlaps the mask folder", "--out inside the masks beside the data"),
                              (listed / "test.txt" / "run", "overlaps the list of files", "--out under --files")):
        tried("command line: python -m training.evaluate --out", what)
        refused(main, ["--checkpoint", checkpoint, "--data", dataset, "--files", listed / "test.txt", "--out", out,
                       "--no-progress"], expect, capsys)
    assert snapshot(tmp_path) == before


@pytest.fixture
def checkpoint_in_the_data(dataset) -> Path:
    """A real checkpoint saved inside the dataset it records as its own."""
    from conftest import random_classifier, write_unchecked

    path = random_classifier(dataset / "notumor" / "model", seed=0).path
    write_unchecked(path, {"data": {"root": str(dataset), "trained_on": ".", "val_files": ["glioma/glioma_000.png"],
                                    "seen_files": ["glioma/glioma_000.png", "glioma/glioma_002.png"]}})
    return path


@pytest.mark.parametrize("command", ["calibrate", "familiarity"])
def test_a_checkpoint_inside_a_dataset_it_reads_is_not_rewritten_in_place(command, checkpoint_in_the_data, dataset,
                                                                          tmp_path, capsys):
    import importlib

    from conftest import write_unchecked

    main = importlib.import_module(f"training.{command}").main
    donor = tmp_path / "donor" / "model.safetensors"  # outside, and records the dataset as its own
    donor.parent.mkdir()
    shutil.copy(checkpoint_in_the_data, donor)
    refit = dataset / "pituitary" / "refit" / "model.safetensors"  # inside, and records another dataset
    refit.parent.mkdir()
    shutil.copy(checkpoint_in_the_data, refit)
    write_unchecked(refit, {"data": {"root": str(tmp_path / "elsewhere"), "trained_on": "."}})
    before = snapshot(tmp_path)
    entry = f"command line: python -m training.{command} --checkpoint"
    tried(entry, "a checkpoint inside the dataset it records")
    refused(main, ["--checkpoint", checkpoint_in_the_data], "overlaps the dataset", capsys)
    tried(entry, "a checkpoint inside the dataset given by --data")
    refused(main, ["--checkpoint", checkpoint_in_the_data.parent, "--data", dataset.parent], "overlaps the dataset",
            capsys)
    tried(entry, "a checkpoint inside the dataset the --from checkpoint records")
    refused(main, ["--checkpoint", refit, "--from", donor], "overlaps the --from checkpoint's dataset", capsys)
    assert snapshot(tmp_path) == before


def test_the_audit_writes_its_table_outside_both_datasets(tmp_path, capsys):
    from training.audit import main

    root = tmp_path / "data"
    write_class_tree(root / "Training", per_class=3, size=64)
    write_class_tree(root / "Testing", per_class=3, size=64, seed=5)
    other = write_class_tree(tmp_path / "other", per_class=3, size=64, seed=7)
    before = snapshot(tmp_path)
    for arguments, expect, what in ((["--csv", root / "Testing" / "audit.csv"], "overlaps the dataset", "--csv inside"
                                      " the dataset"),
                                    (["--against", other, "--csv", other / "glioma" / "audit.csv"],
                                     "overlaps the other dataset", "--csv inside the --against dataset"),
                                    (["--csv", root], "overlaps the dataset", "--csv naming the dataset itself")):
        tried("command line: python -m training.audit --csv", what)
        refused(main, ["--data", root, *arguments, "--no-progress"], expect, capsys)
    assert snapshot(tmp_path) == before


def test_the_audit_replaces_only_its_own_table_and_only_when_asked(tmp_path, capsys):
    from training.audit import main

    root = tmp_path / "data"
    write_class_tree(root / "Training", per_class=3, size=64)
    write_class_tree(root / "Testing", per_class=3, size=64, seed=5)
    notes = tmp_path / "notes.csv"
    notes.write_text("patient,finding\n7,left frontal\n")
    for extra, expect in (([], "already exists; choose another --csv or pass --overwrite"),
                          (["--overwrite"], "is not an audit table")):
        tried("command line: python -m training.audit --csv", f"an existing file not written by the audit {extra}")
        refused(main, ["--data", root, "--csv", notes, "--no-progress", *extra], expect, capsys)
        assert notes.read_text() == "patient,finding\n7,left frontal\n"

    table = tmp_path / "audit.csv"
    assert main(["--data", str(root), "--csv", str(table), "--no-progress"]) == 0
    first = table.read_text()
    table.write_text(first.splitlines()[0] + "\n")  # a table of an earlier audit, of no images
    refused(main, ["--data", root, "--csv", table, "--no-progress"], "already exists", capsys)
    assert main(["--data", str(root), "--csv", str(table), "--no-progress", "--overwrite"]) == 0
    assert table.read_text() == first and sorted(p.name for p in tmp_path.iterdir()) == ["audit.csv", "data",
                                                                                          "notes.csv"]


def test_explanations_are_not_written_into_a_run_that_lies_inside_the_dataset(dataset, tmp_path, capsys):
    from training.explanations import main

    run = dataset / "glioma" / "run"
    shutil.copytree(ROOT / "assets" / "runs" / "figshare-localisation-validation", run)
    (dataset.parent / "data-masks").mkdir()
    before = snapshot(tmp_path)
    tried("command line: python -m training.explanations --run", "a run inside the dataset it reads")
    refused(main, ["--run", run, "--data", dataset, "--no-progress"], "overlaps the dataset", capsys)
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------------------------------
# The guard itself


def test_the_guard_follows_links_and_skips_inputs_not_used(tmp_path):
    from core.outputs import OutputRefused, check_output

    data = tmp_path / "data"
    (data / "glioma").mkdir(parents=True)
    (tmp_path / "alias").symlink_to(data)
    assert check_output(tmp_path / "out", {"dataset": data, "mask folder": None}) == tmp_path / "out"
    assert check_output(tmp_path / "data-run", {"dataset": data}) == tmp_path / "data-run"  # a prefix is no parent
    for out in (tmp_path / "alias" / "run", tmp_path / "alias", tmp_path):
        with pytest.raises(OutputRefused, match="overlaps the dataset"):
            check_output(out, {"dataset": data})
    with pytest.raises(OutputRefused, match="--csv .* overlaps the other dataset"):
        check_output(tmp_path / "alias" / "x.csv", {"dataset": None, "other dataset": data}, option="--csv")
