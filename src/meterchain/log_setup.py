"""One logging set-up for every meterchain process: text lines for people, JSON lines for
journald and log shippers.

Agents log their essential events at info level with structured fields passed as `extra`
(`event`, `interval`, `tx_hash`, `price`, `volume_wh`, `reason`, ...): the text format shows
the message, the JSON format carries the fields too, one object per line, so a shipper can
index `event` and `interval` without parsing sentences. Either way a record is one line: a
traceback (debug level only) is folded into the JSON object.

The format comes from `--log-format` or, failing that, the MCHAIN_LOG_FORMAT environment
variable (a systemd unit sets it once for every command).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

LOG_FORMAT_ENV = "MCHAIN_LOG_FORMAT"
LOG_FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries that talk too much at info: they only speak up from warning on.
NOISY_LOGGERS = ("web3", "urllib3", "asyncio", "mqtt")

LogFormat = Literal["text", "json"]

# Attributes every LogRecord has; anything else on a record came in through `extra`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class LogSetupError(ValueError):
    """An unknown level or format; the message lists the ones there are."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, the extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["trace"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def resolve_format(log_format: str | None) -> LogFormat:
    """The format asked for, else MCHAIN_LOG_FORMAT's, else text."""
    chosen = (log_format or os.environ.get(LOG_FORMAT_ENV) or "text").strip().lower()
    if chosen == "text":
        return "text"
    if chosen == "json":
        return "json"
    source = "--log-format" if log_format else LOG_FORMAT_ENV
    raise LogSetupError(f"unknown log format {chosen!r} (from {source}); use text or json")


def configure_logging(
    level: str = "info", log_format: str | None = None, *, stream: TextIO | None = None
) -> LogFormat:
    """Send every logger's records at `level` and above to stderr in the chosen format."""
    numeric = logging.getLevelName(level.upper())
    if level.lower() not in LEVELS or not isinstance(numeric, int):
        raise LogSetupError(f"unknown log level {level!r}; use {', '.join(LEVELS)}")
    chosen = resolve_format(log_format)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if chosen == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=numeric, handlers=[handler], force=True)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    return chosen
