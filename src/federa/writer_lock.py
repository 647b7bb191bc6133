"""One results folder, one writer: an exclusive OS lock held while anything writes to a run folder.

Two ``federa run --resume DIR`` at once, or a resume while the Flower ServerApp of a killed
``federa run`` still trains on the SuperLink, would run the same rounds twice into one
folder. Whoever writes holds ``fcntl.flock`` on ``DIR/.federa.lock``; the kernel drops the
lock when its process dies, so ``kill -9`` never leaves a stale lock to clean up by hand. The
file also says who holds it (pid, host, role), for the one-line refusal the next writer gets.

A process may take the same folder's lock more than once (the in-process Flower simulation
runs the ServerApp inside ``federa run``): it counts, and the last release unlocks. ``flock``
would refuse a second open of the same file even within one process, hence the table of the
locks this process holds (module state on purpose: it mirrors the kernel's per-process view).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from federa.errors import FederaError

LOCK_NAME = ".federa.lock"


class RunBusyError(FederaError):
    """Another process is writing to this results folder."""


@dataclass
class _Held:
    fd: int
    count: int
    role: str


_HELD: dict[str, _Held] = {}  # resolved folder → this process's lock on it


def _key(root: Path) -> str:
    return str(Path(root).resolve())


def holder(root: Path) -> str:
    """Who holds (or last held) the lock on ``root``, in words."""
    try:
        info = json.loads((Path(root) / LOCK_NAME).read_text(encoding="utf-8"))
        return (f"{info['role']} (pid {info['pid']} on host {info['host']}, "
                f"since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(info['since']))})")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _lock(root: Path, role: str) -> int:
    try:
        fd = os.open(Path(root) / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:  # a read-only folder (someone else's results), or a full disk
        raise FederaError(f"results folder {root}: cannot write its lock file {LOCK_NAME} ({err.strerror}); "
                          "pass a folder you can write to") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise RunBusyError(
            f"results folder {root} is being written by {holder(root)}; wait for it to finish or stop it "
            "(the lock goes with its process), then run again") from None
    info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "role": role, "since": time.time()})
    os.ftruncate(fd, 0)
    os.pwrite(fd, info.encode(), 0)
    return fd


def acquire(root: Path, role: str = "federa run") -> None:
    """Take the writer lock on the existing folder ``root``, or raise :class:`RunBusyError` naming its holder."""
    key = _key(root)
    if key in _HELD:
        _HELD[key].count += 1
        return
    _HELD[key] = _Held(_lock(root, role), 1, role)


def release(root: Path) -> None:
    """Give back one :func:`acquire`; the last one unlocks (the lock file stays: deleting it would race)."""
    held = _HELD.get(_key(root))
    if held is None:
        return
    held.count -= 1
    if held.count == 0:
        del _HELD[_key(root)]
        os.close(held.fd)  # closing the last descriptor drops the flock


def is_held(root: Path) -> bool:
    """Whether this process holds the lock on ``root``."""
    return _key(root) in _HELD


@contextmanager
def held(root: Path, role: str = "federa run") -> Iterator[None]:
    acquire(root, role)
    try:
        yield
    finally:
        release(root)


@contextmanager
def lent(root: Path) -> Iterator[None]:
    """Let another writer (the Flower ServerApp, maybe in another process) hold ``root`` for the
    block; take the lock back after it, or raise :class:`RunBusyError` if someone else kept it."""
    held_now = _HELD.pop(_key(root), None)
    if held_now is None:
        yield
        return
    os.close(held_now.fd)
    try:
        yield
    finally:
        _HELD[_key(root)] = _Held(_lock(root, held_now.role), held_now.count, held_now.role)
