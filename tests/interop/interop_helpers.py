"""Shared helpers for the interoperability suite: registered matrix-nio clients, bounded long-poll
sync loops and raw requests for the few endpoints matrix-nio has no method for."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any, Awaitable, Callable, Iterable, Optional

from nio import (
    AsyncClient,
    AsyncClientConfig,
    ErrorResponse,
    JoinResponse,
    RegisterResponse,
    RoomCreateResponse,
    RoomInviteResponse,
    RoomSendResponse,
    SyncResponse,
)

PASSWORD = "correct horse battery staple"

# Every wait in the suite is bounded by this many seconds unless a test says otherwise. It is
# generous on purpose: a healthy server answers within milliseconds.
WAIT = 20.0

# For things a parked long-poll must be woken for: a sync that is not woken returns only at its own
# timeout, which sync_until caps at the time left, so the condition then fails. Delivery normally
# takes milliseconds; this allows for a loaded machine.
PROMPT = 8.0


def client_config() -> AsyncClientConfig:
    # nio retries connection errors forever by default; a dead server must fail the test instead.
    return AsyncClientConfig(max_timeouts=1, request_timeout=60, max_limit_exceeded=0)


async def make_user(url: str, name: str) -> AsyncClient:
    c = AsyncClient(url, name, config=client_config())
    resp = await c.register(name, PASSWORD)
    assert isinstance(resp, RegisterResponse), resp
    assert c.access_token and c.user_id.startswith(f"@{name}:"), (c.user_id, c.access_token)
    return c


async def initial_sync(client: AsyncClient, **kwargs) -> SyncResponse:
    """A sync without a since token (nio would otherwise reuse the last one it saw)."""
    client.next_batch = None
    client.loaded_sync_token = None
    resp = await client.sync(timeout=0, **kwargs)
    assert isinstance(resp, SyncResponse), resp
    return resp


async def sync_until(
    client: AsyncClient,
    since: Optional[str],
    predicate: Callable[[SyncResponse], Any],
    timeout: float = WAIT,
    poll_ms: int = 10_000,
    sync_filter: Optional[dict] = None,
) -> tuple[Any, str, list[SyncResponse]]:
    """Long-polls /sync from `since` until `predicate(response)` is truthy.

    Returns (the predicate's value, the next_batch after it, every response seen). Raises
    AssertionError when the condition is not met within `timeout` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen: list[SyncResponse] = []
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(
                f"sync condition for {client.user_id} not met within {timeout}s; "
                f"{len(seen)} responses seen"
            )
        wait_ms = max(1, int(min(remaining, poll_ms / 1000) * 1000))
        kwargs: dict = {"timeout": wait_ms, "since": since}
        if sync_filter is not None:
            kwargs["sync_filter"] = sync_filter
        resp = await asyncio.wait_for(client.sync(**kwargs), remaining + 15)
        assert isinstance(resp, SyncResponse), resp
        seen.append(resp)
        # The token must move forward (or stay) and never be empty.
        assert resp.next_batch, resp
        since = resp.next_batch
        found = predicate(resp)
        if found:
            return found, since, seen


async def sync_while(client: AsyncClient, since: Optional[str], predicate: Callable[[SyncResponse], Any],
                     action: Callable[[], Awaitable[Any]], timeout: float = PROMPT):
    """Starts long-polling (sync_until) first, then runs `action`: the condition must be met within
    `timeout` seconds, so a parked sync has to be woken by what `action` does. Returns what
    sync_until returns, and the action's result as a fourth element."""
    task = asyncio.create_task(sync_until(client, since, predicate, timeout=timeout))
    try:
        # Let the long-poll reach the server and park. The assertions hold either way; this only
        # makes the wake-up path the one normally exercised.
        await asyncio.sleep(0.3)
        result = await action()
        assert not isinstance(result, ErrorResponse), f"the action failed: {result}"
    except BaseException:
        task.cancel()
        raise
    found, since, seen = await task
    return found, since, seen, result


def timeline(resp: SyncResponse, room_id: str) -> list:
    room = resp.rooms.join.get(room_id)
    return list(room.timeline.events) if room else []


def ephemeral(resp: SyncResponse, room_id: str) -> list:
    room = resp.rooms.join.get(room_id)
    return list(room.ephemeral) if room else []


async def wait_for_events(
    client: AsyncClient,
    since: str,
    room_id: str,
    want: Callable[[list], bool],
    timeout: float = WAIT,
) -> tuple[list, str]:
    """Accumulates the joined room's timeline events over long-poll syncs until `want(events)`."""
    events: list = []

    def pred(resp):
        events.extend(timeline(resp, room_id))
        return want(events)

    _, since, _ = await sync_until(client, since, pred, timeout)
    return events, since


def by_id(events: Iterable, event_id: str):
    for e in events:
        if getattr(e, "event_id", None) == event_id:
            return e
    return None


def has_ids(*event_ids: str) -> Callable[[list], bool]:
    def want(events):
        ids = {getattr(e, "event_id", None) for e in events}
        return all(i in ids for i in event_ids)

    return want


async def send(client: AsyncClient, room_id: str, content: dict, event_type: str = "m.room.message",
               tx_id: Optional[str] = None) -> str:
    resp = await client.room_send(room_id, event_type, content, tx_id=tx_id or uuid.uuid4().hex)
    assert isinstance(resp, RoomSendResponse), resp
    assert resp.event_id.startswith("$"), resp
    return resp.event_id


async def text(client: AsyncClient, room_id: str, body: str) -> str:
    return await send(client, room_id, {"msgtype": "m.text", "body": body})


async def shared_room(alice: AsyncClient, bob: AsyncClient, name: str = "Lage") -> tuple[str, str, str]:
    """alice creates a room and invites bob, bob joins. Returns (room_id, alice_since, bob_since)
    with both tokens positioned after bob's join."""
    created = await alice.room_create(name=name)
    assert isinstance(created, RoomCreateResponse), created
    room_id = created.room_id
    invited = await alice.room_invite(room_id, bob.user_id)
    assert isinstance(invited, RoomInviteResponse), invited
    joined = await bob.join(room_id)
    assert isinstance(joined, JoinResponse), joined

    def bob_joined(resp) -> bool:
        room = resp.rooms.join.get(room_id)
        if room is None:
            return False
        for e in list(room.state) + list(room.timeline.events):
            c = e.source.get("content", {})
            if e.source.get("type") == "m.room.member" and e.source.get("state_key") == bob.user_id \
                    and c.get("membership") == "join":
                return True
        return False

    a = await initial_sync(alice)
    b = await initial_sync(bob)
    assert bob_joined(a), f"alice's initial sync does not show bob's join: {a.rooms.join.get(room_id)}"
    assert bob_joined(b), f"bob's initial sync does not show his join: {b.rooms.join.get(room_id)}"
    return room_id, a.next_batch, b.next_batch


async def raw(client: AsyncClient, method: str, path: str, body: Any = None,
              headers: Optional[dict] = None, auth: bool = True) -> tuple[int, Any, bytes]:
    """A raw request through nio's HTTP session, for endpoints nio has no method for.

    Returns (status, parsed JSON or None, raw bytes)."""
    h = {"Content-Type": "application/json"}
    if auth and client.access_token:
        h["Authorization"] = f"Bearer {client.access_token}"
    if headers:
        h.update(headers)
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body)
    resp = await asyncio.wait_for(client.send(method, path, data, h, timeout=WAIT), WAIT + 5)
    raw_body = await resp.read()
    try:
        parsed = json.loads(raw_body) if raw_body else None
    except ValueError:
        parsed = None
    return resp.status, parsed, raw_body
