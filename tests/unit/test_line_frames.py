"""The line protocol's framing: DESIGN.md's check values, and a parser that survives any input."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.line_frames import MAX_LINE, LineFrame, LineReader, crc16_modbus

WORKED = [
    (LineFrame(3, 17, "PANIC", "1"), b"$LF,3,17,PANIC,1*B4D9\r\n"),
    (LineFrame(3, 17, "ACK"), b"$LF,3,17,ACK*DA34\r\n"),
    (LineFrame(5, 201, "KEY", "9"), b"$LF,5,201,KEY,9*647B\r\n"),
    (LineFrame(5, 202, "KEY", "#"), b"$LF,5,202,KEY,#*AFC9\r\n"),
    (LineFrame(3, 18, "HB", "3.02"), b"$LF,3,18,HB,3.02*BA39\r\n"),
]

frames = st.builds(
    LineFrame,
    st.integers(1, 247),
    st.integers(0, 255),
    st.sampled_from(["PANIC", "KEY", "HB", "TAMPER", "RESTORE"]),
    st.one_of(
        st.none(),
        st.text("0123456789#*ABCD.", min_size=1, max_size=6).filter(lambda t: "*" not in t),
    ),
)


def test_crc_check_value():
    """CRC-16/MODBUS over '123456789' is 0x4B37, as DESIGN.md says."""
    assert crc16_modbus(b"123456789") == 0x4B37


def test_worked_examples_encode_and_parse():
    """Every worked example of DESIGN.md encodes byte for byte and parses back."""
    for frame, wire in WORKED:
        assert frame.encode() == wire
        assert LineReader().feed(wire) == [frame]
    assert WORKED[0][0].ack() == WORKED[1][0]


def test_each_kind_of_bad_input_is_counted_by_reason():
    """Bad CRC, lower-case CRC, truncation, an over-long line, a bad address and noise each count once."""
    reader = LineReader()
    good = WORKED[0][1]
    data = (
        b"$LF,3,17,PANIC,1*B4D8\r\n"  # bad CRC
        b"$LF,3,17,PANIC,1*b4d9\r\n"  # CRC must be upper-case: malformed
        b"$LF,3,17,PAN"  # cut short by the next frame
        + good
        + b"$"
        + b"A" * 100
        + b"\r\n"  # over-long
        + LineFrame(3, 17, "PANIC").encode().replace(b",3,", b",0,")  # CRC broken too
        + b"hello\r\n"
        + good
    )
    assert reader.feed(data) == [WORKED[0][0]] * 2
    assert reader.rejected == {
        "bad_crc": 2,
        "malformed": 1,
        "truncated": 1,
        "overlong": 1,
        "noise": 1,
    }


def test_address_out_of_range_with_a_valid_crc_is_malformed():
    """A correctly checksummed frame from address 0 or 248, or with seq 256, is still refused."""
    reader = LineReader()
    bad = [LineFrame(0, 1, "PANIC"), LineFrame(248, 1, "PANIC"), LineFrame(3, 256, "PANIC")]
    assert reader.feed(b"".join(f.encode() for f in bad)) == []
    assert reader.rejected == {"malformed": 3}


# A frame cut anywhere before its CRC is complete.
truncated = st.builds(
    lambda f, cut: f.encode()[: cut % (len(f.encode()) - 3)], frames, st.integers()
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(frames, st.binary(max_size=120), truncated), max_size=12), st.data())
def test_parser_never_raises_never_accepts_garbage_never_loses_a_frame_after_it(chunks, data):
    """Random bytes interleaved with valid frames, fed in random pieces: exactly the valid frames come out."""
    wire = b""
    sent: list[LineFrame] = []
    for chunk in chunks:
        if isinstance(chunk, LineFrame):
            wire += chunk.encode()
            sent.append(chunk)
        elif chunk.startswith(b"$"):
            wire += chunk  # a cut frame; the next '$' resynchronises
        else:
            wire += chunk.replace(b"$", b"")
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    reader = LineReader()
    got: list[LineFrame] = []
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        got += reader.feed(wire[start:end])
    assert got == sent


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_make_a_frame_unless_one_is_really_there(noise):
    """Any byte string parses without raising, and every frame it yields has a correct CRC and fields."""
    for frame in LineReader().feed(noise):
        assert 1 <= frame.addr <= 247
        assert 0 <= frame.seq <= 255
        assert frame.encode() in noise
        assert len(frame.encode()) <= MAX_LINE


def test_a_crc_that_is_not_four_upper_case_hex_digits_is_refused():
    """'+0AB' or ' 0AB' would pass int(..., 16) with the right value; the wire format is four hex digits."""
    body = next(
        b for n in range(10_000) if crc16_modbus(b := f"LF,3,{n % 256},HB,{n}".encode()) < 0x1000
    )
    digits = f"{crc16_modbus(body):03X}"
    for crc in (f"+{digits}", f" {digits}"):
        reader = LineReader()
        assert reader.feed(b"$" + body + b"*" + crc.encode() + b"\r\n") == []
        assert reader.rejected["malformed"] == 1
    reader = LineReader()
    assert (
        len(reader.feed(b"$" + body + b"*" + f"{crc16_modbus(body):04X}".encode() + b"\r\n")) == 1
    )
