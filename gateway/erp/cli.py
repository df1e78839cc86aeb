"""What ``touchpoint erp sync`` and ``touchpoint erp status`` run (the CLI only parses/prints).

``erp sync`` opens the warehouse itself: with DuckDB the gateway must not be running (one
process holds the file).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError
from tqdm import tqdm  # type: ignore[import-untyped]

from gateway.bus import Bus
from gateway.config import Config
from gateway.erp import open_connector, stock
from gateway.erp.base import Entity
from gateway.erp.sync import SYNCED, ErpSync, Progress, SyncResult
from gateway.errors import BusUnavailable
from gateway.keys import Keys
from gateway.redis import connect, redis_url
from gateway.warehouse import open_warehouse


async def sync(
    config: Config,
    entities: Sequence[Entity] | None = None,
    *,
    full: bool = False,
    progress: bool = False,
) -> list[SyncResult]:
    """Sync ``entities`` (all when None) now, with a progress bar per entity on stderr."""
    async with redis_url(config) as url, contextlib.AsyncExitStack() as stack:
        client = connect(url, timeout=config.redis.timeout)
        stack.push_async_callback(client.aclose)
        warehouse = await open_warehouse(config)
        stack.push_async_callback(warehouse.close)
        await warehouse.migrate()
        keys = Keys(config.redis.prefix)
        bus = Bus(client, keys, config.bus)
        connector = open_connector(config)
        stack.push_async_callback(connector.close)
        syncer = ErpSync(connector, warehouse, client, keys, bus, config.erp)
        results = []
        for entity in [e for e in SYNCED if e in (entities or SYNCED)]:
            with tqdm(desc=f"erp {entity}", unit=" rows", file=sys.stderr, disable=not progress,
                      leave=False, mininterval=0.5) as bar:  # fmt: skip
                results.append(await syncer.sync(entity, full=full, progress=_advance(bar)))
        return results


def _advance(bar: Any) -> Progress:
    def advance(rows: int, total: int | None) -> None:
        if total is not None and bar.total is None:
            bar.total = total
        bar.update(rows)

    return advance


async def status(config: Config) -> dict[str, dict[str, Any]]:
    async with redis_url(config) as url:
        client = connect(url, timeout=config.redis.timeout)
        try:
            return await stock.status(client, Keys(config.redis.prefix), config.erp.stale_after)
        except (RedisError, OSError) as exc:
            raise BusUnavailable(f"erp status: {exc}") from exc
        finally:
            await client.aclose()


def status_text(found: dict[str, dict[str, Any]]) -> str:
    if not found:
        return "never synced"
    lines = []
    for entity in SYNCED:
        info = found.get(entity)
        if info is None:
            lines.append(f"{entity:<9} never synced")
            continue
        state = "STALE" if info.get("stale") else "ok"
        line = (f"{entity:<9} {state:<5} last synced {info.get('synced_at', 'never')}, "
                f"{info.get('rows', 0)} rows, {info.get('skipped', 0)} skipped")  # fmt: skip
        if info.get("error"):
            line += f"; failing ({info.get('failures')} in a row): {info['error']}"
        lines.append(line)
    return "\n".join(lines)
