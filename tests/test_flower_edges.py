"""Flower's edges: TLS end to end, and one `error:` line for a node or a server that cannot start."""

from __future__ import annotations

import socket
import time

import pytest

from federa.cli import main
from federa.experiment import run_experiment
from federa.results_dir import RunDir, open_run_dir
from local_federation import LocalFederation
from tls_certs import make_certs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_on_a_port_in_use_is_one_line(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--insecure", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: port {port} on 127.0.0.1 is already in use (another `federa serve`?); "
                   "stop that process or pick another --port"]


@pytest.mark.parametrize("args, words", [
    (["--num-partitions", "0", "--partition-id", "0"], "--num-partitions 0: it is the run's num_clients, at least 1"),
    (["--num-partitions", "2", "--partition-id", "2"], "--partition-id 2 must lie in 0..1 (--num-partitions 2)"),
    (["--num-partitions", "2", "--partition-id", "0", "--max-wait-time", "-1"], "--max-wait-time and --max-retries"),
])
def test_node_arguments_are_checked_before_flower_starts(capsys, args, words):
    assert main(["node", "--insecure", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and words in err[0]


def test_node_with_no_superlink_gives_up_with_one_line(capsys):
    """Before, `federa node` retried for ever; now Flower's own limit ends it, and federa says why."""
    address = f"127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    rc = main(["node", "--insecure", "--superlink", address, "--partition-id", "0", "--num-partitions", "1",
               "--port", str(_free_port()), "--max-wait-time", "3"])
    seconds = time.monotonic() - t0
    assert rc == 2 and seconds < 60
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: no SuperLink answered at {address} within 3 s; start it with `federa serve`, check the "
                   "address (and TLS: --insecure on both sides or neither), or raise --max-wait-time"]


@pytest.mark.slow
def test_tls_run_completes_and_an_insecure_node_is_refused(tmp_path, tiny_cfg):
    certs = make_certs(tmp_path / "certs")
    with LocalFederation(tmp_path / "federation", 2, certs=certs) as fed:
        # A node that will not speak TLS never joins: Flower gives up on it (exit code 305).
        fed.start_node(9, insecure=True, max_wait_time=5)
        intruder = fed.procs["node9"]
        assert intruder.wait(timeout=60) != 0
        assert "Exit Code: 305" in (fed.root / "node9.log").read_text()
        fed.procs.pop("node9")

        cfg = tiny_cfg("engine=flower", f"flower.superlink={fed.address}", "flower.insecure=false",
                       f"flower.root_certificates={certs['ca']}", "model.num_threads=1", "flower.round_timeout_s=120",
                       "methods=lora", "num_clients=2", "clients_per_round=2", "rounds=1")
        out = tmp_path / "run"
        summary = run_experiment(cfg, open_run_dir(cfg, out, resume=False), progress=False)
    assert summary["methods"]["lora"]["status"] == "done"
    rows = [r for r in RunDir(out).read_metrics() if r["method"] == "lora"]
    assert [r["round"] for r in rows] == [0, 1] and rows[1]["clients"] == [0, 1]


def _flower_pids(tool: str, port: int) -> list[int]:
    """Processes running ``tool`` with ``--port port`` (ours: the port is unique to this test)."""
    from pathlib import Path

    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(a.endswith(tool.encode()) for a in args) and str(port).encode() in args:
            found.append(int(proc.name))
    return found


@pytest.mark.parametrize("what", ["serve", "node"])
def test_sigterm_to_federa_ends_its_flower_process(what):
    """Before (issue 25): SIGTERM killed `federa serve` at once and left `flower-superlink` running, still
    holding the port (the same for `federa node` and its SuperNode). Now the signal is forwarded and
    federa waits for the tool to exit."""
    import os
    import signal
    import subprocess
    import sys

    port = _free_port()
    if what == "serve":
        args, tool = ["serve", "--insecure", "--port", str(port)], "flower-superlink"
    else:  # a node whose SuperLink never answers keeps retrying (for 120 s)
        args = ["node", "--insecure", "--superlink", f"127.0.0.1:{_free_port()}", "--partition-id", "0",
                "--num-partitions", "1", "--port", str(port), "--max-wait-time", "120"]
        tool = "flower-supernode"
    federa = subprocess.Popen([sys.executable, "-m", "federa", *args], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    children: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not children and time.monotonic() < deadline and federa.poll() is None:
            time.sleep(0.2)
            children = _flower_pids(tool, port)
        assert children, f"{tool} did not start"
        time.sleep(1.0)  # let it set up its own signal handling
        federa.send_signal(signal.SIGTERM)
        _, err = federa.communicate(timeout=30)
        deadline = time.monotonic() + 5  # (init reaps what was orphaned)
        while _flower_pids(tool, port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _flower_pids(tool, port) == [], f"{tool} outlived federa {what}"
        assert federa.returncode == 143 and f"stopped by SIGTERM; {tool} has exited" in err, err
    finally:
        if federa.poll() is None:
            federa.kill()
        for pid in _flower_pids(tool, port):  # an orphan of the old behaviour: do not leak it
            os.kill(pid, signal.SIGKILL)
