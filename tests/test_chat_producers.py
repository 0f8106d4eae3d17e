"""Unit tests of producers and the output queue: no sockets.

A "kernel" here is a function that takes at most some bytes of what ``gather()`` offers; the
queue must deliver every byte once, in order, whatever it takes each time.
"""

from __future__ import annotations

import gc
from collections import deque
from typing import Any, List

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netloop.chat.producers import SEND_CHUNKS, ProducerFifo, SimpleProducer, consume, gather, tail


class ListProducer:
    def __init__(self, pieces: List[Any]) -> None:
        self.pieces = list(pieces)
        self.calls = 0

    def more(self) -> Any:
        self.calls += 1
        return self.pieces.pop(0) if self.pieces else b""


def flush(fifo: Any, budget: int, takes: List[int], encoding: Any = None) -> bytes:
    """Send everything before the close marker; ``takes`` says how much each send accepts."""
    out = []
    i = 0
    while True:
        chunks, size = gather(fifo, budget, SEND_CHUNKS, encoding)
        if not chunks:
            return b"".join(out)
        assert size == sum(memoryview(c).nbytes for c in chunks)
        assert size <= max(budget, 1)
        take = min(size, takes[i % len(takes)]) if takes else size
        i += 1
        sent = b"".join(bytes(c) for c in chunks)[:take]
        del chunks
        out.append(sent)
        consume(fifo, take)


# ---------------------------------------------------------------- simple_producer
def test_simple_producer_hands_out_buffer_size_pieces() -> None:
    p = SimpleProducer(b"abcdefghij", buffer_size=4)
    assert [p.more() for _ in range(4)] == [b"abcd", b"efgh", b"ij", b""]
    assert p.data == b""


def test_simple_producer_data_is_what_is_left() -> None:
    p = SimpleProducer(b"abcdefghij", buffer_size=3)
    p.more()
    assert p.data == b"defghij"
    p.data = b"xy"
    assert p.more() == b"xy" and p.more() == b""
    assert p.buffer_size == 3


def test_simple_producer_works_on_str_and_default_size() -> None:
    p = SimpleProducer("x" * 1000)
    assert p.more() == "x" * 512 and p.more() == "x" * 488 and p.more() == ""


def test_simple_producer_large_data_is_linear() -> None:
    data = b"z" * (8 << 20)
    p = SimpleProducer(data, buffer_size=512)
    total = 0
    while True:
        piece = p.more()
        if not piece:
            break
        total += len(piece)
    assert total == len(data)


# ---------------------------------------------------------------- gather / consume
def test_gather_takes_several_chunks_up_to_the_budget() -> None:
    fifo: deque = deque([b"ab", b"cde", b"fghij", b"k"])
    chunks, size = gather(fifo, 7)
    assert [bytes(c) for c in chunks] == [b"ab", b"cde", b"fg"]
    assert size == 7
    consume(fifo, 7)
    assert [bytes(x) for x in fifo] == [b"hij", b"k"]


def test_gather_respects_the_chunk_count() -> None:
    fifo: deque = deque([b"x"] * 10)
    chunks, size = gather(fifo, 100, max_chunks=3)
    assert len(chunks) == 3 and size == 3


def test_gather_stops_at_the_close_marker() -> None:
    fifo: deque = deque([b"ab", None, b"cd"])
    chunks, _ = gather(fifo, 100)
    assert chunks == [b"ab"]
    consume(fifo, 2)
    assert gather(fifo, 100) == ([], 0)
    assert fifo[0] is None


def test_gather_asks_producers_in_order_and_drops_empties() -> None:
    p = ListProducer([b"12", b"34"])
    fifo: deque = deque([b"", b"a", p, b"z"])
    assert flush(fifo, 100, []) == b"a1234z"
    assert not fifo
    assert p.calls == 3


def test_gather_calls_a_producer_only_within_the_budget() -> None:
    p = ListProducer([b"1234"] * 100)
    fifo: deque = deque([p])
    _, size = gather(fifo, 10)
    assert size == 10
    assert p.calls == 3  # 4 + 4 + 2 of the third: no further look-ahead


def test_gather_encodes_str_with_use_encoding() -> None:
    fifo: deque = deque(["h\xe9", ListProducer(["!"])])
    assert flush(fifo, 100, [], encoding="latin-1") == b"h\xe9!"


def test_str_without_encoding_is_offered_alone() -> None:
    # Sending a str fails (as it did in asynchat); what precedes it goes out first.
    fifo: deque = deque([b"ok", "text"])
    chunks, _ = gather(fifo, 100)
    assert chunks == [b"ok"]
    consume(fifo, 2)
    chunks, _ = gather(fifo, 100)
    assert chunks == ["text"]


def test_other_buffers_are_copied_once() -> None:
    import array
    arr = array.array("i", [1, 2, 3])
    fifo: deque = deque([arr])
    assert flush(fifo, 100, [5]) == arr.tobytes()
    arr.append(4)  # the queue holds no export of it


def test_memoryview_of_wide_items_is_sent_as_bytes() -> None:
    import array
    arr = array.array("i", [1, 2, 3])
    fifo: deque = deque([memoryview(arr)])
    assert flush(fifo, 5, [3]) == arr.tobytes()


def test_partly_sent_bytes_stay_as_views_without_copies() -> None:
    data = b"x" * 100000
    fifo: deque = deque([data])
    consume(fifo, 10)
    head = fifo[0]
    assert isinstance(head, memoryview) and head.obj is data and len(head) == 99990


def test_partly_sent_bytearray_is_copied_so_its_owner_may_resize_it() -> None:
    data = bytearray(b"abcdef")
    fifo: deque = deque([data])
    chunks, _ = gather(fifo, 3)
    del chunks
    consume(fifo, 3)
    data.extend(b"more")  # no BufferError: the queue holds no view of it
    assert fifo[0] == b"def"


def test_tail_kinds() -> None:
    assert bytes(tail(b"abc", 1)) == b"bc"
    assert tail(bytearray(b"abc"), 1) == b"bc" and type(tail(bytearray(b"abc"), 1)) is bytes
    assert bytes(tail(memoryview(b"abc"), 2)) == b"c"
    assert tail(memoryview(bytearray(b"abc")), 2) == b"c"


def test_zero_budget_still_makes_progress() -> None:
    fifo: deque = deque([b"abc"])
    assert flush(fifo, 0, []) == b"abc"


kinds = st.sampled_from(["bytes", "bytearray", "memoryview", "producer", "empty"])


@settings(max_examples=300, deadline=None)
@given(entries=st.lists(st.tuples(kinds, st.binary(max_size=40)), max_size=12),
       budget=st.integers(min_value=1, max_value=64),
       takes=st.lists(st.integers(min_value=0, max_value=70), min_size=1, max_size=8))
def test_every_byte_once_in_order(entries: List[Any], budget: int, takes: List[int]) -> None:
    if not any(takes):
        takes = takes + [1]
    fifo = ProducerFifo()
    expected = []
    for kind, data in entries:
        if kind == "bytes":
            fifo.append(data)
        elif kind == "bytearray":
            fifo.append(bytearray(data))
        elif kind == "memoryview":
            fifo.append(memoryview(data))
        elif kind == "producer":
            fifo.append(SimpleProducer(data, buffer_size=7))
        else:
            fifo.append(b"")
            data = b""
        expected.append(data)
    fifo.append(None)
    assert flush(fifo, budget, takes) == b"".join(expected)
    assert list(fifo) == [None]


# ---------------------------------------------------------------- the fifo's notice
class Owner:
    def __init__(self) -> None:
        self.filled = 0

    def _fifo_filled(self) -> None:
        self.filled += 1


def test_fifo_tells_its_owner_when_it_stops_being_empty() -> None:
    owner = Owner()
    fifo = ProducerFifo(owner=owner)
    fifo.append(b"a")
    fifo.append(b"b")
    assert owner.filled == 1
    fifo.clear()
    fifo.appendleft(b"c")
    assert owner.filled == 2
    fifo.clear()
    fifo.extend([])
    assert owner.filled == 2
    fifo.extend([b"d"])
    fifo.clear()
    fifo.extendleft([b"e"])
    fifo.clear()
    fifo.insert(0, b"f")
    fifo.clear()
    fifo += [b"g"]
    assert owner.filled == 6
    assert isinstance(fifo, deque) and isinstance(fifo, ProducerFifo)


def test_fifo_holds_its_owner_weakly() -> None:
    owner = Owner()
    fifo = ProducerFifo(owner=owner)
    del owner
    gc.collect()
    fifo.append(b"x")  # no owner any more: nothing to tell, no error
    assert list(fifo) == [b"x"]


def test_fifo_bypass_does_not_notify() -> None:
    owner = Owner()
    fifo = ProducerFifo(owner=owner)
    deque.append(fifo, b"x")
    assert owner.filled == 0


@pytest.mark.parametrize("budget", [1, 3, 65536])
def test_many_small_chunks_go_in_few_batches(budget: int) -> None:
    fifo: deque = deque([b"ab"] * 1000)
    batches = 0
    while True:
        chunks, size = gather(fifo, budget)
        if not chunks:
            break
        batches += 1
        consume(fifo, size)
    assert batches == max(-(-2000 // budget), -(-1000 // SEND_CHUNKS))
