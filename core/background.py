"""Explanations too slow to compute in a request: one worker process at the lowest CPU priority.

Score-CAM runs one forward pass per channel of the explained layer (2,048 at layer4), minutes per image on a
CPU. Run in the dashboard's own process it would take every core for that long, and every other user's
Grad-CAM (tens of milliseconds) would wait. Here it runs in a separate process started with ``os.nice(19)``:
the operating system gives it only the CPU time nobody else wants, so it finishes fast on an idle server and
yields at once to quick requests. One process serves the requests of all sessions in turn, which also bounds
memory (pytorch-grad-cam's Score-CAM holds about 1.2 GB per image).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import torch

_WORKER_MODEL: dict = {}  # in the worker: {"key": (path, modified), "classifier": Classifier}


class BackgroundError(RuntimeError):
    """The background worker could not do the job; the message says why."""


def _lower_priority() -> None:
    if hasattr(os, "nice"):
        os.nice(19)


def _explain_in_worker(checkpoint: str, modified: float, precision: str, batch: torch.Tensor, method: str,
                       layer: str, targets, scale: str = "own"):
    from core.explain import Explanation, explain_batch
    from core.inference import load_classifier

    key = (checkpoint, modified, precision)
    if _WORKER_MODEL.get("key") != key:
        _WORKER_MODEL.clear()  # one model at a time: a replaced checkpoint frees the old one
        _WORKER_MODEL.update(key=key, classifier=load_classifier(checkpoint, "cpu", precision))
    classifier = _WORKER_MODEL["classifier"]
    parts = [explain_batch(classifier, batch[i:i + 1], method, layer,
                           targets if not isinstance(targets, list) else targets[i:i + 1], scale)
             for i in range(len(batch))]  # one image at a time: Score-CAM's memory grows with the batch
    return Explanation.joined(parts)


class SlowExplainer:
    """A queue of slow explanations served by one low-priority process (started on first use). At most
    ``max_waiting`` jobs wait or run at a time, and each waits at most ``timeout`` seconds: many open tabs cannot
    queue hours of work, each holding a server thread."""

    def __init__(self, max_waiting: int = 4, timeout: float = 1800.0):
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self.max_waiting, self.timeout = max_waiting, timeout
        self._waiting = 0

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_lower_priority)
            return self._pool

    def explain(self, classifier, batch: torch.Tensor, method: str, layer: str, targets=None, scale: str = "own"):
        """The :class:`core.explain.Explanation` of a normalised batch, computed in the worker with the
        classifier's checkpoint file, on the CPU at the classifier's precision (the worker loads it once)."""
        if classifier.path is None:
            raise BackgroundError("a slow explanation needs a model saved as a checkpoint file")
        job = (str(classifier.path), os.path.getmtime(classifier.path), classifier.precision, batch.cpu(), method,
               layer, targets, scale)
        with self._lock:
            if self._waiting >= self.max_waiting:
                raise BackgroundError(f"{self._waiting} slow explanations are already queued on this server; try "
                                      "again in a few minutes")
            self._waiting += 1
        try:
            return self._executor().submit(_explain_in_worker, *job).result(self.timeout)
        except BrokenProcessPool:
            with self._lock:
                self._pool = None  # the next request starts a fresh worker
            raise BackgroundError("the worker process for slow explanations stopped (probably out of memory); try "
                                  "again with fewer scans") from None
        except TimeoutError:
            raise BackgroundError(f"the slow explanation did not finish within {self.timeout / 60:.0f} minutes") \
                from None
        finally:
            with self._lock:
                self._waiting -= 1

    def shutdown(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
