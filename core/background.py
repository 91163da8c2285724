"""Explanations too slow to compute in a request: one worker process at the lowest CPU priority.

Score-CAM runs one forward pass per channel of the explained layer (2,048 at layer4), minutes per image on a
CPU. Run in the dashboard's own process it would take every core for that long, and every other user's
Grad-CAM (tens of milliseconds) would wait. Here it runs in a separate process started with ``os.nice(19)``:
the operating system gives it only the CPU time nobody else wants, so it finishes fast on an idle server and
yields at once to quick requests. One process serves the requests of all sessions in turn, which also bounds
memory (pytorch-grad-cam's Score-CAM holds about 1.2 GB per image).

:meth:`SlowExplainer.submit` returns a :class:`SlowJob` at once: the page shows its progress (masked images done,
and the time left at the pace so far) and can cancel it; the worker stops after its current batch.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import torch

_WORKER_MODEL: dict = {}  # in the worker: {"key": (path, modified), "classifier": Classifier}


class BackgroundError(RuntimeError):
    """The background worker could not do the job; the message says why."""


def _lower_priority() -> None:
    if hasattr(os, "nice"):
        os.nice(19)


class Cancelled(Exception):
    """A slow explanation was cancelled: by whoever asked for it, by its time limit, or because nobody watched it."""


ABANDONED = 120.0  # seconds: a watched job whose page has not asked for its progress for this long is stopped


class _Progress:
    """In the worker: counts the masked passes (core.explain plans them per image, then reports each batch) in the
    shared status, and stops the work when it was cancelled, ran past its deadline or was abandoned."""

    def __init__(self, status):
        self.status = status
        status.update(done=0, total=0, started=time.time())

    def plan(self, passes: int) -> None:
        self.status["total"] = self.status.get("total", 0) + passes

    def __call__(self, images: int) -> None:
        status, now = self.status, time.time()
        seen = status.get("seen")
        if status.get("cancel") or now > status.get("deadline", float("inf")) or \
                (seen is not None and now - seen > ABANDONED):
            raise Cancelled()
        status["done"] = status.get("done", 0) + images


def _explain_in_worker(checkpoint: str, modified: float, precision: str, batch: torch.Tensor, method: str,
                       layer: str, targets, scale: str = "own", status=None):
    from core.explain import Explanation, explain_batch
    from core.inference import load_classifier

    key = (checkpoint, modified, precision)
    if _WORKER_MODEL.get("key") != key:
        _WORKER_MODEL.clear()  # one model at a time: a replaced checkpoint frees the old one
        _WORKER_MODEL.update(key=key, classifier=load_classifier(checkpoint, "cpu", precision))
    classifier = _WORKER_MODEL["classifier"]
    progress = None if status is None else _Progress(status)
    parts = [explain_batch(classifier, batch[i:i + 1], method, layer,
                           targets if not isinstance(targets, list) else targets[i:i + 1], scale, progress)
             for i in range(len(batch))]  # one image at a time: Score-CAM's memory grows with the batch
    return Explanation.joined(parts)


@dataclass
class SlowJob:
    """A slow explanation in the worker: its progress, a way to cancel it, and its result when done."""
    future: Future
    status: object          # a shared dict: done, total (masked images), started (time), cancel
    submitted: float

    def progress(self) -> tuple[int, int, float | None]:
        """(masked images done, total, seconds left at the pace so far or None before the first batch)."""
        try:
            done, total, started = self.status.get("done", 0), self.status.get("total", 0), self.status.get("started")
        except (OSError, EOFError, BrokenPipeError):  # the manager is gone: the server is stopping
            return 0, 0, None
        try:
            if self.status.get("seen") is not None:
                self.status["seen"] = time.time()  # somebody is watching: the worker goes on
        except (OSError, EOFError, BrokenPipeError):
            pass
        if not done or not started or not total:
            return done, total, None
        return done, total, (time.time() - started) * (total - done) / done

    def cancel(self) -> None:
        """Stop the job: dropped from the queue if it has not started, stopped after its current batch if it has."""
        self.future.cancel()
        try:
            self.status["cancel"] = True
        except (OSError, EOFError, BrokenPipeError):
            pass

    def done(self) -> bool:
        return self.future.done()

    def result(self, timeout: float | None = None):
        try:
            return self.future.result(timeout)
        except CancelledError:
            raise BackgroundError("the slow explanation was cancelled") from None
        except Cancelled:
            raise BackgroundError("the slow explanation was cancelled") from None
        except BrokenProcessPool:
            raise BackgroundError("the worker process for slow explanations stopped (probably out of memory); try "
                                  "again with fewer scans") from None
        except TimeoutError:
            raise BackgroundError(f"the slow explanation did not finish within {timeout / 60:.0f} minutes") from None


class SlowExplainer:
    """A queue of slow explanations served by one low-priority process (started on first use). At most
    ``max_waiting`` jobs wait or run at a time, and each waits at most ``timeout`` seconds: many open tabs cannot
    queue hours of work, each holding a server thread."""

    def __init__(self, max_waiting: int = 4, timeout: float = 1800.0):
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self.max_waiting, self.timeout = max_waiting, timeout
        self._waiting = 0
        self._manager = None

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_lower_priority)
            return self._pool

    def _shared(self):
        with self._lock:
            if self._manager is None:
                self._manager = multiprocessing.get_context("spawn").Manager()
            return self._manager

    def submit(self, classifier, batch: torch.Tensor, method: str, layer: str, targets=None,
               scale: str = "own", watched: bool = True) -> SlowJob:
        """Queue the explanation of a normalised batch, computed in the worker with the classifier's checkpoint
        file, on the CPU at the classifier's precision (the worker loads it once); returns at once. The job stops
        after ``timeout`` seconds, and, when ``watched``, once nobody has asked for its progress for
        :data:`ABANDONED` seconds (a closed tab)."""
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
            status = self._shared().dict(done=0, total=0, started=None, cancel=False,
                                         deadline=time.time() + self.timeout, seen=time.time() if watched else None)
            pool = self._executor()
            try:
                future = pool.submit(_explain_in_worker, *job, status)
            except BrokenProcessPool:  # the worker died while idle: start a fresh one
                self._reset(pool)
                pool = self._executor()
                future = pool.submit(_explain_in_worker, *job, status)
        except BaseException:
            with self._lock:
                self._waiting -= 1
            raise
        future.add_done_callback(lambda done: self._finished(done, pool))
        return SlowJob(future, status, time.time())

    def _reset(self, pool: ProcessPoolExecutor) -> None:
        """Forget a broken pool (only if it is still the current one), so the next request starts a fresh worker."""
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def _finished(self, future: Future, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            self._waiting -= 1
        if not future.cancelled() and isinstance(future.exception(), BrokenProcessPool):
            self._reset(pool)

    def explain(self, classifier, batch: torch.Tensor, method: str, layer: str, targets=None, scale: str = "own"):
        """:meth:`submit`, then wait for the :class:`core.explain.Explanation` (at most ``timeout`` seconds)."""
        job = self.submit(classifier, batch, method, layer, targets, scale, watched=False)
        try:
            return job.result(self.timeout)
        except BackgroundError:
            job.cancel()
            raise

    def shutdown(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
            if self._manager is not None:
                self._manager.shutdown()
                self._manager = None
