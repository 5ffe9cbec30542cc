"""SIGTERM and SIGINT as a stop request, for every long-running process."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable


def stop_on_signals(
    stop: threading.Event | Callable[[], None], signals=(signal.SIGTERM, signal.SIGINT)
) -> dict[int, object]:
    """Make ``signals`` set ``stop`` (an Event, or call it) instead of killing the
    process; returns the handlers they had. Only the main thread may install them;
    elsewhere this does nothing (a Ray actor's signals belong to Ray)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    action = stop.set if isinstance(stop, threading.Event) else stop
    return {sig: signal.signal(sig, lambda *_: action()) for sig in signals}


def restore(handlers: dict[int, object]) -> None:
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
