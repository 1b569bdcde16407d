"""Bounded producer / consumer threads for the decode -> detect -> blur -> encode stream.

Decoding and encoding (FFmpeg, x264 or NVENC: they release the GIL) run in their own threads
beside detection, each behind a queue of at most ``depth`` items, so memory stays bounded
however long the video is. Order is kept (one thread per stage); an error in a stage is raised
in the caller at its next call, and leaving the ``with`` block stops and joins the threads.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
_DONE = object()


class _Stage:
    def __init__(self, depth: int) -> None:
        self.q: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def _put(self, item: Any) -> bool:
        """Blocking put that gives up when the stage is stopped (the other side has left)."""
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


class Prefetch(_Stage, Generic[T]):
    """Iterate ``make()``'s items in a background thread, at most ``depth`` ahead."""

    def __init__(self, make: Callable[[], Iterator[T]], depth: int) -> None:
        super().__init__(depth)
        self.thread = threading.Thread(target=self._run, args=(make,), daemon=True)

    def _run(self, make: Callable[[], Iterator[T]]) -> None:
        try:
            for item in make():
                if not self._put(item):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            self.error = e
        self._put(_DONE)

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self.q.get()
            if item is _DONE:
                if self.error is not None:
                    raise self.error
                return
            yield item

    def __enter__(self) -> Prefetch[T]:
        assert self.thread is not None
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join()


class Consumer(_Stage, Generic[T]):
    """Apply ``fn`` to each item given to :meth:`put`, in order, in a background thread."""

    def __init__(self, fn: Callable[[T], None], depth: int) -> None:
        super().__init__(depth)
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)

    def _run(self, fn: Callable[[T], None]) -> None:
        while True:
            item = self.q.get()
            if item is _DONE or self.stop.is_set():
                return
            try:
                fn(item)
            except BaseException as e:  # noqa: BLE001 - raised in the producer's next call
                self.error = e
                self.stop.set()
                return

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def put(self, item: T) -> None:
        self._raise()
        self._put(item)
        self._raise()

    def close(self) -> None:
        """Wait until every item given is done; raise the stage's error, if any."""
        self._put(_DONE)
        assert self.thread is not None
        self.thread.join()
        self._raise()

    def __enter__(self) -> Consumer[T]:
        assert self.thread is not None
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.thread is not None
        if self.thread.is_alive():  # left early (an error upstream): drop what is queued
            self.stop.set()
            while True:
                try:
                    self.q.get_nowait()
                except queue.Empty:
                    break
            self.q.put(_DONE)  # wakes the thread if it waits; nothing else puts any more
            self.thread.join()
