"""Log output: human-readable lines (default) or one JSON object per line.

    configure("info", "json")
    logging.getLogger("chargeward.csms").info("connected", extra={"station_id": "CP-1"})
    # -> {"time": "2026-11-21T12:00:00.123Z", "level": "INFO", "logger": "chargeward.csms",
     # -> "message": "connected", "station_id": "CP-1"}

``extra`` fields become top-level keys; an exception becomes ``"exception"`` (its traceback as
one string), so every line stays one JSON object for log shippers.

:func:`websocket_logger` is the logger to hand a websockets connection: at DEBUG websockets
logs every handshake header, and an ``Authorization`` header carries a station's Basic-auth
password (base64 is no protection), so its value is replaced before any handler sees it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from typing import Any

from chargeward.errors import ConfigError

LOG_FORMAT_ENV = "CHARGEWARD_LOG_FORMAT"
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LEVELS = ("debug", "info", "warning", "error")
# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


# What websockets logs per handshake header at DEBUG: "< %s: %s" (read), "> %s: %s" (sent).
_HEADER_FORMATS = ("< %s: %s", "> %s: %s")
_SECRET_HEADERS = ("authorization", "proxy-authorization")


class RedactCredentials(logging.Filter):
    """Replaces the value of a logged credential header with ``[redacted]``."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if (
            record.msg in _HEADER_FORMATS
            and isinstance(args, tuple)
            and len(args) == 2
            and str(args[0]).lower() in _SECRET_HEADERS
        ):
            record.args = (args[0], "[redacted]")
        return True


def websocket_logger(name: str) -> logging.Logger:
    """The logger ``name`` with :class:`RedactCredentials` on it (added once)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, RedactCredentials) for f in logger.filters):
        logger.addFilter(RedactCredentials())
    return logger


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC), level, logger, message, then extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in out:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure(level: str = "info", fmt: str | None = None) -> None:
    """Set up the root logger; ``fmt`` defaults to ``$CHARGEWARD_LOG_FORMAT`` or ``text``."""
    fmt = (fmt or os.environ.get(LOG_FORMAT_ENV) or "text").lower()
    if fmt not in FORMATS:
        raise ConfigError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if level.lower() not in LEVELS:
        raise ConfigError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
