"""Starting Flower's pieces for federa: the SuperLink, SuperNodes, and a run submitted to them.

Everything goes through Flower's own command-line tools (``flower-superlink``,
``flower-supernode``, ``flwr run``/``flwr log``/``flwr ls``/``flwr stop``), the interface Flower
documents and keeps stable, so what federa does is what a user could type.

The Flower app that ``flwr run`` submits is described by :data:`APP_TABLE`, the
``[tool.flwr.app]`` table also found in federa's own pyproject.toml (so ``flwr run .`` works
from a checkout). Its bundle carries no code: every machine runs the installed ``federa``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import tomli_w

from federa.engines.flower.settings import FlowerSettings
from federa.engines.flower import FlowerError
from federa.results_dir import RunDir

APP_TABLE: dict[str, Any] = {
    "publisher": "federa",
    "components": {
        "serverapp": "federa.engines.flower.server_app:app",
        "clientapp": "federa.engines.flower.client_app:app",
    },
    # run config: --run-config 'out="/abs/results" config="/abs/cfg.yaml" set="rounds=3;lora.r=4"'
    "config": {"config": "", "set": "", "out": "", "method": ""},
}
CONNECTION = "federa"


def _bin(name: str) -> str:
    """A Flower executable next to this Python (a venv's bin/), else from PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise FlowerError(f"`{name}` not found; install Flower with `pip install flwr`")
    return found


def flower_env(home: Path | None = None) -> dict[str, str]:
    """Environment for Flower's tools: this venv's bin/ first (the SuperLink spawns
    ``flower-superexec`` by name), and optionally a private FLWR_HOME."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    if home is not None:
        env["FLWR_HOME"] = str(home)
    return env


def superlink_command(port: int, host: str = "127.0.0.1", insecure: bool = True, certfile: str | None = None,
                      keyfile: str | None = None, ca_certfile: str | None = None,
                      database: str | None = None) -> list[str]:
    """``flower-superlink`` with one HTTP port for the Fleet, Control and Runtime APIs."""
    cmd = [_bin("flower-superlink"), "--host", host, "--port", str(port),
           # federa is installed on every machine; the app bundle carries no dependencies.
           "--disable-runtime-dependency-installation"]
    if insecure:
        cmd.append("--insecure")
    else:
        if not (certfile and keyfile and ca_certfile):
            raise FlowerError("a TLS SuperLink needs --ssl-certfile, --ssl-keyfile and --ssl-ca-certfile "
                              "(or --insecure)")
        cmd += ["--ssl-certfile", certfile, "--ssl-keyfile", keyfile, "--ssl-ca-certfile", ca_certfile]
    if database:
        cmd += ["--database", database]
    return cmd


def supernode_command(superlink: str, partition_id: int, num_partitions: int, port: int,
                      insecure: bool = True, root_certificates: str | None = None,
                      data_path: str | None = None, model_path: str | None = None,
                      max_wait_time: float | None = None, max_retries: int | None = None,
                      memory_dir: str | None = None) -> list[str]:
    """``flower-supernode`` holding one federa client; ``port`` is its own local runtime port.

    ``max_wait_time``/``max_retries``: Flower's own limits on reconnecting (None: no limit).
    """
    node_config = f"partition-id={partition_id} num-partitions={num_partitions}"
    if data_path:
        node_config += f' data-path="{Path(data_path).resolve()}"'
    if model_path:
        node_config += f' model-path="{Path(model_path).resolve()}"'
    if memory_dir:  # "off", or the folder that keeps client memory (engines/flower/node_memory.py)
        node_config += ' memory-dir="off"' if memory_dir == "off" else f' memory-dir="{Path(memory_dir).resolve()}"'
    cmd = [_bin("flower-supernode"), "--superlink", superlink, "--port", str(port), "--node-config", node_config]
    if max_wait_time is not None:
        cmd += ["--max-wait-time", f"{max_wait_time:g}"]
    if max_retries is not None:
        cmd += ["--max-retries", str(max_retries)]
    if insecure:
        cmd.append("--insecure")
    elif root_certificates:
        cmd += ["--root-certificates", root_certificates]
    return cmd


def write_app(folder: Path) -> Path:
    """A minimal Flower app folder (just pyproject.toml) pointing at federa's installed apps."""
    folder.mkdir(parents=True, exist_ok=True)
    doc = {
        "project": {"name": "federa", "version": "0.1.0", "license": "Apache-2.0",
                    "description": "federa's ServerApp and ClientApp", "dependencies": []},
        "tool": {"flwr": {"app": APP_TABLE}},
    }
    (folder / "pyproject.toml").write_text(tomli_w.dumps(doc), encoding="utf-8")
    return folder


def write_flwr_home(home: Path, fc: FlowerSettings) -> Path:
    """A private Flower config with one SuperLink connection, so the user's ~/.flwr is untouched."""
    home.mkdir(parents=True, exist_ok=True)
    conn: dict[str, Any] = {"address": fc.superlink, "insecure": fc.insecure}
    if fc.root_certificates:
        conn["root-certificates"] = str(Path(fc.root_certificates).resolve())
    doc = {"superlink": {"default": CONNECTION, CONNECTION: conn}}
    (home / "config.toml").write_text(tomli_w.dumps(doc), encoding="utf-8")
    return home


def _flwr(args: list[str], env: dict[str, str], timeout: float = 120) -> str:
    proc = subprocess.run([_bin("flwr"), *args], env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()
        raise FlowerError(f"`flwr {args[0]}` failed: {last[-1] if last else 'no output'}")
    return proc.stdout


def _json_tail(text: str) -> dict[str, Any]:
    # `--format json` prints one JSON object, possibly after warnings.
    return json.loads(text[text.index("{"):])


def run_status(run_id: int, env: dict[str, str]) -> str:
    out = _json_tail(_flwr(["ls", CONNECTION, "--run-id", str(run_id), "--format", "json"], env))
    runs = out.get("runs") or []
    return str(runs[0].get("status", "unknown")) if runs else "unknown"


def submit_and_wait(fc: FlowerSettings, run_dir: RunDir, method: str, progress: bool = True, rounds: int = 0,
                    log=print) -> str:
    """Submit one method's run to the SuperLink and wait until it finishes; returns its status.

    Flower's log stream goes to ``<method>/flower.log``; the progress bar follows metrics.jsonl.
    """
    from tqdm.auto import tqdm

    log_path = run_dir.method_dir(method) / "flower.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="federa-flwr-") as tmp:
        env = flower_env(write_flwr_home(Path(tmp) / "home", fc))
        app = write_app(Path(tmp) / "federa")
        run_config = Path(tmp) / "run_config.toml"
        run_config.write_text(tomli_w.dumps({"out": str(run_dir.root.resolve()), "method": method}), encoding="utf-8")
        out = _json_tail(_flwr(["run", str(app), CONNECTION, "--run-config", str(run_config), "--format", "json"], env))
        if not out.get("success"):
            why = " ".join(str(out.get("error-message", out)).split("\n")[1:]).strip() or str(out)
            raise FlowerError(f"cannot start a Flower run at {fc.superlink}: {why} "
                              f"(start one with `federa serve`, or set flower.superlink)")
        run_id = int(out["run-id"])
        log(f"[{method}] Flower run {run_id} on {fc.superlink}; log: {log_path}")
        bar = tqdm(total=rounds, desc=method, unit="round", disable=not progress, dynamic_ncols=True)
        with open(log_path, "a", encoding="utf-8") as f:
            # `flwr log` streams the run's logs and returns when the run has finished.
            streamer = subprocess.Popen([_bin("flwr"), "log", str(run_id), CONNECTION], env=env,
                                        stdout=f, stderr=subprocess.STDOUT)
            try:
                status = _wait(run_id, env, streamer, run_dir, method, bar)
            except KeyboardInterrupt:
                subprocess.run([_bin("flwr"), "stop", str(run_id), CONNECTION], env=env, capture_output=True)
                raise
            finally:
                if streamer.poll() is None:
                    streamer.terminate()
                    streamer.wait(timeout=10)
                bar.close()
    return status


def _wait(run_id: int, env: dict[str, str], streamer: subprocess.Popen, run_dir: RunDir, method: str, bar) -> str:
    last_check = time.monotonic()
    while True:
        done = max((r["round"] for r in run_dir.read_metrics() if r.get("method") == method), default=0)
        bar.update(done - bar.n)
        since = time.monotonic() - last_check
        if (streamer.poll() is not None and since > 5) or since > 30:
            # The stream ending is the usual signal; an explicit status check (a `flwr ls`
            # process, so not every second) backs it up.
            status = run_status(run_id, env)
            if status.startswith("finished"):
                return status
            last_check = time.monotonic()
        time.sleep(1.0)


def simulate(run_dir: RunDir, method: str, num_supernodes: int, cpus_per_client: float = 1.0) -> None:
    """One method on Flower's simulation runtime (Ray backend), in this process.

    Every virtual SuperNode gets ``partition-id``/``num-partitions`` from Flower, as federa's
    ClientApp expects; the ServerApp is the same one a SuperLink would start.
    """
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise FlowerError("flower.mode=simulation needs Ray; install it with `pip install 'flwr[simulation]'`")
    from flwr.simulation import run_simulation

    from federa.engines.flower.client_app import app as client_app
    from federa.engines.flower.server_app import make_server_app

    run_simulation(
        server_app=make_server_app(out=str(run_dir.root.resolve()), method=method),
        client_app=client_app,
        num_supernodes=num_supernodes,
        backend_config={"client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
                        "init_args": {"logging_level": "error", "log_to_driver": False}},
    )


# -- `federa serve` / `federa node` ------------------------------------------------------


def add_serve_arguments(p) -> None:
    p.add_argument("--port", type=int, default=9093, help="the SuperLink's one HTTP port (Fleet, Control, Runtime)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on; 0.0.0.0 for other machines")
    p.add_argument("--insecure", action="store_true", help="no TLS (loopback and trusted networks only)")
    p.add_argument("--ssl-certfile", help="server certificate (PEM)")
    p.add_argument("--ssl-keyfile", help="server private key (PEM)")
    p.add_argument("--ssl-ca-certfile", help="CA certificate that signed the server certificate (PEM)")
    p.add_argument("--database", help="SQLite file for the SuperLink's state (default: in memory)")
    p.add_argument("--simulation", action="store_true",
                   help="run submitted apps on Flower's simulation runtime (Ray) instead of SuperNodes")


def add_node_arguments(p) -> None:
    p.add_argument("--superlink", default="127.0.0.1:9093", help="SuperLink address host:port")
    p.add_argument("--partition-id", type=int, required=True, help="the federa client this node holds (0-based)")
    p.add_argument("--num-partitions", type=int, required=True, help="the run's num_clients")
    p.add_argument("--port", type=int, default=9094, help="this node's local runtime port (one per node on a machine)")
    p.add_argument("--insecure", action="store_true", help="no TLS (loopback and trusted networks only)")
    p.add_argument("--root-certificates", help="CA certificate (PEM) to verify a TLS SuperLink")
    p.add_argument("--data-path", help="this node's own data file: its whole shard (real deployments)")
    p.add_argument("--model-path", help="this node's copy of the model folder, if not the run's model.path")
    p.add_argument("--max-wait-time", type=float, default=300.0, metavar="SECONDS",
                   help="give up when the SuperLink cannot be reached for this long (default 300; 0: never)")
    p.add_argument("--max-retries", type=int, default=None, metavar="N",
                   help="give up after N failed connection attempts in a row (default: no limit within --max-wait-time)")
    p.add_argument("--memory-dir", help="where this node keeps its client's memory between rounds and across "
                   "resumes (e.g. SCAFFOLD's control variate); default $FLWR_HOME/federa-memory; off: not on disk")


# Flower's exit code for a SuperNode that gave up connecting (flower.ai/docs/framework/ref-exit-codes/305).
_NO_SUPERLINK = "Exit Code: 305"


# How long a Flower tool may take to stop after the signal federa forwarded, before it is killed.
_STOP_GRACE_S = 10.0


def _end_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:  # the whole group has already exited
        pass


def _exec(cmd: list[str]) -> tuple[int, bool]:
    """Run a Flower tool in the foreground, echoing its output; (exit code, whether it printed
    that it could not reach the SuperLink), so the caller can end with one line saying why.

    The tool runs in its own process group, ended with it: its SuperExec child would otherwise
    outlive it, holding the output pipe open. SIGTERM and SIGHUP to federa are forwarded to that
    group and federa waits for it (killing it after a grace period): a supervisor (systemd,
    Kubernetes, `kill`) stopping `federa serve` must not leave `flower-superlink` holding the port.
    """
    import signal
    import threading

    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, env=flower_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, start_new_session=True)
    unreachable = threading.Event()
    stopped_by: list[int] = []

    def echo() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            if _NO_SUPERLINK in line:
                unreachable.set()

    def forward(signum: int, _frame: object) -> None:
        if not stopped_by:
            stopped_by.append(signum)
            killer = threading.Timer(_STOP_GRACE_S, _end_group, (proc.pid, signal.SIGKILL))
            killer.daemon = True
            killer.start()
        _end_group(proc.pid, signum)

    reader = threading.Thread(target=echo, daemon=True)
    reader.start()
    previous = {}
    if threading.current_thread() is threading.main_thread():  # Python delivers signals there only
        previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        rc = proc.wait()
    except KeyboardInterrupt:
        _end_group(proc.pid, signal.SIGINT)
        rc = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _end_group(proc.pid, signal.SIGTERM)  # the tool's own children (SuperExec) go with it
        reader.join(timeout=5)
    if stopped_by:
        print(f"federa: stopped by {signal.Signals(stopped_by[0]).name}; {Path(cmd[0]).name} has exited",
              file=sys.stderr, flush=True)
        return 128 + stopped_by[0], False
    return rc, unreachable.is_set()


def port_problem(host: str, port: int) -> str | None:
    """Why a server cannot listen on ``host:port`` (in use, not an address here), or None."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return (f"port {port} on {host} is already in use (another `federa serve`?); "
                        f"stop that process or pick another --port")
            return f"cannot listen on {host}:{port}: {err.strerror}; check --host and --port"
    return None


def serve_main(args) -> int:
    """Start a SuperLink in the foreground (Ctrl-C stops it)."""
    if not args.insecure and not args.ssl_certfile:
        raise FlowerError("pass --insecure (loopback/trusted network) or the --ssl-* certificate files")
    if not 1 <= args.port <= 65535:
        raise FlowerError(f"--port {args.port} is not a TCP port; pick one in 1..65535")
    if (why := port_problem(args.host, args.port)) is not None:
        raise FlowerError(why)
    cmd = superlink_command(args.port, args.host, args.insecure, args.ssl_certfile, args.ssl_keyfile,
                            args.ssl_ca_certfile, args.database)
    rc, _ = _exec(cmd + (["--simulation"] if args.simulation else []))
    return rc


def node_main(args) -> int:
    """Start a SuperNode holding one federa client, in the foreground."""
    if not args.insecure and not args.root_certificates:
        raise FlowerError("pass --insecure (loopback/trusted network) or --root-certificates for a TLS SuperLink")
    if args.num_partitions < 1:
        raise FlowerError(f"--num-partitions {args.num_partitions}: it is the run's num_clients, at least 1")
    if not 0 <= args.partition_id < args.num_partitions:
        raise FlowerError(f"--partition-id {args.partition_id} must lie in 0..{args.num_partitions - 1} "
                          f"(--num-partitions {args.num_partitions})")
    if args.max_wait_time < 0 or (args.max_retries is not None and args.max_retries < 0):
        raise FlowerError("--max-wait-time and --max-retries must be >= 0 (0 wait: keep trying for ever)")
    cmd = supernode_command(args.superlink, args.partition_id, args.num_partitions, args.port, args.insecure,
                            args.root_certificates, args.data_path, args.model_path, memory_dir=args.memory_dir,
                            max_wait_time=args.max_wait_time or None, max_retries=args.max_retries)
    rc, unreachable = _exec(cmd)
    if unreachable:
        limit = f"{args.max_wait_time:g} s" + (f" / {args.max_retries} tries" if args.max_retries is not None else "")
        raise FlowerError(f"no SuperLink answered at {args.superlink} within {limit}; start it with `federa serve`, "
                          "check the address (and TLS: --insecure on both sides or neither), or raise --max-wait-time")
    return rc
