"""structlog events, emitted only when the application has configured structlog.

outlay never configures logging. An unconfigured structlog prints every event to stdout, which
is the wrong default for a library on a hot path, so events are emitted only once
``structlog.is_configured()`` is true. Event names are namespaced (``outlay.budget.reserved``)
and fields are flat.
"""

from __future__ import annotations

from typing import Any

import structlog

_logger = structlog.get_logger("outlay")

enabled = structlog.is_configured

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
    """Emit ``event`` at info level if the application configured structlog."""
    if structlog.is_configured():
        _logger.info(event, **fields)


def warn(event: str, **fields: Any) -> None:
    """Emit ``event`` at warning level if the application configured structlog."""
    if structlog.is_configured():
        _logger.warning(event, **fields)
