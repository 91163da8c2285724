"""Class activation maps: where in the slice the network found the evidence for a class.

``explain(classifier, images, method="gradcam")`` returns the prediction and the heatmaps of one pass
through the network. The CAM methods themselves (how each weights the activations) are pytorch-grad-cam's;
only the pass that feeds them differs from that library's usual call:

* **One pass, cheap gradients.** The stages below the explained layer run without autograd; the
  explained layer's output becomes a fresh leaf tensor that requires a gradient, and only the stages
  above it (for ``layer4``: average pooling and the linear head) are recorded. The backward pass then
  costs next to nothing, where pytorch-grad-cam's call back-propagates into every weight of the network.
  The probabilities come from the same forward pass.
* **No hooks on the shared model.** Nothing is registered on, or stored in, the network, so one cached
  model can explain for several sessions (threads) at once. pytorch-grad-cam's method objects are built
  per call around a stand-in layer, so their hooks never touch the real network.

Heatmaps are on the network's input grid (``image_size`` square, the slice padded to a square and
resized); :func:`heatmap_on_image` maps one back onto the original image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from core.grid import square_geometry
from core.sources import prepare_image

STAGES = ("layer1", "layer2", "layer3", "layer4")
LAYERS = {"layer4": "last block, most class-specific",
          "layer3": "third stage, finer, less specific",
          "layer2": "second stage, edges and textures"}
DEFAULT_LAYER = "layer4"
STRIDES = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}  # of ResNet-50's stages


def layer_grid(layer: str, size: int, output_stride: int = 32) -> int:
    """The side of ``layer``'s feature map for a ``size`` x ``size`` input: the grid its heatmaps are resized from.
    A network of output stride 16 (:func:`core.model.build_resnet50`) keeps ``layer4`` at ``layer3``'s grid."""
    return -(-size // min(STRIDES[layer], output_stride))


def layer_description(layer: str, size: int = 224, output_stride: int = 32) -> str:
    """'last block (7 x 7, most class-specific)': what a layer is, with its grid for this network."""
    grid = layer_grid(layer, size, output_stride)
    what, _, rest = LAYERS[layer].partition(", ")
    return f"{what} ({grid} x {grid}, {rest})"


@dataclass(frozen=True)
class CamMethod:
    label: str
    class_name: str       # in pytorch_grad_cam
    uses_gradients: bool
    slow: bool            # needs many extra forward passes per image
    note: str

    @property
    def key(self) -> str:
        return next(name for name, spec in CAM_METHODS.items() if spec is self)

    @property
    def class_specific(self) -> bool:
        """Whether the map depends on the class explained (EigenCAM's does not)."""
        return self.class_name != "EigenCAM"


CAM_METHODS = {
    "gradcam": CamMethod("Grad-CAM", "GradCAM", True, False, "channel weights: mean gradient"),
    "gradcam++": CamMethod("Grad-CAM++", "GradCAMPlusPlus", True, False,
                           "weights from higher-order gradient terms; spreads over several regions"),
    "xgradcam": CamMethod("XGrad-CAM", "XGradCAM", True, False, "gradients weighted by normalised activations"),
    "layercam": CamMethod("LayerCAM", "LayerCAM", True, False,
                          "per-pixel positive gradients; sharper, suits earlier layers"),
    "eigencam": CamMethod("EigenCAM", "EigenCAM", False, False,
                          "first principal component of the activations; the same map for every class"),
    "scorecam": CamMethod("Score-CAM", "ScoreCAM", False, True,
                          "one extra forward pass per channel (2,048 at layer4): minutes per image on a CPU"),
}
DEFAULT_METHOD = "gradcam"


def fast_methods() -> list[str]:
    """The methods that explain a scan in one pass (all but those needing a pass per channel)."""
    return [m for m, spec in CAM_METHODS.items() if not spec.slow]


def slow_methods() -> list[str]:
    return [m for m, spec in CAM_METHODS.items() if spec.slow]


class ExplainError(ValueError):
    """An explanation was asked for with settings that do not exist; the message lists the choices."""


@dataclass
class Explanation:
    probabilities: np.ndarray   # (n, classes), the prediction: as predict_proba gives it
    targets: np.ndarray         # (n,) class index each heatmap explains
    heatmaps: np.ndarray        # (n, size, size) float32 in [0, 1] on the network input grid (the scan as given)
    method: str
    layer: str
    familiarity: np.ndarray | None = None  # (n,) familiarity scores (core.familiarity); None: the model has none

    @property
    def predictions(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @classmethod
    def joined(cls, parts: Sequence[Explanation]) -> Explanation:
        """One explanation of the images of several, in order (all of one method and layer)."""
        def join(name: str):
            return None if getattr(parts[0], name) is None else np.concatenate([getattr(p, name) for p in parts])

        return cls(join("probabilities"), join("targets"), join("heatmaps"), parts[0].method, parts[0].layer,
                   join("familiarity"))


class _StandIn(nn.Module):
    """What pytorch-grad-cam's method objects are built around: a parameter (the library reads the device
    from one) and a forward that runs the real network for Score-CAM, without registering the network
    as a submodule, so the library's ``.eval()`` and hooks reach only this object."""

    def __init__(self, classifier, progress=None):
        super().__init__()
        self.probe = nn.Parameter(torch.zeros(1, device=classifier.device), requires_grad=False)
        self.layer = nn.Identity()
        self.__dict__["_classifier"] = classifier
        self.__dict__["_progress"] = progress

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        from core.runtime import autocast

        clf = self.__dict__["_classifier"]
        with torch.no_grad(), autocast(clf.device, clf.precision):
            out = clf.model(batch.contiguous(memory_format=torch.channels_last)).float()
        if self.__dict__["_progress"] is not None:  # Score-CAM's masked passes: one call per batch of them
            self.__dict__["_progress"](len(batch))
        return out


def _method_object(method: str, classifier, progress=None):
    import pytorch_grad_cam

    stand_in = _StandIn(classifier, progress)
    return getattr(pytorch_grad_cam, CAM_METHODS[method].class_name)(model=stand_in, target_layers=[stand_in.layer])


def check_choice(method: str, layer: str) -> None:
    if method not in CAM_METHODS:
        raise ExplainError(f"unknown CAM method {method!r}; choose one of {', '.join(CAM_METHODS)}")
    if layer not in LAYERS:
        raise ExplainError(f"unknown layer {layer!r}; choose one of {', '.join(LAYERS)}")


def _split_forward(model: nn.Module, batch: torch.Tensor, layer: str, need_gradient: bool
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(activations of ``layer`` as a leaf tensor, pooled layer4 features, logits) of one forward pass; autograd
    records only the part above ``layer``, and only when ``need_gradient``."""
    cut = STAGES.index(layer) + 1
    with torch.no_grad():
        x = model.maxpool(model.relu(model.bn1(model.conv1(batch))))
        for name in STAGES[:cut]:
            x = getattr(model, name)(x)
    activations = x.detach().requires_grad_(need_gradient)
    with torch.set_grad_enabled(need_gradient):
        y = activations
        for name in STAGES[cut:]:
            y = getattr(model, name)(y)
        features = torch.flatten(model.avgpool(y), 1)
        logits = model.fc(features)
    return activations, features, logits


def _resolve_targets(targets, predictions: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    if targets is None:
        return predictions.copy()
    if isinstance(targets, (str, int, np.integer)):
        targets = [targets] * len(predictions)
    resolved = []
    for target in targets:
        if target is None:
            resolved.append(-1)
        elif isinstance(target, str):
            if target not in classes:
                raise ExplainError(f"unknown class {target!r}; the model knows {', '.join(classes)}")
            resolved.append(classes.index(target))
        elif isinstance(target, (bool, np.bool_)) or not isinstance(target, (int, np.integer)):
            raise ExplainError(f"a target is a class name, a class index or None, not {target!r}")
        else:
            if not 0 <= int(target) < len(classes):
                raise ExplainError(f"class index {target} is out of range for {len(classes)} classes")
            resolved.append(int(target))
    if len(resolved) != len(predictions):
        raise ExplainError(f"{len(resolved)} targets for {len(predictions)} images")
    resolved = np.array(resolved)
    return np.where(resolved < 0, predictions, resolved)


def explain_batch(classifier, batch: torch.Tensor, method: str = DEFAULT_METHOD, layer: str = DEFAULT_LAYER,
                  targets=None, scale: str = "own", progress=None) -> Explanation:
    """Explain a normalised float batch (as :meth:`Classifier.preprocess` makes it).

    ``targets``: None explains each image's predicted class; a class name or index explains that class
    for every image; a sequence gives one per image (None entries mean the prediction).

    ``scale`` (:data:`ALL_SCALES`): "own" stretches each heatmap from its minimum to its maximum, which paints a
    class at 0.1% as red as the prediction; "prediction" divides it by the maximum of the predicted class's map
    of the same method and scan, so the colours compare across classes (and, method by method, across methods);
    "together" divides every map by the largest value of them all (with :func:`explain`, across all its batches).

    ``progress``: called with the number of masked images after each batch of Score-CAM's extra passes (it may
    raise to stop the work); its ``plan(passes)``, when it has one, is told first how many there will be.
    """
    from core.runtime import autocast

    check_choice(method, layer)
    if scale not in ALL_SCALES and scale != RAW:
        raise ExplainError(f"unknown heatmap scale {scale!r}; choose one of {', '.join(ALL_SCALES)}")
    spec = CAM_METHODS[method]
    with torch.inference_mode(False):
        batch = batch.clone().to(classifier.device).contiguous(memory_format=torch.channels_last)
        with autocast(classifier.device, classifier.precision):
            activations, features, logits = _split_forward(classifier.model, batch, layer, spec.uses_gradients)
        probabilities = classifier.probabilities(logits.detach().cpu()).numpy()
        familiarity = classifier.familiarity_scores(features.detach().float().cpu(), logits.detach().float().cpu())
        predicted = probabilities.argmax(axis=1)
        chosen = _resolve_targets(targets, predicted, classifier.classes)
        acts = activations.detach().float().cpu().numpy()
        second = scale == "prediction" and spec.class_specific and not (chosen == predicted).all()
        if spec.slow and hasattr(progress, "plan"):  # the masked passes to come: one per channel and map
            progress.plan(acts.shape[1] * len(batch) * (2 if second else 1))
        cam = _raw_cams(classifier, spec, batch, activations, logits, acts, chosen, progress)
        reference = None
        if scale == "prediction":
            reference = _raw_cams(classifier, spec, batch, activations, logits, acts, predicted, progress) \
                if second else cam
    size = batch.shape[-1]
    if scale in ("together", RAW):
        heatmaps = _resized(cam, size)
        if scale == "together":
            heatmaps = _over_peak(heatmaps)
    else:
        heatmaps = _scaled(cam, reference, size)
    return Explanation(probabilities, chosen, heatmaps, method, layer, familiarity)


SCALES = {"own": "each map to its own maximum", "prediction": "relative to the predicted class's evidence"}
# Beside the choices a page offers: every map of one call on one scale (a volume's slices, where a slice without
# evidence must stay cold rather than be stretched to its own faint peak).
ALL_SCALES = {**SCALES, "together": "every map of the call to the largest value among them"}
RAW = "raw"  # within explain(): the resized maps before any scaling, to be scaled together after the last batch


def _resized(cam: np.ndarray, size: int) -> np.ndarray:
    """The maps on the ``size`` grid (bilinear, as pytorch-grad-cam resizes them), unscaled and never negative."""
    import cv2

    return np.stack([np.maximum(cv2.resize(one.astype(np.float32), (size, size)), 0.0) for one in cam])


def _over_peak(heatmaps: np.ndarray) -> np.ndarray:
    """Maps divided by the largest value of them all: one colour scale, on which a map without evidence stays 0."""
    peak = float(heatmaps.max()) if heatmaps.size else 0.0
    return (heatmaps / peak if peak > 0 else np.zeros_like(heatmaps)).astype(np.float32)


def _raw_cams(classifier, spec: CamMethod, batch, activations, logits, acts: np.ndarray, classes: np.ndarray,
              progress=None) -> np.ndarray:
    """pytorch-grad-cam's class activation maps of ``classes`` on the layer's grid, negative evidence set to 0."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    gradients = None
    if spec.uses_gradients:
        score = logits.float().gather(1, torch.as_tensor(classes, device=logits.device)[:, None]).sum()
        (gradients,) = torch.autograd.grad(score, activations, retain_graph=True)
        gradients = gradients.float().cpu().numpy()
    cam_object = _method_object(spec.key, classifier, progress)
    try:
        cam = cam_object.get_cam_image(batch.float(), cam_object.target_layers[0],
                                       [ClassifierOutputTarget(int(c)) for c in classes], acts, gradients, False)
    finally:
        cam_object.activations_and_grads.release()
    return np.maximum(cam, 0)


def _scaled(cam: np.ndarray, reference: np.ndarray | None, size: int) -> np.ndarray:
    """Heatmaps in [0, 1] on the ``size`` grid: each from its own minimum to maximum (``reference`` None, as
    pytorch-grad-cam scales them), or divided by the maximum of the reference map of the same image."""
    import cv2
    from pytorch_grad_cam.utils.image import scale_cam_image

    if reference is None:
        # As pytorch-grad-cam's own call does: stretched, resized, and stretched again, since a bilinear resize can
        # lower the peak (by up to 2% at 224 px, where the map's cell centres miss the pixel grid).
        return scale_cam_image(scale_cam_image(cam, (size, size))).astype(np.float32)
    peaks = reference.reshape(len(reference), -1).max(axis=1)
    out = np.zeros((len(cam), size, size), dtype=np.float32)
    for k, (one, peak) in enumerate(zip(cam, peaks)):
        if peak > 0:
            out[k] = np.clip(cv2.resize((one / peak).astype(np.float32), (size, size)), 0.0, 1.0)
    return out


def explain(classifier, images: Sequence[Image.Image], method: str = DEFAULT_METHOD, layer: str = DEFAULT_LAYER,
            targets=None, batch_size: int = 16, scale: str = "own") -> Explanation:
    """Prediction and heatmap for PIL images of any mode and size (see :func:`explain_batch`)."""
    images = list(images)
    if not images:
        raise ExplainError("no images to explain")
    if targets is not None and not isinstance(targets, (str, int, np.integer)):
        targets = list(targets)
    if scale not in ALL_SCALES:
        raise ExplainError(f"unknown heatmap scale {scale!r}; choose one of {', '.join(ALL_SCALES)}")
    parts = []
    for start in range(0, len(images), batch_size):
        part_targets = targets[start:start + batch_size] if isinstance(targets, list) else targets
        parts.append(explain_batch(classifier, classifier.preprocess(images[start:start + batch_size]), method,
                                   layer, part_targets, RAW if scale == "together" else scale))
    joined = Explanation.joined(parts)
    if scale == "together":  # scaled once every batch is in: one scale across all of them
        joined.heatmaps = _over_peak(joined.heatmaps)
    return joined


def warm_up(classifier) -> None:
    """Run one explanation of a blank image, so that the first real request does not pay for importing
    pytorch-grad-cam (seconds) and for oneDNN choosing its kernels (about a second on a CPU)."""
    explain(classifier, [Image.new("L", (classifier.image_size, classifier.image_size))])


# --------------------------------------------------------------------------------------------------
# Heatmaps and the original image


def heatmap_on_image(heatmap: np.ndarray, width: int, height: int) -> np.ndarray:
    """A heatmap on the network input grid -> the same map over the original ``width`` x ``height`` image
    (the inverse of padding to a square and resizing)."""
    import cv2

    side = max(width, height)
    _, dx, dy = square_geometry(width, height, heatmap.shape[-1])
    square = cv2.resize(heatmap.astype(np.float32), (side, side), interpolation=cv2.INTER_LINEAR)
    return np.clip(square[dy:dy + height, dx:dx + width], 0.0, 1.0)


def overlay(image: Image.Image, heatmap: np.ndarray, opacity: float = 0.45) -> Image.Image:
    """The image with a heatmap (on the network input grid) blended over it in the jet colour map, as RGB.

    The image passes :func:`core.sources.prepare_image` first (so a huge one is shrunk, never copied at full size),
    and the blend is done in 8 bits: no float copy of the image is made."""
    import cv2

    if not 0.0 <= opacity <= 1.0:
        raise ExplainError(f"opacity must be between 0 and 1, not {opacity}")
    rgb = np.asarray(prepare_image(image))
    mask = heatmap_on_image(heatmap, rgb.shape[1], rgb.shape[0])
    colours = cv2.cvtColor(cv2.applyColorMap(np.round(mask * 255).astype(np.uint8), cv2.COLORMAP_JET),
                           cv2.COLOR_BGR2RGB)
    return Image.fromarray(cv2.addWeighted(rgb, 1.0 - opacity, colours, opacity, 0.0))
