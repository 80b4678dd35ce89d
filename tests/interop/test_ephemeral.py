"""Scenario 7: read receipts, read markers and typing notifications seen by the other user in sync."""

from nio import (
    FullyReadEvent,
    ReceiptEvent,
    RoomReadMarkersResponse,
    RoomTypingResponse,
    TypingNoticeEvent,
    UpdateReceiptMarkerResponse,
)
from nio.api import ReceiptType

from interop_helpers import (
    ephemeral,
    has_ids,
    send,
    shared_room,
    sync_until,
    sync_while,
    wait_for_events,
)


def receipts(resp, room_id, user_id):
    """Every (event_id, receipt type, thread_id) of `user_id` in the room's m.receipt events."""
    out = []
    for e in ephemeral(resp, room_id):
        if isinstance(e, ReceiptEvent):
            for r in e.receipts:
                if r.user_id == user_id:
                    assert isinstance(r.timestamp, int) and r.timestamp > 0, r
                    out.append((r.event_id, r.receipt_type, r.thread_id))
    return out


def typing_users(resp, room_id):
    """The user lists of the room's m.typing events in this response (None if there is none)."""
    lists = [e.users for e in ephemeral(resp, room_id) if isinstance(e, TypingNoticeEvent)]
    return lists[-1] if lists else None


def receipt_of(room_id, user_id, event_id, receipt_type="m.read"):
    def pred(r):
        return [x for x in receipts(r, room_id, user_id) if x[:2] == (event_id, receipt_type)]
    return pred


def expect(resp, cls):
    assert isinstance(resp, cls), resp
    return resp


async def test_receipts_and_read_markers(alice, bob):
    room_id, a_since, b_since = await shared_room(alice, bob)
    m1 = await send(alice, room_id, {"msgtype": "m.text", "body": "eins"})
    m2 = await send(alice, room_id, {"msgtype": "m.text", "body": "zwei"})
    m3 = await send(alice, room_id, {"msgtype": "m.text", "body": "drei"})
    m4 = await send(alice, room_id, {"msgtype": "m.text", "body": "vier"})
    _, b_since = await wait_for_events(bob, b_since, room_id, has_ids(m1, m2, m3, m4))
    _, a_since = await wait_for_events(alice, a_since, room_id, has_ids(m1, m2, m3, m4))

    # Read markers (fully read + public read receipt in one request) wake alice's parked sync.
    _, a_since, _, resp = await sync_while(
        alice, a_since, receipt_of(room_id, bob.user_id, m1),
        lambda: bob.room_read_markers(room_id, fully_read_event=m1, read_event=m1))
    expect(resp, RoomReadMarkersResponse)

    # bob's own sync shows his fully-read marker as room account data.
    def fully_read(r):
        room = r.rooms.join.get(room_id)
        for e in (room.account_data if room else []):
            if isinstance(e, FullyReadEvent) and e.event_id == m1:
                return e
        return None

    await sync_until(bob, b_since, fully_read)

    # A single receipt through /receipt (nio sends thread_id "main").
    got, a_since, _, resp = await sync_while(
        alice, a_since, receipt_of(room_id, bob.user_id, m2), lambda: bob.update_receipt_marker(room_id, m2))
    expect(resp, UpdateReceiptMarkerResponse)
    assert got == [(m2, "m.read", "main")], got

    # A private receipt is for bob's eyes only; alice must not see it, while a later public one
    # (sent after it) reaches her.
    expect(await bob.update_receipt_marker(room_id, m3, receipt_type=ReceiptType.read_private),
           UpdateReceiptMarkerResponse)
    leaked = []

    def public_m4(r):
        mine = receipts(r, room_id, bob.user_id)
        leaked.extend(x for x in mine if x[1] == "m.read.private" or x[0] == m3)
        return any(x[:2] == (m4, "m.read") for x in mine)

    expect(await bob.room_read_markers(room_id, fully_read_event=m4, read_event=m4), RoomReadMarkersResponse)
    _, a_since, _ = await sync_until(alice, a_since, public_m4)
    assert leaked == [], f"alice saw bob's private receipt: {leaked}"
    # bob sees his own private receipt.
    _, b_since, _ = await sync_until(bob, b_since, receipt_of(room_id, bob.user_id, m3, "m.read.private"))

    # alice's receipt reaches bob's parked sync, too.
    _, b_since, _, resp = await sync_while(
        bob, b_since, receipt_of(room_id, alice.user_id, m4), lambda: alice.update_receipt_marker(room_id, m4))
    expect(resp, UpdateReceiptMarkerResponse)


def typing_with(room_id, user_id, present=True):
    """A sync predicate: the latest m.typing of the response does (not) list `user_id`; returns the
    list wrapped so that an empty list still counts as found."""
    def pred(r):
        u = typing_users(r, room_id)
        if u is None or (user_id in u) != present:
            return None
        return [u]
    return pred


async def test_typing(alice, bob):
    room_id, a_since, b_since = await shared_room(alice, bob)

    # bob starts typing while alice is parked in a long-poll.
    [users], a_since, _, resp = await sync_while(
        alice, a_since, typing_with(room_id, bob.user_id),
        lambda: bob.room_typing(room_id, typing_state=True, timeout=30_000))
    expect(resp, RoomTypingResponse)
    assert users == [bob.user_id], users

    # alice types too; bob sees both.
    [users], b_since, _, resp = await sync_while(
        bob, b_since, typing_with(room_id, alice.user_id),
        lambda: alice.room_typing(room_id, typing_state=True, timeout=30_000))
    expect(resp, RoomTypingResponse)
    assert sorted(users) == sorted([alice.user_id, bob.user_id]), users

    # bob stops: alice sees a typing event without him.
    [users], a_since, _, resp = await sync_while(
        alice, a_since, typing_with(room_id, bob.user_id, False),
        lambda: bob.room_typing(room_id, typing_state=False))
    expect(resp, RoomTypingResponse)
    assert users == [alice.user_id], users

    # alice stops too: bob sees an empty list.
    [users], b_since, _, resp = await sync_while(
        bob, b_since, typing_with(room_id, alice.user_id, False),
        lambda: alice.room_typing(room_id, typing_state=False))
    expect(resp, RoomTypingResponse)
    assert users == [], users

    # A typing notice expires by itself after its timeout (1 s here; waited for up to 15 s), and
    # the expiry wakes alice's parked sync as well.
    [users], a_since, _, resp = await sync_while(
        alice, a_since, typing_with(room_id, bob.user_id),
        lambda: bob.room_typing(room_id, typing_state=True, timeout=1_000))
    expect(resp, RoomTypingResponse)
    assert users == [bob.user_id], users
    [users], a_since, _ = await sync_until(alice, a_since, typing_with(room_id, bob.user_id, False), timeout=15)
    assert users == [], users
