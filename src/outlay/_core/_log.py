"""outlay's events: through structlog when the application configured it, else stdlib logging.

outlay never configures logging. An unconfigured structlog prints every event to stdout, which
is the wrong default for a library, so until ``structlog.is_configured()`` is true every event
goes to the stdlib logger ``outlay`` instead (info events at INFO, warnings at WARNING), where
the application's ``logging`` setup decides what is shown; a warning (a fail-open admission, a
redacted secret) is shown even with no setup at all, by logging's last-resort handler. Event
names are namespaced (``outlay.budget.reserved``) and fields are flat; a stdlib record carries
them as ``record.event`` and ``record.fields``.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

_logger = structlog.get_logger("outlay")
_stdlib = logging.getLogger("outlay")


def enabled() -> bool:
    """True if an info event would be shown (structlog configured, or ``outlay`` at INFO)."""
    return structlog.is_configured() or _stdlib.isEnabledFor(logging.INFO)

try:
    # The flag ``structlog.is_configured()`` returns, read as an attribute: hot paths (a budget
    # reservation is a few hundred nanoseconds) check ``config.is_configured`` without a call.
    # tests/test_logging.py asserts it tracks is_configured(); the shim covers a structlog that
    # moves it.
    from structlog import _config

    config: Any = _config._CONFIG
    config.is_configured  # noqa: B018 - fail here, not on the hot path, if it is gone
except (ImportError, AttributeError):  # pragma: no cover - depends on structlog internals

    class _Shim:
        @property
        def is_configured(self) -> bool:
            return structlog.is_configured()

    config = _Shim()


def emit(event: str, **fields: Any) -> None:
    """Emit ``event`` at info level."""
    if structlog.is_configured():
        _logger.info(event, **fields)
    elif _stdlib.isEnabledFor(logging.INFO):
        _to_stdlib(logging.INFO, event, fields)


def warn(event: str, **fields: Any) -> None:
    """Emit ``event`` at warning level; always reaches some log."""
    if structlog.is_configured():
        _logger.warning(event, **fields)
    elif _stdlib.isEnabledFor(logging.WARNING):
        _to_stdlib(logging.WARNING, event, fields)


def _to_stdlib(level: int, event: str, fields: dict[str, Any]) -> None:
    text = " ".join(f"{key}={value!r}" for key, value in fields.items())
    _stdlib.log(level, "%s %s", event, text, extra={"event": event, "fields": fields},
                stacklevel=3)
