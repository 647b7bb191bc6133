"""The FeDeRA paper's claims, checked seed by seed against a comparison (``claims.md``).

Every verdict follows one rule (:mod:`federa.compare.stats`): the per-seed difference between two
methods on the same cell (same partition, same seed) gets a 95% t-interval (Bonferroni-corrected
over the looks of a sequential plan); **supported** when the interval lies wholly on the claimed
side, **refuted** when wholly on the other, **equivalent** when it straddles the boundary but lies
inside the band ``±plan.margin`` (what that means is the claim's: "matches FFT" is supported, "beats
LoRA" refuted), otherwise **inconclusive** (printed with its interval and a sample-size line).

Across settings (alphas, baselines): settings where neither compared method learned are
*undecidable* at this budget and left out (named on the page); of the rest, the claim is supported
or refuted only when every one agrees, **mixed** when they disagree outright, **inconclusive** when
any is open. Accuracy is the mean of each run's last ``plan.last_k`` evaluations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from federa.compare.plan import DEFAULT_MARGIN, IID, Plan, heterogeneity_order
from federa.compare.seeds import SeedResult
from federa.compare.sequential import sample_size_line
from federa.compare.stats import UNDECIDABLE, Verdict, combine, paired_verdict
from federa.compare.tables import CellResult, _index

# Claim 2 ("matches FFT"): FeDeRA's accuracy at most this far below FFT's.
MATCH_TOLERANCE = DEFAULT_MARGIN  # the default equivalence band; a plan's own is plan.margin
# Claim 3: the paper reports >90% less training time to FFT's accuracy.
TIME_REDUCTION_CLAIM = 0.90
# A method "learned" in a setting when its final-k score beats both its own untrained start (round 0)
# and the label prior (the best constant prediction) by more than this, by the paired rule over seeds.
# Where neither of two compared methods learned, their difference is noise around the starting point:
# the setting is undecidable at this budget, whatever the interval of the difference says.
LEARN_MARGIN = 0.02
# Claim 5's equivalence band on the mean cosine between consecutive updates (a scale of -1..1, not a score).
COSINE_MARGIN = 0.02


@dataclass
class Comparison:
    """One interval a claim reads (one alpha, one pair of methods): what the sequential plan and the
    sample-size lines look at."""

    alpha: str
    what: str
    verdict: Verdict
    decided: str  # the claim's reading: supported | refuted | inconclusive | undecidable

    @property
    def open(self) -> bool:
        return self.decided == "inconclusive" and self.verdict.interval is not None


@dataclass
class Claim:
    title: str
    verdict: str  # supported | refuted | mixed | inconclusive
    evidence: list[str]
    comparisons: list[Comparison] = field(default_factory=list)


def _judge(plan: Plan, cells: Sequence[CellResult], alpha: str, what: str, diffs: Sequence[float], side: str,
           boundary: float, gate: Sequence[str], margin: float | None = None,
           if_equivalent: str = "inconclusive", spec: str = "+.4f") -> tuple[Comparison, str] | None:
    """One comparison read by the paired rule at the plan's confidence, gated on learning, with a
    sample-size line when it stays open: (comparison, evidence line), or None without any seed."""
    v = paired_verdict(diffs, side, boundary, plan.confidence, margin, if_equivalent)
    if v.interval is None:
        return None
    decided, note = _gated(v, cells, alpha, gate)
    comp = Comparison(alpha, what, v, decided)
    line = f"{what}: {v.text(spec)}{note}"
    if comp.open:
        line += "; open: " + sample_size_line(v.diffs, boundary, margin, plan.confidence)
    return comp, line


def _peft(plan: Plan) -> list[str]:
    return [m for m in plan.methods if m not in ("fft", "federa")]


def _pairs(cells: Sequence[CellResult], alpha: str, a: str, b: str) -> list[tuple[SeedResult, SeedResult]]:
    """(a's, b's) result of every seed of ``alpha`` where both methods ran."""
    return [(c.seeds[a], c.seeds[b]) for c in cells if c.alpha == alpha and a in c.seeds and b in c.seeds]


def _diffs(cells: Sequence[CellResult], alpha: str, a: str, b: str,
           value: Callable[[SeedResult], float | None]) -> list[float]:
    return [va - vb for x, y in _pairs(cells, alpha, a, b) if (va := value(x)) is not None
            and (vb := value(y)) is not None]


def _final_k(s: SeedResult) -> float | None:
    return s.final_k


def learned(cells: Sequence[CellResult], alpha: str, method: str) -> Verdict:
    """Did ``method`` learn at ``alpha``: per seed, final-k minus the better of its round-0 score and the
    label prior (:attr:`SeedResult.gain`), above LEARN_MARGIN."""
    gains = [c.seeds[method].gain for c in cells if c.alpha == alpha and method in c.seeds]
    return paired_verdict([g for g in gains if g is not None], ">", LEARN_MARGIN)


def learning(plan: Plan, cells: Sequence[CellResult]) -> dict[str, dict[str, Verdict]]:
    """alpha → method → whether it learned (only where some seed finished)."""
    out: dict[str, dict[str, Verdict]] = {}
    for a in heterogeneity_order(plan.alphas):
        for m in plan.methods:
            v = learned(cells, a, m)
            if v.interval is not None:
                out.setdefault(a, {})[m] = v
    return out


def _gated(v: Verdict, cells: Sequence[CellResult], alpha: str, methods: Sequence[str]) -> tuple[str, str]:
    """(verdict, note): ``v``'s verdict, or undecidable when none of ``methods`` learned at ``alpha``
    (left out of the claim's combined verdict; unknown is not "did not learn": runs without a round-0
    evaluation are not gated)."""
    checks = [learned(cells, alpha, m) for m in methods]
    if any(c.interval is None or c.verdict == "supported" for c in checks):
        return v.verdict, ""
    who = "neither method learned" if len(methods) > 1 else f"{methods[0]} did not learn"
    return UNDECIDABLE, (f"; but {who} here (see 'Did the runs learn?'), so → {UNDECIDABLE} at this budget "
                         "(left out of the claim's verdict)")


def claim_noniid(plan: Plan, cells: Sequence[CellResult]) -> Claim:
    title = "FeDeRA beats LoRA and the other PEFT baselines when client data are non-IID"
    alphas = [a for a in heterogeneity_order(plan.alphas) if a != IID]
    others = _peft(plan)
    if "federa" not in plan.methods or not others or not alphas:
        return Claim(title, "inconclusive", ["needs federa, at least one other PEFT method and a numeric alpha."])
    comps, ev = [], []
    for a in alphas:
        for m in others:
            got = _judge(plan, cells, a, f"alpha={a}: FeDeRA − {m}, final-{plan.last_k} score per seed",
                         _diffs(cells, a, "federa", m, _final_k), ">", 0.0, ("federa", m), plan.margin, "refuted")
            if got:
                comps.append(got[0])
                ev.append(got[1])
    if comps:
        ev.append(f"equivalent (interval inside ±{plan.margin:g}) refutes 'beats'.")
    return Claim(title, combine([c.decided for c in comps]), ev or ["no finished cells to compare."], comps)


def claim_matches_fft(plan: Plan, cells: Sequence[CellResult], rows: Sequence[Mapping[str, Any]]) -> Claim:
    title = "FeDeRA matches or beats FFT with ~1% of FFT's trainable parameters"
    if not {"federa", "fft"} <= set(plan.methods):
        return Claim(title, "inconclusive", ["needs both fft and federa in --methods."])
    comps, ev = [], []
    for a in heterogeneity_order(plan.alphas):
        got = _judge(plan, cells, a, f"alpha={a}: FeDeRA − FFT, final-{plan.last_k} score per seed",
                     _diffs(cells, a, "federa", "fft", _final_k), ">", -plan.margin, ("federa", "fft"), plan.margin,
                     "supported")
        if got:
            comps.append(got[0])
            ev.append(got[1])
    f_any = next((r for r in rows if r["method"] == "federa" and r["trainable_params"]), None)
    g_any = next((r for r in rows if r["method"] == "fft" and r["trainable_params"]), None)
    if f_any and g_any:
        ev.append(f"trainable parameters: FeDeRA {f_any['trainable_params']:,} = "
                  f"{100 * f_any['trainable_params'] / g_any['trainable_params']:.2f}% of FFT's "
                  f"{g_any['trainable_params']:,} ({f_any['trainable_pct']:.3f}% of the model)")
    ev.append(f"'matches' = the interval of FeDeRA − FFT lies above −{plan.margin:g} (the equivalence band; "
              "inside ±band → equivalent → supported).")
    return Claim(title, combine([c.decided for c in comps]), ev, comps)


def _time_verdict(pairs: Sequence[tuple[SeedResult, SeedResult]], attr: str,
                  confidence: float = 0.95) -> tuple[Verdict | None, int, int]:
    """Verdict on log(FeDeRA's time / FFT's) < log(1 − claim), over the seeds where FFT reached its
    target; returns (verdict, seeds where FeDeRA reached, seeds where FFT reached)."""
    usable = [(f, g) for f, g in pairs if getattr(g, attr) is not None and getattr(g, attr) > 0]
    logs = [math.log(getattr(f, attr) / getattr(g, attr)) for f, g in usable if getattr(f, attr) is not None]
    if not logs:
        return None, 0, len(usable)
    return paired_verdict(logs, "<", math.log(1 - TIME_REDUCTION_CLAIM), confidence), len(logs), len(usable)


def claim_time(plan: Plan, cells: Sequence[CellResult]) -> Claim:
    title = f"FeDeRA reaches FFT's accuracy with >{TIME_REDUCTION_CLAIM:.0%} less training time"
    if not {"federa", "fft"} <= set(plan.methods):
        return Claim(title, "inconclusive", ["needs both fft and federa in --methods."])
    verdicts, ev, comps = [], [], []
    for a in heterogeneity_order(plan.alphas):
        pairs = _pairs(cells, a, "federa", "fft")
        if not pairs:
            continue
        v, reached, usable = _time_verdict(pairs, "modelled_s_to_target", plan.confidence)
        fft_learned = learned(cells, a, "fft")
        if plan.explicit_target is None and usable and fft_learned.interval is not None \
                and fft_learned.verdict != "supported":
            verdicts.append(UNDECIDABLE)
            ev.append(f"alpha={a}: FFT did not learn here (see 'Did the runs learn?'): a target read off its "
                      f"curve is the untrained score, so time to it says nothing → {UNDECIDABLE} at this budget.")
            continue
        if usable == 0:
            ev.append(f"alpha={a}: FFT reached no target after training began in any seed; nothing to compare.")
            continue
        if v is None:
            # Missing the target on every seed refutes it, but one seed is no more evidence here than elsewhere.
            verdict = "refuted" if usable >= 2 else "inconclusive"
            verdicts.append(verdict)
            ev.append(f"alpha={a}: FeDeRA never reached the target in the {usable} seed(s) where FFT did → {verdict}.")
            continue
        verdict = v.verdict if reached == usable or v.verdict == "refuted" else "inconclusive"
        verdicts.append(verdict)
        comps.append(Comparison(a, f"alpha={a}: log modelled time to target, FeDeRA ÷ FFT", v, verdict))
        iv = v.interval
        ratio = (f"geometric-mean ratio {math.exp(iv.mean):.3f}"
                 + (f" [{math.exp(iv.lo):.3f}, {math.exp(iv.hi):.3f}]" if iv.lo is not None else ""))
        others = []
        for attr, name in (("compute_s_to_target", "client compute"), ("wall_s_to_target", "measured wall")):
            w, _, _ = _time_verdict(pairs, attr, plan.confidence)
            if w is not None:
                others.append(f"{name} ratio {math.exp(w.interval.mean):.3f}")
        ev.append(f"alpha={a}: modelled time to target, FeDeRA ÷ FFT: {ratio} over {reached}/{usable} seed(s) "
                  f"(claim: < {1 - TIME_REDUCTION_CLAIM:.2f}) → {verdict}"
                  + (f"; FeDeRA missed the target in {usable - reached} seed(s)" if reached < usable else "")
                  + (f"; beside it: {', '.join(others)}" if others else "")
                  + ("; open: " + sample_size_line(v.diffs, v.boundary, None, plan.confidence)
                     if verdict == "inconclusive" and reached == usable else ""))
    rule = (f"absolute target {plan.explicit_target:g}" if plan.explicit_target is not None
            else "target = 99% of FFT's score at convergence in the same cell (see summary.md)")
    ev.append(f"{rule}; judged on modelled time under {plan.base.network.describe()}; the interval is over per-seed "
              "log ratios.")
    return Claim(title, combine(verdicts), ev, comps)


def claim_robustness(plan: Plan, cells: Sequence[CellResult]) -> Claim:
    title = "PEFT methods lose accuracy as heterogeneity grows, FeDeRA the least"
    order = heterogeneity_order(plan.alphas)
    peft = [m for m in plan.methods if m != "fft"]
    if len(order) < 2 or "federa" not in peft or len(peft) < 2:
        return Claim(title, "inconclusive", ["needs two heterogeneity levels, federa and another PEFT method."])
    skewed, mild = order[0], order[-1]

    def drops(m: str) -> dict[int, float]:
        lo = {c.seed: c.seeds[m].final_k for c in cells if c.alpha == skewed and m in c.seeds}
        hi = {c.seed: c.seeds[m].final_k for c in cells if c.alpha == mild and m in c.seeds}
        return {s: hi[s] - lo[s] for s in lo.keys() & hi.keys() if lo[s] is not None and hi[s] is not None}

    where = "IID" if mild == IID else f"alpha={mild}"
    ev = [f"drop = final-{plan.last_k} score at {where} minus at alpha={skewed}, same seed (positive = loses)"]
    comps = []
    d = {m: drops(m) for m in peft}
    # A drop from the mildest setting means something only where the method learned there. Equivalent
    # (inside the band) refutes both "loses" and "loses less".
    for m in peft:
        got = _judge(plan, cells, mild, f"{m} loses accuracy: drop", list(d[m].values()), ">", 0.0, (m,),
                     plan.margin, "refuted")
        if got:
            comps.append(got[0])
            ev.append(got[1])
    for m in peft:
        if m == "federa":
            continue
        seeds = sorted(d[m].keys() & d["federa"].keys())
        got = _judge(plan, cells, mild, f"FeDeRA loses less than {m}: {m}'s drop − FeDeRA's",
                     [d[m][s] - d["federa"][s] for s in seeds], ">", 0.0, ("federa", m), plan.margin, "refuted")
        if got:
            comps.append(got[0])
            ev.append(got[1])
    # The sequential plan adds seeds per alpha: a drop reads two alphas, so both are this claim's.
    comps += [Comparison(skewed, c.what, c.verdict, c.decided) for c in list(comps)]
    return Claim(title, combine([c.decided for c in comps]), ev, comps)


def claim_oscillation(plan: Plan, cells: Sequence[CellResult]) -> Claim:
    title = "FeDeRA's global weights oscillate less across rounds than LoRA's"
    others = _peft(plan)
    if "federa" not in plan.methods or not others:
        return Claim(title, "inconclusive", ["needs federa and another PEFT method."])
    comps, ev = [], []
    for a in heterogeneity_order(plan.alphas):
        for m in others:
            got = _judge(plan, cells, a, f"alpha={a}: FeDeRA − {m}, mean cosine between consecutive global "
                         "updates per seed", _diffs(cells, a, "federa", m, lambda s: s.update_cos_mean), ">", 0.0,
                         ("federa", m), COSINE_MARGIN, "refuted", "+.3f")
            if not got:
                continue
            comps.append(got[0])
            norms = {x: [c.seeds[x].update_norm_mean for c in cells if c.alpha == a and x in c.seeds]
                     for x in ("federa", m)}
            norm_text = ", ".join(f"{x} {sum(n) / len(n):.3g}" for x, n in norms.items() if n and None not in n)
            ev.append(got[1] + (f"; mean update norm {norm_text}" if norm_text else ""))
    ev.append("an update is one round's change of the global trainable state; oscillating less = a higher cosine "
              "between consecutive updates (plots/update_cos_a<alpha>.png). Norms differ in scale between "
              f"parameterisations and are shown, not judged. Equivalence band ±{COSINE_MARGIN:g} of cosine: "
              "equivalent refutes 'less'.")
    return Claim(title, combine([c.decided for c in comps]), ev, comps)


def check_claims(plan: Plan, rows: Sequence[Mapping[str, Any]], cells: Sequence[CellResult]) -> list[Claim]:
    return [claim_noniid(plan, cells), claim_matches_fft(plan, cells, rows), claim_time(plan, cells),
            claim_robustness(plan, cells), claim_oscillation(plan, cells)]


def claims_markdown(plan: Plan, claims: Sequence[Claim],
                    learnt: Mapping[str, Mapping[str, Verdict]] | None = None) -> str:
    n = len(plan.seeds)
    conf = (f"{plan.confidence:.2%} t-interval (95% Bonferroni-corrected over {len(plan.looks)} pre-registered looks "
            f"at {', '.join(map(str, plan.looks))} seeds per alpha)" if plan.looks else "95% t-interval")
    seeds_text = (f"seeds added per alpha in looks of {', '.join(map(str, plan.looks))} while a comparison there is "
                  "open" if plan.looks else f"{n} seed(s)")
    lines = ["# The FeDeRA paper's claims, checked against this run", "",
             f"Methods {', '.join(plan.methods)}; alphas {', '.join(plan.alphas)}; {seeds_text}. Each comparison "
             f"reads the {conf} of per-seed paired differences (same partition, same seed; `n=` is the seeds it "
             "used): **supported** when it lies wholly on the claimed side, **refuted** when wholly on the other, "
             f"**equivalent** when it straddles the boundary but lies inside the band ±{plan.margin:g} of the main "
             f"metric (±{COSINE_MARGIN:g} of cosine for claim 5): each claim states what equivalence means for it; "
             "**inconclusive** otherwise, with a sample-size line (the seeds at which an interval at the observed "
             "SD would close). A claim combines its settings: settings where neither compared method learned are "
             "undecidable at this budget and left out; of the rest, supported or refuted only when all agree, "
             "mixed when they disagree, inconclusive when any is open. Accuracy = mean of each run's last "
             f"{plan.last_k} evaluations (final-{plan.last_k}); summary.md also shows the last evaluation alone."
             + (" With one seed no interval exists: every verdict is inconclusive." if n < 2 else ""), ""]
    if learnt:
        lines += ["## Did the runs learn?", "",
                  f"Final-{plan.last_k} score minus the better of the same run's score before training (round 0) "
                  "and the best constant prediction's on the test split (the label prior), per seed; "
                  f"'learned' = supported above +{LEARN_MARGIN:g}. A comparison where neither method learned is "
                  "noise around the starting point: the setting is undecidable at this budget, whatever its "
                  "interval says, and left out of the claim's verdict.", ""]
        lines += [f"- alpha={a}: {m}: {v.text()}" for a, per in learnt.items() for m, v in per.items()] + [""]
    for i, c in enumerate(claims, 1):
        lines += [f"## Claim {i}: {c.title}", "", f"**Verdict: {c.verdict}**", ""]
        lines += [f"- {e}" for e in c.evidence] + [""]
    return "\n".join(lines)


def headline(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The benchmark's numbers: time ratios, accuracy gaps per alpha, trainable % per method."""
    ix = _index(rows)
    alphas = sorted({r["alpha"] for r in rows}, key=lambda a: (a == IID, float(a) if a != IID else 0.0))
    out: dict[str, Any] = {"trainable_pct": {r["method"]: r["trainable_pct"] for r in rows}}

    def gap(f: Mapping[str, Any] | None, other: str, a: str) -> float | None:
        o = ix.get((other, a))
        if not f or not o or f.get("final_k_score_mean") is None or o.get("final_k_score_mean") is None:
            return None
        return f["final_k_score_mean"] - o["final_k_score_mean"]

    for a in alphas:
        f = ix.get(("federa", a))
        out[f"alpha={a}"] = {
            "federa_minus_lora": gap(f, "lora", a),
            "federa_minus_fft": gap(f, "fft", a),
            "federa_over_fft_compute_to_target": f["client_compute_to_target_vs_fft"] if f else None,
            "federa_over_fft_wall_to_target": f["train_wall_to_target_vs_fft"] if f else None,
            "federa_over_fft_modelled_to_target": f.get("modelled_to_target_vs_fft") if f else None,
            "federa_reached": f["reached"] if f else None,
        }
    return out
