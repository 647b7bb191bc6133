"""The FeDeRA paper's four claims, checked against a comparison's summary rows (``claims.md``).

Each claim gets a verdict (supported / refuted / mixed / inconclusive) and the numbers behind it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from federa.compare.plan import IID, Plan, heterogeneity_order
from federa.compare.tables import _index

# Claim 2 ("matches FFT"): FeDeRA's mean final score within this many points below FFT's.
MATCH_TOLERANCE = 0.01
# Claim 3: the paper reports >90% less training time to FFT's accuracy.
TIME_REDUCTION_CLAIM = 0.90


@dataclass
class Claim:
    title: str
    verdict: str  # supported | refuted | mixed | inconclusive
    evidence: list[str]


def _acc(row: Mapping[str, Any] | None) -> float | None:
    return None if row is None else row["final_score_mean"]


def _noise(*rows: Mapping[str, Any] | None) -> float:
    return max([r["final_score_std"] or 0.0 for r in rows if r] or [0.0])


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
    ev.append(f"'matches' = mean final score at most {MATCH_TOLERANCE:g} below FFT's.")
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
                      f"({f['target_score_mean']:.4f}; its best {f['best_score_mean']:.4f}).")
            continue
        rc, rw = f["client_compute_to_target_vs_fft"], f["train_wall_to_target_vs_fft"]
        if rc is None:  # FFT at the target before any training (round 0): no time to divide by
            ev.append(f"alpha={a}: FFT was at the target before training; no time ratio.")
            continue
        outcomes.append(1 - rc > TIME_REDUCTION_CLAIM)
        ev.append(
            f"alpha={a}: client compute to target FeDeRA {f['client_compute_s_to_target_mean']:.1f} s "
            f"(round {f['rounds_to_target_mean']:.0f}) vs FFT {g['client_compute_s_to_target_mean']:.1f} s "
            f"(round {g['rounds_to_target_mean']:.0f}) → ratio {rc:.3f} ({abs(1 - rc):.1%} {'less' if rc <= 1 else 'more'}); training wall "
            f"{f['train_wall_s_to_target_mean']:.1f} s vs {g['train_wall_s_to_target_mean']:.1f} s"
            + (f" → ratio {rw:.3f}" if rw is not None else ""))
    rule = (f"absolute target {plan.explicit_target:g}" if plan.explicit_target is not None
            else "target = 99% of FFT's best score in the same cell")
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
    ev = [f"drop = final score at {'IID' if mild == IID else 'alpha=' + mild} minus at alpha={skewed} "
          "(positive = loses score under heterogeneity)"]
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
             "mean final test score (the task's main metric) over seeds (see summary.md for best scores and spreads). "
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
