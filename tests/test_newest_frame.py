"""Newest frame wins: what the service's streams and `replay --rate` rely on."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from perception.newest_frame import NewestFrame


def test_a_busy_consumer_gets_the_newest_and_the_count_of_what_it_missed() -> None:
    frames: NewestFrame[str] = NewestFrame()
    assert frames.put("a") is False
    taken = frames.take()
    assert (taken.item, taken.sequence, taken.dropped) == ("a", 0, 0)
    assert [frames.put(x) for x in "bcd"] == [False, True, True]  # b and c are replaced
    assert frames.waiting()
    taken = frames.take()
    assert (taken.item, taken.sequence, taken.dropped) == ("d", 3, 2)
    assert not frames.waiting()
    assert (frames.arrived, frames.dropped) == (4, 2)


def test_end_hands_over_what_is_left_then_none_or_the_producers_error() -> None:
    frames: NewestFrame[int] = NewestFrame()
    frames.put(1)
    frames.end()
    assert frames.take().item == 1
    assert frames.take() is None
    broken: NewestFrame[int] = NewestFrame()
    broken.put(7)
    broken.end(ValueError("record 8 is corrupt"))
    assert broken.take().item == 7  # the frames before the error come first
    with pytest.raises(ValueError, match="record 8"):
        broken.take()


def test_take_waits_for_a_producer_thread() -> None:
    frames: NewestFrame[int] = NewestFrame()
    got: list[int | None] = []
    consumer = threading.Thread(target=lambda: got.extend(
        [t.item if (t := frames.take()) else None for _ in range(2)]))
    consumer.start()
    time.sleep(0.05)
    frames.put(5)
    time.sleep(0.05)
    frames.end()
    consumer.join(5)
    assert got == [5, None]


def test_take_async_with_a_producer_on_the_same_event_loop() -> None:
    async def scenario() -> list[tuple[int, int, int]]:
        frames: NewestFrame[int] = NewestFrame()

        async def produce() -> None:
            for value in range(5):
                frames.put(value)
                await asyncio.sleep(0.01 if value in (0, 3) else 0)
            frames.end()

        producer = asyncio.create_task(produce())
        answers = []
        while (taken := await frames.take_async()) is not None:
            answers.append((taken.item, taken.sequence, taken.dropped))
            await asyncio.sleep(0.02)  # busy: the producer moves on meanwhile
        await producer
        return answers

    answers = asyncio.run(scenario())
    assert answers[0] == (0, 0, 0)
    assert answers[-1][0] == 4  # the last frame is never lost
    assert sum(dropped for _, _, dropped in answers) + len(answers) == 5
