"""A SuperLink and SuperNodes on 127.0.0.1 for tests and benchmarks (not part of the library)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from federa.engines.flower import FlowerError
from federa.engines.flower.launch import flower_env, superlink_command, supernode_command


class LocalFederation:
    """A SuperLink and ``n`` SuperNodes on 127.0.0.1 (node i holds client i of n), insecure, or
    with TLS when ``certs`` gives the CA, server certificate and key (``tls_certs.make_certs``).

    For tests, benchmarks and trying things out. Each process runs in its own session, so
    :meth:`kill`/:meth:`close` also end the SuperExec and app processes it spawned.
    """

    def __init__(self, root: Path, n: int, port: int | None = None, certs: dict[str, Path] | None = None,
                 node_env: dict[int, dict[str, str]] | None = None) -> None:
        """``node_env``: node i → environment variables that node (and the apps it spawns) gets on top
        of the federation's, e.g. a PYTHONPATH whose sitecustomize makes it a hostile node."""
        import socket

        self.root, self.n, self.certs = Path(root), n, certs
        self.node_env = node_env or {}
        self.root.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = port or s.getsockname()[1]
        self.env = flower_env(self.root / "flwr-home")
        self.procs: dict[str, subprocess.Popen] = {}
        try:
            tls = {} if certs is None else {"insecure": False, "certfile": str(certs["cert"]),
                                            "keyfile": str(certs["key"]), "ca_certfile": str(certs["ca"])}
            self._start("superlink", superlink_command(self.port, **tls))
            self._wait_port()
            for i in range(n):
                self.start_node(i)
        except BaseException:
            self.close()
            raise

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start_node(self, i: int, insecure: bool | None = None, **limits) -> None:
        """(Re)start the SuperNode ``node{i}`` holding client ``i``; ``insecure`` defaults to the
        federation's own mode, ``limits`` are supernode_command's reconnect limits."""
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        insecure = self.certs is None if insecure is None else insecure
        roots = None if insecure or self.certs is None else str(self.certs["ca"])
        self._start(f"node{i}", supernode_command(self.address, i, self.n, port=port, insecure=insecure,
                                                  root_certificates=roots, **limits), self.node_env.get(i))

    def _start(self, name: str, cmd: list[str], extra_env: dict[str, str] | None = None) -> None:
        with open(self.root / f"{name}.log", "w") as log:
            self.procs[name] = subprocess.Popen(cmd, cwd=self.root, env={**self.env, **(extra_env or {})}, stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True)

    def _wait_port(self, timeout: float = 60) -> None:
        import socket

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.procs["superlink"].poll() is not None:
                break
            time.sleep(0.2)
        raise FlowerError(f"the SuperLink did not start; see {self.root / 'superlink.log'}")

    def kill(self, name: str) -> None:
        """SIGKILL one process and everything it spawned (e.g. ``node2``)."""
        import signal

        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def close(self) -> None:
        for name in list(self.procs):
            self.kill(name)

    def __enter__(self) -> LocalFederation:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
