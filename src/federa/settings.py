"""The base of every config section, wherever it is defined (beside its method, strategy or engine).

A section is a frozen pydantic model that refuses unknown keys, so a typo such as
``lora.rank`` is an error instead of a silent default. :mod:`federa.config` composes the
sections it finds in the registries into one validated :class:`~federa.config.Config`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def split_list(v: Any) -> Any:
    """``--set methods=federa,lora`` arrives as one string; YAML lists pass through."""
    if isinstance(v, str):
        return [s.strip() for s in v.split(",") if s.strip()]
    return v


# A list of names that may also be written "a,b,c" on the command line.
NameList = Annotated[list[str], BeforeValidator(split_list)]
