"""Stage 2 as a pipeline: sampling runs ahead, the backbone gets batches (in-process models) or
several requests in flight (served models), and the judge starts on each description as it comes.

One scheduler thread (the caller's) owns every row, the cache and the progress bars; the work
runs in three pools:

* sampling (decode, fbank, NFBL text): ``sample_workers`` threads, at most ``prefetch`` sampled
  videos held at once (waiting, or inside a describe call), so memory is flat however large the
  dataset is;
* describing: ``concurrency`` calls in flight (1 for in-process backbones, whose calls take
  ``batch_size`` samples each; a batch waits until it is full or nothing more can come);
* judging: ``judge_concurrency`` calls in flight, each started as soon as its description exists.

Completions are handled here, in this thread, as they arrive (``on_described``, ``on_judged``):
each answer is cached the moment it exists. Answers never depend on these settings: batched
greedy decoding equals one-by-one decoding (tests), requests are independent, and rows keep
protocol order.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from eald.data.media import MediaError
from eald.mllm import BackboneError

log = logging.getLogger("eald.pipeline")


@dataclass(frozen=True)
class PipelineConf:
    """The `pipeline` config section (answers never depend on it)."""

    sample_workers: int = 2  # threads decoding / computing fbanks ahead of the model
    prefetch: int = 16  # most sampled videos held at once (memory bound)
    batch_size: int = 1  # samples per describe call (in-process backbones)
    concurrency: int = 1  # describe calls in flight (served backbones)
    judge_concurrency: int = 1

    def __post_init__(self) -> None:
        for k in ("sample_workers", "prefetch", "batch_size", "concurrency", "judge_concurrency"):
            if getattr(self, k) < 1:
                raise ValueError(f"pipeline: {k}={getattr(self, k)}, need >= 1")


@dataclass
class Item:
    """One video to describe: its row index and whatever the task attaches."""

    index: int
    payload: Any
    sample: Any = None
    result: Any = field(default=None, repr=False)


def _describe_batch(describe: Callable[[list[Any]], list[str]], samples: list[Any]) -> list[Any]:
    """Texts or BackboneErrors, one per sample. A failing batch is retried one by one, so that
    only the video at fault fails."""
    try:
        return list(describe(samples))
    except BackboneError as err:
        if len(samples) == 1:
            return [err]
    out: list[Any] = []
    for s in samples:
        try:
            out += describe([s])
        except BackboneError as err:
            out.append(err)
    return out


def run_pipeline(
    items: Sequence[Item],
    conf: PipelineConf,
    sample: Callable[[Item], Any],
    describe: Callable[[list[Any]], list[str]],
    on_described: Callable[[Item, Any], Any],
    judge: Callable[[Any], Any] | None,
    on_judged: Callable[[Any, Any], None],
    early_judge: Sequence[Any] = (),
    cached: int = 0,
    bars: bool = True,
) -> dict[str, int]:
    """Describe ``items`` (already known to miss the cache) and judge what comes out.

    ``sample(item)`` returns the model input (MediaError: the item fails, via
    ``on_described(item, err)``); ``describe(samples)`` the texts. ``on_described(item, text or
    error)`` returns a judge request, or None when nothing is to be judged. ``judge(request)``
    returns a judgement, handed to ``on_judged(request, judgement)``. ``early_judge``: requests
    known before any describing (``cached`` descriptions); they are judged from the start.
    Returns the calls made ({"backbone": videos sent, "judge": requests}) and "seconds": when
    each stage's last answer came, from the start.
    """
    calls = {"backbone": 0, "judge": 0}
    t0 = time.perf_counter()
    stage_s = {"describe": 0.0, "judge": 0.0}  # when each stage's last answer came (from start)
    todo = deque(items)
    sampling: deque[tuple[Item, Future]] = deque()  # in order
    ready: deque[Item] = deque()
    describing: dict[Future, list[Item]] = {}
    judging: dict[Future, Any] = {}
    held = 0  # sampled videos in memory: being sampled, waiting, or inside a describe call
    d_bar = tqdm(total=len(items) + cached, initial=cached, desc="describe", unit="video",
                 disable=not bars)  # fmt: skip
    j_bar = tqdm(total=0, desc="judge", unit="video", disable=not bars or judge is None)

    with (
        ThreadPoolExecutor(conf.sample_workers, thread_name_prefix="sample") as samplers,
        ThreadPoolExecutor(conf.concurrency, thread_name_prefix="describe") as describers,
        ThreadPoolExecutor(conf.judge_concurrency, thread_name_prefix="judge") as judges,
    ):

        def submit_judge(req: Any) -> None:
            if req is None or judge is None:
                return
            judging[judges.submit(judge, req)] = req
            calls["judge"] += 1
            j_bar.total += 1
            j_bar.refresh()

        for req in early_judge:
            submit_judge(req)
        try:
            while todo or sampling or ready or describing or judging:
                while todo and held < conf.prefetch:  # stage 1 runs ahead, bounded
                    it = todo.popleft()
                    sampling.append((it, samplers.submit(sample, it)))
                    held += 1
                while sampling and sampling[0][1].done():  # in protocol order
                    it, fut = sampling.popleft()
                    try:
                        it.sample = fut.result()
                        ready.append(it)
                    except MediaError as err:
                        held -= 1
                        d_bar.update(1)
                        submit_judge(on_described(it, err))
                # A batch waits to be full only while samples are still on their way.
                while (
                    ready
                    and len(describing) < conf.concurrency
                    and (len(ready) >= conf.batch_size or not sampling)
                ):
                    batch = [ready.popleft() for _ in range(min(conf.batch_size, len(ready)))]
                    fut = describers.submit(_describe_batch, describe, [b.sample for b in batch])
                    describing[fut] = batch
                    calls["backbone"] += len(batch)  # videos sent (batches: see batch_size)
                d_bar.set_postfix(cached=cached, in_flight=sum(map(len, describing.values())),
                                  ready=len(ready), refresh=False)  # fmt: skip
                j_bar.set_postfix(in_flight=len(judging), refresh=False)
                waits = set(describing) | set(judging)
                if sampling:
                    waits.add(sampling[0][1])
                if not waits:
                    continue
                done, _ = wait(waits, return_when=FIRST_COMPLETED)
                for fut in done:
                    if fut in describing:
                        batch = describing.pop(fut)
                        texts = fut.result()  # errors other than BackboneError end the run
                        for it, text in zip(batch, texts, strict=True):
                            req = on_described(it, text)
                            stage_s["describe"] = time.perf_counter() - t0
                            it.sample, held = None, held - 1  # the sample is released here
                            d_bar.update(1)
                            submit_judge(req)
                    elif fut in judging:
                        req = judging.pop(fut)
                        on_judged(req, fut.result())
                        stage_s["judge"] = time.perf_counter() - t0
                        j_bar.update(1)
        except BaseException:
            for fut in [f for _, f in sampling] + list(describing) + list(judging):
                fut.cancel()
            raise
        finally:
            d_bar.set_postfix(cached=cached, in_flight=0, ready=len(ready), refresh=False)
            j_bar.set_postfix(in_flight=len(judging), refresh=False)
            d_bar.close()
            j_bar.close()
    return {**calls, "seconds": {k: round(v, 3) for k, v in stage_s.items()}}
