"""User-facing errors: the CLI prints ``str(error)`` as one line and exits non-zero."""

import errno
import os

# What a write returns when the disk (or the user's quota on it) is full.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_DISK_FULL_TEXTS = tuple(os.strerror(e) for e in sorted(DISK_FULL_ERRNOS))


class FederaError(Exception):
    """A problem with the user's input or environment, with the fix in the message."""


class ConfigError(FederaError):
    """The configuration (file or ``--set``) is invalid."""


class DataError(FederaError):
    """The data source is missing, malformed, or cannot be partitioned as asked."""


class ModelError(FederaError):
    """The model cannot be loaded or the method cannot be applied to it."""


class NonFiniteLossError(FederaError):
    """Training produced a NaN/inf loss; the method is stopped, other methods go on."""


class DiskFullError(FederaError):
    """The disk filled up during a run; finished rounds are kept and the message says how to go on."""


def is_disk_full(err: BaseException) -> bool:
    """ENOSPC/EDQUOT, as an ``OSError`` or as what libraries raise instead: the Rust writers of
    ``tokenizers`` and ``safetensors`` raise a plain ``Exception``/``SafetensorError`` that only
    carries the OS's text ("No space left on device (os error 28)"); a wrapper may chain it."""
    return disk_full_reason(err) is not None


def disk_full_reason(err: BaseException) -> str | None:
    """The OS's words for a full disk found in ``err`` or its chain (e.g. "No space left on device"), or None."""
    seen: set[int] = set()
    at: BaseException | None = err
    while at is not None and id(at) not in seen:
        seen.add(id(at))
        if isinstance(at, OSError) and at.errno is not None:
            if at.errno in DISK_FULL_ERRNOS:
                return at.strerror or os.strerror(at.errno)
        else:
            text = str(at)
            for known in _DISK_FULL_TEXTS:
                if known in text:
                    return known
        at = at.__cause__ or at.__context__
    return None
