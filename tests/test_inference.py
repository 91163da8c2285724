import numpy as np
import pytest
import torch
from PIL import Image

from conftest import random_classifier, write_unchecked
from core import load_classifier
from core.checkpoint import CheckpointError, update_metadata
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


def test_uncertain_scans_are_decided_on_themselves_and_their_mirror_image(tmp_path):
    plain = random_classifier(tmp_path, seed=2)
    images = distinct_scans()
    batch = plain.preprocess(images)
    logits, mirrored = plain.logits(batch), plain.logits(batch.flip(-1))
    # The threshold compares calibrated probabilities (here T = 8), and sits in the widest gap between two of
    # the middle scans' top probabilities, so that some scans are on each side by a clear margin.
    top = np.sort((logits / 8).softmax(1).max(1).values.numpy())
    gap = int(np.argmax(np.diff(top)[1:-1])) + 1
    below = float(top[gap] + top[gap + 1]) / 2
    assert top[gap + 1] - top[gap] > 1e-4
    update_metadata(plain.path, {"calibration": {"temperature": 8}, "mirror_averaging": {"below": below}})
    second = load_classifier(plain.path, precision="fp32")
    uncertain = (logits / 8).softmax(1).max(1).values < below
    assert second.mirror_below == below and 0 < int(uncertain.sum()) < len(images)
    expected = (torch.where(uncertain[:, None], (logits + mirrored) / 2, logits) / 8).softmax(1)
    np.testing.assert_allclose(second.predict_proba(images), expected.numpy(), atol=1e-5)
    decided, looked_twice = second.decision_logits(batch)
    assert torch.equal(looked_twice, uncertain)
    assert plain.mirror_below is None and not plain.decision_logits(batch)[1].any()


def test_a_mirror_threshold_that_is_not_a_probability_is_refused(tmp_path):
    path = random_classifier(tmp_path, seed=1).path
    write_unchecked(path, {"mirror_averaging": {"below": 1.5}})
    with pytest.raises(CheckpointError, match="mirror_averaging.below: 1.5 is greater than the maximum of 1"):
        load_classifier(path)


def test_outputs_that_are_not_numbers_are_refused_not_shown(tmp_path):
    from core.inference import InferenceError

    broken = random_classifier(tmp_path, seed=5)
    with torch.no_grad():
        broken.model.fc.bias[1] = float("nan")  # as if the weights had been damaged after loading
    with pytest.raises(InferenceError, match="not a number"):
        broken.predict_proba(_images()[:1])
