"""federa: federated fine-tuning of pretrained language models with FeDeRA, LoRA and other PEFT methods.

From Python::

    import federa

    cfg = federa.Config(methods=["lora", "federa"], rounds=3, partition={"alpha": 0.1})
    result = federa.run(cfg, out="runs/demo")
    result.methods["federa"]["final_score"]
    model = federa.load_model(result.run_dir, "federa")

The public API is :data:`__all__`; every other module is internal. Names load on first use, so
``import federa`` (and ``import federa.config``) stays cheap: torch and transformers load when
a run or a model needs them.
"""

import importlib as _importlib
from typing import Any as _Any

__all__ = ["Config", "RunResult", "compare", "load_model", "run"]


def __getattr__(name: str) -> _Any:
    if name == "compare":
        # The `federa.compare` subpackage is itself callable (it runs federa.api.compare): a
        # function of that name would be replaced by the subpackage the moment it is imported.
        return _importlib.import_module("federa.compare")
    if name in __all__:
        value = getattr(_importlib.import_module("federa.api"), name)
        globals()[name] = value  # looked up once
        return value
    raise AttributeError(f"module 'federa' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
