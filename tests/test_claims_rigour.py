"""Claims that hold up: t-intervals over seeds, the paired verdict rule, the convergence target,
the network model, partition remedies, un-partitionable seeds, and an lr grid blind to the test set."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset

from federa import compare
from federa.compare import CellResult, Plan, SeedResult
from federa.config import build_config
from federa.errors import ConfigError, DataError
from federa.modelled_time import (
    Link, NetworkSettings, cumulative_modelled_s, record_round_s, round_time_s, speed_factors,
)
from federa.partition import make_partitioner, partition_with_draw, shard_summary

TINY = ["num_clients=4", "clients_per_round=2", "local_steps=1", "batch_size=8", "max_length=32", "lora.r=4",
        "eval_batch_size=64", "model.num_threads=1"]


@pytest.fixture(autouse=True, scope="module")
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


# -- statistics -------------------------------------------------------------------------


def test_t_interval_on_hand_numbers():
    # [1, 2, 3]: mean 2, s = 1, t(0.975, 2) = 4.302653 (tables) → half-width 4.302653 / √3 = 2.484138.
    iv = compare.t_interval([1.0, 2.0, 3.0])
    assert iv.mean == 2.0 and iv.n == 3
    assert iv.half_width == pytest.approx(2.484138, abs=1e-6)
    assert (iv.lo, iv.hi) == pytest.approx((2 - 2.484138, 2 + 2.484138), abs=1e-6)
    # [0.10, 0.20]: s = 0.0707107, t(0.975, 1) = 12.706205 → half-width 12.706205 · 0.0707107 / √2 = 0.635310.
    assert compare.t_interval([0.10, 0.20]).half_width == pytest.approx(0.635310, abs=1e-6)
    one = compare.t_interval([0.7])
    assert one.mean == 0.7 and one.lo is None and one.half_width is None
    assert compare.t_interval([]) is None and compare.t_interval([None, 4.0]).n == 1
    assert compare.last_k_mean([0.1, 0.5, 0.6, 0.7], 3) == pytest.approx(0.6)
    assert compare.last_k_mean([0.4], 3) == 0.4


def test_paired_verdict_rule():
    assert compare.paired_verdict([0.05, 0.06, 0.04], ">").verdict == "supported"  # CI [0.025, 0.075]
    assert compare.paired_verdict([-0.05, -0.06, -0.04], ">").verdict == "refuted"
    v = compare.paired_verdict([0.05, -0.04, 0.02], ">")
    assert v.verdict == "inconclusive" and v.interval.lo < 0 < v.interval.hi
    assert "[" in v.text() and "inconclusive" in v.text()
    assert compare.paired_verdict([0.3], ">").verdict == "inconclusive"  # one seed: no interval
    # A boundary other than 0, on the "<" side: per-seed values below 0.1.
    assert compare.paired_verdict([0.05, 0.06, 0.04], "<", 0.1).verdict == "supported"
    assert compare.paired_verdict([0.15, 0.16, 0.14], "<", 0.1).verdict == "refuted"
    assert compare.combine(["supported", "supported"]) == "supported"
    assert compare.combine(["supported", "refuted"]) == "mixed"
    assert compare.combine(["supported", "inconclusive"]) == "inconclusive"


def _seed(method: str, alpha: str, seed: int, acc: float, modelled: float | None = 100.0, cos: float = 0.5,
          start: float | None = None):
    return SeedResult(method=method, alpha=alpha, seed=seed, status="done", final=acc, final_k=acc, best=acc,
                      target=0.5, round_to_target=None if modelled is None else 3, compute_s_to_target=modelled,
                      wall_s_to_target=modelled, modelled_s_to_target=modelled, modelled_s_total=modelled,
                      update_cos_mean=cos, update_norm_mean=1.0, start=start)


def _cells(table: dict[tuple[str, str], list[float]], modelled: dict[tuple[str, str], list] | None = None,
           cos: dict[tuple[str, str], list[float]] | None = None, start: float | None = None) -> list[CellResult]:
    """(method, alpha) → per-seed accuracies (seed = position) as cells of made-up results; ``start``:
    every run's score before training (None: no round-0 evaluation)."""
    cells: dict[tuple[str, int], CellResult] = {}
    for (m, a), accs in table.items():
        for s, acc in enumerate(accs):
            c = cells.setdefault((a, s), CellResult(a, s, [], {"target_score": 0.5, "methods": {}}))
            t = (modelled or {}).get((m, a), [100.0] * len(accs))[s]
            c.seeds[m] = _seed(m, a, s, acc, t, (cos or {}).get((m, a), [0.5] * len(accs))[s], start)
    return list(cells.values())


def _plan(methods, alphas, seeds=(0, 1, 2)) -> Plan:
    return Plan(base=build_config({}), methods=tuple(methods), alphas=tuple(alphas), seeds=tuple(seeds),
                out=Path("unused"))


def test_claim_verdicts_follow_paired_intervals_on_made_up_seeds():
    plan = _plan(["lora", "federa"], ["0.1"])
    # FeDeRA ahead by 5, 6, 4 points on the three seeds: supported.
    won = _cells({("federa", "0.1"): [0.85, 0.86, 0.84], ("lora", "0.1"): [0.80, 0.80, 0.80]})
    c = compare.claim_noniid(plan, won)
    assert c.verdict == "supported" and "[+0.0252, +0.0748] (n=3)" in c.evidence[0]
    # +5, −4, +2: the interval straddles 0.
    mixed = _cells({("federa", "0.1"): [0.85, 0.76, 0.82], ("lora", "0.1"): [0.80, 0.80, 0.80]})
    assert compare.claim_noniid(plan, mixed).verdict == "inconclusive"
    lost = _cells({("federa", "0.1"): [0.75, 0.74, 0.76], ("lora", "0.1"): [0.80, 0.80, 0.80]})
    assert compare.claim_noniid(plan, lost).verdict == "refuted"
    # The same mean gap on one seed only is never "supported".
    one = _cells({("federa", "0.1"): [0.85], ("lora", "0.1"): [0.80]})
    assert compare.claim_noniid(_plan(["lora", "federa"], ["0.1"], (0,)), one).verdict == "inconclusive"


def test_time_and_oscillation_claims_on_made_up_seeds():
    plan = _plan(["fft", "lora", "federa"], ["0.1"])
    acc = {("fft", "0.1"): [0.8] * 3, ("lora", "0.1"): [0.8] * 3, ("federa", "0.1"): [0.8] * 3}
    fast = _cells(acc, modelled={("fft", "0.1"): [100.0, 120.0, 80.0], ("federa", "0.1"): [5.0, 6.0, 4.0]})
    claim = compare.claim_time(plan, fast)
    assert claim.verdict == "supported" and "geometric-mean ratio 0.050" in claim.evidence[0]
    slow = _cells(acc, modelled={("fft", "0.1"): [100.0] * 3, ("federa", "0.1"): [50.0, 60.0, 40.0]})
    assert compare.claim_time(plan, slow).verdict == "refuted"
    never = _cells(acc, modelled={("fft", "0.1"): [100.0] * 3, ("federa", "0.1"): [None] * 3})
    assert compare.claim_time(plan, never).verdict == "refuted"
    # ... but FFT reaching its target in one seed only leaves one pair: inconclusive either way.
    one_pair = _cells(acc, modelled={("fft", "0.1"): [100.0, None, None], ("federa", "0.1"): [None] * 3})
    assert compare.claim_time(plan, one_pair).verdict == "inconclusive"
    # FeDeRA fast where it reached, but missed the target on one seed: not "supported".
    partly = _cells(acc, modelled={("fft", "0.1"): [100.0] * 3, ("federa", "0.1"): [5.0, 6.0, None]})
    assert compare.claim_time(plan, partly).verdict == "inconclusive"
    steady = _cells(acc, cos={("federa", "0.1"): [0.6, 0.7, 0.65], ("lora", "0.1"): [0.1, 0.2, 0.0]})
    assert compare.claim_oscillation(plan, steady).verdict == "supported"
    zigzag = _cells(acc, cos={("federa", "0.1"): [-0.3, -0.2, -0.25], ("lora", "0.1"): [0.1, 0.2, 0.0]})
    assert compare.claim_oscillation(plan, zigzag).verdict == "refuted"


def test_a_setting_where_neither_method_learned_decides_nothing():
    plan = _plan(["fft", "lora", "federa"], ["0.1"])
    # FeDeRA 0.5 points above LoRA on every seed: "supported" by the interval alone. But both sit within
    # a point of their untrained score (0.220): neither learned, so the gap is noise → inconclusive.
    flat = {("fft", "0.1"): [0.221, 0.222, 0.220], ("lora", "0.1"): [0.221, 0.222, 0.220],
            ("federa", "0.1"): [0.226, 0.227, 0.225]}
    cells = _cells(flat, start=0.220)
    assert compare.paired_verdict([0.005, 0.005, 0.005], ">").verdict == "supported"
    c = compare.claim_noniid(plan, cells)
    assert c.verdict == "inconclusive" and "neither method learned here" in c.evidence[0]
    assert compare.learned(cells, "0.1", "federa").verdict == "refuted"  # gain 0.006 [..] vs +0.02
    # FFT did not learn either: its "target" is the untrained score, time to it means nothing.
    fast = _cells(flat, modelled={("fft", "0.1"): [100.0] * 3, ("federa", "0.1"): [5.0, 6.0, 4.0]}, start=0.220)
    t = compare.claim_time(plan, fast)
    assert t.verdict == "inconclusive" and "FFT did not learn here" in t.evidence[0]
    # FeDeRA learned (start 0.22 → 0.85): the same kind of gap now decides.
    won = _cells({("lora", "0.1"): [0.80, 0.80, 0.80], ("federa", "0.1"): [0.85, 0.86, 0.84],
                  ("fft", "0.1"): [0.8] * 3}, start=0.220)
    assert compare.learned(won, "0.1", "federa").verdict == "supported"
    assert compare.claim_noniid(plan, won).verdict == "supported"
    # claims.md lists what learned, per alpha and method.
    text = compare.claims_markdown(plan, compare.check_claims(plan, [], won), compare.learning(plan, won))
    assert "## Did the runs learn?" in text and "- alpha=0.1: federa: +0.6300 [+0.6052, +0.6548] (n=3)" in text


def test_seed_result_measures_gain_from_the_round_0_score():
    from federa.compare.seeds import seed_result
    from federa.modelled_time import NetworkSettings

    recs = [{"round": 0, "score": 0.2}, {"round": 2, "score": 0.5}, {"round": 4, "score": 0.7},
            {"round": 6, "score": 0.9}]
    r = seed_result("lora", "0.1", 0, recs, {"status": "done"}, None, 2, NetworkSettings(), 4)
    assert r.start == 0.2 and r.final_k == pytest.approx(0.8) and r.gain == pytest.approx(0.6)


def test_moving_to_the_majority_class_is_not_learning():
    from datasets import Dataset

    from federa.config import DataConfig
    from federa.tasks import make_task

    clf = make_task("classification", DataConfig())
    test = Dataset.from_dict({"label": [0, 0, 0, 1]})
    assert clf.constant_score(test, ["a", "b"], "accuracy") == 0.75  # always "a"
    assert clf.constant_score(test, ["a", "b"], "macro_f1") == pytest.approx((6 / 7) / 2)  # F1 of "a" 6/7, of "b" 0
    assert clf.constant_score(test, ["a", "b"], "mcc") == 0.0
    assert make_task("regression", DataConfig()).constant_score(test, [], "pearson") == 0.0
    ner = make_task("token_classification", DataConfig())
    tags = Dataset.from_dict({"tags": [[0, 0, 1], [0, 2]]})
    assert ner.constant_score(tags, ["O", "B-x", "I-x"], "entity_f1") == 0.0
    assert ner.constant_score(tags, ["O", "B-x", "I-x"], "token_accuracy") == 0.6
    # A binary run that went from predicting the minority class (0.422) to the majority one (0.578)
    # gained 0.156 over its start but nothing over the label prior: it did not learn.
    plan = _plan(["lora", "federa"], ["iid"])
    cells = _cells({("lora", "iid"): [0.578, 0.578, 0.578], ("federa", "iid"): [0.580, 0.579, 0.578]}, start=0.422)
    for c in cells:
        for r in c.seeds.values():
            r.floor = 0.578
    assert compare.learned(cells, "iid", "lora").verdict == "refuted"
    assert compare.learned(cells, "iid", "federa").interval.mean == pytest.approx(0.001)


def test_robustness_claim_pairs_drops_by_seed():
    plan = _plan(["lora", "federa"], ["0.1", "iid"])
    cells = _cells({("lora", "iid"): [0.90, 0.91, 0.89], ("lora", "0.1"): [0.60, 0.62, 0.58],
                    ("federa", "iid"): [0.90, 0.91, 0.89], ("federa", "0.1"): [0.80, 0.82, 0.78]})
    c = compare.claim_robustness(plan, cells)
    assert c.verdict == "supported"  # both lose (0.30 and 0.10 per seed), FeDeRA 0.20 less on every seed
    none_lose = _cells({(m, a): [0.8, 0.81, 0.79] for m in ("lora", "federa") for a in ("0.1", "iid")})
    # No drop at all on any seed: the interval [0, 0] lies inside the ±0.01 band, equivalent → "loses" refuted.
    assert compare.claim_robustness(plan, none_lose).verdict == "refuted"
    # Drops of +0.03, −0.03, 0: the interval reaches past the band → open, with a sample-size line.
    noisy = _cells({("lora", "iid"): [0.83, 0.77, 0.8], ("lora", "0.1"): [0.8] * 3,
                    ("federa", "iid"): [0.83, 0.77, 0.8], ("federa", "0.1"): [0.8] * 3})
    c = compare.claim_robustness(plan, noisy)
    # Mean 0, SD 0.03: the equivalence band ±0.01 closes first, at t(0.975, n−1)·0.03/√n < 0.01 → n = 38
    # (n = 38: 2.026·0.03/6.164 = 0.00986).
    assert c.verdict == "inconclusive" and "open: ≈35 more seed(s) (n≈38)" in c.evidence[1]


def test_target_is_99pct_of_fft_at_its_plateau_or_budget():
    # Plateau at evaluation 6: the best of evaluations 2..6 (0.804) beats the best before them (0.8) by < 0.5 points.
    score, j = compare.converged_score([0.2, 0.8, 0.801, 0.802, 0.803, 0.804, 0.804, 0.95])
    assert (score, j) == (0.804, 6)
    recs = [{"round": r, "score": s} for r, s in enumerate([0.2, 0.8, 0.801, 0.802, 0.803, 0.804, 0.804, 0.95])]
    target, how = compare.convergence_target(recs)
    assert target == pytest.approx(0.99 * 0.804) and "plateau at round 6" in how
    target, how = compare.convergence_target([{"round": r, "score": 0.1 * r} for r in range(6)])
    assert target == pytest.approx(0.99 * 0.5) and "round budget (5 rounds, no plateau)" in how


def test_seed_result_final_k_and_time_to_target_three_ways():
    from federa.compare.seeds import seed_result

    recs = [{"round": r, "score": s, "cum_client_compute_s": 10.0 * r, "cum_train_wall_s": 12.0 * r,
             "cum_modelled_s": 50.0 * r, "cum_bytes_up": 0, "cum_bytes_down": 0,
             "update_cos": c, "update_norm": n}
            for r, s, c, n in [(0, 0.2, None, None), (1, 0.6, None, 2.0), (2, 0.9, 0.5, 1.0), (3, 0.7, -0.1, 3.0)]]
    s = seed_result("lora", "0.1", 0, recs, {"status": "done"}, 0.85, 3, NetworkSettings(), 4)
    assert s.final == 0.7 and s.final_k == pytest.approx((0.6 + 0.9 + 0.7) / 3)  # round 0 is not a final score
    assert (s.round_to_target, s.compute_s_to_target, s.wall_s_to_target, s.modelled_s_to_target) == (2, 20.0, 24.0,
                                                                                                         100.0)
    assert s.modelled_s_total == 150.0 and s.update_cos_mean == pytest.approx(0.2) and s.update_norm_mean == 2.0


# -- the network model ----------------------------------------------------------------------


def test_network_round_time_on_a_hand_case():
    link = Link(uplink_mbps=8.0, downlink_mbps=16.0, latency_ms=10.0)
    # Client A: 2 MB down at 16 Mbit/s = 1 s, 3 s compute, 1 MB up at 8 Mbit/s = 1 s, 2 × 10 ms → 5.02 s.
    # Client B: 1 s down, 1 s compute × speed 2, 3 MB up = 3 s, 2 × 10 ms → 6.02 s: the round waits for B.
    clients = [(2e6, 3.0, 1e6), (2e6, 1.0, 3e6)]
    assert round_time_s(link, clients, [1.0, 2.0], aggregate_s=0.5) == pytest.approx(6.52)
    assert round_time_s(link, clients, [1.0, 1.0]) == pytest.approx(5.02)  # B at speed 1: 4.02 < A's 5.02
    # The same from metrics records, by client id; and cumulated over rounds.
    rec = {"round": 1, "clients": [3, 7], "client_bytes_down": [2e6, 2e6], "client_train_s": [3.0, 1.0],
           "client_bytes_up": [1e6, 3e6], "aggregate_s": 0.5}
    speeds = [1.0] * 10
    speeds[7] = 2.0
    assert record_round_s(rec, link, speeds) == pytest.approx(6.52)
    settings = NetworkSettings(uplink_mbps=8, downlink_mbps=16, latency_ms=10)
    cum = cumulative_modelled_s([{"round": 0}, rec, {**rec, "round": 2}], settings, 10, seed=0)
    assert cum == pytest.approx({0: 0.0, 1: 5.52, 2: 11.04})  # speeds 1 without a spread: A is slowest
    # Records priced during the run (every round, eval_every or not) are read as they are.
    priced = [{"round": 0}, {**rec, "cum_modelled_s": 7.0}, {**rec, "round": 4, "cum_modelled_s": 30.0}]
    assert cumulative_modelled_s(priced, settings, 10, seed=0) == {0: 0.0, 1: 7.0, 4: 30.0}


def test_network_presets_speed_factors_and_config_keys():
    cfg = build_config({}, ["network.preset=datacenter", "network.latency_ms=2"])
    assert cfg.network.link() == Link(uplink_mbps=10_000.0, downlink_mbps=10_000.0, latency_ms=2.0)
    assert build_config({}).network.link() == Link(5.0, 20.0, 60.0)  # edge-4g by default
    s = NetworkSettings(speed_sigma=0.5, compute_scale=2.0)
    a, b = speed_factors(s, 6, seed=1), speed_factors(s, 6, seed=1)
    assert np.array_equal(a, b) and not np.array_equal(a, speed_factors(s, 6, seed=2))
    assert np.allclose(np.log(a / 2.0), np.random.default_rng(1).normal(0, 0.5, 6))
    with pytest.raises(ConfigError, match="uplink_mbps"):
        build_config({}, ["network.uplink_mbps=0"])
    with pytest.raises(ConfigError, match="preset"):
        build_config({}, ["network.preset=5g"])


# -- partitions --------------------------------------------------------------------------


def _labels() -> Dataset:
    return Dataset.from_dict({"label": [0] * 30 + [1] * 30})


def _part(*overrides: str):
    return build_config({}, ["partition.kind=dirichlet", "partition.alpha=0.1", "num_clients=6", *overrides]).partition


def test_redraws_and_self_balancing_are_recorded_remedies():
    # Seed 0 cannot give 6 clients 2+ examples on its own draw; the second re-draw can.
    with pytest.raises(DataError, match="partition.redraws=5, or try another seed"):
        partition_with_draw(_labels(), _part("partition.min_examples=2"), 6, 0)
    parts, draw = partition_with_draw(_labels(), _part("partition.min_examples=2", "partition.redraws=4"), 6, 0)
    assert draw == 2 and min(len(p) for p in parts) >= 2
    assert sorted(np.concatenate(parts).tolist()) == list(range(60))
    # Without remedies, draw 0 is the partition every earlier version made.
    plain, d0 = partition_with_draw(_labels(), _part(), 6, 1)
    assert d0 == 0
    balanced, _ = partition_with_draw(_labels(), _part("partition.self_balancing=true"), 6, 1)
    assert [p.tolist() for p in plain] != [p.tolist() for p in balanced]
    assert make_partitioner(_part("partition.self_balancing=true"), 6, 60, 1)._self_balancing is True
    # cv = population std / mean = 44.3193 / 33.3333 = 1.3296.
    stats = {"label_skew_tv": 0.4, "clients": [{"num_examples": n} for n in (1, 3, 96)]}
    assert shard_summary(stats) == {"label_skew_tv": 0.4, "min": 1, "median": 3.0, "max": 96,
                                    "largest_share": 0.96, "cv": 1.3296}


def test_compare_records_an_unpartitionable_seed_and_goes_on(tiny_model_dir, small_csv, tmp_path, monkeypatch):
    import federa.compare.execute as run_mod

    real = run_mod.cell_job

    def cell_job(base, cfg):
        if cfg.seed == 1:
            raise DataError("partition.alpha=0.1 with num_clients=4 could not give every client 1+ examples")
        return real(base, cfg)

    monkeypatch.setattr(run_mod, "cell_job", cell_job)
    base = build_config({}, [f"model.path={tiny_model_dir}", f"data.path={small_csv}", *TINY, "rounds=2"])
    plan = Plan(base=base, methods=("lora",), alphas=("0.5",), seeds=(0, 1), out=tmp_path / "out")
    out = compare.run_compare(plan, progress=False, log=lambda *_: None)
    assert out["failed"] == [] and [(s["alpha"], s["seed"]) for s in out["skipped"]] == [("0.5", 1)]
    assert "could not give every client" in (plan.out / "summary.md").read_text()
    draw = json.loads((plan.out / "cells" / "a0.5-s0" / "partition_draw.json").read_text())
    assert draw == {"draw": 0, "self_balancing": False, "min_examples": 1, "redraws": 0}
    # The records carry what the network model and the oscillation claim need.
    recs = [json.loads(line) for line in (plan.out / "cells" / "a0.5-s0" / "metrics.jsonl").read_text().splitlines()]
    r1, r2 = recs[1], recs[2]
    assert len(r1["client_train_s"]) == len(r1["clients"]) == 2 and sum(r1["client_bytes_up"]) == r1["bytes_up"]
    assert sum(r1["client_bytes_down"]) == r1["bytes_down"]
    assert r1["update_cos"] is None and r1["update_norm"] > 0 and -1 <= r2["update_cos"] <= 1
    link = base.network.link()
    assert r1["modelled_round_s"] == pytest.approx(record_round_s(r1, link, [1.0] * 4))
    assert r2["cum_modelled_s"] == pytest.approx(r1["modelled_round_s"] + r2["modelled_round_s"])
    seed0 = out["cells"][0].seeds["lora"]
    assert seed0.modelled_s_total == pytest.approx(sum(
        record_round_s(r, base.network.link(), [1.0] * 4) for r in (r1, r2)))
    # A re-run skips the recorded seed instead of retrying it.
    monkeypatch.setattr(run_mod, "cell_job", lambda *a: pytest.fail("re-partitioned a finished or skipped cell"))
    assert compare.run_compare(plan, progress=False, log=lambda *_: None)["skipped"] == out["skipped"]


# -- the lr grid never reads the test set -----------------------------------------------


class _PoisonedTest:
    """A test split that fails the run the moment anything reads it."""

    def __getattr__(self, name):
        raise AssertionError(f"the lr grid read the test set ({name})")

    def __len__(self):
        raise AssertionError("the lr grid read the test set (len)")

    def __getitem__(self, key):
        raise AssertionError("the lr grid read the test set (item)")


def test_lr_choice_never_reads_the_test_set(tiny_model_dir, small_csv, tmp_path):
    from dataclasses import replace

    from federa.job import prepare_job

    cfg = build_config({}, [f"model.path={tiny_model_dir}", f"data.path={small_csv}", *TINY, "rounds=2",
                            "partition.kind=dirichlet", "partition.alpha=0.5"])
    job, _ = compare.cell_job(prepare_job(cfg), cfg)
    from federa.results_dir import RunDir

    clean = compare.choose_lrs(job, RunDir(tmp_path / "clean"), ["lora"], progress=False, log=lambda *_: None)
    poisoned = compare.choose_lrs(replace(job, test=_PoisonedTest()), RunDir(tmp_path / "poisoned"), ["lora"],
                                  progress=False, log=lambda *_: None)
    assert set(clean) == {"lora"} and poisoned == clean
    assert math.isclose(clean["lora"], job.cfg.lr_of("lora") * next(
        r["multiplier"] for r in compare.grid_scores(RunDir(tmp_path / "clean"), ["lora"]) if r["chosen"]))
