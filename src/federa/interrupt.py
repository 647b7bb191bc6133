"""Ctrl-C and SIGTERM during a run: stop at the next safe point, never in the middle of a write.

The first SIGINT/SIGTERM only records the request; the run loop checks it between local steps,
between clients and between rounds (:class:`StopOnSignal` is an :class:`~federa.events.Events`
listener), so the round in flight is dropped whole: its checkpoint, metrics line and tracker
logs are either all written (the round had finished) or not started. Resume runs that round
again. A second signal stops at once, for a user who will not wait for the current step.
"""

from __future__ import annotations

import os
import shlex
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from federa.events import Events


class RunInterrupted(KeyboardInterrupt):
    """The run stopped on a signal; finished rounds are on disk and :attr:`resume_command` continues."""

    def __init__(self, signum: int, run_dir: Path | None = None) -> None:
        self.signum, self.run_dir = signum, run_dir
        super().__init__(str(self))

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM

    @property
    def resume_command(self) -> str:
        return f"federa run --resume {shlex.quote(str(self.run_dir))}"

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name
        if self.run_dir is None:
            return f"interrupted by {name}"
        return f"interrupted by {name}: finished rounds are saved in {self.run_dir}; continue with `{self.resume_command}`"


class StopOnSignal(Events):
    """While entered (in the main thread), SIGINT and SIGTERM request a stop that :meth:`check` raises."""

    def __init__(self, run_dir: Path | None = None, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> None:
        self.run_dir, self.signals = run_dir, signals
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        # Python delivers signals to the main thread only; elsewhere (a notebook's worker thread)
        # the default handling stays.
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None:
            raise RunInterrupted(signum, self.run_dir)
        self.requested = signum
        # os.write, not print: a handler may run in the middle of a print to the same stream.
        os.write(2, f"\n{signal.Signals(signum).name}: stopping at the next step (the round in flight is "
                    "dropped and runs again on resume); signal again to stop at once\n".encode())

    def check(self) -> None:
        if self.requested is not None:
            raise RunInterrupted(self.requested, self.run_dir)

    # Safe points: nothing is being written at any of them.
    def method_start(self, *_: Any) -> None:
        self.check()

    def round_start(self, *_: Any) -> None:
        self.check()

    def client_start(self, *_: Any) -> None:
        self.check()

    def step(self, *_: Any) -> None:
        self.check()
