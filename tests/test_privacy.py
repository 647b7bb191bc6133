"""Client-level DP (DP-FedAvg): the guarantees that can be tested.

- every client's contribution is clipped to norm C (so the average moves by at most C);
- the noise added per coordinate has std z·C/m (m = sampled clients, fixed denominator);
- ε grows with rounds and is exactly dp-accounting's RDP figure for the same parameters;
- target_epsilon calibrates z so ε after `rounds` rounds is just within the target;
- a run reproduces (noise seeded by (seed, round)), and ε reaches metrics and the report.
"""

from __future__ import annotations

import math

import dp_accounting
import pytest
import torch

from federa.checkpoint import load_checkpoint
from federa.config import build_config
from federa.engines.inprocess import run_method
from federa.engines.server import ServerRun
from federa.pending import write_report
from federa.job import prepare_job
from federa.privacy import calibrate_noise, epsilon_after
from federa.results_dir import RunDir
from federa.strategies.robust import delta, global_norm
from federa.strategies.dp import DpNoise
from federa.strategies.stack import build_stack
from federa.types import Update


def _dp(z: float | None = None, clip: float = 1.0, m: int = 4, n: int = 10, rounds: int = 5,
        target: float | None = None) -> DpNoise:
    cfg = build_config({}, ["dp.enabled=true", f"dp.clip_norm={clip}", f"num_clients={n}",
                            f"clients_per_round={m}", f"rounds={rounds}"]
                       + ([f"dp.noise_multiplier={z}"] if z is not None else [f"dp.target_epsilon={target}"]))
    dp = build_stack(cfg).layers()[-2]  # the DP wrapper, right around FedAvg
    assert isinstance(dp, DpNoise)
    return dp


def _agg(dp: DpNoise, rnd: int, base, states: list) -> dict:
    """The DP wrapper's round on bare states (one reply per state)."""
    return dp.aggregate_round(rnd, base, {i: Update(s, 10) for i, s in enumerate(states)})


def test_clipped_contributions_never_exceed_clip_norm():
    g = torch.Generator().manual_seed(0)
    base = {"a": torch.randn(40, 8, generator=g), "b": torch.randn(16, generator=g)}
    dp = _dp(z=0.0, clip=0.7, m=1, n=4)  # no noise, one client: the output delta IS the clipped delta
    norms = []
    for i in range(200):
        scale = 10 ** (i / 40 - 3)  # 1e-3 … 1e2: below and far above C
        upd = {k: v + scale * torch.randn(v.shape, generator=g) for k, v in base.items()}
        out_norm = global_norm(delta(_agg(dp, i, base, [upd]), base))
        in_norm = global_norm(delta(upd, base))
        norms.append(out_norm)
        assert out_norm <= 0.7 * (1 + 1e-5)
        assert math.isclose(out_norm, min(in_norm, 0.7), rel_tol=1e-4)  # below C: untouched
    assert max(norms) > 0.69  # the bound was actually reached, not trivially met


def test_fixed_denominator_bounds_one_clients_influence():
    base = {"w": torch.zeros(10)}
    dp = _dp(z=0.0, clip=1.0, m=4)
    huge = {"w": torch.full((10,), 1e6)}
    out = _agg(dp, 1, base, [huge])  # only 1 of the m=4 sampled clients replied
    assert math.isclose(global_norm(out), 1.0 / 4, rel_tol=1e-5)  # C/m, not C


def test_noise_std_matches_z_clip_over_m():
    z, clip, m = 1.3, 2.0, 4
    dp = _dp(z=z, clip=clip, m=m)
    base = {"w": torch.zeros(200_000, dtype=torch.float64)}
    noise = _agg(dp, 3, base, [])["w"]
    expected = z * clip / m
    std = float(noise.std())
    # The sample std of n Gaussians has relative s.e. 1/sqrt(2n) = 0.16%: 1% is > 6 s.e.
    print(f"\nnoise std {std:.5f}, expected z·C/m = {expected:.5f} (n={noise.numel()})")
    assert abs(std / expected - 1) < 0.01
    assert abs(float(noise.mean())) < 5 * expected / math.sqrt(noise.numel())
    assert math.isclose(dp.noise_std, expected)
    # Seeded by (seed, round): the same round draws the same noise, another round other noise.
    assert torch.equal(noise, _agg(dp, 3, base, [])["w"])
    assert not torch.equal(noise, _agg(dp, 4, base, [])["w"])


def test_epsilon_grows_and_equals_the_library_figure():
    q, z, d = 0.3, 1.1, 1e-5
    eps = [epsilon_after(r, q, z, d) for r in range(1, 11)]
    assert all(b > a for a, b in zip(eps, eps[1:]))
    for r in (1, 5, 10):
        acc = dp_accounting.rdp.RdpAccountant()
        acc.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), r)
        assert eps[r - 1] == pytest.approx(acc.get_epsilon(d), rel=1e-12)
    dp = _dp(z=z, m=3, n=10)
    assert dp.epsilon(7) == pytest.approx(eps[6], rel=1e-12)
    assert epsilon_after(0, q, z, d) == 0.0 and epsilon_after(3, q, 0.0, d) == math.inf
    print(f"\nepsilon (q={q}, z={z}, delta={d}) rounds 1..10: " + ", ".join(f"{e:.3f}" for e in eps))


def test_target_epsilon_calibrates_noise():
    dp = _dp(target=4.0, m=2, n=10, rounds=20)
    eps = dp.epsilon(20)
    assert eps <= 4.0
    assert epsilon_after(20, 0.2, dp.noise_multiplier - 1e-3, 1e-5) > 4.0  # tight: a bit less noise overshoots
    print(f"\ntarget epsilon 4 over 20 rounds at q=0.2: z={dp.noise_multiplier:.4f}, epsilon={eps:.4f}")
    assert calibrate_noise(8.0, 20, 0.2, 1e-5) < dp.noise_multiplier  # a looser budget needs less noise


def test_dp_run_logs_epsilon_reproduces_and_reports(tiny_cfg, tmp_path):
    cfg = tiny_cfg("methods=federa", "rounds=3", "dp.enabled=true", "dp.noise_multiplier=0.8", "dp.clip_norm=0.5")
    job = prepare_job(cfg)
    # FeDeRA's initial factors are a seeded SVD, so two fresh runs start from the same state.
    states = []
    for name in ("a", "b"):
        rd = RunDir(tmp_path / name)
        rd.root.mkdir()
        result = run_method(job, "federa", rd, progress=False, log=lambda *_: None)
        assert result["status"] == "done"
        states.append(load_checkpoint(rd.checkpoint("federa"))[0]["state"])
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k])  # same seed, same noise, same model
    lines = [r for r in rd.read_metrics() if r["round"] > 0]
    q = cfg.clients_per_round / cfg.num_clients
    assert [r["round"] for r in lines] == [1, 2, 3]
    for r in lines:
        assert r["epsilon"] == pytest.approx(epsilon_after(r["round"], q, 0.8, cfg.dp.delta), rel=1e-12)
    summary = write_report(rd, cfg, {})
    assert summary["methods"]["federa"]["epsilon"] == pytest.approx(lines[-1]["epsilon"])
    assert "DP ε" in rd.report.read_text(encoding="utf-8")
    # The progress bar shows the same ε (a resumed server recomputes it from the round alone).
    server = ServerRun(job, "federa", rd, log=lambda *_: None)
    assert server.round == 3 and server.progress_postfix()["eps"] == f"{lines[-1]['epsilon']:.2f}"
