"""Decoding and encoding overlap with compute (julnet.inference.media.prefetch / Background): order, bounds, errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from julnet.inference.media import Background, prefetch, prefetch_depth


def _counting(n: int, produced: list[int], fail_at: int | None = None) -> Iterator[int]:
    for i in range(n):
        if i == fail_at:
            raise ValueError(f"bad frame {i}")
        produced.append(i)
        yield i


def test_prefetch_keeps_order_and_runs_at_most_depth_ahead() -> None:
    produced: list[int] = []
    items = prefetch(_counting(50, produced), depth=3)
    assert next(items) == 0
    time.sleep(0.3)  # the producer fills the queue, then waits
    assert len(produced) <= 1 + 3 + 1  # the one taken, `depth` queued, one waiting to be put
    assert [0, *items] == list(range(50))


def test_prefetch_depth_is_a_batch_of_small_frames_and_a_few_large_ones() -> None:
    assert prefetch_depth(16, 360, 288) == 16  # GRID: a whole batch ahead, 5 MB
    assert prefetch_depth(4, 360, 288) == 4
    assert prefetch_depth(16, 1280, 720) == 6
    assert prefetch_depth(16, 1920, 1080) == prefetch_depth(16, 1080, 1920) == 2  # 12 MB, not 100 MB
    assert prefetch_depth(16, 3840, 2160) == 2
    assert prefetch_depth(1, 3840, 2160) == 1


def test_prefetch_raises_the_producers_error_in_the_consumer() -> None:
    items = prefetch(_counting(10, [], fail_at=4), depth=2)
    with pytest.raises(ValueError, match="bad frame 4"):
        list(items)


def test_closing_prefetch_early_stops_its_thread_and_closes_the_source() -> None:
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    before = threading.active_count()
    items = prefetch(endless(), depth=2)
    assert next(items) == 0
    items.close()
    assert closed.is_set() and threading.active_count() == before


def test_background_runs_calls_in_order_and_waits_for_them_on_leaving() -> None:
    done: list[int] = []
    with Background(2, "test") as worker:
        for i in range(20):
            worker.submit(lambda i: (time.sleep(0.001), done.append(i)), i)
    assert done == list(range(20))


def test_background_raises_a_calls_error_and_skips_the_rest() -> None:
    done: list[int] = []

    def write(i: int) -> None:
        if i == 3:
            raise OSError("disk full")
        done.append(i)

    with pytest.raises(OSError, match="disk full"):
        with Background(1, "test") as worker:
            for i in range(10):
                worker.submit(write, i)
    assert done == [0, 1, 2]


def test_background_drops_waiting_calls_when_the_caller_fails() -> None:
    done: list[int] = []
    with pytest.raises(RuntimeError, match="model failed"):
        with Background(4, "test") as worker:
            worker.submit(time.sleep, 0.5)  # the worker is busy while the caller fails
            for i in range(4):
                worker.submit(done.append, i)
            raise RuntimeError("model failed")
    assert done == []
