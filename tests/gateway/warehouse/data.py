"""A generated shop's week: events (some bots), sessions, sales with returns, messages and
segments, and the figures an analyst would compute from it by hand, in plain Python."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.warehouse import Warehouse

Row = dict[str, Any]
START = datetime(2026, 1, 3, tzinfo=UTC)  # a Saturday: the days span two ISO weeks
DAYS = 5
CHANNELS = ("web", "email", "pos", "mobile")
DEVICES = ("desktop", "mobile", "tablet", None)
CATEGORIES = ("shoes", "bags", "hats")
SEGMENTS = ("vip", "new", "lapsed")


@dataclass
class Shop:
    events: list[Row]
    sessions: list[Row]
    sales: list[Row]
    messages: list[Row]
    segments: list[Row]

    async def load(self, warehouse: Warehouse) -> None:
        for table, rows in (
            ("fact_event", self.events),
            ("fact_session", self.sessions),
            ("fact_sale", self.sales),
            ("fact_message", self.messages),
            ("customer_segment", self.segments),
        ):
            assert await warehouse.insert(table, rows) == len(rows)

    def segments_of(self, customer: str | None) -> list[str]:
        return sorted(r["segment"] for r in self.segments if r["customer_id"] == customer)


def _moment(rng: random.Random) -> datetime:
    return START + timedelta(seconds=rng.randrange(DAYS * 86_400))


def generate(seed: int = 7) -> Shop:
    rng = random.Random(seed)
    customers = [f"c{i}" for i in range(30)]
    events = []
    for i in range(1_500):
        channel = rng.choice(CHANNELS)
        sku = rng.choice([None, "SKU-1", "SKU-2", "SKU-3"])
        events.append(
            {
                "event_id": f"e{i}",
                "site": rng.choice(["shop", "outlet"]),
                "channel": channel,
                "type": "track",
                "name": "Product Viewed" if sku else "Page Viewed",
                "ts": _moment(rng),
                "customer_id": rng.choice([None, None, *customers]),
                "anonymous_id": f"a{rng.randrange(200)}",
                "is_bot": rng.random() < 0.1,
                "device_type": rng.choice(DEVICES),
                "browser": rng.choice(["Firefox", "Chrome"]),
                "store_id": rng.choice(["S1", "S2"]) if channel == "pos" else None,
                "sku": sku,
                "category": CATEGORIES[int(sku[-1]) - 1] if sku else None,
                "campaign": rng.choice([None, "spring", "sale"]),
                "properties": {"i": i},
            }
        )
    sessions = [
        {
            "session_id": f"s{i}",
            "site": "shop",
            "channel": rng.choice(CHANNELS),
            "customer_id": rng.choice([None, *customers]),
            "anonymous_id": f"a{rng.randrange(200)}",
            "started_at": _moment(rng),
            "device_type": rng.choice(DEVICES),
            "page_views": rng.randrange(1, 9),
            "bounced": rng.random() < 0.4,
            "converted": rng.random() < 0.2,
        }
        for i in range(300)
    ]
    sales = []
    for order in range(120):
        kind = "return" if order % 7 == 0 else "sale"
        sign = -1.0 if kind == "return" and order % 2 else 1.0  # returns stored either way
        ts, channel, customer = _moment(rng), rng.choice(CHANNELS), rng.choice(customers)
        for line in range(rng.randrange(1, 4)):
            quantity, price = float(rng.randrange(1, 4)), float(rng.randrange(5, 80))
            sales.append(
                {
                    "order_id": f"o{order}",
                    "line_no": line,
                    "ts": ts,
                    "channel": channel,
                    "store_id": "S1" if channel == "pos" else None,
                    "customer_id": customer,
                    "sku": f"SKU-{line + 1}",
                    "category": CATEGORIES[line],
                    "quantity": sign * quantity,
                    "unit_price": price,
                    "revenue": sign * quantity * price,
                    "kind": kind,
                }
            )
    statuses = ("sent", "delivered", "opened", "clicked", "unsubscribed", "bounced")
    messages = [
        {
            "message_id": f"m{i}",
            "ts": _moment(rng),
            "channel": rng.choice(["email", "mobile"]),
            "campaign_id": rng.choice(["spring", "sale"]),
            "customer_id": rng.choice(customers),
            "status": rng.choice(statuses),
        }
        for i in range(400)
    ]
    segments = [
        {"customer_id": c, "segment": s} for c in customers for s in SEGMENTS if rng.random() < 0.3
    ]
    return Shop(events, sessions, sales, messages, segments)


# --- figures by hand -----------------------------------------------------------------------------


def day(ts: datetime) -> str:
    return ts.astimezone(UTC).date().isoformat()


def week(ts: datetime) -> str:
    year, number, _ = ts.astimezone(UTC).isocalendar()
    return f"{year}-W{number:02}"


def humans(shop: Shop) -> list[Row]:
    return [e for e in shop.events if not e["is_bot"]]


def count(rows: Iterable[Row], key: Callable[[Row], Hashable]) -> dict[Any, int]:
    return dict(Counter(key(r) for r in rows))


def distinct(
    rows: Iterable[Row], key: Callable[[Row], Hashable], value: Callable[[Row], Hashable]
) -> dict[Any, int]:
    seen: dict[Any, set[Any]] = defaultdict(set)
    for r in rows:
        seen[key(r)].add(value(r))
    return {k: len(v) for k, v in seen.items()}


def visitor(row: Row) -> Hashable:
    return row["customer_id"] or row["anonymous_id"]


def signed(row: Row, column: str) -> float:
    value: float = row[column]
    return -abs(value) if row["kind"] == "return" else value


def total(
    rows: Iterable[Row], key: Callable[[Row], Hashable], value: Callable[[Row], float]
) -> dict[Any, float]:
    sums: dict[Any, float] = defaultdict(float)
    for r in rows:
        sums[key(r)] += value(r)
    return dict(sums)


def share(rows: Iterable[Row], key: Callable[[Row], Hashable], flag: str) -> dict[Any, float]:
    hits: dict[Any, list[bool]] = defaultdict(list)
    for r in rows:
        hits[key(r)].append(bool(r[flag]))
    return {k: sum(v) / len(v) for k, v in hits.items()}
