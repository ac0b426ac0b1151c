"""Ctrl-C / SIGTERM during training: the first signal asks for a clean stop, the second quits.

The first signal only sets a flag; the step loop (training.steps.StepEvents) sees it when the
current optimizer step is done, writes the adapter and last.ckpt (both atomically), and stops;
`train()` then raises `Interrupted`, which the CLI reports as `rwkvft: interrupted` (status 130).
A second signal exits the process at once with status 130: files already on disk are left as
they are (a save in progress is a temporary file that never replaces anything).
"""
from __future__ import annotations

import os
import signal
import sys

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Raised by train() after a clean stop on a signal (a KeyboardInterrupt: exit status 130)."""


class StopRequest:
    def __init__(self):
        self.requested = False
        self.name = ""
        self._previous: dict = {}

    def install(self) -> None:
        """Take over SIGINT/SIGTERM (main thread only; elsewhere signals keep their handlers)."""
        import threading
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            print("\nrwkvft: interrupted again: exiting now; files already on disk are unchanged",
                  file=sys.stderr, flush=True)
            os._exit(130)
        self.requested = True
        self.name = signal.Signals(signum).name
        print(f"\nrwkvft: {self.name} received: finishing this step, then saving the adapter and "
              f"last.ckpt (press Ctrl-C again to quit at once without saving)",
              file=sys.stderr, flush=True)
