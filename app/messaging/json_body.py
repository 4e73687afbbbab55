"""JSON bodies read strictly: keys given twice are reported (with the objects holding them), and
NaN/Infinity, invalid UTF-8 and over-deep nesting are refused. No framework."""

from __future__ import annotations

import json
from typing import Any

Repeats = list[tuple[dict[str, Any], list[str]]]  # each object with a key given twice, and those keys


class _NonFinite(Exception):
    """NaN/Infinity: Python's json accepts them, JSON does not."""


class _RepeatedKey(Exception):
    """The fast parse met a key given twice: the careful parse records where."""


def _reject_constant(name: str) -> None:
    raise _NonFinite(name)


def _object(items: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(items)
    if len(obj) != len(items):
        raise _RepeatedKey
    return obj


def _bounded_int(digits: str) -> int | float:
    # Python refuses to convert integers of more than 4300 digits; such a number is no valid
    # orderId, amount or year anyway, so it is read as a non-finite value every rule refuses.
    return int(digits) if len(digits) <= 40 else float("inf")


# Built once: json.loads() with keyword arguments builds a decoder per call, which costs more
# than the parse of a typical event. The pairs hook sees keys given twice, at any depth.
_FAST = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_reject_constant)


def load_json(body: bytes) -> tuple[Any, Repeats] | None:
    """The parsed UTF-8 body (a BOM is tolerated) and its repeated keys; None if it is not JSON.
    The rare body with a repeated key or a huge integer is parsed once more, carefully."""
    try:
        text = body.decode()
        if text.startswith("\ufeff"):
            text = text[1:]
        return _FAST.decode(text), []
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, _NonFinite):
        return None
    except (_RepeatedKey, ValueError):  # ValueError: an integer too long to convert
        return _careful_load(text)


def _careful_load(text: str) -> tuple[Any, Repeats] | None:
    repeats: Repeats = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(items)
        if len(obj) != len(items):
            repeats.append((obj, _repeated(items)))
        return obj

    decoder = json.JSONDecoder(object_pairs_hook=pairs, parse_constant=_reject_constant, parse_int=_bounded_int)
    try:
        return decoder.decode(text), repeats
    except (ValueError, RecursionError, _NonFinite):
        return None


def _repeated(items: list[tuple[str, Any]]) -> list[str]:
    seen: set[str] = set()
    repeated: dict[str, None] = {}  # ordered, each key once
    for key, _ in items:
        if key in seen:
            repeated[key] = None
        seen.add(key)
    return list(repeated)
