"""Engine registry: ``engine: <name>`` → the function that runs one method's rounds.

An engine owns time, processes and transport; every engine drives the same
:class:`~federa.engines.server.ServerRun` and client ``local_update``, so they produce the same
numbers. Each is ``run_method(job, method, run_dir, progress=..., log=...) -> result record``;
:func:`federa.pending.run_pending` calls it for every method still to run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from federa.registry import load

if TYPE_CHECKING:
    from federa.settings import Section

RunMethod = Callable[..., dict[str, Any]]  # (job: Job, method: str, run_dir: RunDir, *, progress, log)

_REGISTRY: dict[str, str] = {
    "inprocess": "federa.engines.inprocess:run_method",
    "flower": "federa.engines.flower.engine:run_method",
}
# Engine settings, each beside its engine (read when the config is composed).
_SECTIONS: dict[str, str] = {
    "inprocess": "federa.engines.settings:InprocessSettings",
    "flower": "federa.engines.flower.settings:FlowerSettings",
    # Not an engine's own, but time is what engines account: the links that modelled round times assume.
    "network": "federa.modelled_time:NetworkSettings",
}


def available_engines() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_engine(name: str) -> RunMethod:
    return load(_REGISTRY[name])


def engine_sections() -> dict[str, type[Section]]:
    return {name: load(entry) for name, entry in _SECTIONS.items()}
