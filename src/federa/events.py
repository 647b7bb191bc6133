"""What happens during a method's run, as hooks: progress display, trackers and the stop check
all listen to the same few events, which an engine calls at well-defined points.

An engine calls, in order: ``method_start``; per round ``round_start``, per sampled client
``client_start`` and per local step ``step`` (through ``local_update``'s ``on_step``),
``round_end`` with the round's metrics record; finally ``method_end``. Every hook is cheap or
throttled: a step hook runs once per optimiser step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

Log = Callable[[str], Any]


class Events:
    """The hooks, each a no-op here; a listener overrides the ones it needs."""

    def method_start(self, method: str, rounds: int, done: int, postfix: Mapping[str, str]) -> None:
        """``done``: rounds already finished (a resumed method starts after them)."""

    def round_start(self, rnd: int) -> None: ...

    def client_start(self, k: int, n: int, client: int) -> None:
        """The ``k``-th of the ``n`` clients sampled this round (1-based) starts training."""

    def step(self, step: int, steps: int, loss: float) -> None:
        """A client finished local step ``step`` of ``steps`` with this loss."""

    def round_end(self, rnd: int, record: Mapping[str, Any], postfix: Mapping[str, str]) -> None:
        """``record``: the round's metrics line (empty when the round was not evaluated)."""

    def method_end(self, method: str, result: Mapping[str, Any] | None) -> None:
        """``result`` is None when the method was interrupted."""

    def wrap_log(self, log: Log) -> Log:
        """``log`` as this listener needs it (a live status line clears itself first)."""
        return log


class Fanout(Events):
    """Every hook to every listener, in order (a stop check first, so nothing else runs after it)."""

    def __init__(self, listeners: Iterable[Events]) -> None:
        self.listeners = list(listeners)

    def method_start(self, *a: Any) -> None:
        for x in self.listeners:
            x.method_start(*a)

    def round_start(self, *a: Any) -> None:
        for x in self.listeners:
            x.round_start(*a)

    def client_start(self, *a: Any) -> None:
        for x in self.listeners:
            x.client_start(*a)

    def step(self, *a: Any) -> None:
        for x in self.listeners:
            x.step(*a)

    def round_end(self, *a: Any) -> None:
        for x in self.listeners:
            x.round_end(*a)

    def method_end(self, *a: Any) -> None:
        for x in self.listeners:
            x.method_end(*a)

    def wrap_log(self, log: Log) -> Log:
        for x in self.listeners:
            log = x.wrap_log(log)
        return log
