"""``federa compare``: every method on the same client partitions, across heterogeneity and seeds.

For each (alpha, seed) cell one :class:`~federa.job.Job` is prepared (one partition, pinned in
``partition.json``) and every method runs on it back to back in this process with the same
thread count, so differences in accuracy and time come from the methods alone. Layout::

    DIR/compare.json                    what was asked, plus the run facts (model, data, threads)
    DIR/cells/a0.1-s0/                  a RunDir: config.yaml, partition.json, metrics.jsonl, <method>/
    DIR/cells/a0.1-s0/lr_grid/x0.3/     --lr-grid only: short runs scored on a validation split
    DIR/results.csv summary.csv summary.md claims.md lr_grid.csv plots/*.png

A method whose ``result.json`` exists in a cell is read back, never re-run; an interrupted one
resumes from its checkpoint (ServerRun), so re-running the same command continues the comparison.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from federa.config import Config, build_config, load_config
from federa.errors import ConfigError, DataError
from federa.methods import available_methods
from federa.report import human_bytes, plot_curves, summarize
from federa.runlog import RunDir

if TYPE_CHECKING:
    from federa.job import Job

IID = "iid"
DEFAULT_ALPHAS = "0.1,0.5,1,iid"
# lr grid: multipliers of each method's configured lr, scored on VAL_FRACTION of every client's
# shard after half the rounds (a documented, shortened budget: the grid costs 1.5x a cell, not 3x).
LR_MULTIPLIERS = (0.3, 1.0, 3.0)
VAL_FRACTION = 0.2
# Claim 2 ("matches FFT"): FeDeRA's mean final accuracy within this many points below FFT's.
MATCH_TOLERANCE = 0.01
# Claim 3: the paper reports >90% less training time to FFT's accuracy.
TIME_REDUCTION_CLAIM = 0.90

RESULT_COLUMNS = [
    "alpha", "seed", "method", "lr", "status", "target_accuracy", "round", "accuracy", "macro_f1", "loss",
    "train_loss", "clients", "examples_seen", "bytes_up", "bytes_down", "client_compute_s", "round_s",
    "aggregate_s", "eval_s", "cum_train_wall_s", "cum_client_compute_s", "cum_wall_s", "cum_bytes_up",
    "cum_bytes_down", "cum_examples_seen",
]
SUMMARY_COLUMNS = [
    "method", "alpha", "seeds", "done", "lr",
    "final_accuracy_mean", "final_accuracy_std", "best_accuracy_mean", "best_accuracy_std",
    "final_macro_f1_mean", "final_macro_f1_std", "best_macro_f1_mean", "best_macro_f1_std",
    "trainable_params", "trainable_pct", "bytes_per_client_round", "total_bytes_up_mean", "total_bytes_mean",
    "target_accuracy_mean", "reached",
    "rounds_to_target_mean", "rounds_to_target_std",
    "train_wall_s_to_target_mean", "train_wall_s_to_target_std",
    "client_compute_s_to_target_mean", "client_compute_s_to_target_std",
    "client_compute_to_target_vs_fft", "train_wall_to_target_vs_fft",
]
GRID_COLUMNS = ["alpha", "seed", "method", "multiplier", "lr", "val_accuracy", "val_macro_f1", "rounds", "status",
                "chosen"]


# ---------------------------------------------------------------------------------------
# What to run


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
    target: float | None = None  # absolute target; None: base.target_accuracy, else 99% of FFT's best
    lr_grid: bool = False

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
        return self.target if self.target is not None else self.base.target_accuracy


def parse_methods(text: str) -> tuple[str, ...]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    known = available_methods()
    if not names:
        raise ConfigError(f"--methods is empty; name some of {','.join(known)}")
    for n in names:
        if n not in known:
            raise ConfigError(f"--methods: unknown method '{n}'; choose from {','.join(known)}")
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
    return seeds


def heterogeneity_order(alphas: Iterable[str]) -> list[str]:
    """Most skewed first: ascending alpha, IID last."""
    return sorted(alphas, key=lambda a: (a == IID, float(a) if a != IID else 0.0))


# ---------------------------------------------------------------------------------------
# Running the cells


def cell_job(base: Job, cfg: Config) -> Job:
    """``base`` re-partitioned for ``cfg``: cells differ only in partition and seed, never in data."""
    from federa.partition import partition_indices

    parts = partition_indices(base.data.train, cfg.partition, cfg.num_clients, cfg.seed)
    return replace(base, cfg=cfg, parts=parts)


def with_lr(job: Job, method: str, lr: float | None) -> Job:
    if lr is None:
        return job
    raw = job.cfg.model_dump(mode="json")
    raw["lr"] = {**raw["lr"], method: lr}
    return replace(job, cfg=build_config(raw))


def _claim_cell_dir(rd: RunDir, cfg: Config) -> None:
    """Write the cell's config.yaml, or check a folder being resumed was made with the same one."""
    rd.root.mkdir(parents=True, exist_ok=True)
    if not rd.config.is_file():
        rd.config.write_text(cfg.to_yaml(), encoding="utf-8")
        return
    old = build_config(yaml.safe_load(rd.config.read_text(encoding="utf-8"))).model_dump()
    new = cfg.model_dump()
    # Adding methods to a comparison is fine; anything else changes what finished cells mean.
    diff = [k for k in new if k not in ("methods", "lr") and old.get(k) != new[k]]
    diff += [f"lr.{m}" for m in old["methods"] if m in new["methods"] and old["lr"].get(m) != new["lr"][m]]
    if diff:
        raise ConfigError(f"{rd.root} was run with a different '{diff[0]}'; pass a new --out for these settings")
    if old["methods"] != new["methods"]:
        rd.config.write_text(cfg.to_yaml(), encoding="utf-8")


def _pin_partition(rd: RunDir, job: Job) -> None:
    """Save the cell's partition once; on resume, refuse to go on if the data now split differently."""
    from federa.partition import partition_stats

    stats = partition_stats(np.asarray(job.data.train["label"]), job.parts, job.label_names)
    if not rd.partition.is_file():
        rd.write_json(rd.partition, stats)
        return
    saved = json.loads(rd.partition.read_text(encoding="utf-8"))
    if [c["indices"] for c in saved["clients"]] != [c["indices"] for c in stats["clients"]]:
        raise DataError(f"{rd.partition}: the data now split differently than for the finished methods; "
                        "pass a new --out")


def carve_validation(parts: Sequence[np.ndarray], fraction: float, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Hold out ``fraction`` of every client's shard: (shards left to train on, held-out indices).

    A client keeps at least one example to train on; one with a single example gives none.
    """
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for idx in parts:
        k = min(max(1, round(fraction * len(idx))), len(idx) - 1)
        out = rng.choice(idx, size=k, replace=False) if k > 0 else np.empty(0, dtype=np.int64)
        keep.append(np.setdiff1d(idx, out))
        held.append(out)
    val = np.sort(np.concatenate(held)).astype(np.int64)
    if len(val) == 0:
        raise DataError("--lr-grid: the clients' shards are too small to hold out a validation split; "
                        "raise data.max_train_examples or drop --lr-grid")
    return keep, val


def validation_job(job: Job) -> Job:
    """The job the lr grid runs: trains on the kept shards, evaluates on held-out *training* rows.

    Half the rounds (at least one), evaluated only at the end, is the grid's shortened budget.
    """
    keep, val = carve_validation(job.parts, VAL_FRACTION, job.cfg.seed)
    rounds = max(1, job.cfg.rounds // 2)
    raw = job.cfg.model_dump(mode="json")
    raw.update(rounds=rounds, eval_every=rounds)
    return replace(job, cfg=build_config(raw), parts=keep, test=job.train.select(val.tolist()))


def _grid_dir(rd: RunDir, mult: float) -> RunDir:
    return RunDir(rd.root / "lr_grid" / f"x{mult:g}")


def grid_scores(rd: RunDir, methods: Sequence[str]) -> list[dict[str, Any]]:
    """Every finished grid run of this cell, with the chosen lr per method marked."""
    rows = []
    for mult in LR_MULTIPLIERS:
        grd = _grid_dir(rd, mult)
        last = {r["method"]: r for r in grd.read_metrics()}  # records are in round order
        for m in methods:
            if not grd.result(m).is_file():
                continue
            res = json.loads(grd.result(m).read_text(encoding="utf-8"))
            rec = last.get(m, {}) if res.get("status") == "done" else {}
            rows.append({"method": m, "multiplier": mult, "lr": res["lr"], "val_accuracy": rec.get("accuracy"),
                         "val_macro_f1": rec.get("macro_f1"), "rounds": res.get("rounds"),
                         "status": res.get("status"), "chosen": False})
    for m in methods:
        scored = [r for r in rows if r["method"] == m and r["val_accuracy"] is not None]
        if scored:
            # Ties go to the multiplier nearest the documented default lr.
            max(scored, key=lambda r: (r["val_accuracy"], -abs(math.log(r["multiplier"]))))["chosen"] = True
    return rows


def choose_lrs(job: Job, rd: RunDir, methods: Sequence[str], progress: bool = True, log=print) -> dict[str, float]:
    """Run (or read back) the lr grid of ``methods`` on this cell's validation split; best lr each."""
    from federa.engines.inprocess import run_method

    vjob = validation_job(job)
    for mult in LR_MULTIPLIERS:
        grd = _grid_dir(rd, mult)
        grd.root.mkdir(parents=True, exist_ok=True)
        for m in methods:
            if not grd.result(m).is_file():
                log(f"[lr grid {m}] lr={job.cfg.lr[m] * mult:.3g} (x{mult:g}) on the validation split")
                run_method(with_lr(vjob, m, job.cfg.lr[m] * mult), m, grd, progress=progress, log=log)
    chosen = {r["method"]: r["lr"] for r in grid_scores(rd, methods) if r["chosen"]}
    for m in methods:
        if m not in chosen:
            log(f"[lr grid {m}] every lr failed; keeping lr={job.cfg.lr[m]:.3g}")
        else:
            log(f"[lr grid {m}] chose lr={chosen[m]:.3g}")
    return chosen


def run_compare(plan: Plan, progress: bool = True, log=print) -> dict[str, Any]:
    """Run every pending (method, cell) of ``plan``, then write all outputs; returns the outputs' data."""
    from federa.engines.inprocess import run_method
    from federa.experiment import run_info
    from federa.job import prepare_job

    plan.out.mkdir(parents=True, exist_ok=True)
    base: Job | None = None
    for cell in plan.cells:
        cfg = plan.cell_config(cell)
        rd = plan.cell_dir(cell)
        _claim_cell_dir(rd, cfg)
        pending = [m for m in plan.methods if not rd.result(m).is_file()]
        if not pending:
            log(f"[{cell.name}] every method finished; reading it back")
            continue
        if base is None:
            base = prepare_job(cfg)  # data, tokenizer and threads once; each cell re-partitions
            log(f"data: {base.data.source}: {len(base.train)} train / {len(base.test)} test")
            for m in plan.methods:
                # A method that cannot apply to this model fails here, not after hours of other cells.
                base.server_model(m)
            _write_compare_json(plan, run_info(base))
        job = cell_job(base, cfg)
        _pin_partition(rd, job)
        lrs = choose_lrs(job, rd, pending, progress, log) if plan.lr_grid else {}
        for m in plan.methods:
            if rd.result(m).is_file():
                log(f"[{cell.name}] {m}: finished; reading it back")
                continue
            log(f"[{cell.name}] {m}")
            run_method(with_lr(job, m, lrs.get(m)), m, rd, progress=progress, log=log)
    if not (plan.out / "compare.json").is_file():
        _write_compare_json(plan, {})
    return write_outputs(plan)


def _write_compare_json(plan: Plan, info: Mapping[str, Any]) -> None:
    RunDir(plan.out).write_json(plan.out / "compare.json", {
        "methods": list(plan.methods), "alphas": list(plan.alphas), "seeds": list(plan.seeds),
        "target": plan.explicit_target, "lr_grid": plan.lr_grid,
        "lr_grid_settings": {"multipliers": list(LR_MULTIPLIERS), "val_fraction": VAL_FRACTION,
                             "rounds": "half of rounds, at least 1"} if plan.lr_grid else None,
        "run": {k: v for k, v in info.items() if k not in ("partition", "seed")},
        "base_config": plan.base.model_dump(mode="json"),
    })


# ---------------------------------------------------------------------------------------
# Reading results back


@dataclass
class CellResult:
    alpha: str
    seed: int
    records: list[dict[str, Any]]
    summary: dict[str, Any]  # federa.report.summarize of this cell (target resolved per cell)


def load_cells(plan: Plan) -> list[CellResult]:
    cells = []
    for cell in plan.cells:
        rd = plan.cell_dir(cell)
        if not rd.root.is_dir():
            continue
        results = {m: json.loads(rd.result(m).read_text(encoding="utf-8"))
                   for m in plan.methods if rd.result(m).is_file()}
        records = [r for r in rd.read_metrics() if r["method"] in plan.methods]
        if not records:
            continue
        cells.append(CellResult(cell.alpha, cell.seed, records, summarize(records, results, plan.explicit_target)))
    return cells


def results_rows(cells: Sequence[CellResult]) -> list[dict[str, Any]]:
    rows = []
    for c in cells:
        for r in c.records:
            s = c.summary["methods"].get(r["method"], {})
            row = {"alpha": c.alpha, "seed": c.seed, "lr": s.get("lr"), "status": s.get("status"),
                   "target_accuracy": c.summary["target_accuracy"], **r}
            if isinstance(row.get("clients"), list):
                row["clients"] = " ".join(map(str, row["clients"]))
            rows.append(row)
    return rows


def _mean_std(xs: Sequence[float | None]) -> tuple[float | None, float | None]:
    vals = [float(x) for x in xs if x is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def summary_rows(plan: Plan, cells: Sequence[CellResult]) -> list[dict[str, Any]]:
    """Per (method, alpha): mean ± std over seeds (sample std; empty with one seed)."""
    rows = []
    for alpha in plan.alphas:
        at = [c for c in cells if c.alpha == alpha]
        for m in plan.methods:
            per = [(c.summary["methods"][m], c.summary["methods"].get("fft")) for c in at if m in c.summary["methods"]]
            if not per:
                continue
            ss = [s for s, _ in per]
            ttt = [s["time_to_target"] for s in ss if s.get("time_to_target")]
            row: dict[str, Any] = {
                "method": m, "alpha": alpha, "seeds": len(ss),
                "done": sum(s.get("status") == "done" for s in ss),
                "lr": " ".join(sorted({f"{s['lr']:.3g}" for s in ss if s.get("lr") is not None})),
                "trainable_params": ss[0].get("trainable_params"), "trainable_pct": ss[0].get("trainable_pct"),
                "bytes_per_client_round": ss[0].get("bytes_per_client_round"),
                "reached": f"{len(ttt)}/{len(ss)}",
            }
            for key in ("final_accuracy", "best_accuracy", "final_macro_f1", "best_macro_f1"):
                row[f"{key}_mean"], row[f"{key}_std"] = _mean_std([s.get(key) for s in ss])
            row["total_bytes_up_mean"], _ = _mean_std([s.get("total_bytes_up") for s in ss])
            row["total_bytes_mean"], _ = _mean_std([(s.get("total_bytes_up") or 0) + (s.get("total_bytes_down") or 0)
                                                    for s in ss])
            row["target_accuracy_mean"], _ = _mean_std([c.summary["target_accuracy"] for c in at
                                                         if m in c.summary["methods"]])
            for key, col in (("round", "rounds_to_target"), ("train_wall_s", "train_wall_s_to_target"),
                             ("client_compute_s", "client_compute_s_to_target")):
                row[f"{col}_mean"], row[f"{col}_std"] = _mean_std([t[key] for t in ttt])
            for key, col in (("client_compute_s", "client_compute_to_target_vs_fft"),
                             ("train_wall_s", "train_wall_to_target_vs_fft")):
                ratios = [s["time_to_target"][key] / f["time_to_target"][key] for s, f in per
                          if f and s.get("time_to_target") and f.get("time_to_target")
                          and f["time_to_target"][key] > 0]
                row[col], _ = _mean_std(ratios)
            rows.append(row)
    return rows


def _index(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], Mapping[str, Any]]:
    return {(r["method"], r["alpha"]): r for r in rows}


# ---------------------------------------------------------------------------------------
# Writing: csv, markdown


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    extra = sorted({k for r in rows for k in r} - set(columns))
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=[*columns, *extra], restval="")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})


def _pm(mean: float | None, std: float | None, spec: str = ".4f") -> str:
    if mean is None:
        return "–"
    return format(mean, spec) + (f" ± {format(std, spec)}" if std is not None else "")


def _ttt_text(r: Mapping[str, Any], col: str, unit: str) -> str:
    n_reached, n = (int(x) for x in r["reached"].split("/"))
    if n_reached == 0:
        return "not reached"
    spec = ".0f" if unit == "" else ".1f"
    text = _pm(r[f"{col}_mean"], r[f"{col}_std"], spec) + unit
    return text + (f" ({n_reached}/{n} seeds)" if n_reached < n else "")


def summary_markdown(plan: Plan, rows: Sequence[Mapping[str, Any]], info: Mapping[str, Any]) -> str:
    run = info.get("run", {})
    lines = ["# federa compare", ""]
    lines += [f"- **methods**: {', '.join(plan.methods)}", f"- **alphas**: {', '.join(plan.alphas)} "
              "(Dirichlet label skew; smaller = more heterogeneous)", f"- **seeds**: {', '.join(map(str, plan.seeds))}"]
    for k in ("model", "data", "num_train", "num_test", "num_clients", "clients_per_round", "rounds", "threads",
              "device"):
        if k in run:
            lines.append(f"- **{k}**: {run[k]}")
    b = plan.base
    steps = f"local_epochs={b.local_epochs}" if b.local_epochs is not None else f"local_steps={b.local_steps}"
    lines.append(f"- **local training**: {steps}, batch_size={b.batch_size}, max_length={b.max_length}")
    rule = (f"absolute target {plan.explicit_target:g}" if plan.explicit_target is not None
            else "99% of FFT's best test accuracy in the same (alpha, seed) cell "
                 "(best method's when FFT is not in the run)")
    lr_rule = "best of the lr grid (see lr_grid.csv)" if plan.lr_grid else "configured per method"
    lines += [f"- **target**: {rule}", f"- **lr**: {lr_rule}", "",
              "Mean ± sample std over seeds (no ± with one seed).", ""]
    head = ["alpha", "method", "final acc", "best acc", "final macro-F1", "best macro-F1", "trainable %",
            "sent / client / round", "total uploaded", "rounds to target", "client compute to target",
            "training wall to target", "compute to target vs FFT", "lr", "done"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ratio = r["client_compute_to_target_vs_fft"]
        lines.append("| " + " | ".join([
            r["alpha"], r["method"], _pm(r["final_accuracy_mean"], r["final_accuracy_std"]),
            _pm(r["best_accuracy_mean"], r["best_accuracy_std"]),
            _pm(r["final_macro_f1_mean"], r["final_macro_f1_std"]),
            _pm(r["best_macro_f1_mean"], r["best_macro_f1_std"]),
            "–" if r["trainable_pct"] is None else f"{r['trainable_pct']:.3f}",
            human_bytes(r["bytes_per_client_round"]), human_bytes(r["total_bytes_up_mean"]),
            _ttt_text(r, "rounds_to_target", ""), _ttt_text(r, "client_compute_s_to_target", " s"),
            _ttt_text(r, "train_wall_s_to_target", " s"), "–" if ratio is None else f"{ratio:.2f}×",
            r["lr"] or "–", f"{r['done']}/{r['seeds']}",
        ]) + " |")
    lines += [
        "",
        "Client compute = sum over sampled clients of local training seconds (what devices training in "
        "parallel spend); training wall = configure→aggregate per round, summed, evaluation excluded. "
        "Both are cumulative up to the first evaluated round at or above the target. "
        "All methods of a cell ran back to back in one process with the same thread count.",
        "",
        "Plots in `plots/`: `acc_vs_round_a<alpha>.png`, `acc_vs_time_a<alpha>.png`, "
        "`acc_vs_compute_a<alpha>.png`, `acc_vs_alpha.png`, `time_to_target_vs_fft.png`. "
        "Claims: `claims.md`.",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# The four claims


@dataclass
class Claim:
    title: str
    verdict: str  # supported | refuted | mixed | inconclusive
    evidence: list[str]


def _acc(row: Mapping[str, Any] | None) -> float | None:
    return None if row is None else row["final_accuracy_mean"]


def _noise(*rows: Mapping[str, Any] | None) -> float:
    return max([r["final_accuracy_std"] or 0.0 for r in rows if r] or [0.0])


def _verdict(outcomes: Sequence[bool]) -> str:
    if not outcomes:
        return "inconclusive"
    return "supported" if all(outcomes) else "refuted" if not any(outcomes) else "mixed"


def _peft(plan: Plan) -> list[str]:
    return [m for m in plan.methods if m not in ("fft", "federa")]


def claim_noniid(plan: Plan, rows: Sequence[Mapping[str, Any]]) -> Claim:
    title = "FeDeRA beats LoRA and the other PEFT baselines when client data are non-IID"
    ix, alphas = _index(rows), [a for a in heterogeneity_order(plan.alphas) if a != IID]
    others = _peft(plan)
    if "federa" not in plan.methods or not others or not alphas:
        return Claim(title, "inconclusive", ["needs federa, at least one other PEFT method and a numeric alpha."])
    outcomes, ev = [], []
    for a in alphas:
        f = ix.get(("federa", a))
        for m in others:
            o = ix.get((m, a))
            if _acc(f) is None or _acc(o) is None:
                continue
            gap = _acc(f) - _acc(o)
            outcomes.append(gap > 0)
            noisy = " (within seed noise)" if abs(gap) <= _noise(f, o) else ""
            ev.append(f"alpha={a}: FeDeRA {_acc(f):.4f} vs {m} {_acc(o):.4f} → gap {gap:+.4f}{noisy}")
    return Claim(title, _verdict(outcomes), ev or ["no finished cells to compare."])


def claim_matches_fft(plan: Plan, rows: Sequence[Mapping[str, Any]]) -> Claim:
    title = "FeDeRA matches or beats FFT with ~1% of FFT's trainable parameters"
    ix = _index(rows)
    if not {"federa", "fft"} <= set(plan.methods):
        return Claim(title, "inconclusive", ["needs both fft and federa in --methods."])
    outcomes, ev = [], []
    for a in heterogeneity_order(plan.alphas):
        f, g = ix.get(("federa", a)), ix.get(("fft", a))
        if _acc(f) is None or _acc(g) is None:
            continue
        gap = _acc(f) - _acc(g)
        outcomes.append(gap >= -MATCH_TOLERANCE)
        ev.append(f"alpha={a}: FeDeRA {_acc(f):.4f} vs FFT {_acc(g):.4f} → gap {gap:+.4f}")
    f_any = next((r for r in rows if r["method"] == "federa" and r["trainable_params"]), None)
    g_any = next((r for r in rows if r["method"] == "fft" and r["trainable_params"]), None)
    if f_any and g_any:
        ev.append(f"trainable parameters: FeDeRA {f_any['trainable_params']:,} = "
                  f"{100 * f_any['trainable_params'] / g_any['trainable_params']:.2f}% of FFT's "
                  f"{g_any['trainable_params']:,} ({f_any['trainable_pct']:.3f}% of the model)")
    ev.append(f"'matches' = mean final accuracy at most {MATCH_TOLERANCE:g} below FFT's.")
    return Claim(title, _verdict(outcomes), ev)


def claim_time(plan: Plan, rows: Sequence[Mapping[str, Any]]) -> Claim:
    title = f"FeDeRA reaches FFT's accuracy with >{TIME_REDUCTION_CLAIM:.0%} less training time"
    ix = _index(rows)
    if not {"federa", "fft"} <= set(plan.methods):
        return Claim(title, "inconclusive", ["needs both fft and federa in --methods."])
    outcomes, ev = [], []
    for a in heterogeneity_order(plan.alphas):
        f, g = ix.get(("federa", a)), ix.get(("fft", a))
        if f is None or g is None:
            continue
        if g["reached"].startswith("0/"):
            ev.append(f"alpha={a}: FFT never reached the target; nothing to compare.")
            continue
        if f["reached"].startswith("0/"):
            outcomes.append(False)
            ev.append(f"alpha={a}: FeDeRA never reached the target "
                      f"({f['target_accuracy_mean']:.4f}; its best {f['best_accuracy_mean']:.4f}).")
            continue
        rc, rw = f["client_compute_to_target_vs_fft"], f["train_wall_to_target_vs_fft"]
        if rc is None:  # FFT at the target before any training (round 0): no time to divide by
            ev.append(f"alpha={a}: FFT was at the target before training; no time ratio.")
            continue
        outcomes.append(1 - rc > TIME_REDUCTION_CLAIM)
        ev.append(
            f"alpha={a}: client compute to target FeDeRA {f['client_compute_s_to_target_mean']:.1f} s "
            f"(round {f['rounds_to_target_mean']:.0f}) vs FFT {g['client_compute_s_to_target_mean']:.1f} s "
            f"(round {g['rounds_to_target_mean']:.0f}) → ratio {rc:.3f} ({1 - rc:+.1%} less); training wall "
            f"{f['train_wall_s_to_target_mean']:.1f} s vs {g['train_wall_s_to_target_mean']:.1f} s"
            + (f" → ratio {rw:.3f}" if rw is not None else ""))
    rule = (f"absolute target {plan.explicit_target:g}" if plan.explicit_target is not None
            else "target = 99% of FFT's best accuracy in the same cell")
    ev.append(f"{rule}; ratios are per seed, then averaged.")
    return Claim(title, _verdict(outcomes), ev)


def claim_robustness(plan: Plan, rows: Sequence[Mapping[str, Any]]) -> Claim:
    title = "PEFT methods lose accuracy as heterogeneity grows, FeDeRA the least"
    ix, order = _index(rows), heterogeneity_order(plan.alphas)
    peft = [m for m in plan.methods if m != "fft"]
    if len(order) < 2 or "federa" not in peft or len(peft) < 2:
        return Claim(title, "inconclusive", ["needs two heterogeneity levels, federa and another PEFT method."])
    skewed, mild = order[0], order[-1]
    drops: dict[str, float] = {}
    ev = [f"drop = final accuracy at {'IID' if mild == IID else 'alpha=' + mild} minus at alpha={skewed} "
          "(positive = loses accuracy under heterogeneity)"]
    for m in plan.methods:
        lo, hi = _acc(ix.get((m, skewed))), _acc(ix.get((m, mild)))
        if lo is None or hi is None:
            continue
        drops[m] = hi - lo
        ref = " (reference, not PEFT)" if m == "fft" else ""
        ev.append(f"{m}: {hi:.4f} → {lo:.4f}, drop {drops[m]:+.4f}{ref}")
    peft_drops = {m: d for m, d in drops.items() if m != "fft"}
    if "federa" not in peft_drops or len(peft_drops) < 2:
        return Claim(title, "inconclusive", ev + ["not enough finished cells."])
    lose = [d > 0 for d in peft_drops.values()]
    least = peft_drops["federa"] <= min(peft_drops.values())
    ev.append(f"PEFT methods that lose accuracy: {sum(lose)}/{len(lose)}; FeDeRA's drop is "
              f"{'the smallest' if least else 'not the smallest'} among PEFT methods.")
    # If no PEFT method loses accuracy, the claim's premise fails, whoever "loses least".
    return Claim(title, _verdict([all(lose), least]) if any(lose) else "refuted", ev)


def check_claims(plan: Plan, rows: Sequence[Mapping[str, Any]]) -> list[Claim]:
    return [claim_noniid(plan, rows), claim_matches_fft(plan, rows), claim_time(plan, rows),
            claim_robustness(plan, rows)]


def claims_markdown(plan: Plan, claims: Sequence[Claim]) -> str:
    n = len(plan.seeds)
    lines = ["# The FeDeRA paper's claims, checked against this run", "",
             f"Methods {', '.join(plan.methods)}; alphas {', '.join(plan.alphas)}; {n} seed(s). Accuracies are "
             "mean final test accuracy over seeds (see summary.md for best accuracy, macro-F1 and spreads). "
             "Verdicts: supported / refuted / mixed (holds in some settings only) / inconclusive (the run "
             "lacks what the claim needs)." + (" With one seed, differences may be noise." if n < 2 else ""), ""]
    for i, c in enumerate(claims, 1):
        lines += [f"## Claim {i}: {c.title}", "", f"**Verdict: {c.verdict}**", ""]
        lines += [f"- {e}" for e in c.evidence] + [""]
    return "\n".join(lines)


def headline(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The benchmark's numbers: time ratio, accuracy gaps per alpha, trainable % per method."""
    ix = _index(rows)
    alphas = sorted({r["alpha"] for r in rows}, key=lambda a: (a == IID, float(a) if a != IID else 0.0))
    out: dict[str, Any] = {"trainable_pct": {r["method"]: r["trainable_pct"] for r in rows}}
    for a in alphas:
        f = ix.get(("federa", a))
        out[f"alpha={a}"] = {
            "federa_minus_lora": (_acc(f) - _acc(ix[("lora", a)])) if f and ("lora", a) in ix else None,
            "federa_minus_fft": (_acc(f) - _acc(ix[("fft", a)])) if f and ("fft", a) in ix else None,
            "federa_over_fft_compute_to_target": f["client_compute_to_target_vs_fft"] if f else None,
            "federa_over_fft_wall_to_target": f["train_wall_to_target_vs_fft"] if f else None,
            "federa_reached": f["reached"] if f else None,
        }
    return out


# ---------------------------------------------------------------------------------------
# Plots


def _mean_curve(cells: Sequence[CellResult], method: str) -> list[dict[str, float]]:
    """Per round, the mean over seeds of accuracy and cumulative costs (rounds every seed has)."""
    by_round: dict[int, list[Mapping[str, Any]]] = {}
    for c in cells:
        for r in c.records:
            if r["method"] == method:
                by_round.setdefault(r["round"], []).append(r)
    n = max((len(v) for v in by_round.values()), default=0)
    keys = ("accuracy", "cum_train_wall_s", "cum_client_compute_s")
    return [{"round": rnd, **{k: statistics.fmean(r[k] for r in rs) for k in keys}}
            for rnd, rs in sorted(by_round.items()) if len(rs) == n]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    return plt


def plot_robustness(plan: Plan, rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    plt = _pyplot()
    order = heterogeneity_order(plan.alphas)
    ix = _index(rows)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for k, m in enumerate(plan.methods):
        pts = [(i, ix[(m, a)]) for i, a in enumerate(order) if (m, a) in ix]
        if not pts:
            continue
        xs = [i + (k - (len(plan.methods) - 1) / 2) * 0.04 for i, _ in pts]  # nudge so error bars don't overlap
        ax.errorbar(xs, [r["final_accuracy_mean"] for _, r in pts], yerr=[r["final_accuracy_std"] or 0 for _, r in pts],
                    marker="o", capsize=4, label=m)
    ax.set_xticks(range(len(order)), [("IID" if a == IID else f"α={a}") for a in order])
    ax.set_xlabel("client label skew (Dirichlet α; smaller = more heterogeneous)")
    ax.set_ylabel("final test accuracy (mean ± std over seeds)")
    ax.set_title("Robustness to heterogeneity")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_time_vs_fft(plan: Plan, rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    plt = _pyplot()
    order = heterogeneity_order(plan.alphas)
    ix = _index(rows)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=120, sharey=False)
    width = 0.8 / max(1, len(plan.methods))
    for ax, col, label in ((axes[0], "client_compute_to_target_vs_fft", "client compute"),
                           (axes[1], "train_wall_to_target_vs_fft", "training wall")):
        for k, m in enumerate(plan.methods):
            xs = [i + (k - (len(plan.methods) - 1) / 2) * width for i in range(len(order))]
            vals = [(ix.get((m, a)) or {}).get(col) for a in order]
            ax.bar(xs, [v or 0 for v in vals], width, label=m)
            for x, v in zip(xs, vals):
                if v is None:  # never reached the target (or FFT did not): say so instead of a 0 bar
                    ax.text(x, 0.02, "n/r", ha="center", va="bottom", fontsize=8, rotation=90)
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(order)), [("IID" if a == IID else f"α={a}") for a in order])
        ax.set_ylabel(f"{label} to target ÷ FFT's (lower is faster)")
        ax.set_title(f"Time to target relative to FFT: {label}")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    fig.text(0.5, 0.01, "n/r = no ratio: the method or FFT never reached the target, or FFT was at it before "
                        "training", ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path)
    plt.close(fig)


def write_plots(plan: Plan, cells: Sequence[CellResult], rows: Sequence[Mapping[str, Any]]) -> list[Path]:
    out = plan.out / "plots"
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    specs: list[tuple[str, Callable[[Mapping[str, Any]], float], str]] = [
        ("round", lambda r: r["round"], "round"),
        ("time", lambda r: r["cum_train_wall_s"], "training wall-clock seconds (evaluation excluded)"),
        ("compute", lambda r: r["cum_client_compute_s"], "client compute seconds (sum over clients)"),
    ]
    for a in plan.alphas:
        at = [c for c in cells if c.alpha == a]
        if not at:
            continue
        series = {m: curve for m in plan.methods if (curve := _mean_curve(at, m))}
        targets = [c.summary["target_accuracy"] for c in at if c.summary["target_accuracy"] is not None]
        target = statistics.fmean(targets) if targets else None
        where = "IID" if a == IID else f"α={a}"
        for name, x_of, label in specs:
            p = out / f"acc_vs_{name}_a{a}.png"
            plot_curves(series, x_of, label, p, f"{where}: test accuracy (mean of {len(at)} seed(s))", target)
            paths.append(p)
    if rows:
        plot_robustness(plan, rows, out / "acc_vs_alpha.png")
        paths.append(out / "acc_vs_alpha.png")
    if rows and "fft" in plan.methods:  # the bars are ratios to FFT: nothing to draw without it
        plot_time_vs_fft(plan, rows, out / "time_to_target_vs_fft.png")
        paths.append(out / "time_to_target_vs_fft.png")
    return paths


# ---------------------------------------------------------------------------------------
# All outputs


def write_outputs(plan: Plan) -> dict[str, Any]:
    """(Re)build every output file of ``plan.out`` from the cells on disk."""
    cells = load_cells(plan)
    rows = summary_rows(plan, cells)
    info_path = plan.out / "compare.json"
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    _write_csv(plan.out / "results.csv", results_rows(cells), RESULT_COLUMNS)
    _write_csv(plan.out / "summary.csv", rows, SUMMARY_COLUMNS)
    (plan.out / "summary.md").write_text(summary_markdown(plan, rows, info), encoding="utf-8")
    claims = check_claims(plan, rows)
    (plan.out / "claims.md").write_text(claims_markdown(plan, claims), encoding="utf-8")
    if plan.lr_grid:
        grid = [{"alpha": c.alpha, "seed": c.seed, **g} for c in plan.cells
                for g in grid_scores(plan.cell_dir(c), plan.methods)]
        _write_csv(plan.out / "lr_grid.csv", grid, GRID_COLUMNS)
    plots = write_plots(plan, cells, rows)
    failed = [f"{r['method']}@alpha={r['alpha']}" for r in rows if r["done"] < r["seeds"]]
    return {"rows": rows, "claims": claims, "plots": plots, "failed": failed, "headline": headline(rows)}


# ---------------------------------------------------------------------------------------
# Command line (wired in federa.cli)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file (default: the built-in default)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key for every cell, e.g. --set rounds=5 (repeatable)")
    p.add_argument("--methods", help="comma-separated methods (default: the config's `methods`); "
                                     f"available: {','.join(available_methods())}")
    p.add_argument("--alphas", default=DEFAULT_ALPHAS,
                   help=f"Dirichlet alphas and/or 'iid', comma-separated (default: {DEFAULT_ALPHAS})")
    p.add_argument("--seeds", help="comma-separated seeds, each a new partition and init (default: the config's seed)")
    p.add_argument("--target", type=float, help="absolute target accuracy (default: 99%% of FFT's best per cell)")
    p.add_argument("--lr-grid", action="store_true",
                   help=f"pick each method's lr from x{{{', '.join(f'{m:g}' for m in LR_MULTIPLIERS)}}} "
                        "on a validation split of the clients' training data")
    p.add_argument("--out", help="results folder (default: runs/compare-<name>); re-run the command to resume")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs, CI)")


def plan_from_args(args: argparse.Namespace) -> Plan:
    base = load_config(args.config, args.set)
    if args.target is not None and not 0 < args.target <= 1:
        raise ConfigError(f"--target must be an accuracy in (0, 1], got {args.target}; e.g. --target 0.85")
    return Plan(
        base=base,
        methods=parse_methods(args.methods) if args.methods else tuple(base.methods),
        alphas=parse_alphas(args.alphas),
        seeds=parse_seeds(args.seeds) if args.seeds else (base.seed,),
        out=Path(args.out) if args.out else Path("runs") / f"compare-{base.name}",
        target=args.target, lr_grid=args.lr_grid,
    )


def main(args: argparse.Namespace) -> list[str]:
    """Run ``federa compare``; returns the (method, alpha) pairs that did not finish."""
    plan = plan_from_args(args)
    print(f"results: {plan.out}")
    outcome = run_compare(plan, progress=not args.no_progress)
    print((plan.out / "summary.md").read_text(encoding="utf-8"))
    for i, c in enumerate(outcome["claims"], 1):
        print(f"claim {i}: {c.verdict}: {c.title}")
    print(f"details: {plan.out / 'claims.md'}")
    return outcome["failed"]
