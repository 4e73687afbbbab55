"""The line per payment, written straight as JSON: the same line loguru and our JSON sink would
write (same keys, same order, same values), without building a loguru record for it (about a
quarter of the cost; micro-benchmark in the commit that introduced it).

It writes only while logging is exactly what `configure_logging(level, "json")` set up: one
loguru handler whose sink is the JSON sink of `app.observability.logs`, no filter, no
patcher, no default `extra`, no module disabled, and a level that lets the line through.
Anything else (text mode, a level above the line's, a test's own handler, a sink that
failed) and `emit` returns False: the caller then logs through loguru as before, so text
mode and every level setting behave as they always did.

The bound context (`logger.contextualize`: `event_id`, `order_id`) is read from loguru's
own context, and the line is built by the sink's own `logs.json_line` (secret keys left out,
`trace_id`/`span_id` while a span is recorded). Loguru 0.7's handler list, handler lock and context
variable are internals: the module only reads them, and a unit test compares its line with
the sink's for every branch of the payment line.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

from loguru import logger

from app.observability import logs
from app.observability.logs import _json_sink

try:  # loguru 0.7's context of `contextualize`
    from loguru._logger import context as _loguru_context
except ImportError:  # pragma: no cover - another loguru: always through loguru
    _loguru_context = None

_LEVELS = {"INFO": 20, "WARNING": 30}


class _Setup:
    """What the current loguru handlers allow, worked out again whenever they change (loguru
    replaces its handler dict on every add and remove)."""

    handlers: object = None
    handler: Any = None  # the JSON sink's handler, when it is the only one
    levelno = 100


_setup = _Setup()


def _refresh(core: Any) -> None:
    _setup.handlers = handlers = core.handlers
    _setup.handler = None
    if _loguru_context is None or len(handlers) != 1:
        return
    (handler,) = handlers.values()
    sink = getattr(getattr(handler, "_sink", None), "_function", None)
    if sink is _json_sink and getattr(handler, "_filter", 1) is None and not getattr(handler, "_enqueue", True):
        _setup.handler, _setup.levelno = handler, handler._levelno  # noqa: SLF001 - loguru's handler, read only


def emit(level: str, message: str, name: str, fields: dict[str, Any]) -> bool:
    """Write the line `logger.<level>(message, **fields)` from module `name` would write, with
    `message` already formatted; False (nothing written) when loguru must write it instead."""
    core = getattr(logger, "_core", None)
    if core is None:
        return False
    if core.handlers is not _setup.handlers:
        _refresh(core)
    handler = _setup.handler
    if handler is None or _LEVELS[level] < _setup.levelno or core.patcher or core.extra or core.activation_list:
        return False
    extra = {**_loguru_context.get(), **fields}  # not None: checked in _refresh
    line = logs.json_line(datetime.now(UTC), level, message, name, extra) + "\n"
    try:
        with handler._lock:  # noqa: SLF001 - the sink's own lock: no line interleaves with another
            sys.stdout.write(line)
            sys.stdout.flush()
    except Exception:  # noqa: BLE001 - let loguru write it (and report the failing sink its way)
        return False
    return True
