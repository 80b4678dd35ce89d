"""Scenario: unread counts in a group, where one message is stored once for the room (with rows
only for the members it reaches differently), as nio's sync and room state see them."""

from nio import JoinResponse, RoomCreateResponse, RoomInviteResponse

from interop_helpers import initial_sync, make_user, send, sync_until


async def test_group_counts_and_a_mention(server, alice, bob):
    carol = await make_user(server.url, "carol")
    # With dave, bob is not alone in what the mention does for him: the room's notification.
    dave = await make_user(server.url, "dave")
    try:
        created = await alice.room_create(name="Gruppe")
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id
        for member in (bob, carol, dave):
            invited = await alice.room_invite(room_id, member.user_id)
            assert isinstance(invited, RoomInviteResponse), invited
            joined = await member.join(room_id)
            assert isinstance(joined, JoinResponse), joined
        since = {c.user_id: (await initial_sync(c)).next_batch for c in (alice, bob, carol, dave)}

        await send(alice, room_id, {"msgtype": "m.text", "body": "Lage um 10"})
        mention = await send(alice, room_id, {
            "msgtype": "m.text", "body": "carol, bitte bestätigen",
            "m.mentions": {"user_ids": [carol.user_id]},
        })

        def with_mention(resp):
            room = resp.rooms.join.get(room_id)
            ids = [e.event_id for e in room.timeline.events] if room else []
            return room if mention in ids else None

        expected = {bob.user_id: (2, 0), carol.user_id: (2, 1), dave.user_id: (2, 0)}
        for client in (bob, carol, dave):
            room, since[client.user_id], _ = await sync_until(client, since[client.user_id], with_mention)
            counts = room.unread_notifications
            assert (counts.notification_count, counts.highlight_count) == expected[client.user_id], \
                (client.user_id, counts)
            # nio's room state follows the sync.
            state = client.rooms[room_id]
            assert (state.unread_notifications, state.unread_highlights) == expected[client.user_id]

        # The sender's own messages do not count for her; a fresh sync counts the same.
        mine = (await initial_sync(alice)).rooms.join[room_id].unread_notifications
        assert (mine.notification_count or 0, mine.highlight_count or 0) == (0, 0), mine
        fresh = (await initial_sync(carol)).rooms.join[room_id].unread_notifications
        assert (fresh.notification_count, fresh.highlight_count) == (2, 1), fresh
    finally:
        await carol.close()
        await dave.close()
