"""A disk that fills up, simulated where a real one shows it: the ``fsync`` of a file being written
fails with ENOSPC (a filesystem with delayed allocation reports it there), optionally after only
part of an appended line reached the file. Shared by tests/test_disk_full.py and tests/test_fuzz.py."""

from __future__ import annotations

import errno
import os
from pathlib import Path


class FullDisk:
    """Replaces ``os.fsync``: the ``nth`` fsync of a file called ``name`` fails with ENOSPC.

    ``cut_line``: first drop the second half of the file's last line, as a disk that took only
    part of an append leaves it.
    """

    def __init__(self, name: str, nth: int, cut_line: bool = False) -> None:
        self.name, self.nth, self.cut_line = name, nth, cut_line
        self.seen, self.fired, self.real = 0, False, os.fsync

    def __call__(self, fd: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if not self.fired and path.name == self.name:
            self.seen += 1
            if self.seen == self.nth:
                self.fired = True
                if self.cut_line:
                    data = path.read_bytes()
                    last = data.rstrip(b"\n").rsplit(b"\n", 1)[-1]
                    os.ftruncate(fd, len(data) - len(last) // 2 - 1)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.real(fd)
