"""Scenario 2: /messages backwards and forwards over 30 messages with nio's room_messages."""

import json
import urllib.parse

from nio import MessageDirection, RoomMessagesResponse, RoomMessageText

from interop_helpers import initial_sync, raw, send, shared_room

N = 30


async def _paginate(client, room_id, start, direction, limit, end=None, max_pages=50):
    """Follows `end` tokens until the server signals the end. Returns (pages, last end token)."""
    pages = []
    token = start
    for _ in range(max_pages):
        resp = await client.room_messages(room_id, start=token, end=end, direction=direction, limit=limit)
        assert isinstance(resp, RoomMessagesResponse), resp
        assert resp.start, resp
        assert len(resp.chunk) <= limit, f"{len(resp.chunk)} events for limit={limit}"
        pages.append(resp)
        if not resp.chunk or not resp.end:
            # Finished: an empty chunk, or no `end` (the spec's "no more events").
            return pages, resp.end
        assert resp.end != token, f"end token did not move: {token!r}"
        token = resp.end
    raise AssertionError(f"pagination did not finish within {max_pages} pages")


def _bodies(pages, only_ids):
    out = []
    for p in pages:
        for e in p.chunk:
            if e.event_id in only_ids:
                assert isinstance(e, RoomMessageText), e
                out.append(e.body)
    return out


def _all_ids(pages):
    return [e.event_id for p in pages for e in p.chunk]


async def test_messages_backwards_and_forwards(alice, bob):
    room_id, _, _ = await shared_room(alice, bob)
    before = await initial_sync(bob)  # a token from before the 30 messages
    sent = []
    for i in range(N):
        sent.append(await send(alice, room_id, {"msgtype": "m.text", "body": f"Nachricht {i:02d}"}))
    now = await initial_sync(bob)
    assert now.next_batch != before.next_batch
    ids = set(sent)

    # Backwards from "now" (a sync token), 7 at a time, to the beginning of the room.
    back_pages, _ = await _paginate(bob, room_id, now.next_batch, MessageDirection.back, 7)
    all_back = _all_ids(back_pages)
    assert len(all_back) == len(set(all_back)), f"duplicates paginating backwards: {all_back}"
    assert _bodies(back_pages, ids) == [f"Nachricht {i:02d}" for i in reversed(range(N))]
    # It reaches the room's creation.
    types = [e.source["type"] for p in back_pages for e in p.chunk]
    assert types[-1] == "m.room.create", types
    assert len(back_pages) >= N // 7, f"only {len(back_pages)} pages for {len(all_back)} events"
    # Every full page but possibly the last has exactly `limit` events.
    for p in back_pages[:-2]:
        assert len(p.chunk) == 7, [len(p.chunk) for p in back_pages]

    # Forwards from the very beginning (nio sends no `from`; the server starts at the room's start),
    # 8 at a time.
    fwd_pages, _ = await _paginate(bob, room_id, None, MessageDirection.front, 8)
    all_fwd = _all_ids(fwd_pages)
    assert len(all_fwd) == len(set(all_fwd)), f"duplicates paginating forwards: {all_fwd}"
    assert all_fwd == list(reversed(all_back)), "forward pagination is not the reverse of backward"
    assert _bodies(fwd_pages, ids) == [f"Nachricht {i:02d}" for i in range(N)]

    # Backwards from "now" down to the token from before the messages: exactly the 30 messages.
    window, _ = await _paginate(bob, room_id, now.next_batch, MessageDirection.back, 9, end=before.next_batch)
    assert _all_ids(window) == list(reversed(sent)), _all_ids(window)

    # Forwards from the token from before the messages: exactly the 30 messages, then the end.
    fwd_window, _ = await _paginate(bob, room_id, before.next_batch, MessageDirection.front, 11)
    assert _all_ids(fwd_window) == sent, _all_ids(fwd_window)

    # Changing direction mid-way: 10 back from now, then forward from that page's end gives the
    # same 10 again in chronological order.
    first = await bob.room_messages(room_id, start=now.next_batch, direction=MessageDirection.back, limit=10)
    assert isinstance(first, RoomMessagesResponse), first
    assert [e.event_id for e in first.chunk] == list(reversed(sent[-10:]))
    again = await bob.room_messages(room_id, start=first.end, direction=MessageDirection.front, limit=10)
    assert isinstance(again, RoomMessagesResponse), again
    assert [e.event_id for e in again.chunk] == sent[-10:]


async def test_messages_start_is_the_from_token(alice, bob):
    # The spec: `start` "will be the same as the value given in `from`" — whether `from` is a
    # token from /messages or from /sync.
    room_id, _, _ = await shared_room(alice, bob)
    for i in range(3):
        await send(alice, room_id, {"msgtype": "m.text", "body": f"m{i}"})
    synced = await initial_sync(bob)
    page = await bob.room_messages(room_id, start=synced.next_batch, direction=MessageDirection.back, limit=2)
    assert isinstance(page, RoomMessagesResponse), page
    assert page.end, page
    nxt = await bob.room_messages(room_id, start=page.end, direction=MessageDirection.back, limit=2)
    assert isinstance(nxt, RoomMessagesResponse), nxt
    assert nxt.start == page.end, (nxt.start, page.end)
    assert page.start == synced.next_batch, (
        f"from={synced.next_batch!r} (a sync token) but start={page.start!r}")


async def test_messages_with_filters(alice, bob):
    room_id, _, _ = await shared_room(alice, bob)
    sent = []
    for i in range(N):
        sent.append(await send(alice, room_id, {"msgtype": "m.text", "body": f"gefiltert {i:02d}"}))
        if i % 10 == 9:
            # Some state in between, which the filter must leave out.
            resp = await alice.room_put_state(room_id, "m.room.topic", {"topic": f"Thema {i}"})
            assert hasattr(resp, "event_id"), resp
    now = await initial_sync(bob)

    # Only messages, backwards, 7 at a time: exactly the 30, newest first.
    only_messages = {"types": ["m.room.message"]}
    ids, token = [], now.next_batch
    for _ in range(20):
        page = await bob.room_messages(room_id, start=token, direction=MessageDirection.back, limit=7,
                                       message_filter=only_messages)
        assert isinstance(page, RoomMessagesResponse), page
        assert all(e.source["type"] == "m.room.message" for e in page.chunk), [e.source["type"] for e in page.chunk]
        ids.extend(e.event_id for e in page.chunk)
        if not page.chunk or not page.end:
            break
        token = page.end
    assert ids == list(reversed(sent)), ids

    # Everything but messages, forwards from the start: the room's state events, topics included.
    page = await bob.room_messages(room_id, direction=MessageDirection.front, limit=50,
                                   message_filter={"not_types": ["m.room.message"]})
    assert isinstance(page, RoomMessagesResponse), page
    types = [e.source["type"] for e in page.chunk]
    assert types[0] == "m.room.create" and "m.room.message" not in types, types
    assert [e.source["content"]["topic"] for e in page.chunk if e.source["type"] == "m.room.topic"][-3:] == \
        ["Thema 9", "Thema 19", "Thema 29"], types

    # Lazy-loading members: the page's `state` carries the member events of its senders. nio's
    # RoomMessagesResponse drops `state`, so this one is a raw request.
    path = (f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/messages?dir=b&limit=5"
            f"&from={urllib.parse.quote(now.next_batch)}&filter="
            + urllib.parse.quote(json.dumps({"lazy_load_members": True, "types": ["m.room.message"]})))
    status, body, _ = await raw(bob, "GET", path)
    assert status == 200, (status, body)
    assert [e["event_id"] for e in body["chunk"]] == list(reversed(sent[-5:])), body["chunk"]
    members = {e["state_key"]: e["content"].get("membership") for e in body.get("state", [])
               if e.get("type") == "m.room.member"}
    assert members == {alice.user_id: "join"}, members
