"""The bounded decode / encode threads of eald.deid.streaming: order, bounds, errors, early exit."""

from __future__ import annotations

import threading
import time

import pytest

from eald.deid.streaming import Consumer, Prefetch


def test_prefetch_keeps_order_and_stays_bounded() -> None:
    made: list[int] = []

    def make():
        for i in range(50):
            made.append(i)
            yield i

    got = []
    with Prefetch(make, depth=3) as src:
        for i in src:
            if i == 0:
                time.sleep(0.3)  # the producer runs ahead, but no further than the queue
                assert len(made) <= 1 + 3 + 1  # taken + queued + the one waiting to be put
            got.append(i)
    assert got == list(range(50))


def test_prefetch_raises_the_producers_error_after_its_items() -> None:
    def make():
        yield 1
        yield 2
        raise ValueError("bad frame 3")

    got = []
    with pytest.raises(ValueError, match="bad frame 3"), Prefetch(make, depth=2) as src:
        for i in src:
            got.append(i)
    assert got == [1, 2]


def test_prefetch_left_early_stops_the_producer() -> None:
    def make():
        i = 0
        while True:  # endless: only the stop flag ends it
            yield i
            i += 1

    with Prefetch(make, depth=2) as src:
        for i in src:
            if i == 5:
                break
    assert not src.thread.is_alive()


def test_consumer_in_order_and_errors_reach_the_caller() -> None:
    done: list[int] = []
    with Consumer(done.append, depth=2) as sink:
        for i in range(20):
            sink.put(i)
        sink.close()
    assert done == list(range(20))

    def fail_at_3(i: int) -> None:
        if i == 3:
            raise OSError("disk full")
        done.append(i)

    done.clear()
    with pytest.raises(OSError, match="disk full"), Consumer(fail_at_3, depth=1) as sink:
        for i in range(100):
            sink.put(i)
            time.sleep(0.01)
        sink.close()
    assert done == [0, 1, 2]


def test_consumer_left_early_drops_the_queue_and_joins() -> None:
    gate = threading.Event()
    done: list[int] = []

    started = threading.Event()

    def slow(i: int) -> None:
        started.set()
        gate.wait(5)
        done.append(i)

    with pytest.raises(RuntimeError, match="upstream"), Consumer(slow, depth=4) as sink:
        for i in range(4):
            sink.put(i)
        assert started.wait(5)  # 0 is being worked on (waits for the gate); 1..3 are queued
        threading.Timer(0.2, gate.set).start()
        raise RuntimeError("upstream")
    assert not sink.thread.is_alive()
    assert done == [0]  # what was queued after the error was dropped, not done
