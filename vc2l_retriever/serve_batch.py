"""A micro-batcher in front of ``model.encode`` for the HTTP server (``vc2l_retriever.serve``).

Concurrent requests each want a few vectors; one forward pass over all of them costs less than one pass each
(fixed per-call overhead, fuller matrix products). Callers ``await encode(items)``; the first caller of an idle
period starts a drain task that waits ``window_ms`` for others to join, then encodes everything queued (up to
``max_batch`` items a pass) on a worker thread, one pass at a time. While a pass runs, new callers queue up and
form the next batch, so under load batches grow without any extra wait.

A request whose items fail to encode must not fail the requests it was batched with: a failed pass is retried
one request at a time, and only the request that fails alone gets the error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import numpy as np

Encode = Callable[[list[Any]], np.ndarray]


@dataclass
class BatchStats:
    """What the batcher has done so far (``GET /info`` shows it; the tests read it)."""

    requests: int = 0
    items: int = 0
    passes: int = 0
    largest_pass: int = 0

    def to_dict(self) -> dict[str, int]:
        """Plain dict for JSON."""
        return {"requests": self.requests, "items": self.items, "passes": self.passes,
                "largest_pass": self.largest_pass}


@dataclass
class _Job:
    items: list[Any]
    future: asyncio.Future[np.ndarray]


class MicroBatcher:
    """Collects ``encode`` calls from concurrent coroutines into shared forward passes.

    Args:
        encode: Blocking function from a list of inputs to an ``(n, d)`` array (runs on a worker thread).
        max_batch: Most items in one pass (a single larger request still goes in one pass of its own).
        window_ms: How long the first caller of an idle period waits for others to join it.
        enabled: ``False`` encodes every request on its own (the baseline the batching is measured against).
    """

    def __init__(self, encode: Encode, *, max_batch: int = 64, window_ms: float = 2.0, enabled: bool = True) -> None:
        if max_batch < 1 or window_ms < 0:
            raise ValueError("max_batch must be at least 1 and window_ms at least 0")
        self._encode, self.max_batch, self.window = encode, max_batch, window_ms / 1000
        self.enabled = enabled
        self.stats = BatchStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[_Job] = []
        self._drainer: asyncio.Task[None] | None = None

    async def encode(self, items: list[Any]) -> np.ndarray:
        """The vectors of ``items``, in order; raises what ``encode`` raised for these items alone."""
        self.stats.requests += 1
        if not self.enabled:
            return await self._pass(items)
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (a test client's): queued work of the old one is gone
            self._loop, self._pending, self._drainer = loop, [], None
        job = _Job(items, loop.create_future())
        self._pending.append(job)
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        return await job.future

    async def _drain(self) -> None:
        try:
            if self.window:
                await asyncio.sleep(self.window)  # let callers that arrive together share the first pass
            while self._pending:
                await self._run(self._take())
        finally:
            self._drainer = None

    def _take(self) -> list[_Job]:
        """Queued jobs up to ``max_batch`` items (always at least one job)."""
        jobs, n = [], 0
        while self._pending and (not jobs or n + len(self._pending[0].items) <= self.max_batch):
            job = self._pending.pop(0)
            jobs.append(job)
            n += len(job.items)
        return jobs

    async def _run(self, jobs: list[_Job]) -> None:
        jobs = [job for job in jobs if not job.future.done()]  # callers that went away need nothing
        if not jobs:
            return
        try:
            vectors = await self._pass([item for job in jobs for item in job.items])
        except Exception as e:  # noqa: BLE001 - handed to the caller(s) whose items caused it
            if len(jobs) == 1:
                _settle(jobs[0], error=e)
                return
            for job in jobs:  # find the request that fails alone; the others still get their vectors
                await self._run([job])
            return
        start = 0
        for job in jobs:
            _settle(job, vectors[start:start + len(job.items)])
            start += len(job.items)

    async def _pass(self, items: list[Any]) -> np.ndarray:
        self.stats.passes += 1
        self.stats.items += len(items)
        self.stats.largest_pass = max(self.stats.largest_pass, len(items))
        return await anyio.to_thread.run_sync(self._encode, items)


def _settle(job: _Job, result: np.ndarray | None = None, error: BaseException | None = None) -> None:
    if job.future.done():
        return
    if error is not None:
        job.future.set_exception(error)
    else:
        job.future.set_result(result)
