"""Scenario 8: leaving a room shows it in the leave section of the next sync; forgetting removes it."""

from nio import RoomForgetError, RoomForgetResponse, RoomLeaveResponse, SyncResponse

from interop_helpers import has_ids, initial_sync, send, shared_room, sync_until, sync_while, wait_for_events

INCLUDE_LEAVE = {"room": {"include_leave": True}}


def membership_of(events, user_id):
    out = [e.source["content"].get("membership") for e in events
           if e.source.get("type") == "m.room.member" and e.source.get("state_key") == user_id]
    return out[-1] if out else None


async def test_leave_then_forget(alice, bob):
    room_id, a_since, b_since = await shared_room(alice, bob)
    before = await send(alice, room_id, {"msgtype": "m.text", "body": "vor dem Verlassen"})
    _, b_since = await wait_for_events(bob, b_since, room_id, has_ids(before))

    # Forgetting a room one is still in is refused.
    refused = await alice.room_forget(room_id)
    assert isinstance(refused, RoomForgetError), refused

    def bob_left(r):
        room = r.rooms.join.get(room_id)
        return room and membership_of(room.timeline.events, bob.user_id) == "leave"

    _, a_since = await wait_for_events(alice, a_since, room_id, has_ids(before))
    # alice, parked in a long-poll, sees bob go.
    _, a_since, _, left = await sync_while(alice, a_since, bob_left, lambda: bob.room_leave(room_id))
    assert isinstance(left, RoomLeaveResponse), left

    # bob's next sync lists the room under "leave", ending with his leave event.
    room, b_since, _ = await sync_until(bob, b_since, lambda r: r.rooms.leave.get(room_id))
    assert room_id not in (await _joined(bob)), "the room is still in joined_rooms"
    assert membership_of(room.timeline.events, bob.user_id) == "leave", \
        [e.source for e in room.timeline.events]
    assert room.timeline.events[-1].source.get("state_key") == bob.user_id, room.timeline.events[-1].source

    # What happens after the leave is not bob's to see.
    after = await send(alice, room_id, {"msgtype": "m.text", "body": "nach dem Verlassen"})
    _, a_since = await wait_for_events(alice, a_since, room_id, has_ids(after))
    resp = await bob.sync(timeout=0, since=b_since)
    assert isinstance(resp, SyncResponse), resp
    assert room_id not in resp.rooms.join, resp.rooms.join
    for section in (resp.rooms.leave.get(room_id),):
        if section is not None:
            assert after not in [e.event_id for e in section.timeline.events], "bob saw a message after leaving"

    # A fresh sync that asks for left rooms still lists it, until it is forgotten.
    full = await initial_sync(bob, sync_filter=INCLUDE_LEAVE)
    assert room_id in full.rooms.leave and room_id not in full.rooms.join, (full.rooms.leave, full.rooms.join)

    forgot = await bob.room_forget(room_id)
    assert isinstance(forgot, RoomForgetResponse), forgot
    assert room_id not in bob.rooms  # nio drops a room from its state once it is forgotten

    full = await initial_sync(bob, sync_filter=INCLUDE_LEAVE)
    assert room_id not in full.rooms.leave, "a forgotten room is still in the leave section"
    assert room_id not in full.rooms.join and room_id not in full.rooms.invite

    # alice's room goes on as before.
    last = await send(alice, room_id, {"msgtype": "m.text", "body": "noch da"})
    await wait_for_events(alice, a_since, room_id, has_ids(last))


async def _joined(client):
    resp = await client.joined_rooms()
    assert hasattr(resp, "rooms"), resp
    return resp.rooms
