"""Scenario 1: two users, an invite seen in sync, a join, and messages both ways over long-poll sync."""

import asyncio
import time
import uuid

from nio import (
    InviteMemberEvent,
    JoinResponse,
    RoomCreateResponse,
    RoomInviteResponse,
    RoomMessageText,
    RoomSendError,
    SyncResponse,
)

from interop_helpers import (
    WAIT,
    by_id,
    has_ids,
    initial_sync,
    send,
    shared_room,
    sync_until,
    sync_while,
    timeline,
    wait_for_events,
)


async def _send_while_polling(sender, receiver, receiver_since, room_id, body):
    """Parks a long-poll sync of `receiver` (30 s timeout), then sends from `sender`.

    Returns (the received event, seconds from the send until it arrived, receiver's next token,
    the sender's transaction id and event id)."""
    # Park a long-poll. If it returns before anything was sent (it may carry something unrelated,
    # such as a presence update), park another one from its token, a bounded number of times.
    for _ in range(10):
        poll = asyncio.create_task(receiver.sync(timeout=30_000, since=receiver_since))
        # Give the request time to reach the server and park. The assertions below hold whether
        # or not it parked in time; this only makes the wake-up path the one normally exercised.
        await asyncio.sleep(0.3)
        if not poll.done():
            break
        early = poll.result()
        assert isinstance(early, SyncResponse), early
        assert not timeline(early, room_id), f"unexpected timeline events: {early}"
        receiver_since = early.next_batch
    else:
        raise AssertionError("every long-poll returned at once although nothing was sent")
    tx_id = uuid.uuid4().hex
    sent_at = time.monotonic()
    event_id = await send(sender, room_id, {"msgtype": "m.text", "body": body}, tx_id=tx_id)
    resp = await asyncio.wait_for(poll, 45)
    arrived = time.monotonic() - sent_at
    assert isinstance(resp, SyncResponse), resp
    got = by_id(timeline(resp, room_id), event_id)
    since = resp.next_batch
    if got is None:
        # The parked sync may legitimately have been woken by something else first; keep
        # long-polling (bounded) and measure until the message arrives.
        found, since, _ = await sync_until(
            receiver, since, lambda r: by_id(timeline(r, room_id), event_id))
        got = found
        arrived = time.monotonic() - sent_at
    return got, arrived, since, tx_id, event_id


async def test_invite_join_and_long_poll_exchange(alice, bob):
    a0 = await initial_sync(alice)
    b0 = await initial_sync(bob)

    created = await alice.room_create(name="Lagezentrum", topic="Stand der Dinge")
    assert isinstance(created, RoomCreateResponse), created
    room_id = created.room_id
    assert room_id.startswith("!"), room_id

    # bob learns of the invite through a parked long-poll sync.
    info, b_since, _, invited = await sync_while(
        bob, b0.next_batch, lambda r: r.rooms.invite.get(room_id),
        lambda: alice.room_invite(room_id, bob.user_id))
    assert isinstance(invited, RoomInviteResponse), invited
    invite_state = {(e.source.get("type"), e.source.get("state_key")): e for e in info.invite_state}
    member = invite_state.get(("m.room.member", bob.user_id))
    assert member is not None, f"no invite membership in invite_state: {info.invite_state}"
    assert isinstance(member, InviteMemberEvent), member
    assert member.membership == "invite" and member.sender == alice.user_id, member.source
    name = invite_state.get(("m.room.name", ""))
    assert name is not None and name.source["content"]["name"] == "Lagezentrum", info.invite_state
    assert room_id in bob.invited_rooms
    assert bob.invited_rooms[room_id].name == "Lagezentrum"
    assert room_id not in bob.rooms or bob.rooms[room_id] is bob.invited_rooms[room_id]

    def bob_in_join(r):
        room = r.rooms.join.get(room_id)
        if not room:
            return None
        for e in room.timeline.events:
            if e.source.get("type") == "m.room.member" and e.source.get("state_key") == bob.user_id \
                    and e.source["content"].get("membership") == "join":
                return room
        return None

    _, a_since, _ = await sync_until(alice, a0.next_batch, lambda r: room_id in r.rooms.join)
    # alice, parked, sees bob join.
    _, a_since, _, joined = await sync_while(alice, a_since, bob_in_join, lambda: bob.join(room_id))
    assert isinstance(joined, JoinResponse), joined
    assert joined.room_id == room_id

    room, b_since, _ = await sync_until(bob, b_since, bob_in_join)
    assert room_id not in bob.invited_rooms, "the invite is still listed after the join"
    assert bob.rooms[room_id].name == "Lagezentrum"
    assert bob.rooms[room_id].topic == "Stand der Dinge"
    assert {alice.user_id, bob.user_id} <= set(bob.rooms[room_id].users), bob.rooms[room_id].users

    # alice -> bob while bob is parked in a long-poll.
    got, secs, b_since, tx_id, event_id = await _send_while_polling(
        alice, bob, b_since, room_id, "Guten Morgen, Bob")
    assert isinstance(got, RoomMessageText), got
    assert got.body == "Guten Morgen, Bob" and got.sender == alice.user_id, got.source
    assert secs < 5, f"parked sync took {secs:.1f}s to deliver a new message (timeout was 30s)"
    assert "transaction_id" not in got.source.get("unsigned", {}), got.source
    # The sender's own sync echoes the event with its transaction id (and brings alice up to date).
    echo, a_since, _ = await sync_until(alice, a_since, lambda r: by_id(timeline(r, room_id), event_id))
    assert echo.source.get("unsigned", {}).get("transaction_id") == tx_id, echo.source

    # bob -> alice while alice is parked.
    got, secs, a_since, tx_id, event_id = await _send_while_polling(
        bob, alice, a_since, room_id, "Morgen, Alice")
    assert isinstance(got, RoomMessageText), got
    assert got.body == "Morgen, Alice" and got.sender == bob.user_id, got.source
    assert secs < 5, f"parked sync took {secs:.1f}s to deliver a new message (timeout was 30s)"
    assert "transaction_id" not in got.source.get("unsigned", {}), got.source

    # The sender's own sync echoes the event with its transaction id.
    echo, b_since, _ = await sync_until(bob, b_since, lambda r: by_id(timeline(r, room_id), event_id))
    assert echo.source.get("unsigned", {}).get("transaction_id") == tx_id, echo.source

    # A few more in a row, in order, each way.
    sent = []
    for i in range(3):
        sent.append(await send(alice, room_id, {"msgtype": "m.text", "body": f"a{i}"}))
        sent.append(await send(bob, room_id, {"msgtype": "m.text", "body": f"b{i}"}))
    for client, since in ((alice, a_since), (bob, b_since)):
        events = []

        def all_there(r, events=events):
            events.extend(timeline(r, room_id))
            ids = [e.event_id for e in events]
            return all(s in ids for s in sent)

        await sync_until(client, since, all_there)
        ids = [e.event_id for e in events if e.event_id in sent]
        assert ids == sent, f"{client.user_id} saw the messages out of order or duplicated: {ids} vs {sent}"


async def test_long_poll_waits_when_nothing_happens(alice, bob):
    created = await alice.room_create(name="Ruhe", invite=[bob.user_id])
    assert isinstance(created, RoomCreateResponse), created
    joined = await bob.join(created.room_id)
    assert isinstance(joined, JoinResponse), joined
    first = await initial_sync(bob)
    since = first.next_batch
    # Nothing happens now: a sync with a 1.5 s timeout must wait (roughly) that long and come back
    # empty, not return at once and not hang. Syncs that carry something are allowed to return early
    # (e.g. a presence update), so repeat until an empty one is seen.
    deadline = time.monotonic() + WAIT
    while True:
        assert time.monotonic() < deadline, "never got an empty long-poll response"
        t0 = time.monotonic()
        resp = await bob.sync(timeout=1500, since=since)
        took = time.monotonic() - t0
        assert isinstance(resp, SyncResponse), resp
        assert took < 12, f"sync with timeout=1500 took {took:.1f}s"
        empty = (
            not resp.rooms.invite and not resp.rooms.leave
            and not any(r.timeline.events or r.state or r.ephemeral or r.account_data
                        for r in resp.rooms.join.values())
            and not resp.presence_events and not resp.account_data_events
            and not resp.to_device_events
        )
        since = resp.next_batch
        if empty:
            assert took >= 1.2, f"an empty sync with timeout=1500 returned after {took:.2f}s"
            break


async def test_transactions_unicode_and_size_limit(alice, bob):
    room_id, _, b_since = await shared_room(alice, bob)

    # The same transaction id twice is one event (nio lets the caller choose the id).
    tx_id = uuid.uuid4().hex
    first = await send(alice, room_id, {"msgtype": "m.text", "body": "einmal"}, tx_id=tx_id)
    second = await send(alice, room_id, {"msgtype": "m.text", "body": "einmal"}, tx_id=tx_id)
    assert first == second, (first, second)

    # Text outside ASCII, and a long message close to the 64 KiB event limit, arrive intact.
    fancy = "Grüße 👋🏽 — 測試 — \u202eRTL\u202c — \"quoted\" \\ back\\slash \x7f"
    fancy_id = await send(alice, room_id, {"msgtype": "m.text", "body": fancy})
    long_body = "x" * 60_000
    long_id = await send(alice, room_id, {"msgtype": "m.text", "body": long_body})

    # Over 64 KiB is refused with M_TOO_LARGE (and nothing is stored).
    too_big = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "y" * 70_000})
    assert isinstance(too_big, RoomSendError), too_big
    assert too_big.status_code == "M_TOO_LARGE", too_big
    assert too_big.transport_response.status == 413, too_big.transport_response.status

    events, _ = await wait_for_events(bob, b_since, room_id, has_ids(first, fancy_id, long_id))
    assert [e.event_id for e in events].count(first) == 1
    assert by_id(events, fancy_id).body == fancy
    assert by_id(events, long_id).body == long_body
    assert not any("yyyy" in getattr(e, "body", "") for e in events)
