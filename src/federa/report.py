"""From metrics records to the things a reader trusts: summary.json, report.md and plots.

Everything here is a pure function of the records in ``metrics.jsonl`` and each method's
``result.json``, so a report can be rebuilt from a results folder at any time.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

Record = Mapping[str, Any]

# Per-client figures of a metrics line (see federa.client_eval), in the order the report shows them.
CLIENT_SPREAD = ("client_score_mean", "client_score_worst", "client_score_p10", "client_score_std")

# Relative target used when the user sets none: 99% of FFT's best accuracy, the paper's yardstick.
DEFAULT_TARGET_FRACTION = 0.99


def by_method(records: Iterable[Record]) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        out[r["method"]].append(r)
    return {m: sorted(rs, key=lambda r: r["round"]) for m, rs in out.items()}


def resolve_target(series: Mapping[str, Sequence[Record]], explicit: float | None) -> tuple[float | None, str]:
    """(target score, how it was chosen); the score is the task's main metric."""
    if explicit is not None:
        return explicit, f"target_score={explicit:g} (set in the config)"
    ref = "fft" if series.get("fft") else None
    pool = series[ref] if ref else [r for rs in series.values() for r in rs]
    if not pool:
        return None, "no evaluated rounds"
    best = max(r["score"] for r in pool)
    who = "FFT's" if ref else "the best method's"
    return DEFAULT_TARGET_FRACTION * best, f"{DEFAULT_TARGET_FRACTION:.0%} of {who} best score ({best:.4f})"


def time_to_target(records: Sequence[Record], target: float | None) -> dict[str, float] | None:
    """The first evaluated round whose score reaches ``target``, with cumulative cost; None if never."""
    if target is None:
        return None
    for r in sorted(records, key=lambda r: r["round"]):
        if r["score"] >= target:
            return {
                "round": r["round"],
                "train_wall_s": r["cum_train_wall_s"],
                "client_compute_s": r["cum_client_compute_s"],
                "bytes": r["cum_bytes_up"] + r["cum_bytes_down"],
            }
    return None


# Evaluation loss this many times the untrained model's marks a method as diverged: far beyond what
# overfitting does (a few times), where an lr 1e6 run sits (1.7e7 against 1.6), and still finite.
DIVERGED_FACTOR = 100.0


def diverged(records: Sequence[Record]) -> dict[str, float] | None:
    """The first round whose evaluation loss exceeds DIVERGED_FACTOR × round 0's, or None."""
    start = next((r.get("loss") for r in records if r["round"] == 0), None)
    if start is None or not start > 0:
        return None
    for r in sorted(records, key=lambda r: r["round"]):
        loss = r.get("loss")
        if r["round"] > 0 and loss is not None and not loss <= DIVERGED_FACTOR * start:  # NaN counts as diverged
            return {"round": r["round"], "loss": loss, "initial_loss": start}
    return None


def summarize_method(records: Sequence[Record], result: Mapping[str, Any] | None, target: float | None) -> dict[str, Any]:
    trained = [r for r in records if r["round"] > 0]
    last = records[-1] if records else {}
    best = max(records, key=lambda r: r["score"]) if records else {}
    out: dict[str, Any] = dict(result or {"status": "incomplete"})
    out.update({
        "initial_score": records[0]["score"] if records and records[0]["round"] == 0 else None,
        "final_round": last.get("round"),
        "final_score": last.get("score"),
        "final_macro_f1": last.get("macro_f1"),  # classification only (None otherwise)
        "final_loss": last.get("loss"),
        "best_score": best.get("score"),
        "best_round": best.get("round"),
        "best_macro_f1": max((r["macro_f1"] for r in records if r.get("macro_f1") is not None), default=None),
        "total_bytes_up": last.get("cum_bytes_up", 0),
        "total_bytes_down": last.get("cum_bytes_down", 0),
        "train_wall_s": last.get("cum_train_wall_s", 0.0),
        "client_compute_s": last.get("cum_client_compute_s", 0.0),
        "wall_s": last.get("cum_wall_s", 0.0),
        "mean_round_s": (sum(r["round_s"] for r in trained) / len(trained)) if trained else None,
        "time_to_target": time_to_target(records, target),
        "epsilon": last.get("epsilon"),  # client-level DP: (ε, dp.delta) spent by the last round
        "mean_lora_agg_error": _mean([r.get("lora_agg_error") for r in trained]),
        "diverged": diverged(records),
    })
    scored = [r for r in records if r.get("client_score") is not None]
    if scored:  # held-out client splits: the last evaluation's per-client view
        out["final_client_scores"] = scored[-1]["client_score"]
        out.update({f"final_{k}": scored[-1].get(k) for k in CLIENT_SPREAD})
    return out


def summarize(records: Iterable[Record], results: Mapping[str, Mapping[str, Any]], explicit_target: float | None,
              run_info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    series = by_method(records)
    target, how = resolve_target(series, explicit_target)
    methods = list(results) + [m for m in series if m not in results]
    return {
        "run": dict(run_info or {}),
        "target_score": target,
        "target_rule": how,
        "methods": {m: summarize_method(series.get(m, []), results.get(m), target) for m in methods},
    }


# -- report.md -------------------------------------------------------------------------


def _mean(xs: Sequence[float | None]) -> float | None:
    kept = [x for x in xs if x is not None]
    return sum(kept) / len(kept) if kept else None


def _fmt(x: Any, spec: str = ".4f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return format(x, spec)


def human_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"


def ttt_cell(t: Mapping[str, float] | None, key: str = "train_wall_s") -> str:
    return "not reached" if t is None else f"{t[key]:.1f} s (round {t['round']})"


def _diverged_note(d: Mapping[str, float] | None) -> str:
    if not d:
        return ""
    return f", diverged at round {d['round']} (test loss {d['loss']:.3g} vs {d['initial_loss']:.3g} at round 0)"


def report_markdown(summary: Mapping[str, Any], partition_text: str = "") -> str:
    run = summary.get("run", {})
    lines = [f"# federa run: {run.get('name', '')}", ""]
    metric = run.get("metric", "accuracy")
    for k in ("model", "data", "task", "metric", "num_train", "num_test", "num_labels", "num_clients",
              "clients_per_round", "rounds", "partition", "seed", "threads", "device"):
        if k in run:
            lines.append(f"- **{k}**: {run[k]}")
    lines += [f"- **warning**: {w}" for w in run.get("warnings", [])]
    lines += ["", f"Target {metric}: **{_fmt(summary['target_score'])}** — {summary['target_rule']}.", ""]
    head = ["method", "trainable params", "trainable %", "sent per client per round", f"initial {metric}",
            f"final {metric}", f"best {metric}", "final macro-F1", "time to target (training wall)",
            "client compute to target", "total communicated", "status"]
    with_dp = any(s.get("epsilon") is not None for s in summary["methods"].values())
    if with_dp:
        head.insert(-1, "DP ε")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, s in summary["methods"].items():
        ttt = s.get("time_to_target")
        eps_cell = [_fmt(s.get("epsilon"), ".3f")] if with_dp else []
        lines.append("| " + " | ".join([
            m, f"{s.get('trainable_params', 0):,}", _fmt(s.get("trainable_pct"), ".3f"),
            human_bytes(s.get("bytes_per_client_round")), _fmt(s.get("initial_score")),
            _fmt(s.get("final_score")), _fmt(s.get("best_score")), _fmt(s.get("final_macro_f1")),
            ttt_cell(ttt), "not reached" if ttt is None else f"{ttt['client_compute_s']:.1f} s",
            human_bytes((s.get("total_bytes_up") or 0) + (s.get("total_bytes_down") or 0)), *eps_cell,
            s.get("status", "?") + (f": {s['reason']}" if s.get("reason") else "") + _diverged_note(s.get("diverged")),
        ]) + " |")
    lines += [
        "",
        "Training wall = configure→aggregate per round, summed (evaluation excluded); client compute = "
        "sum over sampled clients of local training seconds. Bytes count the tensors actually sent each way "
        "(plus, for FeDeRA, the one-time broadcast of the initial SVD factors to each newly contacted client).",
    ]
    lines += client_section(summary, metric)
    lines += samples_section(summary)
    if partition_text:
        lines += ["", "## Client partition", "", "```", partition_text, "```"]
    lines += ["", f"Plots ({metric}): `score_vs_round.png`, `score_vs_time.png`, `score_vs_bytes.png`.", ""]
    return "\n".join(lines)


def samples_section(summary: Mapping[str, Any]) -> list[str]:
    """A generative task's first test prompts with each method's final greedy answer, side by side."""
    per_method = {m: s["samples"] for m, s in summary["methods"].items() if s.get("samples")}
    if not per_method:
        return []

    def cell(text: str, limit: int = 200) -> str:
        text = " ".join(str(text).split())
        return (text[:limit] + "…" if len(text) > limit else text).replace("|", "\\|")

    lines = ["", "## Sample generations (final models, greedy)", ""]
    first = next(iter(per_method.values()))
    for i, sample in enumerate(first):
        lines += [f"**{i + 1}.** {cell(sample['question'], 400)}", "", "| method | answer |", "|---|---|",
                  f"| *reference* | {cell(sample['reference'])} |"]
        lines += [f"| {m} | {cell(s[i]['generation'])} |" for m, s in per_method.items() if i < len(s)]
        lines.append("")
    return lines


def client_section(summary: Mapping[str, Any], metric: str) -> list[str]:
    """The per-client table (mean, worst, 10th percentile, spread), when clients held examples out."""
    rows = {m: s for m, s in summary["methods"].items() if s.get("final_client_scores") is not None}
    if not rows:
        return []
    head = ["method", "clients scored", f"mean {metric}", "worst client", "10th percentile", "std across clients"]
    lines = ["", "## Per-client scores", "",
             f"Each client's held-out split (`partition.client_val_fraction`), {metric} of the last evaluated "
             "model: the global model, or for a personalised method (…+fedsa, …+local) each client's own model. Mean is "
             "unweighted over clients; plot: `client_scores.png`.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, s in rows.items():
        n = sum(x is not None for x in s["final_client_scores"])
        lines.append("| " + " | ".join([m, f"{n}/{len(s['final_client_scores'])}",
                                        *(_fmt(s.get(f"final_{k}")) for k in CLIENT_SPREAD)]) + " |")
    return lines


# -- plots -----------------------------------------------------------------------------


def plot_curves(series: Mapping[str, Sequence[Record]], x_of: Callable[[Record], float], x_label: str, path: Path,
                title: str, target: float | None = None, log_x: bool = False, metric: str = "accuracy",
                y_key: str = "score", y_label: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    # A method stopped at round 0 has nothing to put on a log axis.
    log_x = log_x and any(x_of(r) > 0 for rs in series.values() for r in rs)
    for m, rs in series.items():
        kept = [r for r in rs if not (log_x and x_of(r) <= 0) and r.get(y_key) is not None]  # round 0 sent nothing
        if not kept:
            continue
        xs, ys = [x_of(r) for r in kept], [r[y_key] for r in kept]
        ax.plot(xs, ys, marker="o", markersize=3, label=m)
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:.3f}")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label or f"test {metric}")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_plots(records: Iterable[Record], out_dir: Path, target: float | None, metric: str = "accuracy") -> list[Path]:
    series = by_method(records)
    specs: list[tuple[Callable[[Record], float], str, str, str, bool]] = [
        (lambda r: r["round"], "round", "score_vs_round.png", f"Test {metric} per round", False),
        (lambda r: r["cum_train_wall_s"], "training wall-clock seconds (evaluation excluded)",
         "score_vs_time.png", f"Test {metric} vs training time", False),
        (lambda r: r["cum_bytes_up"] + r["cum_bytes_down"], "bytes communicated (up + down, log scale)",
         "score_vs_bytes.png", f"Test {metric} vs communication", True),
    ]
    paths = []
    for x_of, label, name, title, log_x in specs:
        plot_curves(series, x_of, label, out_dir / name, title, target, log_x, metric)
        paths.append(out_dir / name)
    finals = {m: scored[-1]["client_score"] for m, rs in series.items()
              if (scored := [r for r in rs if r.get("client_score") is not None])}
    if finals:
        plot_client_scores(finals, out_dir / "client_scores.png", metric)
        paths.append(out_dir / "client_scores.png")
    if any(r.get("lora_agg_error") is not None for rs in series.values() for r in rs):
        path = out_dir / "lora_agg_error_vs_round.png"
        plot_curves(series, lambda r: r["round"], "round", path, "LoRA aggregation error per round",
                    y_key="lora_agg_error", y_label="‖avg(B)·avg(A) − avg(B·A)‖ / ‖avg(B·A)‖")
        paths.append(path)
    return paths


def plot_client_scores(finals: Mapping[str, Sequence[float | None]], path: Path, metric: str = "accuracy") -> None:
    """One column per method: a dot per client (its id beside it), the mean as a bar across."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(finals) + 2), 4.5), dpi=120)
    for i, (m, scores) in enumerate(finals.items()):
        pts = [(c, s) for c, s in enumerate(scores) if s is not None]
        if not pts:
            continue
        # Spread the dots sideways by client id so equal scores stay visible.
        xs = [i + 0.25 * (c / max(1, len(scores) - 1) - 0.5) for c, _ in pts]
        ax.scatter(xs, [s for _, s in pts], s=18, zorder=3)
        for x, (c, s) in zip(xs, pts):
            ax.annotate(str(c), (x, s), xytext=(3, 0), textcoords="offset points", fontsize=6, va="center")
        mean = sum(s for _, s in pts) / len(pts)
        ax.hlines(mean, i - 0.2, i + 0.2, color="black", linewidth=1.5, zorder=4)
    ax.set_xticks(range(len(finals)), list(finals), rotation=20 if len(finals) > 4 else 0)
    ax.set_ylabel(f"{metric} on the client's held-out split")
    ax.set_title("Per-client score of the last evaluation (dot: client id; bar: mean)")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
