"""One log format for the whole product: one JSON object per line on stderr.

Every line has ``ts`` (UTC, ISO 8601 with milliseconds), ``level`` (lower case), ``pid``,
``logger``, then the event's fields: a message that is itself a JSON object (what
:func:`hybridrec.serving.reloader.log_event` writes) is merged in, any other message goes
under ``"message"``. ``hybridrec serve`` (its workers and the HTTP server's own lines)
and ``hybridrec retrain --every`` all write this format.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

__all__ = ["JsonLines", "configure_logging", "log_event", "logging_dict_config"]


class JsonLines(logging.Formatter):
    """One JSON object per line: time, level, pid, logger, then the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        try:
            fields = json.loads(message)
        except ValueError:
            fields = None
        if not isinstance(fields, dict):
            fields = {"message": message}
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "pid": record.process,
            "logger": record.name,
            **fields,
        }
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(name: str = "hybridrec", level: int = logging.INFO) -> None:
    """JSON lines on stderr for logger ``name`` (idempotent)."""
    logger = logging.getLogger(name)
    if not any(isinstance(h.formatter, JsonLines) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonLines())
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def logging_dict_config(loggers: dict[str, str]) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` document that sends ``loggers`` (name -> level)
    to stderr as JSON lines: for the HTTP servers' own loggers."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonLines"}},
        "handlers": {
            "json": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["json"], "level": "WARNING"},  # other libraries' warnings
        "loggers": {
            name: {"handlers": ["json"], "level": level, "propagate": False}
            for name, level in loggers.items()
        },
    }


def log_event(logger: logging.Logger, level: int, event: str, **fields: Any) -> None:
    """One structured line: ``{"event": event, **fields}`` (merged by :class:`JsonLines`)."""
    if logger.isEnabledFor(level):
        logger.log(level, json.dumps({"event": event, **fields}, default=str, sort_keys=True))
