"""The comparison's tables: cells read back, per-round results, per-(method, alpha) summary.

Written as ``results.csv``, ``summary.csv`` and ``summary.md``; the summary rows are also what
the claims and the plots read.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from federa.checkpoint import atomic_write_bytes
from federa.compare.plan import UNPARTITIONABLE, Plan
from federa.compare.seeds import SeedResult, convergence_target, seed_result
from federa.compare.stats import t_interval
from federa.partition import shard_summary
from federa.report import CLIENT_SPREAD, human_bytes, summarize

RESULT_COLUMNS = [
    "alpha", "seed", "method", "lr", "status", "target_score", "round", "score", "accuracy", "macro_f1", "loss",
    "train_loss", "clients", "examples_seen", "bytes_up", "bytes_down", "client_compute_s", "round_s",
    "aggregate_s", "eval_s", "cum_train_wall_s", "cum_client_compute_s", "cum_wall_s", "cum_bytes_up",
    "cum_bytes_down", "cum_examples_seen",
]
SUMMARY_COLUMNS = [
    "method", "alpha", "seeds", "done", "lr",
    "final_score_mean", "final_score_std", "best_score_mean", "best_score_std",
    "final_macro_f1_mean", "final_macro_f1_std", "best_macro_f1_mean", "best_macro_f1_std",
    "trainable_params", "trainable_pct", "bytes_per_client_round", "total_bytes_up_mean", "total_bytes_mean",
    "target_score_mean", "reached",
    "rounds_to_target_mean", "rounds_to_target_std",
    "train_wall_s_to_target_mean", "train_wall_s_to_target_std",
    "client_compute_s_to_target_mean", "client_compute_s_to_target_std",
    "client_compute_to_target_vs_fft", "train_wall_to_target_vs_fft",
    # 95% t-interval half-widths over seeds, the mean of the last k evaluations, modelled network time,
    # the update trajectory and the shard sizes (added for claims that hold up; see compare.stats).
    "final_score_ci", "final_k_score_mean", "final_k_score_std", "final_k_score_ci", "best_score_ci",
    "modelled_s_to_target_mean", "modelled_s_to_target_ci", "modelled_to_target_vs_fft", "modelled_s_total_mean",
    "update_cos_mean", "update_cos_ci", "update_norm_mean", "label_skew_tv_mean", "shard_min", "shard_median",
    "shard_max", "largest_share_mean",
]


@dataclass
class CellResult:
    alpha: str
    seed: int
    records: list[dict[str, Any]]
    summary: dict[str, Any]  # federa.report.summarize of this cell (target resolved per cell)
    seeds: dict[str, SeedResult] = field(default_factory=dict)  # method → this seed's result
    shards: dict[str, Any] = field(default_factory=dict)  # shard sizes and label skew (partition.json)


def _cell_target(plan: Plan, records: Sequence[Mapping[str, Any]]) -> tuple[float | None, str | None]:
    """An explicit target, else 99% of FFT's score at convergence (None: summarize's fallback)."""
    if plan.explicit_target is not None:
        return plan.explicit_target, None
    fft = [r for r in records if r["method"] == "fft"]
    return convergence_target(fft) if fft else (None, None)


def constant_floor(plan: Plan) -> float | None:
    """The best constant prediction's main-metric score on the comparison's test split (the same in
    every cell), kept in ``floor.json`` so read-backs need not load the data again; None when the
    data cannot be loaded here (results read on another machine) or the task has no such floor."""
    path = plan.out / "floor.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))["score"]
    from federa.data import load_data
    from federa.errors import FederaError

    cfg = plan.base
    try:
        data = load_data(cfg.data, cfg.task)
        metric = data.task.main_metric(cfg.metric)
        score = data.task.constant_score(data.test, data.label_names, metric)
    except FederaError:
        return None
    if score is not None and plan.out.is_dir():
        atomic_write_bytes(path, json.dumps({"metric": metric, "score": score, "test_rows": len(data.test),
                                             "what": "best constant prediction on the test split"}).encode())
    return score


def load_cells(plan: Plan) -> list[CellResult]:
    cells = []
    network = plan.base.network
    floor = constant_floor(plan) if any(plan.cell_dir(c).root.is_dir() for c in plan.cells) else None
    for cell in plan.cells:
        rd = plan.cell_dir(cell)
        if not rd.root.is_dir():
            continue
        results = {m: json.loads(rd.result(m).read_text(encoding="utf-8"))
                   for m in plan.methods if rd.result(m).is_file()}
        records = [r for r in rd.read_metrics() if r["method"] in plan.methods]
        if not records:
            continue
        target, rule = _cell_target(plan, records)
        summary = summarize(records, results, target)
        if rule is not None:
            summary["target_rule"] = rule
        per = {m: seed_result(m, cell.alpha, cell.seed, [r for r in records if r["method"] == m], s,
                              summary["target_score"], plan.last_k, network, plan.base.num_clients, floor)
               for m, s in summary["methods"].items()}
        shards = shard_summary(json.loads(rd.partition.read_text(encoding="utf-8"))) if rd.partition.is_file() else {}
        cells.append(CellResult(cell.alpha, cell.seed, records, summary, per, shards))
    return cells


def skipped_cells(plan: Plan) -> list[dict[str, Any]]:
    """Cells whose seed could not be partitioned (recorded by run_compare, which went on)."""
    out = []
    for cell in plan.cells:
        p = plan.cell_dir(cell).root / UNPARTITIONABLE
        if p.is_file():
            out.append({"alpha": cell.alpha, "seed": cell.seed, **json.loads(p.read_text(encoding="utf-8"))})
    return out


def results_rows(cells: Sequence[CellResult]) -> list[dict[str, Any]]:
    rows = []
    for c in cells:
        for r in c.records:
            s = c.summary["methods"].get(r["method"], {})
            row = {"alpha": c.alpha, "seed": c.seed, "lr": s.get("lr"), "status": s.get("status"),
                   "target_score": c.summary["target_score"], **r}
            for k in ("clients", "client_train_s", "client_bytes_down", "client_bytes_up"):
                if isinstance(row.get(k), list):
                    row[k] = " ".join(map(str, row[k]))
            if isinstance(row.get("client_score"), list):  # by client id; nan: a client with none held out
                row["client_score"] = " ".join("nan" if x is None else f"{x:.6g}" for x in row["client_score"])
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
            for key in ("final_score", "best_score", "final_macro_f1", "best_macro_f1"):
                row[f"{key}_mean"], row[f"{key}_std"] = _mean_std([s.get(key) for s in ss])
            row["total_bytes_up_mean"], _ = _mean_std([s.get("total_bytes_up") for s in ss])
            row["total_bytes_mean"], _ = _mean_std([(s.get("total_bytes_up") or 0) + (s.get("total_bytes_down") or 0)
                                                    for s in ss])
            row["target_score_mean"], _ = _mean_std([c.summary["target_score"] for c in at
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
            row.update(_seed_columns([c for c in at if m in c.seeds], m))
            if any(s.get("final_client_score_mean") is not None for s in ss):
                # Held-out client splits: the final per-client view, each figure averaged over seeds
                # (extra csv columns, only in such runs).
                for key in CLIENT_SPREAD:
                    row[key], _ = _mean_std([s.get(f"final_{key}") for s in ss])
            rows.append(row)
    return rows


def _ci(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """(mean, 95% t-interval half-width over seeds; None with fewer than two)."""
    iv = t_interval(values)
    return (None, None) if iv is None else (iv.mean, iv.half_width)


def _seed_columns(cells: Sequence[CellResult], m: str) -> dict[str, Any]:
    per = [c.seeds[m] for c in cells]
    row: dict[str, Any] = {}
    _, row["final_score_ci"] = _ci([s.final for s in per])
    _, row["best_score_ci"] = _ci([s.best for s in per])
    row["final_k_score_mean"], row["final_k_score_ci"] = _ci([s.final_k for s in per])
    _, row["final_k_score_std"] = _mean_std([s.final_k for s in per])
    row["modelled_s_to_target_mean"], row["modelled_s_to_target_ci"] = _ci([s.modelled_s_to_target for s in per])
    row["modelled_s_total_mean"], _ = _ci([s.modelled_s_total for s in per])
    ratios = [s.modelled_s_to_target / f.modelled_s_to_target for c, s in zip(cells, per)
              if (f := c.seeds.get("fft")) and s.modelled_s_to_target is not None
              and f.modelled_s_to_target is not None and f.modelled_s_to_target > 0]
    row["modelled_to_target_vs_fft"], _ = _mean_std(ratios)
    row["update_cos_mean"], row["update_cos_ci"] = _ci([s.update_cos_mean for s in per])
    row["update_norm_mean"], _ = _ci([s.update_norm_mean for s in per])
    shards = [c.shards for c in cells if c.shards]
    if shards:
        row["label_skew_tv_mean"], _ = _ci([sh["label_skew_tv"] for sh in shards])
        row["shard_min"] = min(sh["min"] for sh in shards)
        row["shard_median"] = statistics.median(sh["median"] for sh in shards)
        row["shard_max"] = max(sh["max"] for sh in shards)
        row["largest_share_mean"], _ = _ci([sh["largest_share"] for sh in shards])
    return row


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
    return format(mean, spec) + (f" ± {format(std, spec.lstrip('+'))}" if std is not None else "")


def _ttt_text(r: Mapping[str, Any], col: str, unit: str, ci_col: str | None = None) -> str:
    n_reached, n = (int(x) for x in r["reached"].split("/"))
    if n_reached == 0 or r.get(f"{col}_mean") is None:
        return "not reached"
    spec = ".0f" if unit == "" else ".1f"
    text = _pm(r[f"{col}_mean"], r.get(ci_col) if ci_col else r[f"{col}_std"], spec) + unit
    return text + (f" ({n_reached}/{n} seeds)" if n_reached < n else "")


def summary_markdown(plan: Plan, rows: Sequence[Mapping[str, Any]], info: Mapping[str, Any],
                     cells: Sequence[CellResult] = (), skipped: Sequence[Mapping[str, Any]] = ()) -> str:
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
            else "99% of FFT's test score at convergence in the same (alpha, seed) cell: FFT's best up to its "
                 "plateau (no gain > 0.5 points over its last 5 evaluations), or over the round budget when it "
                 "never plateaus (best method's best when FFT is not in the run); per cell below")
    legacy = info.get("lr_grid") and not info.get("lr_rule")
    lr_rule = ("configured per method" if not plan.lr_grid else
               "best of the lr grid per (method, alpha), chosen on validation rows carved from the clients' "
               "training shards of the alpha's first seed, never the test set (see lr_grid.csv; rule "
               "best-single-seed/v1, the folder's own)" if legacy or info.get("lr_rule") == "best-single-seed/v1" else
               f"the lr grid per (method, alpha), one-SE rule over the alpha's first {plan.grid_seeds} seeds' "
               "validation rows carved from the clients' training shards, never the test set (see 'Learning rates' "
               "below and lr_grid.csv)")
    lines += [f"- **target**: {rule}", f"- **lr**: {lr_rule}",
              f"- **modelled time**: {b.network.describe()}",
              f"- **final k**: final score also as the mean of the last {plan.last_k} evaluations (the claims use it)",
              "",
              "Mean ± 95% t-interval half-width over seeds (no ± with one seed); 'reached' counts the seeds whose "
              "run reached the cell's target.", ""]
    head = ["alpha", "method", "final score", f"final-{plan.last_k} score", "best score", "trainable %",
            "sent / client / round", "reached", "rounds to target", "client compute to target",
            "training wall to target", "modelled time to target", "modelled vs FFT", "update cosine", "lr", "done"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ratio = r.get("modelled_to_target_vs_fft")
        lines.append("| " + " | ".join([
            r["alpha"], r["method"], _pm(r["final_score_mean"], r.get("final_score_ci")),
            _pm(r.get("final_k_score_mean"), r.get("final_k_score_ci")),
            _pm(r["best_score_mean"], r.get("best_score_ci")),
            "–" if r["trainable_pct"] is None else f"{r['trainable_pct']:.3f}",
            human_bytes(r["bytes_per_client_round"]), r["reached"],
            _ttt_text(r, "rounds_to_target", ""), _ttt_text(r, "client_compute_s_to_target", " s"),
            _ttt_text(r, "train_wall_s_to_target", " s"),
            _ttt_text(r, "modelled_s_to_target", " s", "modelled_s_to_target_ci"),
            "–" if ratio is None else f"{ratio:.2f}×",
            _pm(r.get("update_cos_mean"), r.get("update_cos_ci"), "+.3f"),
            r["lr"] or "–", f"{r['done']}/{r['seeds']}",
        ]) + " |")
    if any(r.get("client_score_mean") is not None for r in rows):
        lines += ["", "Per-client scores (each client's held-out split, the final model; a personalised method "
                  "scores each client's own model), averaged over seeds:", "",
                  "| alpha | method | mean over clients | worst client | 10th percentile | std across clients |",
                  "|---|---|---|---|---|---|"]
        lines += ["| " + " | ".join([r["alpha"], r["method"], *(_pm(r.get(k), None) for k in CLIENT_SPREAD)]) + " |"
                  for r in rows if r.get("client_score_mean") is not None]
    lines += [
        "",
        "Client compute = sum over sampled clients of local training seconds; training wall = configure→aggregate "
        "per round, summed, evaluation excluded; modelled = each round priced by the network model "
        "(slowest sampled client's download + compute × speed + upload, plus aggregation). All three are "
        "cumulative up to the first evaluated round at or above the target. Update cosine = mean over rounds of "
        "the cosine between consecutive global updates of the trainable state (1: steady; ≤0: zig-zag).",
        "",
    ]
    if cells:
        lines += ["## Partitions and targets per cell", "",
                  "| alpha | seed | label skew (TV) | shard sizes min / median / max | largest shard share | target |",
                  "|---|---|---|---|---|---|"]
        for c in cells:
            sh = c.shards
            sizes = f"{sh['min']} / {sh['median']:g} / {sh['max']}" if sh else "–"
            share = f"{sh['largest_share']:.1%}" if sh else "–"
            skew = f"{sh['label_skew_tv']:.3f}" if sh else "–"
            tgt = c.summary["target_score"]
            lines.append(f"| {c.alpha} | {c.seed} | {skew} | {sizes} | {share} | "
                         f"{'–' if tgt is None else f'{tgt:.4f}'} ({c.summary['target_rule']}) |")
        lines.append("")
    if skipped:
        lines += ["## Seeds that could not be partitioned (skipped)", ""]
        lines += [f"- alpha={s['alpha']}, seed {s['seed']}: {s['reason']}" for s in skipped] + [""]
    lines += ["Plots in `plots/`: `acc_vs_round_a<alpha>.png`, `acc_vs_time_a<alpha>.png`, "
              "`acc_vs_compute_a<alpha>.png`, `acc_vs_modelled_a<alpha>.png`, `update_cos_a<alpha>.png`, "
              "`update_norm_a<alpha>.png`, `acc_vs_alpha.png`, `time_to_target_vs_fft.png`. Claims: `claims.md`.", ""]
    return "\n".join(lines)
