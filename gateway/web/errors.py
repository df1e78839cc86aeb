"""Every error leaves as JSON with a clear status: 4xx for bad input, 503 when Redis or the
warehouse is away."""

from __future__ import annotations

import errno
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestPayloadError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.errors import BusUnavailable, EventError, WarehouseError

log = logging.getLogger(__name__)

#: Headers of an HTTPException that its JSON rendering keeps.
KEPT_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After", "Access-Control-Allow-Origin", "Vary")


def json_error(status: int, error: str, **extra: Any) -> web.Response:
    return web.json_response({"error": error, **extra}, status=status)


def error_response(request: web.Request, exc: Exception) -> web.Response:
    """The JSON answer for ``exc``; re-raises what is not an error (a redirect)."""
    if isinstance(exc, EventError):
        return web.json_response(exc.as_json(), status=exc.status)
    if isinstance(exc, BusUnavailable | RedisConnectionError | RedisTimeoutError):
        log.warning("%s %s: 503: %s", request.method, request.path, exc)
        response = json_error(503, "event bus unavailable, retry later", detail=str(exc))
        response.headers["Retry-After"] = "1"
        return response
    if isinstance(exc, WarehouseError):
        log.warning("%s %s: 503: %s", request.method, request.path, exc)
        response = json_error(503, "warehouse unavailable, retry later", detail=str(exc))
        response.headers["Retry-After"] = "5"
        return response
    if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:  # a static file's name
        return json_error(404, "Not Found")
    if isinstance(exc, RequestPayloadError):  # an undecodable Content-Encoding
        response = json_error(400, f"request body could not be read: {_reason(exc)}")
        response.force_close()  # aiohttp cannot read past it to the next request
        return response
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        response = json_error(exc.status, exc.reason)
        for name in KEPT_HEADERS:
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    log.error("%s %s: unexpected error", request.method, request.path, exc_info=exc)
    return json_error(500, "internal error")


class ClientErrorsFilter(logging.Filter):
    """aiohttp logs a client's malformed request (undecodable Content-Encoding, an 8 KB request
    line, a control character in a header) as an ERROR with its traceback, ~30 lines each, and
    anyone can send them: one WARNING line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, RequestPayloadError | HttpProcessingError):
            record.msg, record.args = "bad request from a client: %s", (_reason(exc),)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _reason(exc: Exception) -> str:
    """aiohttp's ``400, message:\n  Can not decode...`` as ``Can not decode...``."""
    return " ".join(str(exc).rpartition("message:")[2].split())


def quiet_client_errors() -> None:
    """Install :class:`ClientErrorsFilter` on aiohttp's server logger (once)."""
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientErrorsFilter) for f in server.filters):
        server.addFilter(ClientErrorsFilter())


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Exception as exc:
        return error_response(request, exc)
