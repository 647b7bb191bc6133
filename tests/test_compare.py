"""`federa compare`: same partition per cell, resume, time-to-target, claims, lr grid, outputs."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import federa.engines.inprocess as inprocess
from federa import compare
from federa.cli import main as cli_main
from federa.compare import CellResult, Plan, tables
from federa.config import build_config
from federa.errors import ConfigError
from federa.report import summarize

TINY = ["rounds=1", "num_clients=4", "clients_per_round=2", "local_steps=2", "batch_size=8", "max_length=32",
        "lora.r=4", "eval_batch_size=64", "model.num_threads=1"]


@pytest.fixture(autouse=True, scope="module")
def _restore_threads():
    # model.num_threads=1 (a tiny model runs fastest on one thread, and the CPU is shared) sets
    # torch's process-wide thread count; hand the rest of the session its own setting back.
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _base(tiny_model_dir: Path, small_csv: Path, *extra: str):
    return build_config({}, [f"model.path={tiny_model_dir}", f"data.path={small_csv}", *TINY, *extra])


def _spy_run_method(mp: pytest.MonkeyPatch) -> list[tuple[Path, str, object]]:
    """Record (run folder, method, job) of every engine call; compare imports the engine lazily."""
    calls: list[tuple[Path, str, object]] = []
    real = inprocess.run_method

    def spy(job, method, run_dir, **kw):
        calls.append((run_dir.root, method, job))
        return real(job, method, run_dir, **kw)

    mp.setattr(inprocess, "run_method", spy)
    return calls


@pytest.fixture(scope="module")
def tiny_compare(tiny_model_dir, small_csv, tmp_path_factory):
    """One tiny comparison (fft, federa × alpha 0.5, iid × seed 0, one round), run once for the module."""
    out = tmp_path_factory.mktemp("compare") / "out"
    # Checkpoints kept: the resume test below simulates a crash between the last checkpoint and result.json.
    plan = Plan(base=_base(tiny_model_dir, small_csv), methods=("fft", "federa"), alphas=("0.5", "iid"),
                seeds=(0,), out=out, keep_checkpoints=True)
    with pytest.MonkeyPatch.context() as mp:
        calls = _spy_run_method(mp)
        outcome = compare.run_compare(plan, progress=False, log=lambda *_: None)
    return plan, calls, outcome


# -- the same partition for every method of a cell ----------------------------------------


def test_every_method_of_a_cell_trains_on_the_saved_partition(tiny_compare):
    plan, calls, _ = tiny_compare
    assert [(root.name, m) for root, m, _ in calls] == [
        ("a0.5-s0", "fft"), ("a0.5-s0", "federa"), ("aiid-s0", "fft"), ("aiid-s0", "federa")]
    parts_of = {}
    for root, m, job in calls:
        saved = json.loads((root / "partition.json").read_text())
        assert [list(p) for p in job.parts] == [c["indices"] for c in saved["clients"]]
        parts_of.setdefault(root.name, []).append([list(p) for p in job.parts])
        assert job.cfg.seed == 0 and job.cfg.partition.kind == ("iid" if "iid" in root.name else "dirichlet")
    for cell, parts in parts_of.items():
        assert parts[0] == parts[1], cell  # fft and federa saw the identical split
    assert parts_of["a0.5-s0"][0] != parts_of["aiid-s0"][0]  # and the alphas really differ
    # Every training example is used exactly once per cell.
    flat = sorted(i for p in parts_of["a0.5-s0"][0] for i in p)
    assert flat == list(range(len(calls[0][2].train)))


# -- outputs -------------------------------------------------------------------------------


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_outputs_have_the_documented_columns(tiny_compare):
    plan, _, outcome = tiny_compare
    res = _csv(plan.out / "results.csv")
    assert list(res[0])[: len(compare.RESULT_COLUMNS)] == compare.RESULT_COLUMNS
    # method × alpha × seed × evaluated round (round 0 and round 1).
    assert sorted((r["alpha"], r["method"], r["round"]) for r in res) == sorted(
        (a, m, rnd) for a in ("0.5", "iid") for m in ("fft", "federa") for rnd in ("0", "1"))
    assert all(0 <= float(r["accuracy"]) <= 1 for r in res)
    summ = _csv(plan.out / "summary.csv")
    assert list(summ[0]) == compare.SUMMARY_COLUMNS
    assert {(r["method"], r["alpha"]) for r in summ} == {(m, a) for m in ("fft", "federa") for a in ("0.5", "iid")}
    fft = next(r for r in summ if r["method"] == "fft")
    fed = next(r for r in summ if r["method"] == "federa")
    assert float(fft["trainable_pct"]) == 100.0 and 0 < float(fed["trainable_pct"]) < 5
    assert int(fed["bytes_per_client_round"]) < int(fft["bytes_per_client_round"])
    # Total uploaded = 2 clients × 1 round × bytes per client.
    assert float(fft["total_bytes_up_mean"]) == 2 * int(fft["bytes_per_client_round"])
    md = (plan.out / "summary.md").read_text()
    # One row per method in the results table, one per cell in the partitions table.
    assert md.count("\n| 0.5 | ") == 3 and md.count("\n| iid | ") == 3
    claims = (plan.out / "claims.md").read_text()
    assert claims.count("## Claim ") == 5 and claims.count("**Verdict: ") == 5
    assert "inconclusive" in claims  # no LoRA in this run: claim 1 cannot be checked
    names = {p.name for p in outcome["plots"]}
    assert names == {f"acc_vs_{k}_a{a}.png" for k in ("round", "time", "compute", "modelled")
                     for a in ("0.5", "iid")} | {f"update_{k}_a{a}.png" for k in ("cos", "norm") for a in ("0.5", "iid")
                                                 } | {"acc_vs_alpha.png", "time_to_target_vs_fft.png"}
    for p in outcome["plots"]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000


# -- resume --------------------------------------------------------------------------------


def test_restart_reads_finished_cells_back_and_resumes_the_rest(tiny_compare, tmp_path, monkeypatch):
    plan, _, first = tiny_compare
    out = tmp_path / "out"
    shutil.copytree(plan.out, out)
    plan2 = Plan(**{**plan.__dict__, "out": out})
    calls = _spy_run_method(monkeypatch)
    again = compare.run_compare(plan2, progress=False, log=lambda *_: None)
    assert calls == []  # everything finished: nothing re-runs
    assert again["rows"] == first["rows"]
    # An interrupted method (checkpoint but no result.json) resumes instead of restarting.
    (out / "cells" / "aiid-s0" / "federa" / "result.json").unlink()
    lines_before = (out / "cells" / "aiid-s0" / "metrics.jsonl").read_text()
    compare.run_compare(plan2, progress=False, log=lambda *_: None)
    assert [(root.name, m) for root, m, _ in calls] == [("aiid-s0", "federa")]
    assert (out / "cells" / "aiid-s0" / "metrics.jsonl").read_text() == lines_before  # no round re-run


def test_finished_runs_drop_their_checkpoints_unless_kept(tiny_model_dir, small_csv, tmp_path):
    def run(out: Path, keep: bool) -> Path:
        plan = Plan(base=_base(tiny_model_dir, small_csv), methods=("fft", "lora"), alphas=("iid",), seeds=(0,),
                    out=out, lr_grid=True, keep_checkpoints=keep)
        assert compare.run_compare(plan, progress=False, log=lambda *_: None)["failed"] == []
        return out / "cells" / "aiid-s0"

    cell = run(tmp_path / "lean", keep=False)
    assert not list(cell.rglob("checkpoint.pt*"))  # neither the runs' nor the grid's
    assert (cell / "fft" / "final" / "model.safetensors").is_file()  # the trained models stay
    assert (cell / "lora" / "final" / "adapter_model.safetensors").is_file()
    assert not list((cell / "lr_grid").rglob("final"))  # a grid run is kept for its score only
    assert len(list((cell / "lr_grid").rglob("result.json"))) == 6
    # Loading a damaged model of such a cell says that a resume retrains it: no checkpoint is left.
    import federa
    from federa.errors import ModelError

    adapter = cell / "lora" / "final" / "adapter_model.safetensors"
    raw = bytearray(adapter.read_bytes())
    raw[-5] ^= 1
    adapter.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match=r"trains that method again from the start \(its checkpoint was dropped"):
        federa.load_model(cell, "lora")
    kept = run(tmp_path / "kept", keep=True)
    assert (kept / "fft" / "checkpoint.pt").is_file() and list((kept / "lr_grid").rglob("final"))
    # Both read back to the same scores and lrs: nothing the outputs need was dropped.
    def scores(out: Path) -> list[tuple]:
        with open(out / "summary.csv", newline="") as f:
            return [(r["method"], r["final_score_mean"], r["best_score_mean"], r["lr"]) for r in csv.DictReader(f)]

    assert scores(tmp_path / "lean") == scores(tmp_path / "kept") and len(scores(tmp_path / "lean")) == 2


def test_restart_with_changed_settings_is_refused(tiny_compare, tmp_path):
    plan, _, _ = tiny_compare
    out = tmp_path / "out"
    shutil.copytree(plan.out, out)
    changed = Plan(**{**plan.__dict__, "out": out, "base": build_config(plan.base.model_dump(mode="json"),
                                                                          ["local_steps=3"])})
    with pytest.raises(ConfigError, match="different 'local_steps'"):
        compare.run_compare(changed, progress=False, log=lambda *_: None)
    other_lr = Plan(**{**plan.__dict__, "out": out, "base": build_config(plan.base.model_dump(mode="json"),
                                                                           ["lr.federa=0.123"])})
    with pytest.raises(ConfigError, match="different 'lr.federa'"):
        compare.run_compare(other_lr, progress=False, log=lambda *_: None)
    # The lr of a method that is not in the comparison does not matter to its cells.
    unrelated = Plan(**{**plan.__dict__, "out": out, "base": build_config(plan.base.model_dump(mode="json"),
                                                                            ["lr.lora=0.123"])})
    assert compare.run_compare(unrelated, progress=False, log=lambda *_: None)["failed"] == []


# -- time to target on hand-made series ------------------------------------------------


def _rec(method: str, rnd: int, acc: float, compute: float, wall: float) -> dict:
    return {"method": method, "round": rnd, "score": acc, "accuracy": acc, "macro_f1": acc, "loss": 1.0, "round_s": 1.0,
            "cum_train_wall_s": wall, "cum_client_compute_s": compute, "cum_wall_s": wall,
            "cum_bytes_up": 10 * rnd, "cum_bytes_down": 10 * rnd}


def _cell(alpha: str, seed: int, series: dict[str, list[tuple[float, float, float]]], target=None) -> CellResult:
    recs = [_rec(m, i, *pt) for m, pts in series.items() for i, pt in enumerate(pts)]
    results = {m: {"status": "done", "lr": 1e-3, "trainable_params": 1, "trainable_pct": 1.0,
                   "bytes_per_client_round": 10} for m in series}
    return CellResult(alpha, seed, recs, summarize(recs, results, target))


def _plan(methods, alphas, seeds=(0, 1), target=None) -> Plan:
    return Plan(base=build_config({}), methods=tuple(methods), alphas=tuple(alphas), seeds=tuple(seeds),
                out=Path("unused"), target=target)


def test_time_to_target_default_is_99pct_of_fft_best_per_seed():
    # seed 0: FFT best 0.80 → target 0.792; FFT reaches it at round 2 (compute 20 s), FeDeRA at round 1 (2 s).
    # seed 1: FFT best 0.90 → target 0.891; FFT at round 1 (10 s), FeDeRA never (0.89 < 0.891).
    cells = [
        _cell("0.1", 0, {"fft": [(0.2, 0, 0), (0.5, 10, 12), (0.8, 20, 24)],
                         "federa": [(0.2, 0, 0), (0.795, 2, 5), (0.7, 4, 10)]}),
        _cell("0.1", 1, {"fft": [(0.2, 0, 0), (0.9, 10, 12)], "federa": [(0.2, 0, 0), (0.89, 1, 3)]}),
    ]
    assert cells[0].summary["target_score"] == pytest.approx(0.792)
    rows = tables._index(compare.summary_rows(_plan(["fft", "federa"], ["0.1"]), cells))
    fft, fed = rows[("fft", "0.1")], rows[("federa", "0.1")]
    assert fft["reached"] == "2/2" and fed["reached"] == "1/2"
    assert fft["rounds_to_target_mean"] == 1.5 and fft["client_compute_s_to_target_mean"] == 15.0
    assert fed["rounds_to_target_mean"] == 1 and fed["client_compute_s_to_target_mean"] == 2.0
    assert fed["client_compute_to_target_vs_fft"] == pytest.approx(2 / 20)  # only seed 0 has both
    assert fed["train_wall_to_target_vs_fft"] == pytest.approx(5 / 24)
    assert tables._ttt_text(fed, "client_compute_s_to_target", " s") == "2.0 s (1/2 seeds)"
    assert fed["final_score_mean"] == pytest.approx((0.7 + 0.89) / 2)
    assert fed["final_score_std"] == pytest.approx(np.std([0.7, 0.89], ddof=1))


def test_never_reaching_the_target_reads_not_reached():
    cells = [_cell("iid", 0, {"fft": [(0.2, 0, 0), (0.6, 5, 5)], "lora": [(0.2, 0, 0), (0.3, 1, 1)]}, target=0.5)]
    rows = tables._index(compare.summary_rows(_plan(["fft", "lora"], ["iid"], seeds=(0,), target=0.5), cells))
    lora = rows[("lora", "iid")]
    assert lora["reached"] == "0/1" and lora["rounds_to_target_mean"] is None
    assert tables._ttt_text(lora, "rounds_to_target", "") == "not reached"
    assert rows[("fft", "iid")]["rounds_to_target_mean"] == 1  # absolute target 0.5, reached at round 1


# -- claims ----------------------------------------------------------------------------


# The claims' verdict rule (paired per-seed intervals) is tested in tests/test_claims_rigour.py.


# -- the lr grid ---------------------------------------------------------------------------


def test_lr_grid_scores_on_held_out_training_rows_never_the_test_set(tiny_model_dir, small_csv, tmp_path,
                                                                       monkeypatch):
    plan = Plan(base=_base(tiny_model_dir, small_csv, "rounds=2"), methods=("lora",), alphas=("iid",), seeds=(0,),
                out=tmp_path / "out", lr_grid=True)
    calls = _spy_run_method(monkeypatch)
    evaluated: list[tuple[Path, object]] = []
    from federa.tasks.classification import Classification

    real_evaluate = Classification.evaluate

    def spy_evaluate(self, model, test, *a, **kw):
        evaluated.append((calls[-1][0], test))
        return real_evaluate(self, model, test, *a, **kw)

    monkeypatch.setattr(Classification, "evaluate", spy_evaluate)
    compare.run_compare(plan, progress=False, log=lambda *_: None)

    grid_calls = [c for c in calls if "lr_grid" in c[0].parts]
    (cell_root, _, cell_job), = [c for c in calls if "lr_grid" not in c[0].parts]
    assert len(grid_calls) == len(compare.LR_MULTIPLIERS)
    keep, val = compare.carve_validation(cell_job.parts, compare.VAL_FRACTION, 0)
    for root, _, gjob in grid_calls:
        assert gjob.cfg.rounds == 1  # the documented half budget
        assert not set(val.tolist()) & {int(i) for p in gjob.parts for i in p}  # held-out rows never train
        assert [list(p) for p in gjob.parts] == [list(p) for p in keep]
    held = cell_job.train.select(val.tolist())["input_ids"]
    grid_evals = [ds for root, ds in evaluated if "lr_grid" in root.parts]
    for ds in grid_evals:
        assert ds is not cell_job.test and all(x in held for x in ds["input_ids"])  # validation rows only
    # Per grid run: round 0 reads a token GRID_START_ROWS rows (its score cannot change the choice), the
    # end the whole validation split, the score the rule reads.
    assert [len(ds) for ds in grid_evals] == [min(len(val), compare.GRID_START_ROWS), len(val)] * len(
        compare.LR_MULTIPLIERS)
    assert grid_evals[1]["input_ids"] == held
    assert all(ds is cell_job.test for root, ds in evaluated if "lr_grid" not in root.parts)

    grid = _csv(plan.out / "lr_grid.csv")
    assert [float(r["multiplier"]) for r in grid] == list(compare.LR_MULTIPLIERS)
    chosen = [r for r in grid if r["chosen"] == "True"]
    assert len(chosen) == 1 and float(chosen[0]["val_score"]) == max(float(r["val_score"]) for r in grid)
    assert cell_job.cfg.lr["lora"] == pytest.approx(float(chosen[0]["lr"]))
    assert json.loads((cell_root / "lora" / "result.json").read_text())["lr"] == pytest.approx(float(chosen[0]["lr"]))


def test_carve_validation_splits_each_shard():
    parts = [np.arange(0, 10), np.arange(10, 13), np.array([13])]
    keep, val = compare.carve_validation(parts, 0.2, seed=0)
    assert [len(k) for k in keep] == [8, 2, 1] and len(val) == 3
    assert sorted(np.concatenate([*keep, val]).tolist()) == list(range(14))


# -- command line ------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--alphas", "0.1,zero"], "--alphas: 'zero' is neither"),
    (["--methods", "fft,nope"], "--methods: unknown method 'nope'"),
    (["--seeds", "0,x"], "--seeds must be integers"),
    (["--target", "85"], "--target must be a score in (0, 1]"),
    (["--set", "rounds=0"], "config key 'rounds'"),
    (["--looks", "3,2"], "--looks needs increasing seed counts"),
    (["--looks", "3,5", "--seeds", "0,1,2"], "--looks 3,5 needs 5 seeds, --seeds lists 3"),
    (["--margin", "2"], "--margin must lie in (0, 1)"),
])
def test_cli_rejects_bad_input_with_one_line(args, message, capsys, tmp_path):
    assert cli_main(["compare", "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_cli_compare_reads_a_finished_comparison_back(tiny_compare, tmp_path, monkeypatch, capsys,
                                                      tiny_model_dir, small_csv):
    plan, _, _ = tiny_compare
    out = tmp_path / "out"
    shutil.copytree(plan.out, out)
    calls = _spy_run_method(monkeypatch)
    sets = [x for s in [f"model.path={tiny_model_dir}", f"data.path={small_csv}", *TINY] for x in ("--set", s)]
    code = cli_main(["compare", *sets, "--methods", "fft,federa", "--alphas", "0.5,iid", "--seeds", "0",
                     "--out", str(out), "--no-progress"])
    assert code == 0 and calls == []
    printed = capsys.readouterr().out
    assert "| iid | federa |" in printed and printed.count("claim ") >= 4


def test_plots_name_the_main_metric(tiny_compare):
    from federa.compare.plots import main_metric

    plan, _, _ = tiny_compare
    assert main_metric(plan) == "accuracy"  # what the runs recorded (a regression would say pearson)


def test_cli_warns_where_no_method_learned():
    from federa.compare.cli import not_learned
    from federa.compare.stats import paired_verdict

    flat, up = paired_verdict([0.0, 0.01, 0.0], ">", 0.02), paired_verdict([0.3, 0.4, 0.35], ">", 0.02)
    lines = not_learned({"0.1": {"lora": flat, "federa": flat}, "iid": {"lora": flat, "federa": up}})
    assert len(lines) == 1 and lines[0].startswith("warning: at alpha=0.1 no method beat its untrained score")


def test_a_cell_resumes_under_other_threads_but_not_under_other_settings(tiny_cfg, tmp_path):
    """Threads and the evaluation batch change how fast a cell runs, not what it computes: a resume may
    change them (a benchmark restarted on a busier machine); anything else is refused in one line."""
    from federa.compare.execute import _claim_cell_dir
    from federa.results_dir import RunDir

    rd = RunDir(tmp_path / "cell")
    _claim_cell_dir(rd, tiny_cfg("methods=lora,lora@fedadam"))  # a method whose lr is its initialisation's
    _claim_cell_dir(rd, tiny_cfg("methods=lora,lora@fedadam,federa", "model.num_threads=2", "eval_batch_size=7"))
    assert "federa" in rd.config.read_text()  # methods added: the cell's config now lists them
    with pytest.raises(ConfigError, match="was run with a different 'lora.r'"):
        _claim_cell_dir(rd, tiny_cfg("methods=lora", "lora.r=2"))
    with pytest.raises(ConfigError, match="was run with a different 'lr.lora'"):
        _claim_cell_dir(rd, tiny_cfg("methods=lora", "lr.lora=0.5"))
    with pytest.raises(ConfigError, match="was run with a different 'lr.lora@fedadam'"):
        _claim_cell_dir(rd, tiny_cfg("methods=lora@fedadam", "lr.lora@fedadam=0.5"))
