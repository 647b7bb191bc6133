"""The resolved config a run started with, stored beside it, so that a resume cannot silently change it.

``config.yaml`` is the user's to edit; ``config.fingerprint.json`` holds every resolved key
(defaults filled in) and a SHA-256 of them. ``federa run --resume`` compares the two and
refuses a changed key (a changed ``lora.r`` cannot load the checkpoint; a changed ``lr`` or
``clients_per_round`` would mix two settings inside one run), naming it, unless the user
passes ``--allow-changed KEY`` for a key that is safe to change, such as ``rounds``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from federa.errors import ConfigError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from federa.config import Config
    from federa.results_dir import RunDir

FILE = "config.fingerprint.json"
# Safe to change mid-run: they change how long or how often, not what a round computes.
SAFE_EXAMPLES = "rounds, eval_every, target_score, eval_batch_size, model.num_threads, flower.*"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"lora": {"r": 8}}`` → ``{"lora.r": 8}``; lists stay values."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def fingerprint(cfg: Config) -> dict[str, Any]:
    resolved = flatten(cfg.model_dump(mode="json"))
    digest = hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()
    return {"sha256": digest, "config": resolved}


def save(run_dir: RunDir, cfg: Config) -> None:
    run_dir.write_json(run_dir.root / FILE, fingerprint(cfg))


def shape_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """The dotted keys marked ``json_schema_extra=SHAPES`` (:mod:`federa.settings`): each sets the
    shape of a trained tensor, so a checkpoint made under another value cannot load."""
    from pydantic import BaseModel

    out: set[str] = set()
    for name, field in model.model_fields.items():
        if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("shapes"):
            out.add(f"{prefix}{name}")
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            out |= shape_keys(kind, f"{prefix}{name}.")
    return out


def _unfinished(run_dir: RunDir, methods: Sequence[str]) -> list[str]:
    return [m for m in methods if not run_dir.result(m).is_file()]


def _allowed(key: str, allow: Sequence[str]) -> bool:
    return any(key == a or key.startswith(a.rstrip(".*") + ".") for a in allow)


def check_resume(run_dir: RunDir, cfg: Config, allow_changed: Sequence[str] = (), log=print) -> None:
    """Refuse to resume ``run_dir`` under ``cfg`` if a resolved key changed and is not allowed.

    Keys the saved fingerprint lacks (added to federa since the run started) are not changes.
    A run from before fingerprints adopts the current config as its own.
    """
    now = fingerprint(cfg)
    for a in allow_changed:
        if not any(_allowed(k, [a]) for k in now["config"]):
            raise ConfigError(f"--allow-changed {a}: no such config key; name a key such as rounds or lora.r")
    path = run_dir.root / FILE
    if not path.is_file():
        save(run_dir, cfg)
        return
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))["config"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"{path} is unreadable; restore it, or start a new run with --out") from None
    if saved == {k: now["config"][k] for k in saved if k in now["config"]}:
        return
    changed = {k: (saved[k], now["config"][k]) for k in saved if k in now["config"] and saved[k] != now["config"][k]}
    refused = [k for k in changed if not _allowed(k, allow_changed)]
    if refused:
        shown = "; ".join(f"{k}: {changed[k][0]!r} -> {changed[k][1]!r}" for k in refused[:5])
        more = f" and {len(refused) - 5} more" if len(refused) > 5 else ""
        raise ConfigError(
            f"--resume {run_dir.root}: config.yaml differs from the config the run started with ({shown}{more}); "
            f"restore it, or pass --allow-changed KEY for keys safe to change (e.g. {SAFE_EXAMPLES})")
    # Allowed or not, a shape cannot change under a method still training: its checkpoint would
    # not load (a RuntimeError half way into the resume). Refused before anything is written.
    if (reshaped := sorted(set(changed) & shape_keys(type(cfg)))) and (left := _unfinished(run_dir, cfg.methods)):
        k = reshaped[0]
        raise ConfigError(
            f"--resume {run_dir.root}: {k} changed ({changed[k][0]!r} -> {changed[k][1]!r}), which changes the shape "
            f"of the trained tensors, and {', '.join(left)} has not finished, so its checkpoint cannot load; restore "
            f"{k} in config.yaml, or start a new run with --out")
    log(f"resuming with changed config (allowed): "
        + "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items()))
    save(run_dir, cfg)
