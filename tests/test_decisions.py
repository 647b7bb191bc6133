"""Claims that decide, on made-up seeds: the one-SE lr rule (ties decide nothing), the equivalence
outcome, the sequential plan's corrected interval and the sample-size line."""

from __future__ import annotations

import json
import math

import pytest

from federa.compare.lr_grid import LEGACY_LR_RULE, LR_RULE, LrChoice, one_se_choice, recorded_rule
from federa.compare.sequential import (
    fixed_n, half_width, look_confidence, next_look, parse_looks, sample_size_line, seeds_to_close,
)
from federa.compare.stats import paired_verdict
from federa.errors import ConfigError

# -- the lr rule -------------------------------------------------------------------------


def test_one_se_rule_keeps_the_default_on_a_two_row_gap():
    # Today's flip: ×3 ahead of ×1 by 2 rows out of 299 on one seed, behind on the other.
    rows = 299
    scores = {0.3: [0.900, 0.903], 1.0: [0.930, 0.933], 3.0: [0.9365, 0.9298]}
    c = one_se_choice(scores, val_rows=rows, prior=0.23)
    assert c.chosen == 1.0 and c.status == "default kept"
    # gains of ×3: +0.0065, −0.0032 → mean +0.00165; SE over seeds 0.00485, binomial floor
    # √(2·(0.93·0.07·2)/299)/2 ≈ 0.0148 (per seed √(2·0.93·0.07/299) = 0.0209; over two seeds ÷√2).
    assert c.diffs[3.0] == pytest.approx(0.00165, abs=1e-6)
    assert c.se[3.0] == pytest.approx(0.0148, abs=5e-4)
    # The legacy rule (best single score of the first seed) would have taken ×3.
    assert max(scores, key=lambda m: scores[m][0]) == 3.0


def test_one_se_rule_takes_a_rate_that_clearly_wins():
    scores = {0.3: [0.60, 0.62], 1.0: [0.70, 0.71], 3.0: [0.85, 0.88]}
    c = one_se_choice(scores, val_rows=300, prior=0.23)
    # gain +0.16 ± max(0.01/√2·… , binomial ≈ 0.031): clears it.
    assert c.chosen == 3.0 and c.status == "tuned" and c.diffs[3.0] == pytest.approx(0.16)
    assert c.se[3.0] < 0.16
    # Without the binomial floor, the SE is the seeds' own: SD of (0.15, 0.17) / √2 = 0.01.
    bare = one_se_choice(scores)
    assert bare.se[3.0] == pytest.approx(0.01, abs=1e-9) and bare.chosen == 3.0


def test_a_grid_where_every_rate_sits_at_the_label_prior_decides_nothing():
    prior = 0.2244  # the validation rows' majority class share (BBC News at alpha=0.1 today)
    scores = {0.3: [0.2244, 0.2244], 1.0: [0.2244, 0.2244], 3.0: [0.2244, 0.2310]}
    c = one_se_choice(scores, val_rows=303, prior=prior)
    assert c.status == "decides nothing" and c.chosen == 1.0
    # Exact ties with no prior known (a regression metric) decide nothing too.
    tie = one_se_choice({0.3: [0.5, 0.5], 1.0: [0.5, 0.5], 3.0: [0.5, 0.5]})
    assert tie.status == "decides nothing" and tie.chosen == 1.0
    # One rate learned well above the prior: the grid decides.
    learned = one_se_choice({0.3: [0.2244, 0.2244], 1.0: [0.2244, 0.2244], 3.0: [0.56, 0.60]}, 1.0, 303, prior)
    assert learned.status == "tuned" and learned.chosen == 3.0


def test_one_seed_never_tunes_and_failed_rates_are_left_out():
    one = one_se_choice({0.3: [0.5], 1.0: [0.6], 3.0: [0.9]})
    assert one.chosen == 1.0 and one.status == "default kept" and math.isinf(one.se[3.0])
    failed_default = one_se_choice({0.3: [0.5, 0.52], 1.0: [None, None], 3.0: [0.7, 0.72]})
    assert failed_default.chosen == 3.0 and failed_default.status == "tuned"
    assert one_se_choice({1.0: [None, None]}).status == "every rate failed"
    c = one_se_choice({0.3: [0.60, 0.62], 1.0: [0.70, 0.71], 3.0: [0.85, 0.88]}, val_rows=300, prior=0.2)
    assert LrChoice.from_dict(json.loads(json.dumps(c.as_dict()))) == c


def test_a_folder_made_by_the_old_rule_reads_back_under_it(tmp_path):
    assert recorded_rule(tmp_path) == LR_RULE  # a new folder
    (tmp_path / "compare.json").write_text(json.dumps({"lr_grid": True}))  # written before the rule was recorded
    assert recorded_rule(tmp_path) == LEGACY_LR_RULE
    (tmp_path / "compare.json").write_text(json.dumps({"lr_grid": True, "lr_rule": LR_RULE}))
    assert recorded_rule(tmp_path) == LR_RULE
    # Re-running the comparison rewrites compare.json: a folder begun under the old rule keeps it.
    from federa.compare import Plan
    from federa.compare import execute as run
    from federa.config import build_config

    old = tmp_path / "old"
    old.mkdir()
    (old / "compare.json").write_text(json.dumps({"lr_grid": True}))
    plan = Plan(base=build_config({}), methods=("lora",), alphas=("iid",), seeds=(0, 1), out=old, lr_grid=True)
    run._write_compare_json(plan, {})
    info = json.loads((old / "compare.json").read_text())
    assert info["lr_rule"] == LEGACY_LR_RULE and "first seed" in info["lr_grid_settings"]["scope"]
    new = tmp_path / "new"
    new.mkdir()
    run._write_compare_json(Plan(base=build_config({}), methods=("lora",), alphas=("iid",), seeds=(0, 1), out=new,
                                 lr_grid=True), {})
    assert json.loads((new / "compare.json").read_text())["lr_rule"] == LR_RULE


# -- equivalence -------------------------------------------------------------------------


def test_an_interval_inside_the_band_is_equivalent_and_each_claim_reads_it():
    diffs = [0.002, -0.001, 0.0005, 0.001, -0.0015]  # mean +0.0002, SD 0.00144 → 95% CI ±0.00179
    beats = paired_verdict(diffs, ">", 0.0, margin=0.01, if_equivalent="refuted")
    assert beats.equivalent and beats.outcome == "equivalent" and beats.verdict == "refuted"
    assert beats.interval.lo == pytest.approx(0.0002 - 0.00179, abs=2e-5)
    assert "inside ±0.01 → equivalent → refuted" in beats.text()
    matches = paired_verdict(diffs, ">", -0.01, margin=0.01, if_equivalent="supported")
    assert matches.verdict == "supported"  # wholly above −0.01: supported by the one-sided reading already
    # Wider than the band: open.
    wide = paired_verdict([0.03, -0.03, 0.0], ">", 0.0, margin=0.01, if_equivalent="refuted")
    assert wide.verdict == "inconclusive" and not wide.equivalent
    # A real, small gain inside the band is "supported", not "equivalent": the one-sided reading comes first.
    small = paired_verdict([0.004, 0.005, 0.006], ">", 0.0, margin=0.01, if_equivalent="refuted")
    assert small.verdict == "supported" and not small.equivalent


# -- sequential plan and sample size ------------------------------------------------------


def test_bonferroni_over_looks_and_parsing():
    assert look_confidence(1) == pytest.approx(0.95)
    assert look_confidence(3) == pytest.approx(1 - 0.05 / 3)
    assert parse_looks("3,5,8") == (3, 5, 8)
    for bad in ("1,3", "5,3", "x", ""):
        with pytest.raises(ConfigError, match="--looks"):
            parse_looks(bad)
    assert next_look(3, (3, 5, 8)) == 5 and next_look(8, (3, 5, 8)) is None and next_look(0, (3, 5)) == 3
    # The corrected interval is wider: t(1 − 0.05/6, 4) · 1/√5 vs t(0.975, 4) · 1/√5.
    assert half_width(1.0, 5, look_confidence(3)) == pytest.approx(3.9608 / math.sqrt(5), abs=1e-3)
    assert half_width(1.0, 5, 0.95) == pytest.approx(2.7764 / math.sqrt(5), abs=1e-4)


def test_sample_size_line_at_the_observed_sd():
    # FeDeRA − LoRA at alpha=0.5 on BBC News (claims-steps10): +0.0337, SD ≈ 0.0186 over 3 seeds.
    diffs = [0.0337 + 0.0186, 0.0337, 0.0337 - 0.0186]
    # Smallest n with t(0.975, n−1)·0.0186/√n < 0.0337: n = 4 (3.182·0.0186/2 = 0.0296; n = 3: 0.0462).
    assert seeds_to_close(diffs, 0.0) == 4
    assert sample_size_line(diffs, 0.0).startswith("≈1 more seed(s) (n≈4) would close it at the observed SD 0.0186")
    # Under a three-look plan the interval is wider: n = 5 (t(0.99167, 4) = 3.961 → 0.0330 < 0.0337).
    assert seeds_to_close(diffs, 0.0, confidence=look_confidence(3)) == 5
    # On the boundary: not closable by the boundary, but the band closes it at n where hw < 0.01.
    flat = [0.01, -0.01, 0.0]
    # n = 7: t(0.975, 6)·0.01/√7 = 0.00925 < 0.01; n = 6: 2.571·0.01/√6 = 0.0105.
    assert seeds_to_close(flat, 0.0, margin=0.01) == 7
    assert seeds_to_close(flat, 0.0) is None
    assert "not closable within 200 seeds" in sample_size_line(flat, 0.0)
    assert "needs a second seed" in sample_size_line([0.1], 0.0)
    # The fixed-n rule behind a profile's seed count: SD 0.0186, gap 0.02 → n = 6 (2.571·0.0186/√6 = 0.0195;
    # n = 5: 2.776·0.0186/√5 = 0.0231).
    assert fixed_n(0.0186, 0.02) == 6


def _result(method: str, alpha: str, seed: int, acc: float, cos: float):
    from federa.compare import SeedResult

    return SeedResult(method=method, alpha=alpha, seed=seed, status="done", final=acc, final_k=acc, best=acc,
                      target=0.5, round_to_target=3, compute_s_to_target=10.0, wall_s_to_target=10.0,
                      modelled_s_to_target=10.0, modelled_s_total=10.0, update_cos_mean=cos, update_norm_mean=1.0)


def test_sequential_plan_adds_seeds_only_where_a_comparison_is_open(monkeypatch, tmp_path):
    from federa.compare import CellResult, Plan
    from federa.compare import execute as run
    from federa.compare import tables
    from federa.config import build_config

    plan = Plan(base=build_config({}), methods=("lora", "federa"), alphas=("0.5", "iid"), seeds=tuple(range(8)),
                out=tmp_path, looks=(3, 5, 8))
    assert plan.confidence == pytest.approx(1 - 0.05 / 3)
    ran: list[tuple[str, int]] = []
    wobble = [0.05, -0.05, 0.0, 0.05, -0.05, 0.0, 0.05, -0.05]  # FeDeRA − LoRA cosine at IID: never decided

    def fake_cells(_plan):
        out = []
        for a, s in ran:
            c = CellResult(a, s, [], {"target_score": 0.5, "methods": {}})
            if a == "0.5":  # FeDeRA 5 points ahead and steadier on every seed: decided at the first look
                c.seeds = {"lora": _result("lora", a, s, 0.80, 0.1), "federa": _result("federa", a, s, 0.85, 0.6)}
            else:
                c.seeds = {"lora": _result("lora", a, s, 0.90, 0.3),
                           "federa": _result("federa", a, s, 0.90, 0.3 + wobble[s])}
            out.append(c)
        return out

    monkeypatch.setattr(tables, "load_cells", fake_cells)
    monkeypatch.setattr(tables, "summary_rows", lambda *_: [])
    logs: list[str] = []
    run._run_sequential(plan, lambda cells: ran.extend((c.alpha, c.seed) for c in cells), logs.append)
    assert [s for a, s in ran if a == "0.5"] == [0, 1, 2]  # decided at look 1: no more seeds
    assert [s for a, s in ran if a == "iid"] == list(range(8))  # open at every look: up to the stated maximum
    assert logs[0] == "look 1/3 at 3 seeds: decided at alpha 0.5; open at alpha iid"
    assert logs[-1] == "look 3/3 at 8 seeds: open at alpha iid"

    # Read back only (the plan stopped for time after look 1): nothing runs, look 2's seeds are not on disk,
    # so the reading stops at look 1, at the registered confidence.
    ran[:] = [(a, s) for a in ("0.5", "iid") for s in range(3)]
    before, logs[:] = list(ran), []
    stopped = Plan(base=build_config({}), methods=("lora", "federa"), alphas=("0.5", "iid"), seeds=tuple(range(8)),
                   out=tmp_path, looks=(3, 5, 8), read_only=True)
    run._run_sequential(stopped, lambda cells: None if stopped.read_only else ran.extend(cells), logs.append)
    assert ran == before and stopped.confidence == plan.confidence
    assert logs == ["look 1/3 at 3 seeds: decided at alpha 0.5; open at alpha iid",
                    "look 2/3 at 5 seeds: not taken (read back only)"]


def test_evaluation_reads_a_fixed_stratified_subset_except_the_final_k():
    import numpy as np

    from federa.config import build_config
    from federa.eval_split import eval_rounds, stratified_subset, whole_split_at

    cfg = build_config({}, ["rounds=10", "eval_every=2", "eval_subset=100", "eval_full_last=3"])
    assert eval_rounds(10, 2) == [0, 2, 4, 6, 8, 10] and eval_rounds(5, 2) == [0, 2, 4, 5]
    assert [r for r in eval_rounds(10, 2) if whole_split_at(cfg, r)] == [6, 8, 10]
    assert all(whole_split_at(build_config({}, ["rounds=10"]), r) for r in range(11))  # no subset: always whole
    labels = np.array([0] * 300 + [1] * 100 + [2] * 45)  # 445 rows, BBC-sized
    idx = stratified_subset(labels, 100, len(labels), seed=0)
    # 100 × (300, 100, 45)/445 = 67.4, 22.5, 10.1 → floors 67, 22, 10 (99), the largest remainder (0.47) gets one.
    assert len(idx) == 100 and np.bincount(labels[idx]).tolist() == [67, 23, 10]
    assert (idx == stratified_subset(labels, 100, len(labels), seed=0)).all()  # the same rows every evaluation
    assert len(set(idx.tolist())) == 100


def test_curves_show_each_seed_under_the_mean(tmp_path, monkeypatch):
    import matplotlib.axes

    from federa.compare import CellResult
    from federa.compare.plots import plot_seed_curves

    finals = [0.1, 0.5, 0.9]  # FFT at alpha=0.1 today: the mean hides a ±0.46 spread
    cells = [CellResult("0.1", s, [{"method": "fft", "round": r, "score": 0.2 + (f - 0.2) * r / 4} for r in range(5)],
                        {"target_score": None, "methods": {}}) for s, f in enumerate(finals)]
    drawn: list[tuple[list, list, float]] = []
    real = matplotlib.axes.Axes.plot

    def spy(self, *args, **kw):
        drawn.append((list(args[0]), list(args[1]), kw.get("linewidth")))
        return real(self, *args, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    plot_seed_curves(cells, ["fft"], tmp_path / "c.png", "t", None, "accuracy")
    assert (tmp_path / "c.png").is_file()
    thin = [ys for _, ys, lw in drawn if lw == 0.8]
    thick = [ys for _, ys, lw in drawn if lw == 2]
    assert [ys[-1] for ys in thin] == pytest.approx(finals)  # one thin line per seed, ending at its final score
    assert len(thick) == 1 and thick[0][-1] == pytest.approx(0.5)  # the mean
