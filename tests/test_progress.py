"""What a user sees while waiting: the live status line (client k of n, step, loss, ETA), one line
per round off a terminal, a per-step cost far below a training step's, and runs on the user's own
data named after it."""

from __future__ import annotations

import io
import time

import pytest

from federa.config import build_config
from federa.engines.inprocess import run_method
from federa.job import prepare_job
from federa.progress import Progress
from federa.results_dir import RunDir, default_run_dir, run_name


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_live_line_shows_client_step_loss_and_an_eta_from_work_done():
    clock, stream = FakeClock(), io.StringIO()
    p = Progress(live=True, log=print, stream=stream, min_interval=0.2, clock=clock)
    p.method_start("federa", 4, 0, {"accuracy": "0.500"})
    p.round_start(1)
    for k in (1, 2):  # round 1: two clients of 10 steps, 1 s per step
        p.client_start(k, 2, k)
        for s in range(1, 11):
            clock.t += 1.0
            p.step(s, 10, 0.25 * k)
    p.round_end(1, {"train_loss": 0.3}, {"accuracy": "0.700"})
    # 1 of 4 rounds in 20 s: 60 s to go.
    assert p.eta() == pytest.approx(60.0)
    p.round_start(2)
    p.client_start(1, 2, 0)
    clock.t += 5.0
    p.step(5, 10, 0.125)
    # 1.25 of 4 rounds in 25 s: 55 s to go.
    assert p.done_fraction() == pytest.approx(1.25 / 4) and p.eta() == pytest.approx(55.0)
    line = stream.getvalue().split("\r")[-1]
    assert line.startswith("federa · round 2/4 · client 1/2 · step 5/10 · loss 0.1250 · accuracy 0.700 · 0:25 elapsed, ETA 0:55")
    p.method_end("federa", {})
    assert stream.getvalue().endswith("\n")


def test_redraws_are_throttled():
    clock, stream = FakeClock(), io.StringIO()
    p = Progress(live=True, log=print, stream=stream, min_interval=0.2, clock=clock)
    p.method_start("lora", 1, 0, {})
    p.round_start(1)
    p.client_start(1, 1, 0)
    for s in range(1, 1001):  # 1,000 steps of 10 ms: 10 s, so at most ~50 redraws
        clock.t += 0.01
        p.step(s, 1000, 0.5)
    draws = stream.getvalue().count("\r")
    assert 40 <= draws <= 55


def test_a_step_costs_microseconds():
    p = Progress(live=True, log=print, stream=io.StringIO())
    p.method_start("lora", 10, 0, {})
    p.round_start(1)
    p.client_start(1, 5, 0)
    n = 100_000
    t = time.perf_counter()
    for s in range(n):
        p.step(s, n, 0.5)
    per_step = (time.perf_counter() - t) / n
    # A local step of the tiny 2-layer test model takes milliseconds; a real model's, far more.
    assert per_step < 20e-6, f"{per_step * 1e6:.1f} µs per step"


def test_off_a_terminal_one_line_per_round(tmp_path, tiny_cfg):
    cfg = tiny_cfg("methods=lora", "rounds=3")
    lines: list[str] = []
    run_method(prepare_job(cfg), "lora", RunDir(tmp_path), progress=True, log=lines.append)  # pytest: not a tty
    rounds = [ln for ln in lines if ln.startswith("[lora] round ")]
    assert [ln.split(":")[0] for ln in rounds] == ["[lora] round 1/3", "[lora] round 2/3", "[lora] round 3/3"]
    assert all("accuracy" in ln and "train loss" in ln and "ETA" in ln for ln in rounds)
    assert rounds[-1].endswith("ETA 0:00")


def test_live_line_in_a_real_run(tmp_path, tiny_cfg):
    cfg = tiny_cfg("methods=lora", "rounds=1")
    stream = io.StringIO()
    run_method(prepare_job(cfg), "lora", RunDir(tmp_path), log=lambda *_: None,
               events=Progress(live=True, log=print, stream=stream, min_interval=0.0))
    shown = stream.getvalue()
    assert "lora · round 1/1 · client 2/2 · step 2/2 · loss " in shown
    assert shown.endswith("\n")


@pytest.mark.parametrize("sets,name", [
    ([], "default"),
    (["data.path=/data/my reviews.csv"], "my-reviews"),
    (["data.path=/data/saved_ds"], "saved_ds"),
    (["data.hub=ag_news"], "ag_news"),
    (["data.hub=glue", "data.hub_config=mrpc"], "glue-mrpc"),
    (["data.hub=someone/tweets"], "tweets"),
    (["data.builtin=sts_b"], "sts_b"),
    (["data.path=/data/reviews.csv", "name=exp1"], "exp1"),
])
def test_run_is_named_after_its_data(sets, name):
    cfg = build_config({}, sets)
    assert run_name(cfg) == name
    assert default_run_dir(cfg).name.endswith(f"-{name}")
