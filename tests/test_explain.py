import copy
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import random_classifier, synthetic_slice
from core.data import CLASSES
from core.explain import CAM_METHODS, ExplainError, explain, heatmap_on_image, overlay
from core.localisation import localisation_scores


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return random_classifier(tmp_path_factory.mktemp("clf"), seed=4)


def slices(n=3, size=96):
    return [Image.fromarray(synthetic_slice(i % 4, i, size), "L") for i in range(n)]


def test_prediction_comes_from_the_same_pass_and_matches_predict_proba(classifier):
    images = slices(3)
    result = explain(classifier, images)
    size = classifier.image_size
    assert result.heatmaps.shape == (3, size, size) and result.heatmaps.dtype == np.float32
    assert result.heatmaps.min() >= 0 and result.heatmaps.max() <= 1
    assert np.allclose(result.probabilities, classifier.predict_proba(images), atol=1e-5)
    assert (result.targets == result.predictions).all()


@pytest.fixture(scope="module")
def dilated(tmp_path_factory):
    """A network of output stride 16: layer4 dilated, at layer3's grid."""
    return random_classifier(tmp_path_factory.mktemp("dilated"), seed=5, output_stride=16)


@pytest.mark.parametrize("method", [m for m, spec in CAM_METHODS.items() if not spec.slow])
@pytest.mark.parametrize("network", ["classifier", "dilated"])
def test_heatmaps_equal_pytorch_grad_cams_own_call(method, network, request):
    """The one-pass route must give exactly the maps of the library's usual (hooked, full-backward) call, for a plain
    ResNet-50 and for one of output stride 16."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    classifier = request.getfixturevalue(network)
    images = slices(2)
    targets = [1, 3]
    ours = explain(classifier, images, method=method, targets=targets).heatmaps
    reference_model = copy.deepcopy(classifier.model).float().requires_grad_(True)
    batch = classifier.preprocess(images).contiguous(memory_format=torch.channels_last)
    cam_class = getattr(pytorch_grad_cam, CAM_METHODS[method].class_name)
    with cam_class(model=reference_model, target_layers=[reference_model.layer4[-1]]) as cam:
        theirs = cam(batch, [ClassifierOutputTarget(t) for t in targets])
    assert np.allclose(ours, theirs, atol=2e-3), np.abs(ours - theirs).max()


def test_any_class_can_be_explained_by_name(classifier):
    images = slices(2)
    why_not = explain(classifier, images, targets="meningioma")
    assert (why_not.targets == CLASSES.index("meningioma")).all()
    mixed = explain(classifier, images, targets=[None, "notumor"])
    assert mixed.targets[0] == mixed.predictions[0] and mixed.targets[1] == CLASSES.index("notumor")


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "magic"}, "unknown CAM method"), ({"layer": "layer9"}, "unknown layer"),
    ({"targets": "astrocytoma"}, "unknown class"), ({"targets": 7}, "out of range"),
    ({"targets": True}, "not True"), ({"targets": [1.5]}, "not 1.5"),  # True was once taken for class 1
])
def test_bad_choices_are_explained(classifier, kwargs, message):
    with pytest.raises(ExplainError, match=message):
        explain(classifier, slices(1), **kwargs)


def test_concurrent_explanations_do_not_leak_into_each_other(classifier):
    images = slices(2)
    expected = {t: explain(classifier, images, targets=t).heatmaps for t in ("glioma", "pituitary")}
    results, errors = {}, []

    def work(target):
        try:
            for _ in range(3):
                results.setdefault(target, []).append(explain(classifier, images, targets=target).heatmaps)
        except Exception as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(t,)) for t in ("glioma", "pituitary")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for target, maps in results.items():
        assert all(np.allclose(m, expected[target], atol=1e-5) for m in maps)
    model = classifier.model
    assert all(not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())


def test_no_hook_is_ever_registered_on_the_shared_model(classifier, monkeypatch):
    """Checked while explaining, not only afterwards: every hook registration is recorded."""
    hooked = []
    for name in ("register_forward_hook", "register_full_backward_hook", "register_forward_pre_hook"):
        original = getattr(torch.nn.Module, name)

        def recording(module, *args, _original=original, **kwargs):
            hooked.append(module)
            return _original(module, *args, **kwargs)

        monkeypatch.setattr(torch.nn.Module, name, recording)
    for method in CAM_METHODS:
        if not CAM_METHODS[method].slow:
            explain(classifier, slices(1), method=method)
    shared = {id(m) for m in classifier.model.modules()}
    assert hooked and not [m for m in hooked if id(m) in shared]  # the stand-in got them, the model none


def test_heatmap_maps_back_onto_a_non_square_original():
    # A 200 x 100 image sits in the middle band of the 224 grid (rows 56-167). A hot spot at grid
    # (row 112, column 56) is the original's centre row, a quarter of the way across.
    heatmap = np.zeros((224, 224), np.float32)
    heatmap[108:116, 52:60] = 1.0
    mapped = heatmap_on_image(heatmap, 200, 100)
    assert mapped.shape == (100, 200)
    row, col = np.unravel_index(mapped.argmax(), mapped.shape)
    assert abs(row - 50) <= 3 and abs(col - 50) <= 3
    image = Image.new("L", (200, 100))
    assert overlay(image, heatmap, 0.5).size == (200, 100)


def test_pointing_game_and_energy_by_hand():
    box = [(0.5, 0.5, 0.25, 0.25)]  # centre quarter of a square image: grid pixels 84-140
    heatmap = np.zeros((224, 224), np.float32)
    heatmap[100, 100] = 1.0
    inside = localisation_scores(heatmap, box, 512, 512)
    assert inside["pointing_strict"] and inside["pointing_tolerant"] and inside["energy_in_box"] == 1.0
    assert inside["box_share"] == pytest.approx(0.0625, abs=0.003)
    near = np.zeros((224, 224), np.float32)
    near[100, 150] = 1.0  # 10 px right of the box
    scores = localisation_scores(near, box, 512, 512)
    assert not scores["pointing_strict"] and scores["pointing_tolerant"]
    far = np.zeros((224, 224), np.float32)
    far[10, 10] = 1.0
    assert not localisation_scores(far, box, 512, 512)["pointing_tolerant"]
    uniform = localisation_scores(np.ones((224, 224), np.float32), box, 512, 512)
    assert uniform["energy_in_box"] == pytest.approx(uniform["box_share"])


def test_padding_is_left_out_of_localisation():
    # A wide image: padding rows above and below must not count towards the image's area.
    heatmap = np.ones((224, 224), np.float32)
    scores = localisation_scores(heatmap, [(0.5, 0.5, 0.5, 1.0)], 400, 200)
    assert scores["box_share"] == pytest.approx(0.5, abs=0.01)
    assert scores["energy_in_box"] == pytest.approx(0.5, abs=0.01)


def test_the_overlay_blends_in_eight_bits_and_keeps_the_image_size():
    image = Image.fromarray(np.full((100, 200), 200, np.uint8), "L")
    heatmap = np.zeros((224, 224), np.float32)
    heatmap[100:124, 100:124] = 1.0
    for opacity, expected in ((0.0, (200, 200, 200)), (1.0, None)):
        blended = np.asarray(overlay(image, heatmap, opacity))
        assert blended.shape == (100, 200, 3) and blended.dtype == np.uint8
        if expected is not None:
            assert (blended == expected).all()  # no heatmap shows the image as it is
    hot = np.asarray(overlay(image, heatmap, 1.0))[50, 100]
    cold = np.asarray(overlay(image, heatmap, 1.0))[5, 5]
    assert hot[0] > 100 and hot[2] < 100 and cold[2] > 100  # jet: red where hot, blue where cold


def test_slow_explanations_run_in_a_low_priority_process_and_give_the_same_heatmaps(classifier):
    import os

    from core.background import SlowExplainer
    from core.explain import explain_batch

    batch = classifier.preprocess(slices(2))
    worker = SlowExplainer()
    try:
        result = worker.explain(classifier, batch, "gradcam", "layer4", "glioma")
        probabilities, targets, heatmaps = result.probabilities, result.targets, result.heatmaps
        here = explain_batch(classifier, batch, "gradcam", "layer4", "glioma")
        np.testing.assert_allclose(heatmaps, here.heatmaps, atol=1e-4)
        np.testing.assert_allclose(probabilities, here.probabilities, atol=1e-5)
        assert (targets == CLASSES.index("glioma")).all()
        assert worker._executor().submit(os.getpriority, os.PRIO_PROCESS, 0).result() == 19
        assert os.getpriority(os.PRIO_PROCESS, 0) < 19  # this process keeps its own priority
    finally:
        worker.shutdown()


def test_slow_explanations_beyond_the_queue_are_refused_in_words(classifier):
    from core.background import BackgroundError, SlowExplainer

    full = SlowExplainer(max_waiting=0)  # as if the queue were full
    with pytest.raises(BackgroundError, match="already queued"):
        full.explain(classifier, classifier.preprocess(slices(1)), "scorecam", "layer4")
    assert full._pool is None  # refused before any worker was started


def test_on_the_prediction_scale_the_predicted_class_peaks_at_one_and_other_classes_compare_to_it(classifier):
    from core.explain import ExplainError

    images = slices(2)
    predicted = explain(classifier, images, scale="prediction")
    assert predicted.heatmaps.reshape(2, -1).max(axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)
    own = explain(classifier, images)
    # The same map, up to the scale: where one is hottest, so is the other.
    for a, b in zip(own.heatmaps, predicted.heatmaps):
        assert np.unravel_index(a.argmax(), a.shape) == np.unravel_index(b.argmax(), b.shape)
    others = []
    for k in range(len(CLASSES)):
        result = explain(classifier, images, targets=k, scale="prediction")
        assert result.heatmaps.min() >= 0 and result.heatmaps.max() <= 1
        others.append(result.heatmaps.reshape(2, -1).max(axis=1))
    # On its own scale every class's map reaches 1; on the prediction's, a class the scan has less evidence for
    # stays below it.
    assert (np.array(others) < 1 - 1e-3).any()
    with pytest.raises(ExplainError, match="unknown heatmap scale"):
        explain(classifier, images, scale="loud")


def test_a_volumes_slices_share_one_colour_scale_across_batches(classifier):
    """scale="together" (a volume's slices in the review page): every map divided by the largest value of them all,
    whatever the batches; the slice with the most evidence peaks at 1, and a slice with less stays below it rather
    than being stretched to its own peak as the "own" scale does."""
    from core.explain import RAW, explain_batch

    images = [*slices(4), Image.new("L", (224, 224))]
    together = explain(classifier, images, targets="glioma", scale="together", batch_size=2)
    raw = explain_batch(classifier, classifier.preprocess(images), targets="glioma", scale=RAW).heatmaps
    assert together.heatmaps.max() == pytest.approx(1.0)
    np.testing.assert_allclose(together.heatmaps, raw / raw.max(), atol=1e-5)  # batches of 2 vs of 5: float sums
    own = explain(classifier, images, targets="glioma")
    peaks = together.heatmaps.reshape(len(images), -1).max(axis=1)
    weakest = int(peaks.argmin())  # on its own scale stretched to 1; here below the slab's strongest
    raw_peaks = raw.reshape(len(images), -1).max(axis=1)
    assert peaks[weakest] == pytest.approx(raw_peaks[weakest] / raw_peaks.max(), abs=1e-5) and peaks[weakest] < 1
    assert own.heatmaps[weakest].max() == pytest.approx(1.0)
    for a, b in zip(own.heatmaps[:-1], together.heatmaps[:-1]):  # the same map, up to the scale
        assert np.unravel_index(a.argmax(), a.shape) == np.unravel_index(b.argmax(), b.shape)


def test_a_slow_job_reports_its_progress_and_can_be_cancelled(classifier):
    from core.background import BackgroundError, SlowExplainer

    worker = SlowExplainer()
    try:
        batch = classifier.preprocess(slices(1))
        job = worker.submit(classifier, batch, "scorecam", "layer4")
        deadline = time.monotonic() + 300
        while job.progress()[0] == 0 and not job.done() and time.monotonic() < deadline:
            time.sleep(0.2)
        done, total, left = job.progress()
        assert total == 2048 and 0 < done < total and left is not None and left > 0
        job.cancel()
        with pytest.raises(BackgroundError, match="cancelled"):
            job.result(120)
        given_back = time.monotonic() + 10  # the queue place is given back (by the future's done callback)
        while worker._waiting and time.monotonic() < given_back:
            time.sleep(0.05)
        assert worker._waiting == 0
        quick = worker.explain(classifier, batch, "gradcam", "layer4")  # the worker goes on serving
        assert quick.heatmaps.shape[0] == 1
    finally:
        worker.shutdown()


def test_a_dilated_layer4_explains_on_a_grid_twice_as_fine(classifier, dilated):
    """Output stride 16: layer4's maps are 14 x 14 at 224 px (7 x 7 for a plain ResNet-50 at 224; 4 and 2 at this
    test's 64 px), so a heatmap has four times as many cells, each to a cell of its own."""
    from core.explain import _split_forward, layer_grid

    batch = dilated.preprocess(slices(1))
    for clf, side in ((classifier, 2), (dilated, 4)):
        activations, features, logits = _split_forward(clf.model, batch.to(memory_format=torch.channels_last),
                                                       "layer4", need_gradient=False)
        assert activations.shape[-2:] == (side, side) and features.shape == (1, 2048)
        assert layer_grid("layer4", clf.image_size, clf.output_stride) == side
    assert (classifier.output_stride, dilated.output_stride) == (32, 16)
    assert layer_grid("layer4", 224, 16) == layer_grid("layer3", 224) == 14 and layer_grid("layer4", 224) == 7
