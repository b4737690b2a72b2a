"""The signed list cursor (gateway/cursor.py): any position round-trips; any
other string, edit or scope is refused."""

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cursor import CursorError, Cursors, Position

CURSORS = Cursors(b"cursor-test-secret")
SCOPE = b"conn-a\0contacts"

positions = st.builds(
    Position,
    source=st.integers(0, 2**31),
    offset=st.integers(0, 2**63 - 1),
    token=st.none() | st.text(max_size=3000),  # provider tokens and link queries: any text, any length
    skip=st.integers(0, 10**6),
    page=st.none() | st.integers(0, 2**31),
)


@settings(max_examples=100, deadline=None)
@given(positions)
def test_every_position_round_trips(position):
    cursor = CURSORS.encode(position, SCOPE)
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), cursor
    assert CURSORS.decode(cursor, SCOPE) == position


@settings(max_examples=60, deadline=None)
@given(positions, st.data())
def test_a_cursor_cut_short_or_edited_anywhere_is_refused(position, data):
    cursor = CURSORS.encode(position, SCOPE)
    cut = data.draw(st.integers(0, len(cursor) - 1))
    with pytest.raises(CursorError):
        CURSORS.decode(cursor[:cut], SCOPE)
    at = data.draw(st.integers(0, len(cursor) - 1))
    other = "A" if cursor[at] != "A" else "B"
    edited = cursor[:at] + other + cursor[at + 1:]
    try:
        decoded = CURSORS.decode(edited, SCOPE)
    except CursorError:
        return
    # The last character may carry only padding bits base64 ignores: the same bytes, the same position.
    assert at == len(cursor) - 1 and decoded == position


@given(positions)
@settings(max_examples=30, deadline=None)
def test_a_cursor_belongs_to_its_scope_and_secret(position):
    cursor = CURSORS.encode(position, SCOPE)
    for scope in (b"conn-b\0contacts", b"conn-a\0invoices", b"", SCOPE + b"\0"):
        with pytest.raises(CursorError):
            CURSORS.decode(cursor, scope)
    with pytest.raises(CursorError):
        Cursors(b"another-secret").decode(cursor, SCOPE)


@pytest.mark.parametrize("cursor", [
    "", "=", "!!!!", "a", "ab", "abc", "a" * 21, "a" * 22, "a" * 23, "a" * 4000, "é", "Zm9v\n",
    base64.urlsafe_b64encode(b"\0" * 16).decode(),  # a MAC of zeros and no payload
])
def test_strings_the_gateway_did_not_issue_are_refused(cursor):
    with pytest.raises(CursorError):
        CURSORS.decode(cursor, SCOPE)


def test_a_signed_payload_that_is_no_position_is_refused():
    for payload in (b"", b"{}", b"[1,2", b'["a"]', b"[1,2,3,4,5,6]", b'[0,0,1]'):
        mac = CURSORS._mac(payload, SCOPE)
        cursor = base64.urlsafe_b64encode(mac + payload).decode().rstrip("=")
        with pytest.raises(CursorError, match="not one this gateway issued"):
            CURSORS.decode(cursor, SCOPE)


def test_positions_of_few_fields_are_short_and_distinct():
    assert CURSORS.encode(Position(), SCOPE) != CURSORS.encode(Position(0, 1), SCOPE)
    assert CURSORS.encode(Position(0, 0, ""), SCOPE) != CURSORS.encode(Position(0, 0, None), SCOPE)
    assert len(CURSORS.encode(Position(), SCOPE)) < 60
