"""Logging: loguru as the one sink, JSON lines or readable text, standard-library logging
(FastStream, aio-pika, uvicorn, SQLAlchemy, Alembic) routed through it."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC
from typing import Any

from loguru import logger

QUIET_PATHS = ("/metrics", "/healthz")
_SECRET_KEYS = {"password", "token", "authorization", "card_holder_name", "cardholdername"}


def _json_sink(message: Any) -> None:
    record = message.record
    payload: dict[str, Any] = {
        "time": record["time"].astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": record["level"].name,
        "message": record["message"],
        "logger": record["extra"].get("logger", record["name"]),
    }
    for key, value in record["extra"].items():
        if key != "logger" and key.lower() not in _SECRET_KEYS:
            payload[key] = value
    if record["exception"] is not None:
        exc_type, exc_value, _ = record["exception"]
        payload["exception"] = f"{exc_type.__name__ if exc_type else 'Exception'}: {exc_value}"
        payload["traceback"] = "".join(
            __import__("traceback").format_exception(*record["exception"])
        )
    sys.stdout.write(json.dumps(payload, default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _text_format(record: Any) -> str:
    extras = " ".join(
        f"{k}={{extra[{k}]}}" for k in record["extra"] if k != "logger" and k.lower() not in _SECRET_KEYS
    )
    name = "{extra[logger]}" if "logger" in record["extra"] else "{name}"
    return (
        "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> | <level>{level: <7}</level> | "
        f"<cyan>{name}</cyan> | <level>{{message}}</level>"
        + (f" <dim>{extras}</dim>" if extras else "")
        + "\n{exception}"
    )


class _InterceptHandler(logging.Handler):
    """Send standard-library records to loguru, keeping their logger name."""

    def emit(self, record: logging.LogRecord) -> None:
        level: str | int
        if record.name == "uvicorn.access" and _is_quiet_access(record):
            level = "DEBUG"
        else:
            try:
                level = logger.level(record.levelname).name
            except ValueError:
                level = record.levelno
        logger.bind(logger=record.name).opt(exception=record.exc_info, depth=0).log(level, record.getMessage())


def _is_quiet_access(record: logging.LogRecord) -> bool:
    args = record.args if isinstance(record.args, tuple) else ()
    path = str(args[2]) if len(args) > 2 else ""
    return path.startswith(QUIET_PATHS)


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    logger.remove()
    if fmt == "json":
        logger.add(_json_sink, level=level, backtrace=False, diagnose=False)
    else:
        logger.add(sys.stdout, level=level, format=_text_format, colorize=sys.stdout.isatty(), diagnose=False)
    handler = _InterceptHandler()
    std_level = logging.DEBUG if level in ("TRACE", "DEBUG") else logging.INFO
    logging.basicConfig(handlers=[handler], level=std_level, force=True)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "faststream", "faststream.access.rabbit", "alembic"):
        std = logging.getLogger(name)
        std.handlers = [handler]
        std.propagate = False
    # Chatty libraries: warnings only unless debugging.
    quiet = logging.DEBUG if level in ("TRACE", "DEBUG") else logging.WARNING
    for name in ("aio_pika", "aiormq", "sqlalchemy", "asyncio"):
        logging.getLogger(name).setLevel(quiet)
    logging.getLogger("alembic").setLevel(logging.INFO)
