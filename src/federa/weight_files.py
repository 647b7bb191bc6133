"""Weight files that cannot load: a truncated or garbled ``*.safetensors`` or PyTorch ``*.bin``.

An interrupted download or copy leaves a model file cut short. transformers then fails deep
inside safetensors' reader with a ``SafetensorError`` ("incomplete metadata, file not fully
covered") that names neither the file nor the fix. Both formats say how long they must be:
safetensors' header (an 8-byte length, then JSON with every tensor's byte range) fixes the file's
exact size, and a PyTorch zip ends with its central directory. So a cut file is found from a few
bytes, before any loading, and reported in one line.

A flipped byte inside a tensor keeps both sizes right, so federa also writes ``checksums.json``
(SHA-256 of every file) beside each final model it saves, and checks it before loading one.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zipfile
from pathlib import Path

_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


def safetensors_problem(path: Path) -> str | None:
    """Why the safetensors file ``path`` cannot load (truncated, garbled), or None."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"{path} is truncated ({size} bytes, not even a header)"
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER:
            return f"{path} is not a safetensors file (its header length reads {n} bytes)"
        if 8 + n > size:
            return f"{path} is truncated ({size} bytes; its header alone needs {8 + n})"
        raw = f.read(n)
    try:
        header = json.loads(raw)
        ends = [int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"]
    except (ValueError, UnicodeDecodeError, TypeError, KeyError, IndexError, AttributeError):
        return f"{path} is not a safetensors file (its header is not the JSON safetensors writes)"
    expected = 8 + n + max(ends, default=0)
    if size < expected:
        return f"{path} is truncated ({size} of the {expected} bytes its header describes)"
    if size > expected:
        return f"{path} is corrupt ({size - expected} bytes more than its header describes)"
    return None


def torch_bin_problem(path: Path) -> str | None:
    """Why the PyTorch weights file ``path`` cannot load, or None.

    Only the zip format (torch >= 1.6, what ``save_pretrained`` writes) is checked: a zip cut
    short loses the central directory at its end. Older pickle files have no such marker.
    """
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"PK\x03\x04" and not zipfile.is_zipfile(path):
        return f"{path} is truncated (a PyTorch zip without its end: the write or copy did not finish)"
    if path.stat().st_size == 0:
        return f"{path} is empty"
    return None


def weights_problem(folder: Path) -> str | None:
    """The first weight file in ``folder`` (where transformers and peft look) that cannot load, or None."""
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        if path.suffix == ".safetensors":
            why = safetensors_problem(path)
        elif path.suffix == ".bin" and path.name.startswith("pytorch_model"):
            why = torch_bin_problem(path)
        else:
            continue
        if why is not None:
            return why
    return None


CHECKSUMS = "checksums.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_checksums(folder: Path) -> None:
    """Record the SHA-256 of every file directly in ``folder`` (links, e.g. an adapter's base, are not
    federa's to vouch for) in ``checksums.json``; written last, atomically."""
    from federa.checkpoint import atomic_write_bytes

    sums = {p.name: _sha256(p) for p in sorted(folder.iterdir())
            if p.is_file() and not p.is_symlink() and p.name != CHECKSUMS}
    atomic_write_bytes(folder / CHECKSUMS, json.dumps({"sha256": sums}, indent=1).encode("utf-8"))


def checksum_problem(folder: Path) -> str | None:
    """The first file of ``folder`` whose bytes differ from its recorded SHA-256 (or that is missing),
    or None; a folder without ``checksums.json`` (saved before federa wrote them) is not checked."""
    record = folder / CHECKSUMS
    if not record.is_file():
        return None
    try:
        sums = json.loads(record.read_text(encoding="utf-8"))["sha256"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return f"{record} is corrupt"
    for name, digest in sums.items():
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        if _sha256(path) != digest:
            return f"{path} has changed since the run saved it (its SHA-256 differs from {CHECKSUMS})"
    return None
