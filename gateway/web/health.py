"""``/healthz`` (process up), ``/readyz`` (can do its job; also how fresh each ERP sync is),
``/metrics`` (Prometheus text),
``/v1/bus/stats`` (admin: the bus as ``touchpoint bus stats`` prints it)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from gateway.erp import stock
from gateway.errors import BusUnavailable
from gateway.web.auth import require_admin
from gateway.web.state import (
    ADMIN_TOKEN,
    AGENTS,
    BUS,
    CONFIG,
    COUNTERS,
    EMBEDDED,
    PUBLISHER,
    REDIS,
)


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/bus/stats", bus_stats)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _bus_stats(app: web.Application) -> dict[str, Any] | None:
    try:
        async with asyncio.timeout(app[CONFIG].redis.timeout):
            return await app[BUS].stats()
    except (BusUnavailable, TimeoutError):
        return None


async def _erp(app: web.Application) -> dict[str, Any] | None:
    try:
        async with asyncio.timeout(app[CONFIG].redis.timeout):
            return await stock.status(app[REDIS], app[BUS].keys, app[CONFIG].erp.stale_after)
    except (RedisError, OSError, TimeoutError):
        return None


async def readyz(request: web.Request) -> web.Response:
    app = request.app
    stats = await _bus_stats(app)
    max_lag = app[CONFIG].readiness.max_lag
    lagging = {
        f"{stream}/{group}": info["lag"]
        for stream, s in (stats or {}).get("streams", {}).items()
        for group, info in s["groups"].items()
        if info["lag"] > max_lag
    }
    agents = {agent.name: agent.running for agent in app[AGENTS].agents}
    checks = {
        "redis": stats is not None,
        "agents": all(agents.values()),
        "lag": stats is not None and not lagging,
    }
    ready = all(checks.values())
    body = {"ready": ready, "checks": checks, "agents": agents, "lagging": lagging}
    if stats is not None:  # the ERP syncs, for information: a stale catalogue is not unready
        body["erp"] = await _erp(app)
    return web.json_response(body, status=200 if ready else 503)


async def bus_stats(request: web.Request) -> web.Response:
    require_admin(request, request.app[ADMIN_TOKEN])
    return web.json_response(await request.app[BUS].stats())


async def metrics(request: web.Request) -> web.Response:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(request.app, await _bus_stats(request.app)))
    return web.Response(body=generate_latest(registry), content_type="text/plain", charset="utf-8")


class _Snapshot(Collector):
    """The figures of one scrape: this process's counters and the bus as Redis sees it."""

    def __init__(self, app: web.Application, stats: dict[str, Any] | None) -> None:
        self.app = app
        self.stats = stats

    def collect(self) -> list[Metric]:
        app, counters, publisher = self.app, self.app[COUNTERS], self.app[PUBLISHER]
        received = CounterMetricFamily(
            "touchpoint_events_received", "Events accepted over HTTP", labels=["channel"]
        )
        for channel, n in sorted(counters.received.items()):
            received.add_metric([channel], n)
        out: list[Metric] = [
            received,
            CounterMetricFamily(
                "touchpoint_events_rejected", "Events refused as invalid", value=counters.rejected
            ),
            CounterMetricFamily(
                "touchpoint_events_bots", "Events from bots (kept, flagged)", value=counters.bots
            ),
            CounterMetricFamily(
                "touchpoint_events_duplicates",
                "Events dropped as duplicates of a recent messageId",
                value=publisher.duplicates,
            ),
            CounterMetricFamily(
                "touchpoint_events_published",
                "Events written to the bus",
                value=publisher.published_events,
            ),
            CounterMetricFamily(
                "touchpoint_entries_published",
                "Bus entries written",
                value=publisher.published_entries,
            ),
            CounterMetricFamily(
                "touchpoint_publish_failures",
                "Entries Redis did not take",
                value=publisher.failures,
            ),
            GaugeMetricFamily(
                "touchpoint_redis_up", "Redis answered", value=int(self.stats is not None)
            ),
        ]
        if EMBEDDED in app:
            out.append(
                CounterMetricFamily(
                    "touchpoint_embedded_redis_restarts",
                    "Restarts of the embedded redis-server",
                    value=app[EMBEDDED].restarts,
                )
            )
        out.extend(self._agents())
        out.extend(self._streams())
        return out

    def _agents(self) -> list[Metric]:
        labels = ["agent"]
        families = {
            "events": CounterMetricFamily(
                "touchpoint_agent_events", "Events handled", labels=labels
            ),
            "acked": CounterMetricFamily(
                "touchpoint_agent_acked", "Entries acknowledged", labels=labels
            ),
            "errors": CounterMetricFamily(
                "touchpoint_agent_errors", "Failed batches", labels=labels
            ),
            "dead_lettered": CounterMetricFamily(
                "touchpoint_agent_dead_lettered", "Entries dead-lettered", labels=labels
            ),
            "reclaimed": CounterMetricFamily(
                "touchpoint_agent_reclaimed", "Stale entries reclaimed", labels=labels
            ),
        }
        running = GaugeMetricFamily("touchpoint_agent_running", "Agent loop running", labels=labels)
        for agent in self.app[AGENTS].agents:
            for name, family in families.items():
                family.add_metric([agent.name], getattr(agent.stats, name))
            running.add_metric([agent.name], int(agent.running))
        return [*families.values(), running]

    def _streams(self) -> list[Metric]:
        length = GaugeMetricFamily(
            "touchpoint_stream_length", "Entries in a stream", labels=["stream"]
        )
        dead = GaugeMetricFamily(
            "touchpoint_stream_dead_letter", "Entries in a dead-letter stream", labels=["stream"]
        )
        pending = GaugeMetricFamily(
            "touchpoint_group_pending",
            "Entries delivered, not acknowledged",
            labels=["stream", "group"],
        )
        lag = GaugeMetricFamily(
            "touchpoint_group_lag",
            "Entries not yet delivered to a group",
            labels=["stream", "group"],
        )
        for stream, info in (self.stats or {}).get("streams", {}).items():
            length.add_metric([stream], info["length"])
            dead.add_metric([stream], info["dead_letter"])
            for group, g in info["groups"].items():
                pending.add_metric([stream, group], g["pending"])
                lag.add_metric([stream, group], g["lag"])
        return [length, dead, pending, lag]
