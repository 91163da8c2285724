"""Using a trained checkpoint: ``load_classifier(path).predict_proba(images)``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.checkpoint import Checkpoint, CheckpointError, load_checkpoint, model_from_checkpoint, validate_metadata
from core.data import normalize, preprocess_uint8
from core.familiarity import Familiarity, FamiliarityError
from core.model import fold_batchnorm
from core.runtime import autocast, prepare_model, resolve_device, resolve_precision


class Classifier:
    """A trained model with the exact preprocessing it was trained with.

    ``classes`` are the canonical class names in output order. The classifier takes the network over and
    prepares it for inference (BatchNorm folded into the convolutions, channels_last, no gradients); from then on
    it is read-only shared state: nothing here mutates it, so one instance may serve several threads. The
    softmax ``temperature`` comes from the checkpoint (1 when uncalibrated).
    """

    def __init__(self, model: torch.nn.Module, metadata: dict, path: Path | None = None,
                 device: str | torch.device | None = None, precision: str = "auto",
                 familiarity: Familiarity | None = None):
        self.metadata = metadata
        self.familiarity = familiarity  # how far a scan lies from the training scans (None: not fitted)
        self.path = path
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.model = prepare_model(fold_batchnorm(model.eval()), self.device)  # the network is taken over
        for param in self.model.parameters():
            param.requires_grad_(False)
        validate_metadata(metadata, path or "checkpoint")
        pre = metadata["preprocessing"]
        self.image_size = int(pre["image_size"])
        self.mean = tuple(pre["mean"])
        self.std = tuple(pre["std"])
        self.temperature = checkpoint_temperature(metadata)
        if metadata.get("mirror_averaging"):
            _say_once(f"{path or 'the checkpoint'} asks for a second look at uncertain scans (mirror averaging), "
                      "which was removed from the project (it did not help on validation); it is ignored")

    @property
    def refer_below(self) -> float:
        """Answers under this top probability are marked "uncertain: refer" (core.calibration.REFER_BELOW unless
        the checkpoint's calibration says otherwise)."""
        from core.calibration import REFER_BELOW

        return float((self.metadata.get("calibration") or {}).get("refer_below", REFER_BELOW))

    @property
    def calibrated(self) -> bool:
        return bool(self.metadata.get("calibration"))

    @property
    def classes(self) -> list[str]:
        return list(self.metadata["classes"])

    @property
    def output_stride(self) -> int:
        """32 for a plain ResNet-50 (a 7 x 7 layer4 at 224 px), 16 for one with a dilated layer4 (14 x 14)."""
        return int(self.metadata["architecture"].get("output_stride", 32))

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        """PIL images of any mode and size -> the normalised float batch the network takes."""
        return self.normalise(torch.stack([preprocess_uint8(image, self.image_size) for image in images]))

    def normalise(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 batch (N, 3, size, size), as :func:`core.data.preprocess_uint8` makes it -> network input."""
        return normalize(batch_uint8, self.mean, self.std)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities from raw logits, with the checkpoint's temperature (1 if uncalibrated). Raises
        :class:`InferenceError` rather than return a probability that is not a number."""
        logits = logits.float()
        broken = int((~torch.isfinite(logits).all(dim=1)).sum())
        if broken:
            raise InferenceError(f"the model's output for {broken} of {len(logits)} images is not a number (NaN or "
                                 "infinity); no probability is given")
        return (logits / self.temperature).softmax(dim=1)

    @torch.inference_mode()
    def features_and_logits(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pooled layer4 features (what the head reads) and the logits, from one pass, as float32 on the CPU."""
        m = self.model
        batch = batch.to(self.device).contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.precision):
            x = m.maxpool(m.relu(m.bn1(m.conv1(batch))))
            features = torch.flatten(m.avgpool(m.layer4(m.layer3(m.layer2(m.layer1(x))))), 1)
            out = m.fc(features)
        return features.float().cpu(), out.float().cpu()

    def familiarity_scores(self, features: torch.Tensor, logits: torch.Tensor) -> np.ndarray | None:
        """Familiarity scores of pooled features and the logits of the same pass (a familiarity model of the second
        form reads the answer's probability too), or None when the checkpoint has no familiarity model."""
        return None if self.familiarity is None else self.familiarity.scores(features, logits)

    @torch.inference_mode()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.device).contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.precision):
            out = self.model(batch)
        return out.float().cpu()

    def predict_proba(self, images, batch_size: int = 32) -> np.ndarray:
        """Class probabilities, shape (len(images), len(classes)), rows in input order."""
        if isinstance(images, Image.Image):
            raise TypeError("predict_proba takes a list of PIL images; wrap a single image in a list")
        images = list(images)
        if not images:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        chunks = [self.probabilities(self.logits(self.preprocess(images[i:i + batch_size])))
                  for i in range(0, len(images), batch_size)]
        return torch.cat(chunks).numpy()

    def predict(self, images, batch_size: int = 32) -> list[str]:
        probs = self.predict_proba(images, batch_size)
        return [self.classes[i] for i in probs.argmax(axis=1)]


_SAID: set[str] = set()


def _say_once(message: str) -> None:
    """Log a warning the first time it is given in this process (a checkpoint is loaded by many sessions)."""
    if message not in _SAID:
        _SAID.add(message)
        logging.getLogger(__name__).warning(message)


class InferenceError(ValueError):
    """The model cannot give a usable answer for an input; the message says why."""


def checkpoint_temperature(metadata: dict) -> float:
    """The softmax temperature a checkpoint's calibration prescribes (its range is checked with the metadata);
    1.0 for an uncalibrated one."""
    record = metadata.get("calibration")
    return float(record["temperature"]) if record else 1.0


def load_classifier(path: str | os.PathLike, device: str | torch.device | None = None,
                    precision: str = "auto") -> Classifier:
    """Load a checkpoint file (or the directory holding it) for inference."""
    return classifier_from_checkpoint(load_checkpoint(path), device, precision)


def classifier_from_checkpoint(checkpoint: Checkpoint, device: str | torch.device | None = None,
                               precision: str = "auto") -> Classifier:
    """The classifier of a loaded checkpoint, with its familiarity model when it carries one."""
    model = model_from_checkpoint(checkpoint)
    try:
        familiarity = Familiarity.from_tensors(checkpoint.familiarity, checkpoint.metadata,
                                               model.layer4[-1].conv3.out_channels)  # what the head reads
    except FamiliarityError as error:
        raise CheckpointError(f"{checkpoint.path}: {error}") from None
    return Classifier(model, checkpoint.metadata, checkpoint.path, device, precision, familiarity)
