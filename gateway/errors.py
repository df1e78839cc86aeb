"""Every exception Touchpoint raises on purpose.

    TouchpointError
    ├── ConfigError            bad or missing setting; one line naming the file and the key
    ├── EventError             an inbound event that fails validation; names the field
    │   └── TooLarge           a body, batch or event over its size limit
    ├── BusError
    │   ├── BusUnavailable     Redis cannot be reached or did not answer in time (transient)
    │   └── ScriptError        a data-mart Lua script failed on what it was given (not transient)
    ├── EmbeddedRedisError     the private redis-server could not be found or started
    ├── LogFormatError         (channels.weblog.logformat) no access-log format fits a file
    ├── LogImportError         (channels.weblog.importer) an access-log import cannot go on
    ├── WarehouseError         the warehouse cannot be opened, migrated, written or read
    ├── ErpUnavailable         (gateway.erp.base) the ERP or its drop folder cannot be read now
    └── OlapError              a cube query names an unknown measure, dimension or filter (400)

Library errors are translated at the edge with ``raise ... from exc`` so callers only ever
catch these.
"""

from __future__ import annotations


class TouchpointError(Exception):
    """Base of every error Touchpoint raises on purpose."""


class ConfigError(TouchpointError):
    """A setting is unknown, missing, of the wrong type or out of range."""

    def __init__(self, path: str, key: str, reason: str) -> None:
        self.path = path
        self.key = key
        self.reason = reason
        where = f"{path}: {key}" if key else path
        super().__init__(f"{where}: {reason}")


class EventError(TouchpointError):
    """An inbound event is invalid; ``field`` is a dotted path such as ``properties.price``."""

    status = 400

    def __init__(self, reason: str, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        super().__init__(f"{field}: {reason}" if field else reason)

    def as_json(self) -> dict[str, str]:
        body = {"error": self.reason}
        if self.field:
            body["field"] = self.field
        return body


class TooLarge(EventError):
    """A request body, a batch or one event exceeds its limit."""

    status = 413


class BusError(TouchpointError):
    """Something went wrong talking to the event bus."""


class BusUnavailable(BusError):
    """Redis is unreachable or too slow; the caller may retry later (HTTP 503)."""


class ScriptError(BusError):
    """A Lua script refused its input: retrying the same entry will not help (dead-letter it)."""


class EmbeddedRedisError(TouchpointError):
    """The embedded redis-server could not be found or did not start."""


class WarehouseError(TouchpointError):
    """The warehouse (DuckDB file or PostgreSQL server) failed; the message says which and why."""


class WarehouseUnavailable(WarehouseError):
    """The warehouse server is unreachable, restarting or out of connections: nothing is wrong
    with what was asked, so the caller may retry later (agents wait, HTTP says 503)."""


class OlapError(TouchpointError):
    """A cube query is invalid; ``field`` is the parameter at fault (``measures``, ``dims``...)."""

    status = 400

    def __init__(self, reason: str, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        super().__init__(reason)

    def as_json(self) -> dict[str, str]:
        body = {"error": self.reason}
        if self.field:
            body["field"] = self.field
        return body
