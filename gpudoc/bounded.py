"""Run blocking calls with a deadline, so one stuck driver call cannot freeze the caller."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from gpudoc.errors import GpudocError

T = TypeVar("T")

_Job = tuple[Callable[..., Any], tuple[Any, ...], Future]


class _Worker:
    """One daemon thread draining a job queue."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="gpudoc-bounded", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            fn, args, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to the waiting caller
                future.set_exception(exc)


class BoundedCaller:
    """Runs calls on a worker thread and stops waiting for them after ``timeout`` seconds.

    A call that overruns is abandoned to its (daemon) thread, which is replaced; the key it
    was made under is then refused at once until that call returns, so a wedged device costs
    one thread and one timeout, not one per poll. Overruns raise ``error``; ``hint`` is the
    fix offered when a key is refused because its earlier call is still stuck.
    """

    def __init__(self, timeout: float, error: type[GpudocError], hint: str) -> None:
        self.timeout = timeout
        self._error = error
        self._hint = hint
        self._lock = threading.Lock()
        self._worker: _Worker | None = None
        self._stuck: dict[Hashable, Future] = {}

    def call(self, key: Hashable, label: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` with a deadline; ``label`` names the call in the timeout error."""
        with self._lock:
            pending = self._stuck.get(key)
            if pending is not None and not pending.done():
                raise self._error(
                    f"{label}: an earlier call has not returned after {self.timeout:g} s",
                    self._hint,
                )
            self._stuck.pop(key, None)
            if self._worker is None:
                self._worker = _Worker()
            worker = self._worker
            future: Future = Future()
            worker.jobs.put((fn, args, future))
        try:
            return future.result(self.timeout)
        except FutureTimeout:
            with self._lock:
                self._abandon(worker, key, future)
            raise self._error(
                f"{label}: no answer within {self.timeout:g} s; gave up waiting"
            ) from None

    def _abandon(self, worker: _Worker, key: Hashable, future: Future) -> None:
        if future.cancel():
            return
        self._stuck[key] = future
        if self._worker is worker:
            replacement = _Worker()
            while True:
                try:
                    job = worker.jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    replacement.jobs.put(job)
            worker.jobs.put(None)
            self._worker = replacement

    def close(self) -> None:
        """Let the worker thread finish its queue and exit."""
        with self._lock:
            if self._worker is not None:
                self._worker.jobs.put(None)
                self._worker = None
