"""The batcher groups items, keeps their order, flushes on time and at the end, and spreads errors."""

from __future__ import annotations

import asyncio

import pytest

from pipelines.batching import Batcher


class Model:
    def __init__(self):
        self.calls: list[list[int]] = []

    async def __call__(self, batch: list[int]) -> list[int]:
        self.calls.append(list(batch))
        await asyncio.sleep(0.01)
        return [x * 10 for x in batch]


def test_full_batches_run_at_once_and_results_keep_their_order():
    model = Model()

    async def main():
        batcher = Batcher(model, batch_size=8, max_wait=60)  # the timer must not be what fires
        results = await asyncio.gather(*(batcher.submit(i) for i in range(16)))
        return results

    assert asyncio.run(main()) == [i * 10 for i in range(16)]
    assert model.calls == [list(range(8)), list(range(8, 16))]


def test_a_partial_batch_runs_after_max_wait():
    model = Model()

    async def main():
        batcher = Batcher(model, batch_size=8, max_wait=0.05)
        started = asyncio.get_running_loop().time()
        results = await asyncio.gather(*(batcher.submit(i) for i in range(3)))
        return results, asyncio.get_running_loop().time() - started

    results, waited = asyncio.run(main())
    assert results == [0, 10, 20] and model.calls == [[0, 1, 2]]
    assert 0.05 <= waited < 1.0


def test_19_items_make_batches_of_8_8_3_and_flush_empties_the_rest():
    model = Model()

    async def main():
        batcher = Batcher(model, batch_size=8, max_wait=60)
        tasks = [asyncio.ensure_future(batcher.submit(i)) for i in range(19)]
        await asyncio.sleep(0.05)
        assert not tasks[-1].done()  # 3 left waiting for a batch that will not fill
        await batcher.flush()
        return [t.result() for t in tasks]

    assert asyncio.run(main()) == [i * 10 for i in range(19)]
    assert [len(c) for c in model.calls] == [8, 8, 3]


def test_a_model_error_reaches_every_item_of_its_batch_only():
    async def failing(batch):
        if 3 in batch:
            raise ValueError("bad batch")
        return batch

    async def main():
        batcher = Batcher(failing, batch_size=2, max_wait=60)
        return await asyncio.gather(*(batcher.submit(i) for i in range(6)), return_exceptions=True)

    results = asyncio.run(main())
    assert results[:2] == [0, 1] and results[4:] == [4, 5]
    assert all(isinstance(r, ValueError) for r in results[2:4])


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError):
        Batcher(Model(), batch_size=0, max_wait=1)
