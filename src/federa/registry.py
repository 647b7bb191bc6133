"""The one way federa's registries name what they hold: ``"module.path:Attribute"``, imported on use.

Methods, strategies, tasks and engines each keep a table of such strings, so reading the table
(validating a config, listing choices) imports nothing heavy, and adding an entry is one line.
"""

from __future__ import annotations

import importlib
from typing import Any


def load(entry: str) -> Any:
    """``"federa.strategies.fedavg:FedAvg"`` → the FedAvg class."""
    module, attr = entry.split(":")
    return getattr(importlib.import_module(module), attr)
