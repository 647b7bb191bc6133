"""Crash-safe checkpoints: atomic replace, a checksum, and the previous good one kept.

Layout of a checkpoint file: 8-byte magic, 32-byte SHA-256 of the payload, payload
(``torch.save`` of a dict). Writing goes to a temp file that is fsynced and then renamed over
the target, so a reader sees either the old or the new checkpoint, never half of one; the
old one is kept as ``<name>.prev`` in case the new one is later found corrupt.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from federa.errors import FederaError

if TYPE_CHECKING:
    import torch

_MAGIC = b"FEDERA01"


class CheckpointError(FederaError):
    """A checkpoint exists but cannot be trusted (checksum or format)."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # A full disk (or a signal) mid-write: the half file goes, so it neither holds the space
        # nor is mistaken for a result; ``path`` itself was never touched.
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(payload, buf)
    body = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        os.replace(path, path.with_name(path.name + ".prev"))
    atomic_write_bytes(path, _MAGIC + hashlib.sha256(body).digest() + body)


def _read(path: Path) -> dict[str, Any]:
    import torch

    raw = path.read_bytes()
    if len(raw) < 40 or raw[:8] != _MAGIC:
        raise CheckpointError(f"{path} is not a federa checkpoint (truncated or wrong format)")
    body = raw[40:]
    if hashlib.sha256(body).digest() != raw[8:40]:
        raise CheckpointError(f"{path} is corrupt (checksum mismatch)")
    return torch.load(io.BytesIO(body), weights_only=False)


def load_checkpoint(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(payload, warning): the newest checkpoint that verifies, falling back to ``.prev``.

    Returns (None, None) when there is no checkpoint; raises CheckpointError when there are
    only corrupt ones.
    """
    prev = path.with_name(path.name + ".prev")
    if not path.exists() and not prev.exists():
        return None, None
    problems = []
    for candidate in (path, prev):
        if not candidate.exists():
            continue
        try:
            payload = _read(candidate)
        except CheckpointError as err:
            problems.append(str(err))
            continue
        return payload, ("; ".join(problems) + f"; resuming from {candidate.name}") if problems else None
    raise CheckpointError("; ".join(problems) + "; delete it to start this method over")
