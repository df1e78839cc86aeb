"""Every error leaves as JSON with a clear status: 4xx for bad input, 503 when Redis is away."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.errors import BusUnavailable, EventError

log = logging.getLogger(__name__)


def json_error(status: int, error: str, **extra: Any) -> web.Response:
    return web.json_response({"error": error, **extra}, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except EventError as exc:
        return web.json_response(exc.as_json(), status=exc.status)
    except BusUnavailable as exc:
        log.warning("%s %s: 503: %s", request.method, request.path, exc)
        response = json_error(503, "event bus unavailable, retry later", detail=str(exc))
        response.headers["Retry-After"] = "1"
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = json_error(exc.status, exc.reason)
        for name in ("Allow", "WWW-Authenticate", "Retry-After"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    except Exception:
        log.exception("%s %s: unexpected error", request.method, request.path)
        return json_error(500, "internal error")
