"""SIGINT and SIGTERM for the `batch-predict` command: act on the signal first, then interrupt.

Dagster's in-process execution turns an interrupt into a *canceled* run only if the run is
already CANCELING when the interrupt reaches it; otherwise it records a failure. It also
replaces the SIGINT handler while it runs. So the signals are not handled in the main thread:
they are blocked there and received by a helper thread, which first calls `on_signal` (that
marks the run in flight CANCELING) and then interrupts the main thread as Ctrl-C would. An
unhandled SIGTERM would instead end the process at once, leaving its run STARTED.
"""

from __future__ import annotations

import _thread
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


@dataclass
class Received:
    """The first stop signal received, if any."""

    signum: int | None = None
    closing: bool = False

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by this signal: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + (self.signum or signal.SIGINT)


@contextmanager
def stop_signals_handled(on_signal: Callable[[int], None]) -> Iterator[Received]:
    """Within this block, SIGINT or SIGTERM calls `on_signal(signum)`, then raises KeyboardInterrupt in the main thread.

    A second signal is ignored while the first one's cancellation is under way. Outside the
    main thread (signals can only be handled there) this does nothing.
    """
    received = Received()
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)

    def wait() -> None:
        while True:
            signum = signal.sigwait(STOP_SIGNALS)
            if received.closing:
                return
            if received.signum is not None:
                continue
            received.signum = signum
            try:
                on_signal(signum)
            finally:
                # Runs the main thread's SIGINT handler: Dagster's while a run executes (it
                # stops the run's step), Python's KeyboardInterrupt otherwise.
                _thread.interrupt_main(signal.SIGINT)

    # Started after the mask is set, so the helper inherits it and sigwait receives the signals.
    helper = threading.Thread(target=wait, name="batch-predict-signals", daemon=True)
    helper.start()
    try:
        yield received
    finally:
        received.closing = True
        if helper.ident is not None and helper.is_alive():
            signal.pthread_kill(helper.ident, signal.SIGTERM)
        helper.join(timeout=5)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
