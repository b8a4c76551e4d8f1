"""The dynamic batcher on its own: batching, each caller's own result, limits, shutdown, and
a bad frame that fails alone."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from serving_harness import StatsPerceiver

from perception.frames import Frame
from perception.modelspec import InputSpec
from perception.preprocess import preprocess
from serving.batcher import (
    Batcher,
    BatchStats,
    DeadlineExceeded,
    InputRejected,
    QueueFull,
    ShuttingDown,
)


def frame(value: int) -> Frame:
    return Frame(np.full((8, 8, 3), value, np.uint8), 0.0, value, f"test:{value}")


def test_each_caller_gets_its_own_result_from_shared_batches() -> None:
    model = StatsPerceiver()
    batcher = Batcher(model.perceive, max_batch=8, max_delay_ms=20, queue_size=64)
    values = list(range(0, 250, 5))  # 50 distinct images
    with ThreadPoolExecutor(16) as pool:
        futures = list(pool.map(lambda v: batcher.submit(frame(v)), values))
        results = [f.result(10) for f in futures]
    batcher.close()
    for value, result in zip(values, results, strict=True):
        assert result.frame_index == value
        assert result.detections[0].score == pytest.approx(value / 255, abs=1e-6)
    assert sum(model.batches) == len(values)
    assert max(model.batches) > 1, "concurrent requests should share batches"
    assert max(model.batches) <= 8


def test_batching_off_runs_one_frame_at_a_time() -> None:
    model = StatsPerceiver()
    batcher = Batcher(model.perceive, max_batch=1, max_delay_ms=20, queue_size=64)
    futures = [batcher.submit(frame(v)) for v in range(10)]
    assert [f.result(10).frame_index for f in futures] == list(range(10))
    batcher.close()
    assert model.batches == [1] * 10


def test_full_queue_refuses_at_once_and_the_rest_complete() -> None:
    gate = threading.Event()
    model = StatsPerceiver(gate)
    batcher = Batcher(model.perceive, max_batch=1, max_delay_ms=0, queue_size=2)
    running = batcher.submit(frame(1))
    time.sleep(0.2)  # the worker has taken it and is held at the gate
    queued = [batcher.submit(frame(2)), batcher.submit(frame(3))]
    with pytest.raises(QueueFull):
        batcher.submit(frame(4))
    gate.set()
    assert [f.result(10).frame_index for f in [running, *queued]] == [1, 2, 3]
    batcher.close()


def test_a_request_past_its_deadline_is_not_run() -> None:
    gate = threading.Event()
    model = StatsPerceiver(gate)
    batcher = Batcher(model.perceive, max_batch=1, max_delay_ms=0, queue_size=4)
    first = batcher.submit(frame(1))
    time.sleep(0.1)
    late = batcher.submit(frame(2), timeout_s=0.05)
    time.sleep(0.2)
    gate.set()
    assert first.result(10).frame_index == 1
    with pytest.raises(DeadlineExceeded):
        late.result(10)
    batcher.close()
    assert model.batches == [1]


def test_close_finishes_accepted_requests_and_refuses_new_ones() -> None:
    gate = threading.Event()
    model = StatsPerceiver(gate)
    batcher = Batcher(model.perceive, max_batch=2, max_delay_ms=0, queue_size=16)
    futures = [batcher.submit(frame(v)) for v in range(6)]
    closer = threading.Thread(target=batcher.close)
    closer.start()
    time.sleep(0.1)
    with pytest.raises(ShuttingDown):
        batcher.submit(frame(99))
    gate.set()
    closer.join(10)
    assert [f.result(0).frame_index for f in futures] == list(range(6))


def test_a_failing_batch_fails_each_of_its_callers() -> None:
    def broken(frames: list[Frame]) -> list:
        raise ValueError("model exploded")

    batcher = Batcher(broken, max_batch=4, max_delay_ms=10, queue_size=8)
    futures = [batcher.submit(frame(v)) for v in range(3)]
    for future in futures:
        with pytest.raises(ValueError, match="model exploded"):
            future.result(10)
    assert batcher.submit(frame(5)).exception(10) is not None  # the worker is still alive
    batcher.close()


LETTERBOX = InputSpec(64, 64, resize="letterbox")


def letterboxed_stats(model: StatsPerceiver) -> Callable[[list[Frame]], list]:
    """A model that letterboxes its frames with the real preprocessing first."""
    def perceive(frames: list[Frame]) -> list:
        preprocess([f.image for f in frames], LETTERBOX)  # OpenCV raises on an empty image
        return model.perceive(frames)

    return perceive


def test_a_bad_frame_fails_alone_and_its_neighbours_get_their_own_results() -> None:
    model = StatsPerceiver()
    empty = Frame(np.zeros((0, 5, 3), np.uint8), 0.0, 99, "test:empty")
    batcher = Batcher(letterboxed_stats(model), max_batch=4, max_delay_ms=200, queue_size=8,
                      probe=frame(0))
    futures = [batcher.submit(frame(v)) for v in (10, 20)] + [batcher.submit(empty)] + \
        [batcher.submit(frame(30))]
    assert [f.result(10).frame_index for f in futures[:2] + futures[3:]] == [10, 20, 30]
    with pytest.raises(InputRejected, match="cannot process this 5x0 image"):
        futures[2].result(10)
    batcher.close()
    assert model.batches == [1, 1, 1, 1], "the batch of 4 failed, then each ran alone + probe"


def test_when_the_probe_fails_too_the_models_error_is_every_callers() -> None:
    def broken(frames: list[Frame]) -> list:
        raise RuntimeError("onnxruntime: session lost")

    batcher = Batcher(broken, max_batch=4, max_delay_ms=100, queue_size=8, probe=frame(0))
    futures = [batcher.submit(frame(v)) for v in range(3)]
    for future in futures:
        with pytest.raises(RuntimeError, match="session lost"):
            future.result(10)
    batcher.close()


def lone_request_wait(**options: float) -> tuple[float, float]:
    """(seconds in the queue, seconds to the answer) of one request alone, max_batch 8."""
    stats: list[BatchStats] = []
    model = StatsPerceiver()
    batcher = Batcher(model.perceive, max_batch=8, on_batch=stats.append, **options)
    started = time.monotonic()
    assert batcher.submit(frame(7)).result(10).frame_index == 7
    answered = time.monotonic() - started
    batcher.close()
    assert model.batches == [1]
    return stats[0].queue_wait_s[0], answered


def test_a_lone_request_is_dispatched_at_once_unless_a_delay_is_asked_for() -> None:
    """By default no company is waited for: one request alone runs as soon as it is queued,
    whatever `max_batch`; `max_delay_ms` makes a batch wait that long for more."""
    queued, answered = lone_request_wait()
    assert queued < 0.15 and answered < 0.5
    queued, answered = lone_request_wait(max_delay_ms=500)
    assert 0.5 <= queued < 5 and answered >= 0.5


def test_requests_that_arrive_while_the_models_are_busy_make_the_next_batch() -> None:
    gate = threading.Event()
    model = StatsPerceiver(gate)
    batcher = Batcher(model.perceive, max_batch=8, queue_size=64)  # one worker, no delay
    first = batcher.submit(frame(1))
    assert model.entered.wait(10)  # the lone first request runs at once, alone
    waiting = [batcher.submit(frame(v)) for v in range(2, 12)]  # 10 arrive while it runs
    gate.set()
    assert [f.result(10).frame_index for f in [first, *waiting]] == list(range(1, 12))
    batcher.close()
    assert model.batches == [1, 8, 2], "all that waited, up to max_batch, then the rest"


def test_a_second_worker_runs_a_request_while_the_first_batch_is_busy() -> None:
    gate, entered = threading.Event(), threading.Event()
    model = StatsPerceiver()

    def held_first(frames: list[Frame]) -> list:
        if frames[0].index == 1:
            entered.set()
            gate.wait(30)
        return model.perceive(frames)

    batcher = Batcher(held_first, max_batch=8, workers=2)
    first = batcher.submit(frame(1))
    assert entered.wait(10)
    assert batcher.submit(frame(2)).result(10).frame_index == 2  # not behind the held batch
    assert not first.done()
    gate.set()
    assert first.result(10).frame_index == 1
    batcher.close()
