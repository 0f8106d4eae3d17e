"""Unit tests of terminator framing: no sockets, no loop.

Every case is checked whole, byte by byte and at random split points against a plain model of
what the frames must be (``bytes.split`` for byte strings, fixed-size slices for counts).
"""

from __future__ import annotations

import random
import time
from typing import List, Optional, Sequence, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netloop.chat.framing import DATA, FOUND, OVERFLOW, Framer, find_prefix_at_end


def reference_prefix_at_end(haystack, needle) -> int:  # type: ignore[no-untyped-def]
    """The obvious definition, tried at every length."""
    for k in range(min(len(needle) - 1, len(haystack)), 0, -1):
        if haystack.endswith(needle[:k]):
            return k
    return 0


def drain(framer: Framer, term) -> List[Tuple[bytes, int]]:  # type: ignore[no-untyped-def]
    events = []
    while True:
        event = framer.step(term)
        if event is None:
            return events
        events.append(event)


def frames_of(chunks: Sequence[bytes], term, max_buffer: Optional[int] = None):  # type: ignore[no-untyped-def]
    """Feed ``chunks`` one by one; returns (complete frames, data of the unfinished frame,
    number of OVERFLOW events, largest number of bytes held back)."""
    framer = Framer(max_buffer=max_buffer)
    frames: List[bytes] = []
    current: List[bytes] = []
    overflows = 0
    held = 0
    for chunk in chunks:
        framer.feed(chunk)
        for piece, kind in drain(framer, term):
            if kind == OVERFLOW:
                assert piece == b""
                overflows += 1
                continue
            if kind == DATA:
                assert piece, "DATA pieces are never empty"
            current.append(piece)
            if kind == FOUND:
                frames.append(b"".join(current))
                current = []
        held = max(held, len(framer))
    return frames, b"".join(current) + framer.pending, overflows, held


def split_at(data: bytes, cuts: Sequence[int]) -> List[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    out = []
    start = 0
    for p in points + [len(data)]:
        out.append(data[start:p])
        start = p
    return out


TERMINATORS = [b"\n", b"\r\n", b"qqq", b"\r\n.\r\n", b"aab", b"abab", b"aaaa"]
STREAMS = [
    b"",
    b"hello world\r\nI'm not dead yet!\r\n",
    b"\n\n\nx\n",
    b"no terminator at all",
    b"aabaabaaab aab abab ababab aaaaaaaaa qqqqq qq q \r\n.\r\n\r\n.\r.\r\n.\r\n",
    b"\r\r\n\r\n\r\n..\r\n.\r\n\r",
]


def expected_frames(stream: bytes, term: bytes) -> Tuple[List[bytes], bytes]:
    parts = stream.split(term)
    return parts[:-1], parts[-1]


@pytest.mark.parametrize("term", TERMINATORS)
@pytest.mark.parametrize("stream", STREAMS)
def test_byte_terminator_whole_and_byte_by_byte(stream: bytes, term: bytes) -> None:
    want = expected_frames(stream, term)
    whole = frames_of([stream], term)
    single = frames_of([stream[i:i + 1] for i in range(len(stream))], term)
    assert (whole[0], whole[1]) == want
    assert (single[0], single[1]) == want
    assert single[3] <= max(1, len(term) - 1)


@pytest.mark.parametrize("term", TERMINATORS)
def test_terminator_split_at_every_position(term: bytes) -> None:
    stream = b"abc" + term + b"def" + term + term + b"g"
    want = expected_frames(stream, term)
    for i in range(1, len(stream)):
        for j in range(i, len(stream)):
            got = frames_of(split_at(stream, [i, j]), term)
            assert (got[0], got[1]) == want, (i, j)


@settings(max_examples=300, deadline=None)
@given(stream=st.binary(max_size=200).map(lambda b: bytes(x % 4 + 0x61 for x in b)),
       term=st.sampled_from([b"a", b"ab", b"aab", b"abab", b"abcd", b"dddd", b"aaa"]),
       cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=30))
def test_random_splits_match_split(stream: bytes, term: bytes, cuts: List[int]) -> None:
    # A four-letter alphabet makes terminators and their prefixes common.
    got = frames_of(split_at(stream, cuts), term)
    assert (got[0], got[1]) == expected_frames(stream, term)
    assert got[3] <= max(1, len(term) - 1) + max([len(c) for c in split_at(stream, cuts)] or [0])


@settings(max_examples=200, deadline=None)
@given(stream=st.binary(max_size=120), term=st.binary(min_size=1, max_size=6),
       cuts=st.lists(st.integers(min_value=0, max_value=120), max_size=20))
def test_random_terminators(stream: bytes, term: bytes, cuts: List[int]) -> None:
    stream = stream + term + stream
    got = frames_of(split_at(stream, cuts), term)
    assert (got[0], got[1]) == expected_frames(stream, term)


def test_nothing_after_feed_only() -> None:
    framer = Framer()
    assert framer.step(b"\n") is None
    framer.feed(b"")
    assert len(framer) == 0 and framer.pending == b""
    framer.feed(bytearray(b"ab"))
    framer.feed(memoryview(b"c\n"))
    assert framer.step(b"\n") == (b"abc", FOUND)
    assert framer.step(b"\n") is None


def test_held_back_prefix_is_pending() -> None:
    framer = Framer()
    framer.feed(b"line\r")
    assert framer.step(b"\r\n") == (b"line", DATA)
    assert framer.step(b"\r\n") is None
    assert framer.pending == b"\r"
    framer.feed(b"\n")
    assert framer.step(b"\r\n") == (b"", FOUND)
    assert framer.pending == b""


def test_none_and_empty_terminators_collect_everything() -> None:
    for term in (None, b"", 0):
        framer = Framer()
        framer.feed(b"a\nb")
        assert drain(framer, term) == [(b"a\nb", DATA)]


def test_int_terminator_counts_down_with_events() -> None:
    framer = Framer(terminator=5)
    framer.feed(b"ab")
    assert list(framer.events()) == [(b"ab", DATA)]
    assert framer.terminator == 3
    framer.feed(b"cdefg")
    assert list(framer.events()) == [(b"cde", FOUND), (b"fg", DATA)]
    # Once the count is reached the terminator is 0: everything else is plain data.
    assert framer.terminator == 0


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_int_terminator_any_split(size: int) -> None:
    stream = bytes(range(200))
    rng = random.Random(size)
    for _ in range(20):
        chunks = split_at(stream, [rng.randrange(len(stream)) for _ in range(10)])
        framer = Framer()
        frames, current = [], b""
        for chunk in chunks:
            framer.feed(chunk)
            while True:
                framer.terminator = size - len(current)
                event = framer.step(framer.terminator)
                if event is None:
                    break
                current += event[0]
                if event[1] == FOUND:
                    frames.append(current)
                    current = b""
        n = len(stream) // size * size
        assert frames == [stream[i:i + size] for i in range(0, n, size)]
        assert current == stream[n:]


def test_terminator_may_change_between_events() -> None:
    # A header line, then a body of the length the header gave, then lines again.
    framer = Framer(terminator=b"\r\n")
    framer.feed(b"LEN 4\r\nbodyNEXT\r\n")
    out = []
    for piece, kind in framer.events():
        out.append((piece, kind))
        if piece.startswith(b"LEN ") and kind == FOUND:
            framer.terminator = int(piece[4:])
        elif kind == FOUND and framer.terminator == 0:
            framer.terminator = b"\r\n"
    assert out == [(b"LEN 4", FOUND), (b"body", FOUND), (b"NEXT", FOUND)]


def test_clear_drops_everything() -> None:
    framer = Framer(max_buffer=3)
    framer.feed(b"abcdef\r")
    assert framer.step(b"\r\n") == (b"", OVERFLOW)
    framer.clear()
    assert len(framer) == 0 and framer.frame_size == 0
    framer.feed(b"ab\r\n")
    assert drain(framer, b"\r\n") == [(b"ab", FOUND)]


def test_str_terminator_without_encoding_fails_like_asynchat() -> None:
    framer = Framer()
    framer.feed(b"abc")
    with pytest.raises(TypeError):
        framer.step("\n")  # type: ignore[arg-type]


# ---------------------------------------------------------------- the input limit
def test_overflow_once_per_frame_then_frame_goes_on() -> None:
    framer = Framer(max_buffer=4)
    framer.feed(b"abcdefgh\nxy\n")
    assert drain(framer, b"\n") == [(b"", OVERFLOW), (b"abcdefgh", FOUND), (b"xy", FOUND)]


def test_frame_of_exactly_the_limit_is_allowed() -> None:
    for chunks in ([b"abcd\r\n"], [b"abcd\r", b"\n"], [b"a", b"b", b"c", b"d", b"\r", b"\n"]):
        frames, rest, overflows, _ = frames_of(chunks, b"\r\n", max_buffer=4)
        assert (frames, rest, overflows) == ([b"abcd"], b"", 0)


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"")), max_size=8),
       limit=st.integers(min_value=0, max_value=12),
       cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=20))
def test_overflow_counts_long_frames_whatever_the_split(lines: List[bytes], limit: int,
                                                        cuts: List[int]) -> None:
    stream = b"".join(line + b"\n" for line in lines)
    frames, rest, overflows, _ = frames_of(split_at(stream, cuts), b"\n", max_buffer=limit)
    assert frames == lines and rest == b""
    assert overflows == sum(1 for line in lines if len(line) > limit)


def test_limit_ignores_count_and_none_terminators() -> None:
    framer = Framer(max_buffer=2)
    framer.feed(b"abcdef")
    assert drain(framer, 6) == [(b"abcdef", FOUND)]
    framer.feed(b"abcdef")
    assert drain(framer, None) == [(b"abcdef", DATA)]


# ---------------------------------------------------------------- linear cost
def test_long_line_one_byte_at_a_time_holds_nothing() -> None:
    # Whatever the line's length, only a possible terminator start is ever held back, so no
    # byte is searched more than len(terminator) times.
    for term in (b"\n", b"\r\n", b"\r\n.\r\n"):
        framer = Framer()
        line = (b"x" * 50 + term[:-1]) * 400  # full of terminator starts, never a terminator
        collected = 0
        for i in range(len(line)):
            framer.feed(line[i:i + 1])
            for piece, kind in drain(framer, term):
                assert kind == DATA
                collected += len(piece)
            assert len(framer) < len(term)
        assert collected + len(framer) == len(line)


# The linearity tests compare CPU time of this process (time.process_time), not wall time: the
# suite runs in parallel workers, and another process holding the CPU must not look like a
# quadratic slowdown.


def _feed_time(size: int, piece: int) -> float:
    framer = Framer()
    chunk = b"y" * piece
    step = framer.step
    feed = framer.feed
    start = time.process_time()
    for _ in range(size // piece):
        feed(chunk)
        while step(b"\r\n.\r\n") is not None:
            pass
    feed(b"\r\n.\r\n")
    assert step(b"\r\n.\r\n") == (b"", FOUND)
    return time.process_time() - start


def test_ten_megabyte_line_is_linear() -> None:
    # 10 MB in 16-byte pieces against 1 MB the same way: linear means about 10x the time,
    # quadratic would be 100x. The bound leaves room for a busy machine.
    small = min(_feed_time(1 << 20, 16) for _ in range(3))
    big = _feed_time(10 << 20, 16)
    assert big < small * 30


def test_one_byte_pieces_are_linear() -> None:
    # The same one byte at a time (1 MB against 100 KB, to keep the test quick).
    small = min(_feed_time(100 << 10, 1) for _ in range(3))
    big = _feed_time(1000 << 10, 1)
    assert big < small * 30


def test_many_frames_in_one_feed_is_linear() -> None:
    # asynchat sliced the rest of the buffer off after each frame: quadratic in frames per read.
    def run(n: int) -> float:
        framer = Framer()
        framer.feed(b"ab\n" * n)
        start = time.process_time()
        count = 0
        while True:
            event = framer.step(b"\n")
            if event is None:
                break
            count += 1
        assert count == n
        return time.process_time() - start
    small = min(run(20000) for _ in range(3))
    big = run(400000)
    assert big < small * 60


def test_terminator_split_at_every_position_of_a_long_stream_is_linear() -> None:
    term = b"--boundary-0123456789--"
    stream = (b"z" * 97 + term) * 2000
    framer = Framer()
    found = 0
    for i in range(0, len(stream), 7):  # 7 and len(term) are coprime: every split occurs
        framer.feed(stream[i:i + 7])
        for _, kind in drain(framer, term):
            found += kind == FOUND
        assert len(framer) < len(term)
    assert found == 2000


# ---------------------------------------------------------------- helper function
def test_find_prefix_at_end_examples() -> None:
    assert find_prefix_at_end(b"qwerty\r", b"\r\n") == 1
    assert find_prefix_at_end(b"qwertydkjf", b"\r\n") == 0
    assert find_prefix_at_end("qwerty\r", "\r\n") == 1
    assert find_prefix_at_end(b"", b"\r\n") == 0
    assert find_prefix_at_end(b"abc", b"\n") == 0
    assert find_prefix_at_end(b"xaba", b"abab") == 3
    assert find_prefix_at_end(b"a", b"abc") == 1
    assert find_prefix_at_end(b"abc", b"") == -1  # asynchat's len(needle) - 1
    assert find_prefix_at_end(b"", b"") == -1


@settings(max_examples=300, deadline=None)
@given(haystack=st.binary(max_size=12).map(lambda b: bytes(x % 3 + 0x61 for x in b)),
       needle=st.binary(min_size=1, max_size=6).map(lambda b: bytes(x % 3 + 0x61 for x in b)))
def test_find_prefix_at_end_matches_definition(haystack: bytes, needle: bytes) -> None:
    assert find_prefix_at_end(haystack, needle) == reference_prefix_at_end(haystack, needle)
