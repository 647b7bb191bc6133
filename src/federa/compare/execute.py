"""Running a comparison: every pending (method, cell) of a plan, then every output.

Each cell's folder pins its config and partition: a method whose ``result.json`` exists in a
cell is read back, never re-run; an interrupted one resumes from its checkpoint (ServerRun), and a
folder made with other settings, or data that now split differently, is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import yaml

from federa import writer_lock
from federa.checkpoint import atomic_write_bytes
from federa.compare.jobs import cell_job, with_lr
from federa.compare.lr_grid import (
    LEGACY_LR_RULE, LR_MULTIPLIERS, VAL_FRACTION, choose_lrs, choose_over_seeds, grid_scores, read_choices,
    recorded_rule, write_choices,
)
from federa.compare.outputs import write_outputs
from federa.compare.plan import UNPARTITIONABLE, Cell, Plan
from federa.config import Config, build_config
from federa.errors import ConfigError, DataError
from federa.fingerprint import flatten
from federa.results_dir import RunDir

if TYPE_CHECKING:
    from federa.job import Job


# Keys that change how fast a cell runs, not what it computes.
_HOW = ("model.num_threads", "eval_batch_size")


def _claim_cell_dir(rd: RunDir, cfg: Config) -> None:
    """Write the cell's config.yaml, or check a folder being resumed was made with the same one."""
    rd.root.mkdir(parents=True, exist_ok=True)
    if not rd.config.is_file():
        atomic_write_bytes(rd.config, cfg.to_yaml().encode("utf-8"))  # a cut config.yaml would stop every later resume
        return
    before = build_config(yaml.safe_load(rd.config.read_text(encoding="utf-8")))
    old, new = flatten(before.model_dump()), flatten(cfg.model_dump())
    # Adding methods to a comparison is fine, and so is how it runs (threads, evaluation batch,
    # Flower's address); anything else changes what finished cells mean.
    diff = [k for k in new if k != "methods" and not k.startswith(("lr.", "flower.")) and k not in _HOW
            and old.get(k) != new[k]]
    # A method's rate as it trains (a variant or @aggregator falls back to its initialisation's lr).
    diff += [f"lr.{m}" for m in before.methods if m in cfg.methods and before.lr_of(m) != cfg.lr_of(m)]
    if diff:
        raise ConfigError(f"{rd.root} was run with a different '{diff[0]}'; pass a new --out for these settings")
    if old["methods"] != new["methods"]:
        atomic_write_bytes(rd.config, cfg.to_yaml().encode("utf-8"))


def run_compare(plan: Plan, progress: bool = True, log=print) -> dict[str, Any]:
    """Run every pending (method, cell) of ``plan``, then write all outputs; returns the outputs' data."""
    plan.out.mkdir(parents=True, exist_ok=True)
    # One writer per folder (federa.writer_lock): a second `federa compare` on the same --out would run
    # the same cells twice into one metrics.jsonl; a `federa run --resume` or `federa report` of a
    # cell would write beside this one, so each cell is held too while it runs.
    with writer_lock.held(plan.out, role="federa compare"):
        state: dict[str, Any] = {"base": None, "grid_lrs": {}}  # the shared job; alpha → method → chosen lr

        def run(cells: list[Cell]) -> None:
            for cell in cells:
                if plan.read_only:
                    continue
                rd = plan.cell_dir(cell)
                rd.root.mkdir(parents=True, exist_ok=True)
                with writer_lock.held(rd.root, role="federa compare"):
                    state["base"] = _run_cell(plan, cell, rd, state["base"], state["grid_lrs"], progress, log)

        if not plan.looks:
            run(plan.cells)
        else:
            _run_sequential(plan, run, log)
        if not (plan.out / "compare.json").is_file():
            _write_compare_json(plan, {})
        return write_outputs(plan)


def _run_sequential(plan: Plan, run, log) -> None:
    """The pre-registered looks: every alpha gets the first look's seeds; after each look the claims
    are read (at the plan's corrected confidence) and only alphas with an open comparison get the
    next look's seeds. Deterministic from the cells on disk, so a re-run replays the same looks."""
    from federa.compare.claims import check_claims
    from federa.compare.tables import load_cells, summary_rows

    active, done = list(plan.alphas), 0
    for k, look in enumerate(plan.looks, 1):
        new_seeds = set(plan.seeds[done:look])
        run([Cell(a, s) for a in active for s in plan.seeds[done:look]])
        done = look
        cells = load_cells(plan)
        if plan.read_only and k > 1 and not any(c.seed in new_seeds for c in cells):
            log(f"look {k}/{len(plan.looks)} at {look} seeds: not taken (read back only)")
            break
        claims = check_claims(plan, summary_rows(plan, cells), cells)
        still = {c.alpha for claim in claims for c in claim.comparisons if c.open}
        stopped = [a for a in active if a not in still]
        active = [a for a in active if a in still]
        log(f"look {k}/{len(plan.looks)} at {look} seeds: " + (f"decided at alpha {', '.join(stopped)}; " if stopped
                                                                 else "") +
            (f"open at alpha {', '.join(active)}" if active else "every comparison decided"))
        if not active:
            break


def _run_cell(plan: Plan, cell: Cell, rd: RunDir, base: Job | None, grid_lrs: dict[str, dict[str, float]],
              progress: bool, log) -> Job | None:
    """Run the pending methods of one cell; returns the shared job (prepared by the first cell with work)."""
    from federa.engines import get_engine
    from federa.job import prepare_job
    from federa.pending import pin_partition, run_info, run_pending

    cfg = plan.cell_config(cell)
    _claim_cell_dir(rd, cfg)
    pending = [m for m in plan.methods if not rd.result(m).is_file()]
    if not pending or (rd.root / UNPARTITIONABLE).is_file():
        log(f"[{cell.name}] " + ("every method finished; reading it back" if not pending
                                 else "recorded as un-partitionable; skipped"))
        return base
    if base is None:
        base = prepare_job(cfg)  # data, tokenizer and threads once; each cell re-partitions
        log(f"data: {base.data.source}: {len(base.train)} train / {len(base.test)} test")
        for m in plan.methods:
            # A method that cannot apply to this model fails here, not after hours of other cells.
            base.server_model(m)
        _write_compare_json(plan, run_info(base))
    try:
        job, draw = cell_job(base, cfg)
    except DataError as err:
        # One seed that cannot be partitioned must not end the comparison: record it, go on.
        rd.write_json(rd.root / UNPARTITIONABLE, {"reason": str(err)})
        log(f"[{cell.name}] cannot be partitioned, recorded and skipped: {err}")
        return base
    rd.write_json(rd.root / "partition_draw.json", {
        "draw": draw, "self_balancing": cfg.partition.self_balancing, "min_examples": cfg.partition.min_examples,
        "redraws": cfg.partition.redraws})
    pin_partition(rd, job)
    lrs: dict[str, float] = {}
    if plan.lr_grid:
        # One grid per (method, alpha), on the first seed of the alpha that partitions; the
        # other seeds reuse its choice (read back from that cell's grid when resuming).
        if cell.alpha not in grid_lrs:
            if recorded_rule(plan.out) == LEGACY_LR_RULE:  # a folder made by the old rule resumes under it
                grid_lrs[cell.alpha] = _earlier_grid(plan, cell) or choose_lrs(job, rd, plan.methods, progress, log,
                                                                                keep=plan.keep_checkpoints)
            else:
                grid_lrs[cell.alpha] = _one_se_lrs(plan, cell.alpha, base, progress, log)
        lrs = grid_lrs[cell.alpha]
    engine = get_engine(cfg.engine)

    def run_one(job: Job, m: str, rd: RunDir) -> dict[str, Any]:
        log(f"[{cell.name}] {m}")
        return engine(with_lr(job, m, lrs.get(m)), m, rd, progress=progress, log=log)

    def prune() -> None:
        for m in plan.methods:
            rd.drop_resume_files(m)

    run_pending(job, rd, plan.methods, run_one, after_each=None if plan.keep_checkpoints else prune,
                log=lambda msg: log(f"[{cell.name}] {msg}"))
    return base


def _one_se_lrs(plan: Plan, alpha: str, base: Job, progress: bool, log) -> dict[str, float]:
    """The alpha's lrs by the one-SE rule over the grids of its first ``plan.grid_seeds`` partitionable
    seeds (read back from ``lr_choice.json`` once made: later seeds and resumes reuse the choice)."""
    recorded = read_choices(plan.out).get(alpha)
    if recorded is None or set(recorded) != set(plan.methods):
        cells = []
        for s in plan.seeds:
            if len(cells) == plan.grid_seeds:
                break
            c = Cell(alpha, s)
            cfg = plan.cell_config(c)
            try:
                job, _ = cell_job(base, cfg)
            except DataError:
                continue  # recorded as un-partitionable when its own turn comes
            rd = plan.cell_dir(c)
            _claim_cell_dir(rd, cfg)
            cells.append((c.seed, job, rd))
        choices = choose_over_seeds([(j, rd) for _, j, rd in cells], plan.methods, progress, log,
                                    keep=plan.keep_checkpoints)
        write_choices(plan.out, alpha, choices, [s for s, _, _ in cells])
        recorded = choices
    return {m: base.cfg.lr_of(m) * c.chosen for m, c in recorded.items()}


def _earlier_grid(plan: Plan, cell: Cell) -> dict[str, float]:
    """The lrs chosen by a finished grid of an earlier seed of ``cell``'s alpha (a resumed comparison)."""
    for s in plan.seeds:
        if s == cell.seed:
            break
        rd = plan.cell_dir(Cell(cell.alpha, s))
        chosen = {r["method"]: r["lr"] for r in grid_scores(rd, plan.methods) if r["chosen"]}
        if set(chosen) == set(plan.methods):
            return chosen
    return {}


def _write_compare_json(plan: Plan, info: Mapping[str, Any]) -> None:
    # The lr rule a folder was begun under stays its rule: a resume must not relabel the lrs its runs used.
    rule = recorded_rule(plan.out) if plan.lr_grid else None
    scope = ("per (method, alpha), on the alpha's first seed" if rule == LEGACY_LR_RULE else
             f"per (method, alpha), mean over the alpha's first {plan.grid_seeds} seeds, one-SE rule")
    RunDir(plan.out).write_json(plan.out / "compare.json", {
        "methods": list(plan.methods), "alphas": list(plan.alphas), "seeds": list(plan.seeds),
        "target": plan.explicit_target, "lr_grid": plan.lr_grid, "lr_rule": rule,
        "lr_grid_settings": {"multipliers": list(LR_MULTIPLIERS), "val_fraction": VAL_FRACTION,
                             "rounds": "half of rounds, at least 1", "scope": scope} if plan.lr_grid else None,
        "looks": list(plan.looks), "confidence": plan.confidence, "margin": plan.margin,
        "last_k": plan.last_k, "network": plan.base.network.describe(),
        "run": {k: v for k, v in info.items() if k not in ("partition", "seed")},
        "base_config": plan.base.model_dump(mode="json"),
    })
