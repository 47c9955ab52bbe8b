"""SIGTERM handled like Ctrl-C: a job scheduler's or `kill`'s polite stop marks the current run
'interrupted' in the store instead of leaving it 'running' forever."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM."""

    def __str__(self) -> str:
        return "SIGTERM"


def interrupt_reason(exc: KeyboardInterrupt) -> str:
    """What the store records for an interrupted run."""
    return "SIGTERM" if isinstance(exc, Terminated) else "KeyboardInterrupt (Ctrl-C)"


def exit_code(exc: KeyboardInterrupt) -> int:
    """The shell's convention: 128 + the signal's number (SIGINT 130, SIGTERM 143)."""
    return 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` (a KeyboardInterrupt) in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
