"""What is fitted on held-out images when training ends, on the best network as it is stored: the softmax
temperature (core.calibration) and the familiarity model with its threshold (core.familiarity). Neither may
cost the model: a split too small or degenerate to fit on leaves the entry out, with a warning."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from core.calibration import calibrate
from core.familiarity import Fitted, fit_on_images
from core.inference import Classifier

log = logging.getLogger("core.trainer")


def calibrate_in_memory(classifier: Classifier, validation: tuple[list[Path], np.ndarray]) -> dict | None:
    """The temperature of the network, fitted on the validation images (paths, labels), or None with a warning
    when that cannot be done (a tiny or degenerate split)."""
    try:
        record = calibrate(classifier, *validation)
    except Exception as error:  # see the docstring
        log.warning("probabilities left uncalibrated: %s", error)
        return None
    log.info("calibrated on %d validation images: temperature %.3f (negative log-likelihood %.4f -> %.4f, "
             "ECE %.4f -> %.4f)", record["images"], record["temperature"], record["nll_before"],
             record["nll_after"], record["ece_before"], record["ece_after"])
    return record


def familiarity_in_memory(classifier: Classifier, train: tuple[list[Path], np.ndarray],
                          validation: tuple[list[Path], np.ndarray], fitted_on: dict) -> Fitted | None:
    """The familiarity model of the network, fitted on the training images, its threshold set on the validation
    images; or None with a warning when that cannot be done."""
    try:
        fitted = fit_on_images(classifier, train, validation[0], fitted_on)
    except Exception as error:  # see the docstring
        log.warning("no familiarity model: %s", error)
        return None
    record = fitted.record
    log.info("familiarity fitted on %d training images: distance threshold %.2f, probability floor %.3f (together "
             "exceeded by %d of the %d validation images)", len(train[0]), record["distance_threshold"],
             record["probability_floor"], record["validation_flagged"]["flagged"], len(validation[0]))
    return fitted
