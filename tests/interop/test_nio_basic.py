"""matrix-nio against Feldpost: register, create a room, exchange a message via sync."""

from nio import AsyncClient, RegisterResponse, RoomCreateResponse, RoomSendResponse, SyncResponse


async def make_user(url: str, name: str) -> AsyncClient:
    c = AsyncClient(url, name)
    resp = await c.register(name, "correct horse battery")
    assert isinstance(resp, RegisterResponse), resp
    return c


async def test_message_round_trip(server):
    alice = await make_user(server.url, "alice")
    bob = await make_user(server.url, "bob")
    try:
        room = await alice.room_create(name="Lage", invite=[bob.user_id])
        assert isinstance(room, RoomCreateResponse), room
        await bob.sync(timeout=0)
        await bob.join(room.room_id)
        first = await bob.sync(timeout=0)
        assert isinstance(first, SyncResponse)
        sent = await alice.room_send(room.room_id, "m.room.message", {"msgtype": "m.text", "body": "Hallo Bob"})
        assert isinstance(sent, RoomSendResponse), sent
        got = await bob.sync(timeout=5000, since=first.next_batch)
        bodies = [e.body for e in got.rooms.join[room.room_id].timeline.events if hasattr(e, "body")]
        assert "Hallo Bob" in bodies
    finally:
        await alice.close()
        await bob.close()
