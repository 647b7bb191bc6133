"""The base of every config section, wherever it is defined (beside its method, strategy or engine).

A section is a frozen pydantic model that refuses unknown keys, so a typo such as
``lora.rank`` is an error instead of a silent default. :mod:`federa.config` composes the
sections it finds in the registries into one validated :class:`~federa.config.Config`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator


class Section(BaseModel):
    # inf/nan are never a meaningful setting (an lr or alpha of .inf trains nothing and fails late).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bools_for_numbers(cls, data: Any) -> Any:
        # YAML reads `rounds: true` as a bool, which pydantic would quietly take as 1.
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                value = data.get(name)
                kinds = getattr(field.annotation, "__args__", (field.annotation,))
                if isinstance(value, bool) and bool not in kinds and any(k in (int, float) for k in kinds):
                    raise ValueError(f"'{name}' must be a number, got {str(value).lower()}")
        return data


def split_list(v: Any) -> Any:
    """``--set methods=federa,lora`` arrives as one string; YAML lists pass through."""
    if isinstance(v, str):
        return [s.strip() for s in v.split(",") if s.strip()]
    return v


# A list of names that may also be written "a,b,c" on the command line.
NameList = Annotated[list[str], BeforeValidator(split_list)]
