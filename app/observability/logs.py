"""Logging: loguru as the one sink, JSON lines or readable text, standard-library logging
(FastStream, aio-pika, uvicorn, SQLAlchemy, Alembic) routed through it.

`LOG_FORMAT=json`: one JSON object per line on stdout with `time` (UTC, ISO-8601, ms),
`level`, `message`, `logger` and the bound context (`event_id`, `order_id`, `payment_id`,
`status`, `failure_code`, `attempt`, `duration_ms`, …), plus `trace_id`/`span_id` while a
span is recorded. `LOG_FORMAT=text`: the same on one readable line. See README "Logs".

Probe and scrape access lines (`QUIET_PATHS`) are dropped on the access logger unless
debugging, and written at DEBUG when debugging.

Never written: uvicorn's access lines lose the query string (a token sent as `?token=` stays
out), and an HTTP failure is logged by its exception types and code locations only
(`failure_summary`), because a database error's message carries the statement's parameters.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

from loguru import logger

from app.observability.tracing import current_span_ids

QUIET_PATHS = ("/metrics", "/healthz")
ACCESS_LOGGER = "uvicorn.access"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Context keys never written, whatever a caller binds (card holder names, credentials).
_SECRET_KEYS = {"password", "token", "authorization", "card_holder_name", "cardholdername", "secret"}
# Context FastStream passes with its per-message lines (`extra=`), kept as JSON keys.
_STD_CONTEXT = ("message_id", "queue", "exchange")
# The logger FastStream writes its per-message and handler-error lines to (see build_broker).
FASTSTREAM_ACCESS_LOGGER = "faststream.access.rabbit"


def _visible(extra: dict[str, Any]) -> dict[str, Any]:
    """The bound context as written: without the logger override and without secret keys."""
    return {k: v for k, v in extra.items() if k != "logger" and k.lower() not in _SECRET_KEYS}


def _context(record: Any) -> dict[str, Any]:
    return _visible(record["extra"])


def json_line(when: datetime, level: str, message: str, name: str, extra: dict[str, Any], exception: Any = None) -> str:
    """One JSON log line (without its newline): time, level, message, logger, the visible
    context, the span ids while a span records, and the exception if there is one."""
    payload: dict[str, Any] = {
        "time": when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": level,
        "message": message,
        "logger": extra.get("logger", name),
    }
    payload.update(_visible(extra))
    if (ids := current_span_ids()) is not None:
        payload["trace_id"], payload["span_id"] = ids
    if exception is not None:
        exc_type, exc_value, _ = exception
        payload["exception"] = f"{exc_type.__name__ if exc_type else 'Exception'}: {exc_value}"
        payload["traceback"] = "".join(traceback.format_exception(*exception))
    return json.dumps(payload, default=str, ensure_ascii=False)


def _json_line(record: Any) -> str:
    return json_line(
        record["time"], record["level"].name, record["message"], record["name"], record["extra"], record["exception"]
    )


def _json_sink(message: Any) -> None:
    sys.stdout.write(_json_line(message.record) + "\n")
    sys.stdout.flush()


def _text_format(record: Any) -> str:
    extras = " ".join(f"{k}={{extra[{k}]}}" for k in _context(record))
    if (ids := current_span_ids()) is not None:
        extras += f" trace_id={ids[0]}"
    name = "{extra[logger]}" if "logger" in record["extra"] else "{name}"
    return (
        "<green>{time:YYYY-MM-DD HH:mm:ss.SSS!UTC}Z</green> | <level>{level: <7}</level> | "
        f"<cyan>{name}</cyan> | <level>{{message}}</level>"
        + (f" <dim>{extras.strip()}</dim>" if extras.strip() else "")
        + "\n{exception}"
    )


class _InterceptHandler(logging.Handler):
    """Send standard-library records to loguru, keeping their logger name."""

    def emit(self, record: logging.LogRecord) -> None:
        level: str | int
        message = record.getMessage() if record.name != ACCESS_LOGGER else access_line(record)
        if record.name == ACCESS_LOGGER and _is_quiet_access(record):
            level = "DEBUG"
        else:
            try:
                level = logger.level(record.levelname).name
            except ValueError:
                level = record.levelno
        context = {key: value for key in _STD_CONTEXT if (value := getattr(record, key, None))}
        logger.bind(logger=record.name, **context).opt(exception=record.exc_info, depth=0).log(level, message)


def _access_path(record: logging.LogRecord) -> str:
    """The request path of uvicorn's access line (args: client, method, path, version, status)."""
    args = record.args if isinstance(record.args, tuple) else ()
    return str(args[2]) if len(args) > 2 else ""


def access_line(record: logging.LogRecord) -> str:
    """uvicorn's access line without the query string (it may carry a token) and with control
    characters masked (a decoded `%0a` must not start a forged line)."""
    args = record.args if isinstance(record.args, tuple) else ()
    if len(args) != 5:
        return _CONTROL.sub("?", record.getMessage())
    path = _CONTROL.sub("?", str(args[2]).partition("?")[0])
    try:
        return str(record.msg) % (args[0], args[1], path, args[3], args[4])
    except (TypeError, ValueError):
        return _CONTROL.sub("?", record.getMessage().partition("?")[0])


def _is_quiet_access(record: logging.LogRecord) -> bool:
    return _access_path(record).startswith(QUIET_PATHS)


class QuietAccess(logging.Filter):
    """Drops uvicorn's access records of the probe and metrics paths (`QUIET_PATHS`) on the
    access logger itself, before a handler, a lock or a formatter sees them. Installed unless
    debugging; at DEBUG those lines are written, demoted to DEBUG by `_InterceptHandler`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _is_quiet_access(record)


def quiet_probe_access(debugging: bool) -> None:
    """`QuietAccess` on uvicorn's access logger, once, unless debugging."""
    access = logging.getLogger(ACCESS_LOGGER)
    for installed in [f for f in access.filters if isinstance(f, QuietAccess)]:
        access.removeFilter(installed)
    if not debugging:
        access.addFilter(QuietAccess())


def failure_summary(error: BaseException, frames: int = 6) -> dict[str, str]:
    """An exception for an error line without its messages: the chain's type names and the last
    code locations. Messages stay out because a database error's text carries the statement's
    parameters (buyer ids, card data)."""
    chain: list[str] = []
    seen: BaseException | None = error
    while seen is not None and len(chain) < 5:
        chain.append(f"{type(seen).__module__}.{type(seen).__qualname__}")
        seen = seen.__cause__ or seen.__context__
    where = [
        f"{f.filename.rpartition('/site-packages/')[2]}:{f.lineno} in {f.name}"
        for f in traceback.extract_tb(error.__traceback__)
    ]
    return {"error_types": " <- ".join(chain), "error_at": " | ".join(where[-frames:])}


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    # FastStream attaches a stderr handler to its logger when first imported: import it now so
    # that the handler is replaced below, whatever the caller imported before.
    import faststream  # noqa: F401 - imported for its side effect

    logger.remove()
    if fmt == "json":
        logger.add(_json_sink, level=level, backtrace=False, diagnose=False)
    else:
        logger.add(sys.stdout, level=level, format=_text_format, colorize=sys.stdout.isatty(), diagnose=False)
    debugging = level in ("TRACE", "DEBUG")
    handler = _InterceptHandler()
    std_level = logging.DEBUG if debugging else logging.INFO
    logging.basicConfig(handlers=[handler], level=std_level, force=True)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "faststream", FASTSTREAM_ACCESS_LOGGER, "alembic"):
        std = logging.getLogger(name)
        std.handlers = [handler]
        std.propagate = False
    quiet_probe_access(debugging)
    # FastStream writes "Received"/"Processed" per message at DEBUG, handler errors at ERROR.
    logging.getLogger("faststream").setLevel(std_level)
    logging.getLogger(FASTSTREAM_ACCESS_LOGGER).setLevel(std_level)
    # Chatty libraries: warnings only unless debugging.
    quiet = logging.DEBUG if debugging else logging.WARNING
    for name in ("aio_pika", "sqlalchemy", "asyncio"):
        logging.getLogger(name).setLevel(quiet)
    # Never below these, even at DEBUG: aiormq's DEBUG lines dump raw AMQP frames (message
    # bodies included), SQLAlchemy's engine lines echo statement parameters and result rows.
    logging.getLogger("aiormq").setLevel(logging.INFO if debugging else logging.WARNING)
    logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.INFO)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
