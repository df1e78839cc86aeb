"""Long loops that give the event loop back now and then.

``touchpoint serve`` runs the agents on the loop that answers HTTP: a step over a batch of
80,000 events is seconds of Python, and a request arriving meanwhile would wait for all of it
(bench/collector.py prints these stalls). The steps' per-event loops go through :func:`paced`
(or call a :class:`Pace` themselves), which lets the loop run others' callbacks once the step
has held it for :data:`SLICE` seconds. The price, measured end to end (bench/collector.py,
slices of 5 ms against none in the same tree, alternating): 3-13 % fewer events/s, more than
the turns themselves cost — the batches in hand interleave more finely.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Final, TypeVar

T = TypeVar("T")

#: Seconds a loop holds the event loop before letting others run.
SLICE: Final = 0.005
#: Items between two looks at the clock.
STRIDE: Final = 256


class Pace:
    """``await pace()`` between pieces of work: yields to the event loop once :data:`SLICE`
    has passed since this pace last did (or was made)."""

    __slots__ = ("_since",)

    def __init__(self) -> None:
        self._since = time.perf_counter()

    async def __call__(self) -> None:
        if time.perf_counter() - self._since >= SLICE:
            await asyncio.sleep(0)
            self._since = time.perf_counter()


async def paced(items: Sequence[T], stride: int = STRIDE) -> AsyncIterator[Sequence[T]]:
    """``items`` in runs of ``stride``, yielding to the event loop between runs as :class:`Pace`
    does."""
    pace = Pace()
    for start in range(0, len(items), stride):
        yield items[start : start + stride]
        await pace()
