"""A greedy asyncio batcher: the batching core without Ray, for plain HTTP servers and benchmarks.

When the processor is idle a request starts a forward at once (no wait, no added latency at low load);
while a forward runs, requests queue, and the next forward takes all of them (up to ``max_batch_size``).
Batch size therefore follows load by itself. The Ray Serve app gets the same behaviour from
``@serve.batch`` by stretching its wait to the end of the running forward (see
:mod:`eks_inference.serving.app`); this module is what runs where Ray is not installed (the GPU benchmark
machine) and the reference the Ray path is measured against.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class GreedyBatcher:
    """``await submit(items)`` → outputs for those items; one forward at a time on a dedicated thread."""

    def __init__(self, run_batch: Callable[[Sequence[Any]], Sequence[Any]], *, max_batch_size: int) -> None:
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self._queue: list[tuple[list[Any], asyncio.Future[list[Any]]]] = []
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward")
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, items: Sequence[Any]) -> list[Any]:
        if len(items) > self.max_batch_size:
            raise ValueError(f"{len(items)} items exceed max_batch_size {self.max_batch_size}; split them")
        self.start()
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._queue.append((list(items), fut))
        self._wake.set()
        return await fut

    def _take(self) -> list[tuple[list[Any], asyncio.Future[list[Any]]]]:
        batch, n = [], 0
        while self._queue and n + len(self._queue[0][0]) <= self.max_batch_size:
            entry = self._queue.pop(0)
            if entry[1].cancelled():
                continue
            batch.append(entry)
            n += len(entry[0])
        if not self._queue:
            self._wake.clear()
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            batch = self._take()
            if not batch:
                continue
            flat = [x for items, _ in batch for x in items]
            try:
                outputs = await loop.run_in_executor(self._executor, self.run_batch, flat)
            except Exception as e:  # every waiter gets the error; the loop keeps serving
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            self.batches += 1
            self.items += len(flat)
            start = 0
            for items, fut in batch:
                if not fut.done():
                    fut.set_result(list(outputs[start:start + len(items)]))
                start += len(items)
