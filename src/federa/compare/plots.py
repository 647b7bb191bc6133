"""The comparison's plots (``plots/*.png``): accuracy curves per alpha, robustness, time vs FFT."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from federa.compare.plan import IID, Plan, heterogeneity_order
from federa.compare.tables import CellResult, _index
from federa.modelled_time import NetworkSettings, cumulative_modelled_s
from federa.report import plot_client_scores, plot_curves


def _mean_curve(cells: Sequence[CellResult], method: str, network: NetworkSettings | None = None,
                num_clients: int = 0) -> list[dict[str, float]]:
    """Per round, the mean over seeds of accuracy, cumulative costs and the update trajectory
    (rounds every seed has; a figure some seed lacks is NaN, which matplotlib leaves out)."""
    by_round: dict[int, list[Mapping[str, Any]]] = {}
    for c in cells:
        mine = [r for r in c.records if r["method"] == method]
        modelled = cumulative_modelled_s(mine, network, num_clients, c.seed) if network is not None else None
        for r in mine:
            extra = {"cum_modelled_s": modelled.get(r["round"], math.nan) if modelled else math.nan}
            by_round.setdefault(r["round"], []).append({**r, **extra})
    n = max((len(v) for v in by_round.values()), default=0)
    keys = ("score", "cum_train_wall_s", "cum_client_compute_s", "cum_modelled_s", "update_cos", "update_norm")

    def mean(rs: Sequence[Mapping[str, Any]], k: str) -> float:
        vals = [r.get(k) for r in rs]
        return math.nan if any(v is None for v in vals) else statistics.fmean(vals)

    return [{"round": rnd, **{k: mean(rs, k) for k in keys}} for rnd, rs in sorted(by_round.items()) if len(rs) == n]


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
        ax.errorbar(xs, [r["final_score_mean"] for _, r in pts], yerr=[r["final_score_std"] or 0 for _, r in pts],
                    marker="o", capsize=4, label=m)
    ax.set_xticks(range(len(order)), [("IID" if a == IID else f"α={a}") for a in order])
    ax.set_xlabel("client label skew (Dirichlet α; smaller = more heterogeneous)")
    ax.set_ylabel(f"final test {main_metric(plan)} (mean ± std over seeds)")
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


def plot_seed_curves(cells: Sequence[CellResult], methods: Sequence[str], path: Path, title: str,
                     target: float | None, metric: str) -> None:
    """Score per round: each seed a thin line, the mean over seeds a thick one in the same colour, so
    the spread over seeds is on the page (a mean alone hid FFT's ±0.46 at alpha=0.1)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for k, m in enumerate(methods):
        colour = f"C{k}"
        runs = [sorted((r["round"], r["score"]) for r in c.records if r["method"] == m and r.get("score") is not None)
                for c in cells]
        runs = [r for r in runs if r]
        if not runs:
            continue
        for r in runs:
            ax.plot(*zip(*r), color=colour, linewidth=0.8, alpha=0.35)
        mean = _mean_curve(cells, m)
        pts = [(r["round"], r["score"]) for r in mean if not math.isnan(r["score"])]
        if pts:
            ax.plot(*zip(*pts), color=colour, linewidth=2, marker="o", markersize=3,
                    label=f"{m} (mean of {len(runs)}; thin: each seed)")
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:.3f}")
    ax.set_xlabel("round")
    ax.set_ylabel(f"test {metric}")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_trajectory(series: Mapping[str, Sequence[Mapping[str, float]]], key: str, label: str, path: Path,
                    title: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    drawn = False
    for m, curve in series.items():
        pts = [(r["round"], r[key]) for r in curve if r["round"] > 0 and not math.isnan(r[key])]
        if pts:
            ax.plot(*zip(*pts), marker="o", markersize=3, label=m)
            drawn = True
    if key == "update_cos":
        ax.axhline(0.0, color="grey", linestyle="--", linewidth=1)
    elif drawn:
        ax.set_yscale("log")
    if not drawn:  # one round has no pair of consecutive updates: say so instead of an empty frame
        ax.text(0.5, 0.5, "needs two or more rounds", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("round")
    ax.set_ylabel(label)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main_metric(plan: Plan) -> str:
    """The comparison's main metric (what "score" is), as its runs recorded it in compare.json."""
    import json

    info = plan.out / "compare.json"
    run = json.loads(info.read_text(encoding="utf-8")).get("run", {}) if info.is_file() else {}
    return run.get("metric") or plan.base.metric or "score"


def write_plots(plan: Plan, cells: Sequence[CellResult], rows: Sequence[Mapping[str, Any]]) -> list[Path]:
    out = plan.out / "plots"
    metric = main_metric(plan)  # a y axis names it: accuracy, pearson, entity_f1, ...
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    specs: list[tuple[str, Callable[[Mapping[str, Any]], float], str]] = [
        ("round", lambda r: r["round"], "round"),
        ("time", lambda r: r["cum_train_wall_s"], "training wall-clock seconds (evaluation excluded)"),
        ("compute", lambda r: r["cum_client_compute_s"], "client compute seconds (sum over clients)"),
    ]
    specs.append(("modelled", lambda r: r["cum_modelled_s"], f"modelled seconds ({plan.base.network.preset})"))
    for a in plan.alphas:
        at = [c for c in cells if c.alpha == a]
        if not at:
            continue
        series = {m: curve for m in plan.methods
                  if (curve := _mean_curve(at, m, plan.base.network, plan.base.num_clients))}
        targets = [c.summary["target_score"] for c in at if c.summary["target_score"] is not None]
        target = statistics.fmean(targets) if targets else None
        where = "IID" if a == IID else f"α={a}"
        for name, x_of, label in specs:
            p = out / f"acc_vs_{name}_a{a}.png"
            if name == "round":
                plot_seed_curves(at, list(series), p, f"{where}: test {metric} per seed and mean ({len(at)} seed(s))",
                                 target, metric)
                paths.append(p)
                continue
            plot_curves(series, x_of, label, p, f"{where}: test {metric} (mean of {len(at)} seed(s))", target,
                        metric=metric)
            paths.append(p)
        for key, what in (("update_cos", "cosine between consecutive global updates"),
                          ("update_norm", "global update norm")):
            p = out / f"{key}_a{a}.png"
            plot_trajectory(series, key, what, p, f"{where}: {what} (mean of {len(at)} seed(s))")
            paths.append(p)
        # Held-out client splits: every (seed, client)'s final score, one column per method.
        finals = {m: [x for c in at for x in (c.summary["methods"].get(m, {}).get("final_client_scores") or [])]
                  for m in plan.methods}
        if any(finals.values()):
            p = out / f"client_scores_a{a}.png"
            plot_client_scores({m: xs for m, xs in finals.items() if xs}, p, metric)
            paths.append(p)
    if rows:
        plot_robustness(plan, rows, out / "acc_vs_alpha.png")
        paths.append(out / "acc_vs_alpha.png")
    if rows and "fft" in plan.methods:  # the bars are ratios to FFT: nothing to draw without it
        plot_time_vs_fft(plan, rows, out / "time_to_target_vs_fft.png")
        paths.append(out / "time_to_target_vs_fft.png")
    return paths
