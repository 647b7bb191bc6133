"""``inprocess:`` how the in-process engine runs a round's clients (engine=inprocess)."""

from __future__ import annotations

from pydantic import Field

from federa.settings import Section


class InprocessSettings(Section):
    """engine=inprocess: how many processes train a round's sampled clients."""

    workers: int = Field(
        1, ge=1, description="Worker processes that train a round's clients side by side; each gets "
                             "model.num_threads // workers torch threads. 1: one after another, in this process.")
