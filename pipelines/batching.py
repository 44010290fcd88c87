"""Batches for model stages: many items wait on one model call, and the reactor never blocks.

Scrapy calls ``process_item`` once per item, but a model is fast per image only in batches (the
original workflow's one ``predict`` per image ran at ~0.7 images/s). Each item ``await``s
``Batcher.submit``; the batch runs when it is full or when the oldest item has waited ``max_wait``
seconds, so a slow trickle of items is never held back for long. ``flush`` runs what is left when
the spider closes (the trap in scrapy-monkeylearn's batch pipeline was items stuck in a last,
partial batch).
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    def __init__(self, run_batch: Callable[[list[T]], Awaitable[list[R]]], batch_size: int, max_wait: float):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.run_batch = run_batch
        self.batch_size = batch_size
        self.max_wait = max_wait
        self.pending: list[tuple[T, asyncio.Future[R]]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.running: set[asyncio.Task[None]] = set()
        self.batches_run = 0

    async def submit(self, value: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self.pending.append((value, future))
        if len(self.pending) >= self.batch_size:
            self._start_batch()
        elif self.timer is None:
            self.timer = loop.call_later(self.max_wait, self._start_batch)
        return await future

    def _start_batch(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.pending:
            return
        batch, self.pending = self.pending[: self.batch_size], self.pending[self.batch_size :]
        task = asyncio.ensure_future(self._run(batch))
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        if self.pending:  # more than a batch arrived at once
            self.timer = asyncio.get_running_loop().call_later(0, self._start_batch)

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self.batches_run += 1
        try:
            results = await self.run_batch([value for value, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"the model returned {len(results)} results for {len(batch)} inputs")
        except Exception as exc:  # every waiting item learns why
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results):
            if not future.done():
                future.set_result(result)

    async def flush(self) -> None:
        while self.pending:
            self._start_batch()
        if self.running:
            await asyncio.gather(*self.running, return_exceptions=True)
