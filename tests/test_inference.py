import numpy as np
import pytest
import torch
from PIL import Image

from conftest import random_classifier, write_unchecked
from core import load_classifier
from core.data import CLASSES


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return random_classifier(tmp_path_factory.mktemp("clf"), seed=1)


def _images():
    rng = np.random.default_rng(0)
    gray = Image.fromarray(rng.integers(0, 255, (70, 90), dtype=np.uint8), "L")
    return [gray, gray.convert("RGB").resize((64, 64)), gray.convert("RGBA"),
            Image.fromarray((rng.integers(0, 4000, (64, 80))).astype(np.uint16)), gray.convert("P")]


def test_any_mode_and_size_gives_one_probability_row_each(classifier):
    probs = classifier.predict_proba(_images())
    assert classifier.classes == list(CLASSES)
    assert probs.shape == (5, 4) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_batching_does_not_change_the_answer(classifier):
    images = _images()
    together = classifier.predict_proba(images, batch_size=8)
    one_by_one = np.concatenate([classifier.predict_proba([image]) for image in images])
    assert np.allclose(together, one_by_one, atol=1e-5)


def test_predict_names_the_most_probable_class(classifier):
    images = _images()[:2]
    probs = classifier.predict_proba(images)
    assert classifier.predict(images) == [CLASSES[i] for i in probs.argmax(1)]


def test_a_single_image_must_come_in_a_list(classifier):
    with pytest.raises(TypeError, match="list of PIL images"):
        classifier.predict_proba(_images()[0])
    assert classifier.predict_proba([]).shape == (0, 4)


def distinct_scans(n=6):
    rng = np.random.default_rng(5)
    return [Image.fromarray(rng.integers(0, 255, (64 + 4 * i, 80), dtype=np.uint8), "L") for i in range(n)]


def test_a_checkpoint_that_asks_for_the_removed_second_look_is_used_as_it_is_and_says_so_once(tmp_path, caplog):
    plain = random_classifier(tmp_path, seed=1)
    write_unchecked(plain.path, {"mirror_averaging": {"below": 0.99}})
    images = _images()
    with caplog.at_level("WARNING", logger="core.inference"):
        first, again = load_classifier(plain.path, precision="fp32"), load_classifier(plain.path, precision="fp32")
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "second look" in caplog.records[0].message and "ignored" in caplog.records[0].message
    np.testing.assert_allclose(first.predict_proba(images), plain.predict_proba(images), atol=1e-6)
    assert again.temperature == plain.temperature


def test_outputs_that_are_not_numbers_are_refused_not_shown(tmp_path):
    from core.inference import InferenceError

    broken = random_classifier(tmp_path, seed=5)
    with torch.no_grad():
        broken.model.fc.bias[1] = float("nan")  # as if the weights had been damaged after loading
    with pytest.raises(InferenceError, match="not a number"):
        broken.predict_proba(_images()[:1])
