"""What a user sees while a method trains.

On a terminal: one status line, redrawn in place at most every ``min_interval`` seconds (client
k of n, local step, live loss, the last score, ETA). Elsewhere (logs, CI, notebooks): one line
per round through ``log``. A step costs one clock read unless a redraw is due, so the display
never costs measurable time (``tests/test_progress.py`` bounds the per-step cost).
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from federa.events import Events, Log


def _clock(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress(Events):
    def __init__(self, live: bool, log: Log, stream: TextIO | None = None, min_interval: float = 0.2,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.live, self.log, self.stream = live, log, stream or sys.stdout
        self.min_interval, self.now = min_interval, clock
        self.method, self.rounds, self.first = "", 0, 0
        self.rnd = self.k = self.n = self.step_i = self.steps = 0
        self.loss: float | None = None
        self.postfix: Mapping[str, str] = {}
        self.t0 = self.t_round = self.last_draw = 0.0
        self.drawn = False
        self.completed = 0  # rounds finished in this session

    @classmethod
    def for_output(cls, progress: bool, log: Log) -> Progress:
        """Live on a terminal when ``progress``; else one line per round."""
        live = progress and getattr(sys.stdout, "isatty", lambda: False)()
        return cls(live=live, log=log)

    # -- hooks ---------------------------------------------------------------------------

    def method_start(self, method: str, rounds: int, done: int, postfix: Mapping[str, str]) -> None:
        self.method, self.rounds, self.first, self.postfix = method, rounds, done, postfix
        self.rnd, self.k, self.n, self.step_i, self.steps, self.loss = done, 0, 0, 0, 0, None
        self.completed = 0
        # Nothing drawn until a round's work shows: an engine whose rounds run elsewhere (Flower)
        # keeps its own display.
        self.t0 = self.last_draw = self.now()

    def round_start(self, rnd: int) -> None:
        self.rnd, self.k, self.n, self.step_i, self.steps = rnd, 0, 0, 0, 0
        self.t_round = self.now()

    def client_start(self, k: int, n: int, client: int) -> None:
        self.k, self.n, self.step_i, self.steps = k, n, 0, 0
        self._maybe_draw()

    def step(self, step: int, steps: int, loss: float) -> None:
        self.step_i, self.steps, self.loss = step, steps, loss
        now = self.now()
        if self.live and now - self.last_draw >= self.min_interval:
            self.last_draw = now
            self._draw()

    def round_end(self, rnd: int, record: Mapping[str, Any], postfix: Mapping[str, str]) -> None:
        self.postfix, self.k, self.n = postfix, 0, 0
        self.completed += 1
        if self.live:
            self._draw()
            return
        parts = [f"{k} {v}" for k, v in postfix.items()]
        if record.get("train_loss") is not None:
            parts.append(f"train loss {record['train_loss']:.4f}")
        parts += [f"{self.now() - self.t_round:.1f} s", f"ETA {_clock(self.eta())}"]
        self.log(f"[{self.method}] round {rnd}/{self.rounds}: " + ", ".join(parts))

    def method_end(self, method: str, result: Mapping[str, Any] | None) -> None:
        if self.live and self.drawn:
            self._draw(final=True, stopped=result is None)
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False

    def wrap_log(self, log: Log) -> Log:
        if not self.live:
            return log

        def clear_then(msg: str) -> Any:
            if self.drawn:  # a message printed after the status line would run on from it
                self.stream.write("\r\x1b[K")
                self.stream.flush()
                self.drawn = False
            return log(msg)

        return clear_then

    # -- display -------------------------------------------------------------------------

    def done_fraction(self) -> float:
        """Of the rounds this session runs: the finished ones plus the share of the round in flight."""
        total = self.rounds - self.first
        if total <= 0:
            return 1.0
        in_round = (self.k - 1 + (self.step_i / self.steps if self.steps else 0.0)) / self.n if self.n else 0.0
        return min(1.0, (self.completed + in_round) / total)

    def eta(self) -> float | None:
        f = self.done_fraction()
        if f <= 0:
            return None
        return (self.now() - self.t0) * (1 - f) / f

    def line(self, final: bool = False) -> str:
        # A final line counts finished rounds: an interrupted round in flight is not one.
        shown = self.first + self.completed if final else self.rnd
        parts = [f"{self.method}", f"round {shown}/{self.rounds}"]
        if self.n and not final:
            parts.append(f"client {self.k}/{self.n}")
            if self.steps:
                parts.append(f"step {self.step_i}/{self.steps}")
            if self.loss is not None:
                parts.append(f"loss {self.loss:.4f}")
        parts += [f"{k} {v}" for k, v in self.postfix.items()]
        elapsed = self.now() - self.t0
        parts.append(_clock(elapsed) if final else f"{_clock(elapsed)} elapsed, ETA {_clock(self.eta())}")
        return " · ".join(parts)

    def _maybe_draw(self) -> None:
        if self.live and self.now() - self.last_draw >= self.min_interval:
            self._draw()

    def _draw(self, final: bool = False, stopped: bool = False) -> None:
        if not self.live:
            return
        self.last_draw = self.now()
        width = shutil.get_terminal_size((100, 20)).columns - 1
        text = self.line(final) + (" · stopped" if stopped else "")
        self.stream.write("\r" + text[:width] + "\x1b[K")
        self.stream.flush()
        self.drawn = True
