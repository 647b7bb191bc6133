"""User-facing errors: the CLI prints ``str(error)`` as one line and exits non-zero."""

import errno

# What a write returns when the disk (or the user's quota on it) is full.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


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
    return isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS
