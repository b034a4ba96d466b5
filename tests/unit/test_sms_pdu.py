"""SMS PDUs: public worked examples, hand-assembled octets, and a bit-string packer of the test's own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from protocols.sms_pdu import (
    Deliver,
    Part,
    PduError,
    StatusReport,
    Submit,
    decode,
    deliver_pdu,
    gsm7_septets,
    pack_septets,
    submit_pdus,
)

# The classic example every modem manual quotes: "hellohello" to +46708251358, VP 4 days.
HELLO_SUBMIT = "0011000B916407281553F80000AA0AE8329BFD4697D9EC37"
# The classic SMS-DELIVER: SMSC +27381000015, from 27838890001, 99-03-29 15:16:59 +02:00.
HELLO_DELIVER = "07917283010010F5040BC87238880900F10000993092516195800AE8329BFD4697D9EC37"


def bits_packed(septets: list[int], fill: int = 0) -> bytes:
    """Septet packing done as a bit string, independently of the codec's integer arithmetic."""
    bits = "0" * fill + "".join(format(s, "07b")[::-1] for s in septets)
    bits += "0" * (-len(bits) % 8)
    return bytes(int(bits[i : i + 8][::-1], 2) for i in range(0, len(bits), 8))


def test_the_manuals_hellohello_submit_is_encoded_octet_for_octet():
    """'hellohello' to +46708251358 matches the public PDU except the asked validity (A7, 24 h, for AA)."""
    [pdu] = submit_pdus("+46708251358", "hellohello", status_report=False)
    assert pdu.hex == HELLO_SUBMIT.replace("0000AA0A", "0000A70A")
    assert pdu.tpdu_length == len(HELLO_SUBMIT) // 2 - 1


def test_the_manuals_hellohello_deliver_is_decoded():
    """The public SMS-DELIVER gives its SMSC, sender, time with zone and text."""
    message = decode(HELLO_DELIVER)
    assert message == Deliver(
        smsc="+27381000015",
        sender="27838890001",
        text="hellohello",
        sent_at=datetime(2099, 3, 29, 15, 16, 59, tzinfo=timezone(timedelta(hours=2))),
    )


def test_chinese_goes_as_ucs2_assembled_by_hand():
    """'你好' to +8613800138000: DCS 08, the two UTF-16 code units, a status report asked."""
    [pdu] = submit_pdus("+8613800138000", "你好")
    expected = "00" + "31" + "00" + "0D91683108108300F0" + "00" + "08" + "A7" + "04" + "4F60597D"
    assert pdu.hex == expected
    assert pdu.tpdu_length == 19


def test_a_status_report_assembled_by_hand_is_decoded():
    """Reference 7 to +8613912345678 delivered (TP-ST 00); 0x45 is a final failure."""
    stamp = "62201271000000"
    pdu = "00" + "06" + "07" + "0D91683119325476F8" + stamp + stamp + "00"
    report = decode(pdu)
    assert report == StatusReport(smsc="", reference=7, recipient="+8613912345678", status=0)
    assert report.delivered
    failed = decode(pdu[:-2] + "45")
    assert isinstance(failed, StatusReport)
    assert not failed.delivered
    assert failed.final


def test_long_gsm7_text_is_concatenated_with_a_udh_and_one_fill_bit():
    """200 ASCII characters: two parts of 153 and 47, UDH 050003, septets after one fill bit."""
    text = "".join(chr(ord("a") + i % 26) for i in range(200))
    parts = submit_pdus("+8613800138000", text, reference=0x42)
    assert len(parts) == 2
    for number, (pdu, piece) in enumerate(zip(parts, (text[:153], text[153:]), strict=True), 1):
        raw = bytes.fromhex(pdu.hex)
        assert raw[1] == 0x71  # SUBMIT, VP relative, status report, UDHI
        tpdu_user_data = raw[1 + 2 + 9 + 3 :]
        assert tpdu_user_data[0] == 7 + len(piece)  # UDL in septets, UDH included
        assert tpdu_user_data[1:7] == bytes((5, 0, 3, 0x42, 2, number))
        septets = [ord(c) for c in piece]  # a-z have their ASCII values in the GSM alphabet
        assert tpdu_user_data[7:] == bits_packed(septets, fill=1)[: len(tpdu_user_data) - 7]
        decoded = decode(pdu.hex)
        assert isinstance(decoded, Submit)
        assert decoded.text == piece
        assert decoded.part == Part(0x42, 2, number)


def test_an_extension_character_is_never_split_from_its_escape():
    """'[' at the 153rd septet moves whole to the second part."""
    text = "a" * 152 + "[" + "x" * 10
    first, second = (decode(p.hex) for p in submit_pdus("+1234", text))
    assert isinstance(first, Submit)
    assert isinstance(second, Submit)
    assert (first.text, second.text) == ("a" * 152, "[" + "x" * 10)


def test_long_chinese_is_split_at_67_characters():
    """100 Chinese characters: parts of 67 and 33, each decoding back to its slice."""
    text = "救命" * 50
    parts = [decode(p.hex) for p in submit_pdus("+8613800138000", text)]
    assert [p.text for p in parts if isinstance(p, Submit)] == [text[:67], text[67:]]


def test_gsm7_packing_matches_a_bit_string_packer():
    """The codec's packing equals the test's own for every fill from 0 to 6."""
    septets = gsm7_septets("Help! 9# at No.17 {now}")
    assert septets is not None
    for fill in range(7):
        assert pack_septets(septets, fill) == bits_packed(septets, fill)


def test_deliver_round_trips_ascii_and_chinese():
    """What the emulator hands over decodes to the sender and text it was given."""
    at = datetime(2026, 12, 2, 8, 30, 5, tzinfo=UTC)
    for text in ("9#", "救命", "cancel"):
        message = decode(deliver_pdu("+8613912345678", text, sent_at=at))
        assert isinstance(message, Deliver)
        assert (message.sender, message.text, message.sent_at) == ("+8613912345678", text, at)


@pytest.mark.parametrize(
    ("pdu", "says"),
    [
        ("zz", "not hex"),
        ("00040B91", "TP-OA"),
        (HELLO_DELIVER[:-6], "TP-UD"),
        ("0003", "reserved"),
    ],
)
def test_bad_pdus_name_what_is_wrong(pdu, says):
    """Garbled PDUs raise PduError naming the field."""
    with pytest.raises(PduError, match=says):
        decode(pdu)


def test_a_number_with_letters_is_refused():
    """A phone number that is not digits is refused, naming it."""
    with pytest.raises(PduError, match="12ab"):
        submit_pdus("+12ab", "hi")
