"""Long loops that give the event loop back now and then.

``touchpoint serve`` runs the agents on the loop that answers HTTP: a step over a batch of
80,000 events is seconds of Python, and a request arriving meanwhile would wait for all of it
(bench/collector.py prints these stalls). The steps' per-event loops go through :func:`paced`
(or call a :class:`Pace` themselves), which lets the loop run others' callbacks once the step
has held it for :data:`SLICE` seconds. The price, measured end to end (bench/collector.py,
slices of 5 ms against none in the same tree, alternating): 3-13 % fewer events/s, more than
the turns themselves cost — the batches in hand interleave more finely.

Paced loops that give the loop back take turns (:func:`turn`): one of them goes on per pass of
the event loop, so a request waits for one slice at each of its turns, not for a slice of every
batch in hand (bench/beacon.py ``--with-collector``: ingest's p99 over a backlog 227-279 ms
against 338-422 ms when each went on at once).
"""

from __future__ import annotations

import asyncio
import collections
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from typing import Final, TypeVar

T = TypeVar("T")

#: Seconds a loop holds the event loop before letting others run.
SLICE: Final = 0.005
#: Items between two looks at the clock.
STRIDE: Final = 256


class Pace:
    """``await pace()`` between pieces of work: yields to the event loop once :data:`SLICE`
    has passed since this pace last did (or was made). ``step`` names the loop, for who
    looks at it (a test; compiled code has no frames to inspect)."""

    __slots__ = ("_since", "step")

    def __init__(self, step: str = "") -> None:
        self._since = time.perf_counter()
        self.step = step

    async def __call__(self) -> None:
        if time.perf_counter() - self._since >= SLICE:
            await turn()
            self._since = time.perf_counter()


class _Turns:
    """The paced loops of one event loop waiting to go on: one goes on per pass of the loop,
    so what else is ready (a request) waits for one slice, not for a slice of each of them."""

    def __init__(self) -> None:
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._releasing = False

    async def wait(self, loop: asyncio.AbstractEventLoop) -> None:
        future = loop.create_future()
        self._waiting.append(future)
        if not self._releasing:
            self._releasing = True
            loop.call_soon(self._release, loop)
        await future

    def _release(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wake the first in line; the next goes on at the next pass."""
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():  # its task was cancelled meanwhile
                future.set_result(None)
                break
        if self._waiting:
            loop.call_soon(self._release, loop)
        else:
            self._releasing = False


_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Turns] = weakref.WeakKeyDictionary()


async def turn() -> None:
    """Give the event loop back, and go on after the paced loops that gave it back before."""
    loop = asyncio.get_running_loop()
    turns = _turns.get(loop)
    if turns is None:
        turns = _turns[loop] = _Turns()
    await turns.wait(loop)


async def paced(
    items: Sequence[T], stride: int = STRIDE, step: str = ""
) -> AsyncIterator[Sequence[T]]:
    """``items`` in runs of ``stride``, yielding to the event loop between runs as :class:`Pace`
    (named ``step``) does."""
    pace = Pace(step)
    for start in range(0, len(items), stride):
        yield items[start : start + stride]
        await pace()
