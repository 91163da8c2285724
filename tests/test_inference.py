import numpy as np
import pytest
from PIL import Image

from conftest import random_classifier
from core.data import CLASSES


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return random_classifier(tmp_path_factory.mktemp("clf"), seed=1)


def _images():
    rng = np.random.default_rng(0)
    gray = Image.fromarray(rng.integers(0, 255, (70, 90), dtype=np.uint8), "L")
    return [gray, gray.convert("RGB").resize((40, 40)), gray.convert("RGBA"),
            Image.fromarray((rng.integers(0, 4000, (30, 30))).astype(np.uint16)), gray.convert("P")]


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
