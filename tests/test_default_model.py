"""The bundled default model: present, small, complete, and right on a sample of real test scans."""

import numpy as np

from conftest import KAGGLE, ROOT, needs_shared
from core import load_classifier
from core.checkpoint import read_metadata
from core.data import CLASSES, load_image, scan_class_folders

DEFAULT = ROOT / "assets" / "models" / "default" / "model.safetensors"


def test_default_checkpoint_is_small_and_self_describing():
    assert DEFAULT.is_file(), "assets/models/default/model.safetensors is missing"
    assert DEFAULT.stat().st_size < 50_000_000
    meta = read_metadata(DEFAULT)
    assert meta["classes"] == list(CLASSES)
    assert meta["tensor_dtype"] == "float16"
    assert meta["preprocessing"]["image_size"] == 224
    assert meta["base_weights"]["name"]
    assert meta["data"]["trained_on"] == "Training"
    assert all(not f.startswith("Testing") for f in meta["data"]["seen_files"])
    assert meta["validation"]["val_accuracy"] > 0.97


@needs_shared(KAGGLE)
def test_default_model_is_right_on_real_test_scans():
    """A fixed sample of 15 Testing images per class (the bench script reports the full test set)."""
    clf = load_classifier(DEFAULT)
    tree = scan_class_folders(KAGGLE / "Testing")
    sample = [s for k in range(len(CLASSES)) for s in [s for s in tree.samples if s.label == k][::20][:15]]
    probs = clf.predict_proba([load_image(s.path) for s in sample])
    labels = np.array([s.label for s in sample])
    accuracy = (probs.argmax(1) == labels).mean()
    assert len(sample) == 60 and accuracy >= 0.95
