"""The bundled default model and its evaluation runs: present, small, complete, consistent, and right on a
sample of real test scans."""

import numpy as np

from conftest import KAGGLE, ROOT, needs_shared
from core import load_classifier
from core.checkpoint import read_metadata
from core.data import CLASSES, scan_class_folders
from core.runs import find_runs, read_run
from core.sources import read_image

DEFAULT = ROOT / "assets" / "models" / "default" / "model.safetensors"


def test_default_checkpoint_is_small_and_self_describing():
    assert DEFAULT.is_file(), "assets/models/default/model.safetensors is missing"
    # The network in float16 (47.8 MB) and its familiarity model (256 directions in float16, 1 MB).
    assert DEFAULT.stat().st_size + DEFAULT.with_suffix(".json").stat().st_size < 50_000_000
    meta = read_metadata(DEFAULT)
    assert meta["familiarity"]["threshold_from"] == "borrowed" and meta["familiarity"]["threshold"] > 0
    assert meta["calibration"]["refer_below"] == 0.95
    assert meta["classes"] == list(CLASSES)
    assert meta["tensor_dtype"] == "float16"
    assert meta["preprocessing"]["image_size"] == 224
    assert meta["base_weights"]["name"]
    assert meta["data"]["trained_on"] == "Training"
    assert all(not f.startswith("Testing") for f in meta["data"]["seen_files"])
    # A final fit of the validation-selected recipe: every Training image, all epochs, the last one kept.
    assert meta["training"]["config"]["val_fraction"] == 0 and meta["validation"] == {}
    assert meta["training"]["best_epoch"] == len(meta["history"]) == meta["training"]["config"]["epochs"]
    assert len(meta["data"]["seen_files"]) == sum(meta["data"]["counts"]["train"].values())


@needs_shared(KAGGLE)
def test_default_model_is_right_on_real_test_scans():
    """A fixed sample of 15 Testing images per class (the bench script reports the full test set)."""
    clf = load_classifier(DEFAULT)
    tree = scan_class_folders(KAGGLE / "Testing")
    sample = [s for k in range(len(CLASSES)) for s in [s for s in tree.samples if s.label == k][::20][:15]]
    probs = clf.predict_proba([read_image(s.path) for s in sample])
    labels = np.array([s.label for s in sample])
    accuracy = (probs.argmax(1) == labels).mean()
    assert len(sample) == 60 and accuracy >= 0.95


def test_default_runs_belong_to_the_default_model():
    import hashlib

    runs = {path.name: read_run(path) for path in find_runs(ROOT / "assets" / "runs")}
    runs = {name: run for name, run in runs.items() if run.info["model"]["path"].startswith("assets/models/default/")}
    assert {"brain-tumor-mri-testing", "figshare-cheng-br35h", "figshare-localisation-test",
            "figshare-localisation-validation", "lgg-tcga-glioma"} <= set(runs)
    shipped = hashlib.sha256(DEFAULT.read_bytes()).hexdigest()
    for run in runs.values():
        assert run.info["model"]["file_sha256"] == shipped, f"{run.path} was made with another model; re-evaluate"
        assert len(run.predictions) == run.info["dataset"]["images"]
    kaggle, figshare = runs["brain-tumor-mri-testing"], runs["figshare-cheng-br35h"]
    assert kaggle.info["dataset"]["evaluated"] == "Testing" and len(kaggle.predictions) == 1311
    assert figshare.metrics["localisation"]["overall"]["images"] == 3064
    # The held-out localisation split's runs hold exactly its images, scored against the outlines.
    for side in ("test", "validation"):
        listed = (ROOT / f"assets/splits/figshare-localisation/{side}.txt").read_text().split()
        run = runs[f"figshare-localisation-{side}"]
        assert sorted(run.predictions["path"]) == sorted(listed)
        assert run.metrics["masks"]["overall"]["images"] == sum(not p.startswith("notumor/") for p in listed)
    assert runs["lgg-tcga-glioma"].metrics["masks"]["resampled"] == "patients"


@needs_shared(KAGGLE)
def test_the_default_model_recognises_real_scans_and_not_blank_or_noise_images():
    from PIL import Image

    from core.explain import explain

    clf = load_classifier(DEFAULT)
    tree = scan_class_folders(KAGGLE / "Testing")
    sample = [s for k in range(len(CLASSES)) for s in [s for s in tree.samples if s.label == k][::20][:15]]
    scans = explain(clf, [read_image(s.path) for s in sample])
    assert clf.familiarity.unfamiliar(scans.familiarity).sum() <= 2  # about 1 in 100 ordinary scans is flagged
    rng = np.random.default_rng(0)
    strangers = [Image.new("L", (256, 256), 255), Image.new("L", (256, 256), 0),
                 Image.new("RGB", (300, 200), (30, 60, 220)),
                 Image.fromarray(rng.integers(0, 256, (256, 256), dtype=np.uint8))]
    assert clf.familiarity.unfamiliar(explain(clf, strangers).familiarity).all()


MASK_GUIDED = ROOT / "assets" / "models" / "mask-guided" / "model.safetensors"


def test_the_mask_guided_checkpoint_is_small_guided_and_never_saw_the_held_out_slices():
    assert MASK_GUIDED.is_file(), "assets/models/mask-guided/model.safetensors is missing"
    assert MASK_GUIDED.stat().st_size + MASK_GUIDED.with_suffix(".json").stat().st_size < 50_000_000
    meta = read_metadata(MASK_GUIDED)
    assert meta["tensor_dtype"] == "float16" and meta["classes"] == list(CLASSES)
    config, guidance = meta["training"]["config"], meta["data"]["guidance"]
    assert config["mask_weight"] > 0 and config["mask_split"].endswith("figshare-localisation")
    assert guidance["guided_images"] == sum(guidance["transferred"].values()) + sum(guidance["added"].values()) > 0
    assert guidance["left_out_copies_of_held_out_slices"] > 0
    # Its own validation split chose the epoch and fitted its temperature and familiarity threshold.
    assert meta["validation"]["val_accuracy"] > 0.95
    assert meta["familiarity"]["threshold"] > 0 and meta["familiarity"].get("threshold_from") != "borrowed"
    held_out = set()
    for side in ("validation", "test"):
        held_out |= set((ROOT / f"assets/splits/figshare-localisation/{side}.txt").read_text().split())
    added = {f.removeprefix("guide/") for f in meta["data"]["seen_files"] if f.startswith("guide/")}
    assert added and not added & held_out
    assert all(not f.startswith("Testing") for f in meta["data"]["seen_files"])


def test_the_mask_guided_runs_belong_to_it_and_score_the_held_out_split():
    import hashlib

    runs = {path.name: read_run(path) for path in find_runs(ROOT / "assets" / "runs")}
    runs = {name: run for name, run in runs.items()
            if run.info["model"]["path"].startswith("assets/models/mask-guided/")}
    assert {"brain-tumor-mri-testing-mask-guided", "figshare-localisation-test-mask-guided",
            "figshare-localisation-validation-mask-guided", "lgg-tcga-glioma-mask-guided"} <= set(runs)
    shipped = hashlib.sha256(MASK_GUIDED.read_bytes()).hexdigest()
    for run in runs.values():
        assert run.info["model"]["file_sha256"] == shipped, f"{run.path} was made with another model; re-evaluate"
        assert len(run.predictions) == run.info["dataset"]["images"]
    for side in ("test", "validation"):
        listed = (ROOT / f"assets/splits/figshare-localisation/{side}.txt").read_text().split()
        run = runs[f"figshare-localisation-{side}-mask-guided"]
        assert sorted(run.predictions["path"]) == sorted(listed)
        # What trained it never scores it: a held-out slice may copy a scan of its Kaggle validation split (seen
        # only to choose the epoch and fit the temperature), never one it was trained on.
        copies = run.predictions[run.predictions["train_duplicate"].eq(True)]
        assert set(copies["train_match_split"]) <= {"validation"}
    assert len(runs["brain-tumor-mri-testing-mask-guided"].predictions) == 1311
