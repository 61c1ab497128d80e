from __future__ import annotations

import asyncio

import pytest

from echora_server.core.batching import Batcher


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[dict[str, int]] = []
        self.fail = fail

    async def run(self, asked: dict[str, int]) -> dict[str, int]:
        self.batches.append(dict(asked))
        await asyncio.sleep(0)
        if self.fail:
            raise RuntimeError("store away")
        return {key: value * 10 for key, value in asked.items() if key != "absent"}


async def test_calls_of_one_turn_run_as_one_batch() -> None:
    recorder = Recorder()
    batcher: Batcher[str, int, int] = Batcher(recorder.run, -1)
    results = await asyncio.gather(*(batcher(f"k{n}", n) for n in range(50)))
    assert results == [n * 10 for n in range(50)]
    assert len(recorder.batches) == 1 and len(recorder.batches[0]) == 50


async def test_a_key_seen_twice_goes_to_the_next_batch_and_absent_keys_get_the_default() -> None:
    recorder = Recorder()
    batcher: Batcher[str, int, int] = Batcher(recorder.run, -1)
    results = await asyncio.gather(
        batcher("a", 1), batcher("a", 2), batcher("b", 3), batcher("absent", 4)
    )
    assert results == [10, 20, 30, -1]
    assert recorder.batches == [{"a": 1, "b": 3, "absent": 4}, {"a": 2}]


async def test_max_size_splits_batches() -> None:
    recorder = Recorder()
    batcher: Batcher[int, int, int] = Batcher(recorder.run, -1, max_size=3)  # type: ignore[arg-type]
    await asyncio.gather(*(batcher(n, n) for n in range(7)))
    assert [len(b) for b in recorder.batches] == [3, 3, 1]


async def test_an_error_reaches_every_caller_and_the_next_batch_runs() -> None:
    recorder = Recorder(fail=True)
    batcher: Batcher[str, int, int] = Batcher(recorder.run, -1)
    results = await asyncio.gather(batcher("a", 1), batcher("b", 2), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    recorder.fail = False
    assert await batcher("a", 5) == 50


async def test_a_cancelled_caller_leaves_the_others_answered() -> None:
    recorder = Recorder()
    batcher: Batcher[str, int, int] = Batcher(recorder.run, -1)
    leaving = asyncio.ensure_future(batcher("a", 1))
    staying = asyncio.ensure_future(batcher("b", 2))
    await asyncio.sleep(0)
    leaving.cancel()
    assert await staying == 20
    with pytest.raises(asyncio.CancelledError):
        await leaving
    await batcher.close()


async def test_a_result_whose_caller_left_goes_to_unclaimed() -> None:
    recorder = Recorder()
    released: list[int] = []

    async def release(result: int) -> None:
        released.append(result)

    batcher: Batcher[str, int, int] = Batcher(recorder.run, -1, unclaimed=release)
    leaving = asyncio.ensure_future(batcher("a", 1))
    staying = asyncio.ensure_future(batcher("b", 2))
    await asyncio.sleep(0)
    leaving.cancel()
    assert await staying == 20
    await batcher.close()
    assert released == [10]
