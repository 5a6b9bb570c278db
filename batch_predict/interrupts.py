"""SIGINT and SIGTERM for the `batch-predict` command: mark the run in flight canceling, then stop it.

Dagster ends an in-process run *canceled* only if the run is CANCELING when it fails, and
its own interrupt handling cannot get there: in the main thread it replaces the SIGINT
handler while a run executes, and it turns an interrupt inside a step into a retry when the
step has a RetryPolicy, so the step just starts again. So the command executes each run in
a worker thread (Dagster leaves signal handlers alone outside the main thread), and its own
handler, in the main thread, calls `on_signal` (which marks the run CANCELING) and then
raises `Stopped` in the worker. `Stopped` is neither an Exception (no `except Exception` of
the model or the batch catches it) nor an interrupt (nothing retries it): the step fails,
and Dagster ends the CANCELING run as canceled. Without a handler, SIGTERM would end the
process at once and leave its run STARTED.
"""

from __future__ import annotations

import ctypes
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import TypeVar

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
T = TypeVar("T")


class Stopped(BaseException):
    """A stop signal (SIGINT, SIGTERM) was received."""


@dataclass
class Received:
    """The first stop signal received, if any, and the worker thread a run executes in."""

    signum: int | None = None
    worker: int | None = None
    starting: bool = False

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "SIGINT"

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by this signal: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + (self.signum or signal.SIGINT)


def _raise_in(thread_id: int) -> None:
    # Delivered when that thread next runs Python code: a model busy in one long native call
    # finishes that call first.
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(Stopped))


@contextmanager
def stop_signals_handled(on_signal: Callable[[int], None]) -> Iterator[Received]:
    """Within this block, SIGINT or SIGTERM calls `on_signal(signum)`, then raises `Stopped`.

    `Stopped` is raised in the worker thread of `in_worker` if a run executes there, in the
    main thread otherwise. Later signals are ignored while the first one stops the command.
    Outside the main thread (signals can only be handled there) this does nothing.
    """
    received = Received()
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handle(signum: int, _frame: FrameType | None) -> None:
        if received.signum is not None:
            return
        received.signum = signum
        on_signal(signum)
        if received.worker is not None:
            _raise_in(received.worker)
        elif not received.starting:
            raise Stopped()

    # This also replaces an inherited "ignore" (a background job of a non-interactive shell
    # starts with SIGINT ignored).
    previous = {signum: signal.signal(signum, handle) for signum in STOP_SIGNALS}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def in_worker(received: Received, work: Callable[[], T]) -> T:
    """Run `work` in a worker thread and wait for it, the main thread staying free for the signal handler."""
    outcome: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as error:  # handed to the main thread below
            errors.append(error)

    worker = threading.Thread(target=run, name="batch-predict-run")
    received.starting = True
    worker.start()
    received.worker, received.starting = worker.ident, False
    if received.signum is not None:
        _raise_in(worker.ident)  # type: ignore[arg-type]
    try:
        while worker.is_alive():
            worker.join(0.1)
    finally:
        received.worker = None
    if errors:
        raise errors[0]
    return outcome[0]
