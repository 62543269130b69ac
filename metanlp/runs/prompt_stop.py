"""Stop a run within a second of the request, even in the middle of a long step.

The engine asks ``should_stop`` between steps and episodes, but one step can take many seconds
(loading MiniLM, embedding a benchmark's test sentences, an encoder-in-the-loop MAML step), and
a cancelled run would go on until it ends. A watcher thread asks the same question every 0.2 s;
when the answer turns yes and the run has not stopped by itself within a short grace, it raises
``RunCancelled`` in the running thread at its next Python instruction (CPython's
``PyThreadState_SetAsyncExc``), which comes between two torch operations, so within a fraction
of a second. Everything recorded until then is kept: the caller handles ``RunCancelled`` as it
would from the engine.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from types import TracebackType

from metanlp.engine.training import RunCancelled

POLL_SECONDS = 0.2
GRACE_SECONDS = 0.3  # the engine's own check usually stops a run between steps in this time


def _raise_in_thread(thread_id: int, exception: type[BaseException] | None) -> int:
    """Schedule ``exception`` in the thread (None: withdraw one not yet raised); returns threads affected."""
    target = ctypes.py_object(exception) if exception is not None else None
    return ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), target)


class PromptStop:
    """``with PromptStop(should_stop): run_training(...)``: the block is interrupted soon after ``should_stop``.

    Only the block is ever interrupted: leaving it disarms the watcher and withdraws an exception
    scheduled but not yet raised, so nothing fires in the caller's clean-up code.
    """

    def __init__(
        self, should_stop: Callable[[], bool], poll: float = POLL_SECONDS, grace: float = GRACE_SECONDS
    ) -> None:
        self.should_stop = should_stop
        self.poll = poll
        self.grace = grace
        self.interrupted = False  # True once RunCancelled was scheduled in the block
        self._lock = threading.Lock()
        self._armed = False
        self._done = threading.Event()
        self._thread_id: int | None = None
        self._watcher: threading.Thread | None = None

    def __enter__(self) -> PromptStop:
        self._thread_id = threading.get_ident()
        self._armed = True
        self._watcher = threading.Thread(target=self._watch, name="metanlp-prompt-stop", daemon=True)
        self._watcher.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        with self._lock:
            self._armed = False
            if self.interrupted and self._thread_id is not None:
                _raise_in_thread(self._thread_id, None)  # the block ended first: withdraw what is pending
        self._done.set()
        if self._watcher is not None:
            self._watcher.join()

    def _watch(self) -> None:
        while not self._done.wait(self.poll):
            try:
                stop = self.should_stop()
            except Exception:  # noqa: BLE001 - a store hiccup must not end the watcher; the engine asks too
                continue
            if not stop:
                continue
            if self._done.wait(self.grace):
                return  # the run stopped by itself
            with self._lock:
                if self._armed and self._thread_id is not None:
                    self.interrupted = True
                    _raise_in_thread(self._thread_id, RunCancelled)
            return
