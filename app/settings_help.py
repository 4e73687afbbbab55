"""The settings table of `payment-service serve --help`, generated from the Settings model."""

from __future__ import annotations

import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from app.config import Settings

_KINDS = {bool: "true|false", int: "integer", float: "number", str: "text", SecretStr: "secret"}
_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def environment_variable(name: str) -> str:
    """The variable a field is read from: pydantic-settings' prefix plus the field name, upper-cased."""
    return (str(Settings.model_config.get("env_prefix") or "") + name).upper()


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return members[0], True
    return annotation, False


def _kind(annotation: Any) -> str:
    if get_origin(annotation) is Literal:
        return "|".join(str(choice) for choice in get_args(annotation))
    return _KINDS.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _constraints(field: FieldInfo) -> list[str]:
    """Bounds, lengths and patterns declared on the field (pydantic keeps them as metadata objects
    with `ge`, `max_length`, `pattern`... attributes), in the order an operator reads them."""
    bounds: dict[str, Any] = {}
    notes: list[str] = []
    for item in field.metadata:
        bounds.update({key: getattr(item, key) for key in _BOUNDS if getattr(item, key, None) is not None})
        if (getattr(item, "min_length", None) or 0) > 1:
            notes.append(f"at least {item.min_length} characters long")
        if getattr(item, "max_length", None) is not None:
            notes.append(f"up to {item.max_length} characters")
        if isinstance(getattr(item, "pattern", None), str):
            notes.append(f"matching {item.pattern}")
    if "ge" in bounds and "le" in bounds:
        return [f"{bounds['ge']}..{bounds['le']}", *notes]
    return [f"{_BOUNDS[key]}{value}" for key, value in bounds.items()] + notes


def _default(field: FieldInfo, annotation: Any) -> str:
    default = field.get_default(call_default_factory=True)
    if default is None:
        return "unset"
    if annotation is SecretStr or isinstance(default, SecretStr):
        return "***"  # a secret's default is still a secret (e.g. the broker password)
    if isinstance(default, bool):
        return str(default).lower()
    return str(default)


def settings_rows() -> list[tuple[str, str, str]]:
    """(variable, default, what it accepts) for every setting, in the model's order."""
    rows = []
    for name, field in Settings.model_fields.items():
        annotation, optional = _unwrap_optional(field.annotation)
        constraints = _constraints(field)
        accepts = _kind(annotation) + (" " + ", ".join(constraints) if constraints else "")
        if optional:
            accepts += " (optional)"
        if field.description:
            accepts += f" - {field.description}"
        rows.append((environment_variable(name), _default(field, annotation), accepts))
    return rows


def settings_help() -> str:
    """The table for an argparse epilog: variable, default, what it accepts."""
    rows = settings_rows()
    name_width = max(len(name) for name, _, _ in rows)
    default_width = max(len(default) for _, default, _ in rows)
    lines = ["settings (environment variables), with their defaults (secrets masked) and accepted values:"]
    lines += [f"  {name:<{name_width}}  {default:<{default_width}}  {accepts}" for name, default, accepts in rows]
    return "\n".join(lines)
