"""Scenarios 4 and 5: reactions, edits, replies, redactions and polls between two nio clients."""

import urllib.parse

from nio import (
    MessageDirection,
    ReactionEvent,
    RedactedEvent,
    RedactionEvent,
    RoomGetEventResponse,
    RoomMessagesResponse,
    RoomMessageText,
    RoomRedactResponse,
    UnknownEvent,
)
from nio.api import RelationshipType

from interop_helpers import by_id, has_ids, initial_sync, raw, send, shared_room, timeline, wait_for_events


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


async def relations_raw(client, room_id, event_id, rel_type=None, event_type=None, **params):
    """GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]] as a raw
    request, so that an error status is reported as such (nio's iterator hides errors)."""
    path = f"/_matrix/client/v1/rooms/{q(room_id)}/relations/{q(event_id)}"
    if rel_type:
        path += f"/{q(rel_type)}"
        if event_type:
            path += f"/{q(event_type)}"
    if params:
        path += "?" + urllib.parse.urlencode(params)
    status, body, data = await raw(client, "GET", path)
    assert status == 200, f"GET {path} -> {status} {data[:300]!r}"
    assert isinstance(body, dict) and isinstance(body.get("chunk"), list), body
    return body


async def relations_nio(client, room_id, event_id, rel_type=None, event_type=None, limit=None):
    """The same through nio's room_get_event_relations iterator (follows next_batch)."""
    out = []
    async for e in client.room_get_event_relations(room_id, event_id, rel_type, event_type, limit=limit):
        out.append(e)
        assert len(out) < 1000, "relations iterator does not terminate"
    return out


def redacts_of(e) -> str:
    # Room version 11 moved `redacts` into content; the client format keeps the top-level key too.
    return e.source.get("redacts") or e.source.get("content", {}).get("redacts")


async def test_reactions_edits_replies_redactions(alice, bob):
    room_id, a_since, b_since = await shared_room(alice, bob)
    original = await send(alice, room_id, {"msgtype": "m.text", "body": "Abmarsch um 6"})

    events, b_since = await wait_for_events(bob, b_since, room_id, has_ids(original))
    assert isinstance(by_id(events, original), RoomMessageText)

    # bob reacts and replies, alice edits.
    reaction = await send(bob, room_id, {"m.relates_to": {
        "rel_type": "m.annotation", "event_id": original, "key": "👍"}}, event_type="m.reaction")
    reply = await send(bob, room_id, {
        "msgtype": "m.text",
        "body": f"> <{alice.user_id}> Abmarsch um 6\n\nVerstanden",
        "m.relates_to": {"m.in_reply_to": {"event_id": original}},
    })
    edit = await send(alice, room_id, {
        "msgtype": "m.text", "body": "* Abmarsch um 7",
        "m.new_content": {"msgtype": "m.text", "body": "Abmarsch um 7"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": original},
    })

    events, a_since = await wait_for_events(alice, a_since, room_id, has_ids(reaction, reply, edit))
    r = by_id(events, reaction)
    assert isinstance(r, ReactionEvent), r
    assert r.reacts_to == original and r.key == "👍" and r.sender == bob.user_id, r.source
    rep = by_id(events, reply)
    assert isinstance(rep, RoomMessageText), rep
    assert rep.source["content"]["m.relates_to"] == {"m.in_reply_to": {"event_id": original}}, rep.source

    events, b_since = await wait_for_events(bob, b_since, room_id, has_ids(reaction, reply, edit))
    ed = by_id(events, edit)
    assert isinstance(ed, RoomMessageText), ed
    assert ed.source["content"]["m.new_content"] == {"msgtype": "m.text", "body": "Abmarsch um 7"}
    assert ed.source["content"]["m.relates_to"] == {"rel_type": "m.replace", "event_id": original}

    # The relations endpoint knows the reaction and the edit (and not the reply, which is no
    # rel_type relation).
    body = await relations_raw(bob, room_id, original)
    assert {e["event_id"] for e in body["chunk"]} == {reaction, edit}, body
    body = await relations_raw(bob, room_id, original, "m.annotation")
    assert [e["event_id"] for e in body["chunk"]] == [reaction], body
    body = await relations_raw(bob, room_id, original, "m.annotation", "m.reaction")
    assert [e["event_id"] for e in body["chunk"]] == [reaction], body
    body = await relations_raw(bob, room_id, original, "m.replace")
    assert [e["event_id"] for e in body["chunk"]] == [edit], body
    via_nio = await relations_nio(alice, room_id, original, RelationshipType.annotation)
    assert [e.event_id for e in via_nio] == [reaction]
    assert isinstance(via_nio[0], ReactionEvent)

    # Single events can be fetched; the original still carries its original content.
    got = await bob.room_get_event(room_id, original)
    assert isinstance(got, RoomGetEventResponse), got
    assert got.event.event_id == original and got.event.source["content"]["body"] == "Abmarsch um 6"
    # ...and the server bundles the latest edit with it (unsigned["m.relations"]["m.replace"]).
    bundled = got.event.source.get("unsigned", {}).get("m.relations", {}).get("m.replace", {})
    assert bundled.get("event_id") == edit, got.event.source.get("unsigned")

    # Redactions: alice retracts a message, bob takes his reaction back.
    secret = await send(alice, room_id, {"msgtype": "m.text", "body": "Passwort ist hunter2"})
    redacted = await alice.room_redact(room_id, secret, reason="versehentlich")
    assert isinstance(redacted, RoomRedactResponse), redacted
    unreact = await bob.room_redact(room_id, reaction)
    assert isinstance(unreact, RoomRedactResponse), unreact

    events, b_since = await wait_for_events(bob, b_since, room_id, has_ids(redacted.event_id))
    red = by_id(events, redacted.event_id)
    assert isinstance(red, RedactionEvent), red
    assert redacts_of(red) == secret and red.sender == alice.user_id, red.source
    assert red.source["content"].get("reason") == "versehentlich", red.source
    events, a_since = await wait_for_events(alice, a_since, room_id, has_ids(unreact.event_id))
    assert redacts_of(by_id(events, unreact.event_id)) == reaction

    # Fetched again, the redacted message has lost its content and says why.
    got = await bob.room_get_event(room_id, secret)
    assert isinstance(got, RoomGetEventResponse), got
    assert isinstance(got.event, RedactedEvent), got.event
    assert got.event.source["content"] == {}, got.event.source
    because = got.event.source.get("unsigned", {}).get("redacted_because", {})
    assert because.get("event_id") == redacted.event_id, got.event.source
    assert got.event.redacter == alice.user_id and got.event.reason == "versehentlich"

    # The same through /messages.
    page = await bob.room_messages(room_id, direction=MessageDirection.back, limit=20)
    assert isinstance(page, RoomMessagesResponse), page
    in_page = by_id(page.chunk, secret)
    assert in_page is not None, [e.event_id for e in page.chunk]
    assert in_page.source["content"] == {}, in_page.source
    assert "hunter2" not in str(page.chunk), "redacted text still served by /messages"

    # And through a fresh sync.
    fresh = await initial_sync(bob, sync_filter={"room": {"timeline": {"limit": 50}}})
    in_sync = by_id(timeline(fresh, room_id), secret)
    assert in_sync is not None, [e.event_id for e in timeline(fresh, room_id)]
    assert in_sync.source["content"] == {}, in_sync.source

    # A redacted reaction no longer relates to anything: its relation went with its content.
    body = await relations_raw(bob, room_id, original, "m.annotation")
    assert body["chunk"] == [], body
    got = await alice.room_get_event(room_id, reaction)
    assert isinstance(got, RoomGetEventResponse), got
    assert got.event.source["content"] == {}, got.event.source

    # Non-redacted events are untouched.
    got = await alice.room_get_event(room_id, edit)
    assert isinstance(got, RoomGetEventResponse), got
    assert got.event.source["content"]["m.new_content"]["body"] == "Abmarsch um 7"


POLL_START = "org.matrix.msc3381.poll.start"
POLL_RESPONSE = "org.matrix.msc3381.poll.response"
POLL_END = "org.matrix.msc3381.poll.end"


async def test_poll(alice, bob):
    room_id, a_since, b_since = await shared_room(alice, bob)
    start_content = {
        POLL_START: {
            "question": {"org.matrix.msc1767.text": "Mittagessen?"},
            "kind": "org.matrix.msc3381.poll.disclosed",
            "max_selections": 1,
            "answers": [
                {"id": "pizza", "org.matrix.msc1767.text": "Pizza"},
                {"id": "salat", "org.matrix.msc1767.text": "Salat"},
            ],
        },
        "org.matrix.msc1767.text": "Mittagessen?\n1. Pizza\n2. Salat",
    }
    poll = await send(alice, room_id, start_content, event_type=POLL_START)

    events, b_since = await wait_for_events(bob, b_since, room_id, has_ids(poll))
    seen = by_id(events, poll)
    assert isinstance(seen, UnknownEvent) and seen.type == POLL_START, seen
    assert seen.source["content"] == start_content

    def vote(answer):
        return {
            "m.relates_to": {"rel_type": "m.reference", "event_id": poll},
            POLL_RESPONSE: {"answers": [answer]},
        }

    bob_vote = await send(bob, room_id, vote("pizza"), event_type=POLL_RESPONSE)
    alice_vote = await send(alice, room_id, vote("salat"), event_type=POLL_RESPONSE)
    bob_revote = await send(bob, room_id, vote("salat"), event_type=POLL_RESPONSE)
    end_content = {
        "m.relates_to": {"rel_type": "m.reference", "event_id": poll},
        POLL_END: {},
        "org.matrix.msc1767.text": "Abstimmung beendet: Salat",
    }
    end = await send(alice, room_id, end_content, event_type=POLL_END)

    events, a_since = await wait_for_events(alice, a_since, room_id, has_ids(bob_vote, bob_revote, end))
    for eid, answer in ((bob_vote, "pizza"), (bob_revote, "salat")):
        e = by_id(events, eid)
        assert e.source["type"] == POLL_RESPONSE and e.sender == bob.user_id, e.source
        assert e.source["content"] == vote(answer), e.source
    events, b_since = await wait_for_events(bob, b_since, room_id, has_ids(alice_vote, end))
    assert by_id(events, end).source["content"] == end_content
    assert by_id(events, alice_vote).source["content"] == vote("salat")

    # Everything that references the poll, newest first (dir=b is the default).
    body = await relations_raw(bob, room_id, poll, "m.reference")
    assert [e["event_id"] for e in body["chunk"]] == [end, bob_revote, alice_vote, bob_vote], body
    # Only the votes.
    body = await relations_raw(alice, room_id, poll, "m.reference", POLL_RESPONSE)
    assert [e["event_id"] for e in body["chunk"]] == [bob_revote, alice_vote, bob_vote], body
    assert [e["content"] for e in body["chunk"]] == [vote("salat"), vote("salat"), vote("pizza")]
    # Oldest first.
    body = await relations_raw(alice, room_id, poll, "m.reference", POLL_RESPONSE, dir="f")
    assert [e["event_id"] for e in body["chunk"]] == [bob_vote, alice_vote, bob_revote], body
    # Paginated two at a time, following next_batch.
    page = await relations_raw(alice, room_id, poll, "m.reference", limit=2)
    assert [e["event_id"] for e in page["chunk"]] == [end, bob_revote], page
    assert page.get("next_batch"), page
    rest = await relations_raw(alice, room_id, poll, "m.reference", limit=2, **{"from": page["next_batch"]})
    assert [e["event_id"] for e in rest["chunk"]] == [alice_vote, bob_vote], rest
    # nio's iterator, one event per request, gives the same list.
    via_nio = await relations_nio(bob, room_id, poll, RelationshipType.reference, limit=1)
    assert [e.event_id for e in via_nio] == [end, bob_revote, alice_vote, bob_vote]
    # The poll, fetched on its own, carries the references as a bundled aggregation.
    got = await bob.room_get_event(room_id, poll)
    assert isinstance(got, RoomGetEventResponse), got
    refs = got.event.source.get("unsigned", {}).get("m.relations", {}).get("m.reference", {})
    assert {c.get("event_id") for c in refs.get("chunk", [])} == {end, bob_revote, alice_vote, bob_vote}, refs
    # Nothing references the votes themselves.
    body = await relations_raw(bob, room_id, bob_vote)
    assert body["chunk"] == [], body
