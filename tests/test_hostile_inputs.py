"""Bad and hostile inputs against every entry point that takes them.

Image files (by content, and special files only a folder can hold), checkpoints, evaluation runs and
command-line settings, from tests/hostile.py, go to the library, the command lines and the dashboard's pages.
Each must end in a specific message (no traceback, no number that is not one), the rest of a batch must go on,
memory must stay under :data:`MEMORY_BOUND_MB` (peak RSS of a separate process), and nothing on disk outside a
command's output may change. The number of inputs tried is printed at the end of the test session.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from conftest import ROOT, upload_scans, write_class_tree
from core.checkpoint import CheckpointError, save_checkpoint
from core.data import CLASSES
from core.metrics import MetricWarning
from core.model import build_resnet50
from core.runs import RunError, read_run
from core.sources import ImageRefused, read_image
from core.sources.images import WORKING_SIDE
from hostile import NON_UTF8_NAME, checkpoint_inputs, encode, image_inputs, run_inputs, scan, special_files, tried
from test_checkpoint import metadata

APP = str(ROOT / "dashboard" / "app.py")
MEMORY_BOUND_MB = 400  # peak resident memory any single input may add to a process that has loaded the model


def plain(markdown: str) -> str:
    return html.unescape(markdown)


@pytest.fixture(scope="module")
def marker(tmp_path_factory) -> Path:
    """Where a pickle that managed to run would leave its mark."""
    return tmp_path_factory.mktemp("marker") / "pickle-ran"


@pytest.fixture(scope="module")
def images(marker):
    return image_inputs(marker)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A real checkpoint with random weights (what the weights say does not matter here)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    return save_checkpoint(path, build_resnet50(len(CLASSES)), metadata(), dtype=torch.float16)


@pytest.fixture(scope="module")
def hostile_dataset(tmp_path_factory, images) -> Path:
    """A class tree with good scans in every class and every bad image file in the glioma folder."""
    root = write_class_tree(tmp_path_factory.mktemp("hostile") / "data", per_class=4, size=128)
    for hostile in images + special_files():
        hostile.place(root / "glioma" / hostile.name)
    (root / "glioma" / NON_UTF8_NAME).write_bytes(encode(scan()))
    return root


def snapshot(root: Path, skip: Path | None = None) -> dict:
    """Every entry under ``root`` (links not followed) with its type, size, time and content digest."""
    import hashlib

    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if skip is not None and (path == skip or skip in path.parents or path.name.startswith(f".{skip.name}.")):
                continue
            info = os.lstat(path)
            digest = ""
            if os.path.isfile(path) and not os.path.islink(path) and info.st_size < (1 << 20):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            found[str(path)] = (info.st_mode, info.st_size, info.st_mtime_ns, digest)
    return found


# --------------------------------------------------------------------------------------------------
# Images: the library


def test_the_reader_refuses_each_bad_image_with_its_reason_and_reads_the_rest(images, marker, tmp_path):
    from conftest import random_classifier

    classifier = random_classifier(tmp_path, seed=2)
    for hostile in images + special_files():
        path = hostile.place(tmp_path / "files" / hostile.name)
        sources = [path] + ([hostile.data] if hostile.data is not None else [])
        for source in sources:
            tried("library: core.sources.read_image", hostile.what)
            if hostile.expect:
                with pytest.raises(ValueError, match=hostile.expect):
                    read_image(source)
                continue
            image = read_image(source)
            assert image.mode == "RGB" and max(image.size) <= WORKING_SIDE, hostile.what
            probabilities = classifier.predict_proba([image])
            assert np.isfinite(probabilities).all() and probabilities.sum() == pytest.approx(1, abs=1e-5)
    # The awkward formats are read right, not just read.
    files = tmp_path / "files"
    assert read_image(files / "rotated.jpg").size == (96, 128)  # EXIF orientation applied
    sixteen = np.asarray(read_image(files / "sixteen-bit.png"))
    assert sixteen.min() == 0 and sixteen.max() == 255  # windowed to its own range, not clipped
    assert tuple(np.asarray(read_image(files / "palette-alpha.png"))[0, 0]) == (0, 0, 0)  # transparent -> black
    assert not marker.exists(), "a pickle ran"


def test_in_memory_images_pass_the_same_checks(tmp_path):
    from conftest import random_classifier

    classifier = random_classifier(tmp_path, seed=3)
    nan = np.asarray(scan(), np.float32).copy()
    nan[0, 0] = np.nan
    for image, expect in ((Image.new("L", (1, 60_000)), "too small"), (Image.new("1", (12_000, 12_000)), "megapixel"),
                          (Image.fromarray(nan, "F"), "not numbers"), (Image.new("RGB", (1, 1)), "too small")):
        tried("library: Classifier.predict_proba (PIL image)", f"in-memory {image.mode} {image.size}")
        with pytest.raises(ImageRefused, match=expect):
            classifier.predict_proba([image])


def test_memory_stays_bounded_for_every_image(images, tmp_path):
    """Per input, the peak resident memory it adds to a process that has the default model loaded, while it is
    read, explained and overlaid (Linux: the peak is reset before each input through /proc/self/clear_refs)."""
    for hostile in images + special_files():
        hostile.place(tmp_path / "files" / hostile.name)
    child = textwrap.dedent(f"""
        import json
        from pathlib import Path
        from core import load_classifier
        from core.explain import explain, overlay
        from core.sources import read_image

        def status(field):
            for line in open("/proc/self/status"):
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
        classifier = load_classifier({str(ROOT / 'assets/models/default')!r})
        explain(classifier, [read_image({str(tmp_path / 'files' / 'cmyk.jpg')!r})])  # warm up
        grown = {{}}
        for path in sorted(Path({str(tmp_path / 'files')!r}).iterdir()):
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")  # resets the peak (VmHWM) to the current resident size
            before = status("VmRSS")
            try:
                image = read_image(path)
                result = explain(classifier, [image])
                overlay(image, result.heatmaps[0])
            except ValueError:
                pass
            grown[path.name] = status("VmHWM") - before
        print(json.dumps(grown))
    """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=600)
    if "clear_refs" in done.stderr:
        pytest.skip("this kernel does not let a process reset its peak memory (/proc/self/clear_refs)")
    assert done.returncode == 0, done.stderr[-2000:]
    grown = json.loads(done.stdout.strip().splitlines()[-1])
    for hostile in images + special_files():
        tried("memory: read, explain and overlay in one process", hostile.what)
    worst = max(grown, key=grown.get)
    print(f"\npeak RSS an input adds to the loaded model: {grown[worst]:.0f} MB at most ({worst}); "
          f"bound {MEMORY_BOUND_MB} MB")
    assert grown[worst] < MEMORY_BOUND_MB, grown
    assert grown["bomb.png"] < 50 and grown["line-60000.png"] < 50  # refused before any pixel is decoded


# --------------------------------------------------------------------------------------------------
# Images: command lines and training


def test_evaluate_reads_a_hostile_dataset_to_the_end_and_touches_nothing_else(hostile_dataset, images,
                                                                               checkpoint, tmp_path):
    out = tmp_path / "run"
    before = snapshot(hostile_dataset.parent) | snapshot(checkpoint.parent)
    done = subprocess.run([sys.executable, "-m", "training.evaluate", "--checkpoint", str(checkpoint),
                           "--data", str(hostile_dataset), "--out", str(out), "--no-progress",
                           "--bootstrap-resamples", "20", "--precision", "fp32"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)  # a FIFO read would hang here
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert snapshot(hostile_dataset.parent) | snapshot(checkpoint.parent) == before
    run = read_run(out)
    skipped = {Path(item["path"]).name: item["reason"] for item in run.info["dataset"]["skipped"]}
    for hostile in images + special_files():
        tried("command line: python -m training.evaluate (dataset)", hostile.what)
        if hostile.expect:
            assert re.search(hostile.expect, skipped.pop(hostile.name)), hostile.what
        else:
            assert f"glioma/{hostile.name}" in set(run.predictions["path"]), hostile.what
    assert skipped.pop("loop-b.png")  # the other half of the loop
    assert list(skipped) == [NON_UTF8_NAME.encode("utf-8", "backslashreplace").decode()]
    assert "UTF-8" in run.info["dataset"]["skipped"][0]["reason"]
    tried("command line: python -m training.evaluate (dataset)", "a file name that is not UTF-8")
    good = [p for p in run.predictions["path"] if not p.startswith("glioma/")]
    assert len(good) == 12 and np.isfinite(run.probabilities()).all()


def test_training_lists_each_bad_image_with_its_reason(hostile_dataset, images):
    from core.config import TrainConfig
    from core.split import prepare_data

    data = prepare_data(TrainConfig(data=str(hostile_dataset), val_fraction=0.25, test_fraction=0.0), progress=False)
    skipped = {Path(item["path"]).name: item["reason"] for item in data.skipped}
    for hostile in images + special_files():
        tried("library: core.split.prepare_data", hostile.what)
        if hostile.expect:
            assert re.search(hostile.expect, skipped[hostile.name]), hostile.what


# --------------------------------------------------------------------------------------------------
# Images: the Predict page


def upload_name(hostile) -> str:
    """The name a file is uploaded under: the uploader takes only scan extensions, so a GIF comes renamed."""
    return hostile.name if Path(hostile.name).suffix in (".png", ".jpg", ".tif") else hostile.name + ".png"


def _upload(at, files):
    upload_scans(at, files)
    assert not at.exception
    return at


def test_the_predict_page_answers_each_bad_upload_in_one_sentence_and_shows_the_rest(images):
    refused = [h for h in images if h.expect]
    good = ("good.png", encode(scan()), "image/png")
    at = _upload(AppTest.from_file(APP, default_timeout=300).run(),
                 [(upload_name(h), h.data, "image/png") for h in refused] + [good])
    # The synthetic "good" slice may be one the model does not recognise; that warning is not about the files.
    warnings = [plain(w.value) for w in at.warning if "Not a brain MRI slice" not in plain(w.value)]
    assert len(warnings) == len(refused)
    for hostile, warning in zip(refused, warnings):
        tried("dashboard: Predict upload", hostile.what)
        assert warning.startswith(f"**{upload_name(hostile)}**: ")
        assert re.search(hostile.expect, warning), (hostile.what, warning)
    assert len(at.main.subheader) == 1  # the good scan is still explained
    accepted = [h for h in images if not h.expect]
    at = _upload(at, [(upload_name(h), h.data, "image/png") for h in accepted])
    for hostile in accepted:
        tried("dashboard: Predict upload", hostile.what)
    assert not at.warning or all("Not a brain MRI slice" in plain(w.value) for w in at.warning)
    assert len(at.main.subheader) == len(accepted) + 1  # the good scan is kept beside them
    # Each gets an answer, an uncertain answer or a greyed guess, all naming a class and a probability.
    assert all(re.search(r"(Glioma|Meningioma|No tumour|Pituitary tumour) (— )?\d+\.\d%", h.value)
               for h in at.main.subheader)


def test_a_review_session_leaves_out_each_bad_upload_with_its_reason_and_keeps_only_good_scans(images, checkpoint,
                                                                                                 tmp_path):
    import hashlib

    from core import load_classifier
    from core.review.cases import cases_from_uploads, keep_uploads

    classifier = load_classifier(checkpoint, precision="fp32")
    good = encode(scan())
    uploads = [(upload_name(h), h.data) for h in images] + [("good.png", good)]
    cases, blobs, problems = cases_from_uploads(classifier, uploads)
    keep_uploads(tmp_path / "data", blobs)
    refused = [h for h in images if h.expect]
    assert len(problems) == len(refused)
    for hostile, problem in zip(refused, problems):
        tried("dashboard: review session upload", hostile.what)
        assert problem.startswith(f"{upload_name(hostile)}: ") and re.search(hostile.expect, problem), problem
    kept = {h.data for h in images if not h.expect} | {good}
    assert {c.image_sha256 for c in cases} == {hashlib.sha256(b).hexdigest() for b in kept}
    stored = sorted(p.name.split(".")[0] for p in (tmp_path / "data" / "uploads").iterdir())
    assert stored == sorted(hashlib.sha256(b).hexdigest() for b in kept)  # nothing refused reached the disk


# --------------------------------------------------------------------------------------------------
# Checkpoints


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, marker, checkpoint) -> list:
    import io

    folder = tmp_path_factory.mktemp("checkpoints")
    buffer = io.BytesIO()
    torch.save({"weights": torch.zeros(2)}, buffer)
    placed = [(h, h.place(folder / h.name)) for h in checkpoint_inputs(marker, buffer.getvalue())]
    from core.checkpoint import load_checkpoint

    stored = load_checkpoint(checkpoint)
    stored.state_dict["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    from core.checkpoint import _write

    nan_weights = folder / "nan-weights" / "model.safetensors"
    nan_weights.parent.mkdir()
    _write(nan_weights, stored.state_dict, stored.metadata)
    from hostile import Hostile

    placed.append((Hostile("nan-weights", "weights holding NaN", "not numbers"), nan_weights))
    return placed


def test_every_bad_checkpoint_is_refused_in_one_sentence(checkpoints, marker, tmp_path, capsys):
    from core import load_classifier
    from training.evaluate import main

    data = write_class_tree(tmp_path / "data", per_class=1, size=64)
    for hostile, path in checkpoints:
        tried("library: core.load_classifier", hostile.what)
        with pytest.raises(CheckpointError, match=hostile.expect):
            load_classifier(path)
        tried("command line: python -m training.evaluate --checkpoint", hostile.what)
        status = main(["--checkpoint", str(path), "--data", str(data), "--out", str(tmp_path / "run"), "--no-progress"])
        lines = capsys.readouterr().err.strip().splitlines()
        assert status == 2 and len(lines) == 1 and re.search(hostile.expect, lines[0]), (hostile.what, lines)
        assert not (tmp_path / "run").exists()
    assert not marker.exists(), "a pickle ran"


def test_the_sidebar_refuses_a_bad_checkpoint_and_the_app_stays_usable(checkpoints, monkeypatch):
    folder = checkpoints[0][1].parent
    monkeypatch.setenv("BRAIN_MRI_ALLOWED_ROOTS", str(folder))
    at = AppTest.from_file(APP, default_timeout=300).run()
    for hostile, path in checkpoints:
        tried("dashboard: sidebar checkpoint path", hostile.what)
        at.text_input(key="sidebar.checkpoint_path").input(str(path)).run()
        assert not at.exception, hostile.what
        # A link that leads out of the allowed folders (to /dev/zero) is refused as outside them.
        expect = hostile.expect + ("|outside the folders" if hostile.make is not None else "")
        assert any(re.search(expect, plain(e.value)) for e in at.sidebar.error), hostile.what
        # The reason once, in the sidebar; the page only says that there is no model and where to look.
        assert [e.value for e in at.main.error] == [
            "The model cannot be loaded: see the sidebar for why. Clear the checkpoint path there to go back to "
            "the default model."]
    at.text_input(key="sidebar.checkpoint_path").input("").run()  # back to the bundled model: everything works again
    assert not at.exception and not at.error


def test_a_typed_path_with_a_nul_byte_is_refused_in_words():
    at = AppTest.from_file(APP, default_timeout=300).run()
    tried("dashboard: sidebar checkpoint path", "a path with a NUL byte")
    at.text_input(key="sidebar.checkpoint_path").input("assets/models/\x00default").run()
    assert not at.exception and "outside the folders" in plain(at.sidebar.error[0].value)


def test_a_checkpoint_path_outside_the_allowed_folders_gets_one_answer_whether_or_not_it_exists(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "model.safetensors").write_bytes(b"secret")
    at = AppTest.from_file(APP, default_timeout=300).run()
    answers = []
    for path in (outside / "model.safetensors", outside / "missing.safetensors", Path("/etc/passwd")):
        tried("dashboard: sidebar checkpoint path", f"a path outside the allowed folders ({path.name})")
        at.text_input(key="sidebar.checkpoint_path").input(str(path)).run()
        assert not at.exception
        answers.append(plain(at.sidebar.error[0].value).replace(str(path), "PATH"))
    assert answers[0] == answers[1] == answers[2] and "outside the folders this dashboard may read" in answers[0]


# --------------------------------------------------------------------------------------------------
# Evaluation runs


@pytest.fixture(scope="module")
def good_run(tmp_path_factory, checkpoint) -> Path:
    from core.evaluation import EvaluationSettings, evaluate

    data = write_class_tree(tmp_path_factory.mktemp("rundata") / "data", per_class=2, size=64)
    out = tmp_path_factory.mktemp("runs") / "good"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)  # this checkpoint keeps no training fingerprints
        return evaluate(EvaluationSettings(checkpoint=str(checkpoint), data=str(data), out=str(out),
                                           bootstrap_resamples=10, progress=False, precision="fp32"))


def test_every_damaged_run_is_refused_in_one_sentence_by_the_reader_and_the_page(good_run, tmp_path, monkeypatch):
    monkeypatch.setenv("BRAIN_MRI_ALLOWED_ROOTS", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=300).run()
    at.switch_page("app_pages/runs.py").run()
    for number, hostile in enumerate(run_inputs()):
        folder = hostile.place(good_run, tmp_path / f"run-{number}")
        tried("library: core.runs.read_run", hostile.what)
        with pytest.raises(RunError, match=hostile.expect):
            read_run(folder)
        tried("dashboard: Evaluation runs page", hostile.what)
        at.text_input(key="runs.other").input(str(folder)).run()
        assert not at.exception, hostile.what
        assert any(re.search(hostile.expect, plain(e.value)) for e in at.error), hostile.what


def _crafted_run(good_run: Path, folder: Path, name: str, paths: list[str], dataset: str = "ds") -> Path:
    import shutil

    import pandas as pd

    shutil.copytree(good_run, folder)
    info = json.loads((folder / "run.json").read_text())
    info["name"] = name
    info["dataset"].update(name=dataset, root="/")
    (folder / "run.json").write_text(json.dumps(info))
    table = pd.read_csv(folder / "predictions.csv", keep_default_na=False, dtype=str).iloc[:1]
    table = pd.concat([table] * len(paths), ignore_index=True)
    table["label"] = table["pred"] = "glioma"  # all in one cell of the confusion matrix
    table["path"] = paths
    table["confidence"] = [f"0.{9 - k}" for k in range(len(paths))]  # the cases keep this order
    table.to_csv(folder / "predictions.csv", index=False)
    return folder


def test_a_crafted_run_shows_no_file_outside_its_dataset_and_says_so_the_same_way(good_run, tmp_path, monkeypatch):
    datasets = tmp_path / "datasets"
    (datasets / "ds" / "glioma").mkdir(parents=True)
    (datasets / "ds" / "glioma" / "inside.png").write_bytes(encode(scan()))
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.png").write_bytes(encode(scan(seed=5)))
    os.symlink(tmp_path / "outside" / "secret.png", datasets / "ds" / "glioma" / "link.png")
    escapes = ["../outside/secret.png", "../outside/missing.png", str(tmp_path / "outside" / "secret.png"),
               "/etc/hostname", "glioma/link.png"]
    run = _crafted_run(good_run, tmp_path / "crafted", "crafted", ["glioma/inside.png", *escapes])
    monkeypatch.setenv("BRAIN_MRI_ALLOWED_ROOTS", str(tmp_path))
    monkeypatch.setenv("BRAIN_MRI_DATASETS", str(datasets))
    at = AppTest.from_file(APP, default_timeout=300).run()
    at.switch_page("app_pages/runs.py").run()
    at.text_input(key="runs.other").input(str(run)).run()
    first = choose_the_cell(at)
    answers = []
    for position, path in enumerate(["glioma/inside.png", *escapes]):  # the cell lists them in this order
        tried("dashboard: Evaluation runs page, a run's image path", f"image path {path}")
        at.button(key=f"runs.thumb.{position}").click().run()
        assert not at.exception
        shown = [plain(c) for image in at.image for c in image.captions]
        if path == "glioma/inside.png":
            assert path in shown
            continue
        assert path not in shown and not any("secret" in c for c in shown)
        answers.append(plain(at.warning[-1].value).replace(path, "PATH"))
    assert len(set(answers)) == 1 and "is not inside" in answers[0]  # one answer, whether the file exists or not
    # The cell's thumbnails and its first case show the one image inside the dataset, and nothing from outside.
    assert first and all("inside.png" in caption or caption.startswith("Grad-CAM") for caption in first), first
    # A dataset name that climbs out of the datasets folder finds no images at all.
    climbing = _crafted_run(good_run, tmp_path / "climbing", "climbing", ["glioma/inside.png"], dataset="../outside")
    at.text_input(key="runs.other").input(str(climbing)).run()
    assert not at.exception and any("not on this machine" in i.value for i in at.info)


def choose_the_cell(at) -> list[str]:
    """Choose the crafted run's one cell (true and predicted glioma); the captions of the images shown then."""
    at.selectbox(key="runs.cell_true").set_value("glioma")
    at.selectbox(key="runs.cell_pred").set_value("glioma").run()
    assert not at.exception
    return [plain(c) for image in at.image for c in image.captions]


def test_markdown_in_files_is_shown_as_text(good_run, tmp_path, monkeypatch):
    beacon = "![x](http://127.0.0.1:9/beacon.png) [click](http://127.0.0.1:9/) :red[alarm] $x^2$"
    run = _crafted_run(good_run, tmp_path / "markdown", beacon, ["glioma/a.png"], dataset=beacon)
    info = json.loads((run / "run.json").read_text())
    info["model"]["path"] = beacon
    info["settings"].update(device=beacon, precision=beacon)
    (run / "run.json").write_text(json.dumps(info))
    monkeypatch.setenv("BRAIN_MRI_ALLOWED_ROOTS", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=300).run()
    at.switch_page("app_pages/runs.py").run()
    at.text_input(key="runs.other").input(str(run)).run()
    assert not at.exception
    tried("dashboard: Evaluation runs page", "markdown in a run's name, dataset, model path and settings")
    from dashboard.captions import md

    texts = [e.value for e in (*at.markdown, *at.caption, *at.error, *at.warning, *at.info)]
    assert sum(md(beacon) in t for t in texts) >= 2  # shown, escaped, in the run's caption and its info line
    for text in texts:
        for raw in ("![x](", "[click](", ":red[alarm]", "$x^2$"):
            assert raw not in text, text


# --------------------------------------------------------------------------------------------------
# Command-line settings


BAD_SETTINGS = {
    "evaluate": [(["--device", "tpu"], "not a device"), (["--device", "cuda:7"], "GPU"),
                 (["--precision", "fp8"], "--precision"), (["--num-workers", "-1"], "--num-workers"),
                 (["--batch-size", "0"], "--batch-size")],
    "train": [(["--rotation", "500"], "--rotation"), (["--scale-min", "2", "--scale-max", "1"], "--scale-min"),
              (["--hflip", "2"], "--hflip"), (["--brightness", "-1"], "--brightness"),
              (["--translate", "1.5"], "--translate"), (["--image-size", "20000"], "--image-size"),
              (["--device", "tpu"], "not a device"), (["--num-workers", "-1"], "--num-workers")],
}


def test_bad_settings_get_one_line_before_any_work(checkpoint, tmp_path, capsys):
    from training.evaluate import main as evaluate_main
    from training.train import main as train_main

    data = write_class_tree(tmp_path / "data", per_class=4, size=64)
    mains = {"evaluate": evaluate_main, "train": train_main}
    for command, cases in BAD_SETTINGS.items():
        for extra, expect in cases:
            tried(f"command line: python -m training.{command}", " ".join(extra))
            out = tmp_path / "out"
            base = ["--data", str(data), "--out", str(out), "--no-progress"]
            if command == "evaluate":
                base += ["--checkpoint", str(checkpoint)]
            assert mains[command](base + extra) == 2
            lines = capsys.readouterr().err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], (extra, lines)
            assert not out.exists()


def test_an_out_folder_that_would_lose_data_is_refused_and_the_data_kept(checkpoint, tmp_path, capsys):
    from training.evaluate import main
    from training.train import main as train_main

    data = write_class_tree(tmp_path / "home" / "data", per_class=2, size=64)
    (tmp_path / "home" / "notes").mkdir()
    (tmp_path / "home" / "notes" / "thesis.txt").write_text("years of work")
    a_file = tmp_path / "home" / "file"
    a_file.write_text("x")
    before = snapshot(tmp_path)
    cases = [(Path("/"), "names no folder"), (Path("."), "names no folder"),
             (data, "overlaps the dataset"), (tmp_path / "home", "overlaps the dataset"),
             (data / "glioma", "overlaps the dataset"), (checkpoint.parent, "overlaps the checkpoint"),
             (tmp_path / "home" / "notes", "not an evaluation run"), (a_file / "run", "cannot write")]
    for out, expect in cases:
        tried("command line: python -m training.evaluate --out --overwrite", f"--out {out.name}: {expect}")
        status = main(["--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out), "--overwrite",
                       "--no-progress"])
        lines = capsys.readouterr().err.strip().splitlines()
        assert status == 2 and len(lines) == 1 and expect in lines[0], (out, lines)
    tried("command line: python -m training.train --out", "an --out under a file")
    assert train_main(["--data", str(data), "--out", str(a_file / "model"), "--weights", "none", "--no-progress"]) == 2
    assert "cannot write" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_file_names_from_a_checkpoint_stay_inside_the_dataset_and_states_are_read_safely(tmp_path, capsys):
    """The calibrate command opens the validation images a checkpoint names, and training --resume its state
    file: both are files a checkpoint's author (or a crash) may have made anything of."""
    from conftest import random_classifier, write_unchecked
    from training.calibrate import main as calibrate_main
    from training.train import main as train_main

    data = write_class_tree(tmp_path / "data", per_class=4, size=64)
    (tmp_path / "secret.png").write_bytes(encode(scan()))
    path = random_classifier(tmp_path / "model", seed=1).path
    for files, expect in ((["glioma/../../secret.png"], "is not inside"), ([1, 2], "data.val_files")):
        tried("command line: python -m training.calibrate", f"validation file names {files}")
        write_unchecked(path, {"data": {"root": str(data), "trained_on": ".", "val_files": files}})
        assert calibrate_main(["--checkpoint", str(path)]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and expect in lines[0], lines
    for hostile in special_files():
        tried("command line: python -m training.train --resume (its state file)", hostile.what)
        out = tmp_path / f"resume-{hostile.name}"
        hostile.place(out / "last_state.pt")
        status = train_main(["--data", str(data), "--out", str(out), "--resume", "--weights", "none", "--no-progress"])
        err = capsys.readouterr().err
        # A 100 MB sparse file is within the state's size limit: it is read, and then refused as no training state.
        reason = "is damaged or not a training state" if hostile.name == "sparse.png" else hostile.expect
        assert status == 2 and err.count("\n") == 1 and re.search(reason, err), err


def test_the_audit_names_the_files_it_cannot_read(tmp_path, capsys):
    from training.audit import main

    root = tmp_path / "data"
    write_class_tree(root / "Training", per_class=3, size=64)
    write_class_tree(root / "Testing", per_class=3, size=64, seed=5)
    (root / "Testing" / "glioma" / NON_UTF8_NAME).write_bytes(encode(scan()))
    os.mkfifo(root / "Testing" / "glioma" / "fifo.png")
    tried("command line: python -m training.audit", "a file name that is not UTF-8")
    tried("command line: python -m training.audit", "a named pipe")
    assert main(["--data", str(root), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "not valid UTF-8" in out and "named pipe" in out


def test_an_unexpected_error_is_one_line_not_a_traceback(monkeypatch, capsys):
    import core.evaluation
    from training.evaluate import main

    def broken(settings):
        raise KeyError("something nobody foresaw")

    monkeypatch.setattr(core.evaluation, "evaluate", broken)
    assert main(["--data", "x", "--out", "y"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unexpected KeyError" in err and "BRAIN_MRI_DEBUG" in err


# --------------------------------------------------------------------------------------------------
# The dashboard's error boundaries


def test_a_failing_part_of_a_page_shows_one_sentence_and_the_rest_still_works(monkeypatch):
    from dashboard import charts

    def broken(*args, **kwargs):
        raise KeyError("prob_glioma")

    monkeypatch.setattr(charts, "roc_figure", broken)
    at = AppTest.from_file(APP, default_timeout=300).run()
    at.switch_page("app_pages/runs.py").run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert errors == [errors[0]] and errors[0].startswith("The curves could not be shown: an unexpected error")
    assert "Traceback" not in errors[0] and "prob_glioma" not in errors[0]
    assert at.metric and at.dataframe  # headline cards and tables still there


def test_running_out_of_memory_is_said_in_words(monkeypatch):
    import core.explain

    def exhausted(*args, **kwargs):
        raise MemoryError

    at = AppTest.from_file(APP, default_timeout=300).run()  # the model loads (and warms up) first
    monkeypatch.setattr(core.explain, "explain", exhausted)
    scan_of_its_own = encode(scan(seed=77))  # not in the explanation cache from another test
    upload_scans(at, [("scan.png", scan_of_its_own, "image/png")])
    assert not at.exception
    assert any("ran out of memory" in e.value for e in at.error)


def test_no_traceback_details_reach_a_browser():
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["client"]["showErrorDetails"] == "none"
