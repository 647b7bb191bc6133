"""The base of every config section, wherever it is defined (beside its method, strategy or engine).

A section is a frozen pydantic model that refuses unknown keys, so a typo such as
``lora.rank`` is an error instead of a silent default. :mod:`federa.config` composes the
sections it finds in the registries into one validated :class:`~federa.config.Config`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator


# ``Field(..., json_schema_extra=SHAPES)``: the key sets the shape of a trained tensor, so a run
# cannot change it half way (:func:`federa.fingerprint.check_resume` refuses it even when allowed).
SHAPES: dict[str, Any] = {"shapes": True}


class Section(BaseModel):
    # inf/nan are never a meaningful setting (an lr or alpha of .inf trains nothing and fails late).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bools_for_numbers(cls, data: Any) -> Any:
        # YAML reads `rounds: true` as a bool, which pydantic would quietly take as 1; inside a
        # container too (`lr.lora: true` trained at lr 1.0, `lora.client_ranks: [2, true]` at rank 1).
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                kinds = _leaf_types(field.annotation)
                if bool in kinds or not kinds & {int, float}:
                    continue
                if (where := _first_bool(data.get(name), name)) is not None:
                    raise ValueError(f"'{where[0]}' must be a number, got {str(where[1]).lower()}")
        return data


def _leaf_types(annotation: Any) -> set[Any]:
    """The types at the leaves of ``annotation``: ``dict[str, float] | None`` → {str, float, NoneType}."""
    args = getattr(annotation, "__args__", None)
    if not args:
        return {annotation}
    return set().union(*(_leaf_types(a) for a in args))


def _first_bool(value: Any, where: str) -> tuple[str, bool] | None:
    """(the dotted place, the bool) of the first bool in ``value``, looking inside lists and mappings."""
    if isinstance(value, bool):
        return where, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if (found := _first_bool(item, f"{where}.{key}")) is not None:
            return found
    return None


def split_list(v: Any) -> Any:
    """``--set methods=federa,lora`` arrives as one string; YAML lists pass through."""
    if isinstance(v, str):
        return [s.strip() for s in v.split(",") if s.strip()]
    return v


# A list of names that may also be written "a,b,c" on the command line.
NameList = Annotated[list[str], BeforeValidator(split_list)]
