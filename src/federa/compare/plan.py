"""What a comparison runs: its cells (one (alpha, seed) each) and the parsers of its lists.

A :class:`Plan` is the comparison as asked (base config, methods, alphas, seeds, output folder);
each :class:`Cell` is one partition that every method trains on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from federa.config import Config, build_config
from federa.errors import ConfigError
from federa.methods import available_methods
from federa.strategies.per_method import method_name_problem
from federa.results_dir import RunDir

IID = "iid"
DEFAULT_ALPHAS = "0.1,0.5,1,iid"
DEFAULT_LAST_K = 3
# Two methods whose main metric differs by less than one point (accuracy, Pearson r, entity F1) are
# "equivalent" for the claims: smaller gaps are below what a user would choose a method by.
DEFAULT_MARGIN = 0.01
# The one-standard-error lr rule needs a spread to compare against: at least two seeds of validation scores.
DEFAULT_GRID_SEEDS = 2
# Written in a cell's folder when its seed cannot be partitioned: the comparison records it and goes on.
UNPARTITIONABLE = "unpartitionable.json"


@dataclass(frozen=True)
class Cell:
    """One (alpha, seed): one partition, shared by every method."""

    alpha: str  # a number as text ("0.1") or "iid"
    seed: int

    @property
    def name(self) -> str:
        return f"a{self.alpha}-s{self.seed}"

    def overrides(self, methods: Sequence[str]) -> list[str]:
        kind = ["partition.kind=iid"] if self.alpha == IID else ["partition.kind=dirichlet",
                                                                  f"partition.alpha={self.alpha}"]
        return [*kind, f"seed={self.seed}", f"methods={','.join(methods)}"]


@dataclass(frozen=True)
class Plan:
    base: Config
    methods: tuple[str, ...]
    alphas: tuple[str, ...]
    seeds: tuple[int, ...]
    out: Path
    target: float | None = None  # absolute target; None: base.target_score, else 99% of FFT's score at convergence
    lr_grid: bool = False
    last_k: int = DEFAULT_LAST_K  # final accuracy = mean of the last k evaluations (the claims' yardstick)
    # A finished run's checkpoints only served its resume; a comparison of dozens of runs would keep
    # gigabytes of them (3 × the model per FFT run), so they go unless asked for.
    keep_checkpoints: bool = False
    # Sequential plan (federa.compare.sequential): seed counts per alpha at which the claims are read;
    # () = a fixed plan, every seed of ``seeds``. Intervals are then Bonferroni-corrected over the looks.
    looks: tuple[int, ...] = ()
    margin: float = DEFAULT_MARGIN  # the equivalence band ±margin on the main metric (score)
    grid_seeds: int = DEFAULT_GRID_SEEDS  # the lr grid runs on this many seeds of each alpha
    # Read the finished cells back and run nothing: a plan stopped early (out of time) is read at the
    # confidence it was registered with, which stays valid (a look not taken cannot add an error).
    read_only: bool = False

    @property
    def confidence(self) -> float:
        from federa.compare.sequential import look_confidence

        return look_confidence(len(self.looks)) if self.looks else 0.95

    @property
    def cells(self) -> list[Cell]:
        return [Cell(a, s) for a in self.alphas for s in self.seeds]

    def cell_config(self, cell: Cell) -> Config:
        # Through build_config so every variant is validated like a user's own config.
        return build_config(self.base.model_dump(mode="json"), cell.overrides(self.methods))

    def cell_dir(self, cell: Cell) -> RunDir:
        return RunDir(self.out / "cells" / cell.name)

    @property
    def explicit_target(self) -> float | None:
        return self.target if self.target is not None else self.base.target_score


def parse_methods(text: str) -> tuple[str, ...]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    known = available_methods()
    if not names:
        raise ConfigError(f"--methods is empty; name some of {','.join(known)}")
    for n in names:
        if (problem := method_name_problem(n)) is not None:  # a variant (federa+flexlora) is a method too
            raise ConfigError(f"--methods: {problem}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--methods lists a method twice: {text}")
    return tuple(names)


def parse_alphas(text: str) -> tuple[str, ...]:
    out: list[str] = []
    for s in (s.strip() for s in text.split(",")):
        if not s:
            continue
        if s.lower() == IID:
            out.append(IID)
            continue
        try:
            v = float(s)
        except ValueError:
            v = float("nan")
        if not (v > 0 and math.isfinite(v)):
            raise ConfigError(f"--alphas: '{s}' is neither a positive number nor 'iid'; e.g. --alphas 0.1,1,iid")
        out.append(format(v, "g"))
    if not out:
        raise ConfigError("--alphas is empty; e.g. --alphas 0.1,1,iid")
    if len(set(out)) != len(out):
        raise ConfigError(f"--alphas lists a value twice: {text}")
    return tuple(out)


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"--seeds must be integers separated by commas, got '{text}'; e.g. --seeds 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds needs distinct integers, got '{text}'; e.g. --seeds 0,1,2")
    if any(not 0 <= s <= 2**32 - 1 for s in seeds):
        raise ConfigError(f"--seeds must lie in 0..{2**32 - 1}, got '{text}'; e.g. --seeds 0,1,2")
    return seeds


def heterogeneity_order(alphas: Iterable[str]) -> list[str]:
    """Most skewed first: ascending alpha, IID last."""
    return sorted(alphas, key=lambda a: (a == IID, float(a) if a != IID else 0.0))
