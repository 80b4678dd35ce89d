"""Scenario 9: every event (and upload) the server acknowledged survives a SIGKILL in the middle of a
burst of requests.

A Feldpost invariant: an event is durable before its event_id is returned. Several senders keep
requests in flight continuously; the server is killed with SIGKILL while they are; then it is started
again on the same data directory and /messages must hold every acknowledged event exactly once."""

import asyncio
import io
import os
import signal
import tempfile
import time
import uuid

import aiohttp
from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinResponse,
    MemoryDownloadResponse,
    MessageDirection,
    RoomCreateResponse,
    RoomGetStateEventResponse,
    RoomInviteResponse,
    RoomMessagesResponse,
    RoomPutStateResponse,
    RoomSendResponse,
    SyncResponse,
    UploadResponse,
    WhoamiResponse,
)

from conftest import Server
from interop_helpers import has_ids, initial_sync, make_user, timeline, wait_for_events

SENDERS = 4
BURST_SECONDS = 2.0


def no_retry_config() -> AsyncClientConfig:
    # No retries at all: a request the dead server never answered must surface as an error.
    return AsyncClientConfig(max_timeouts=0, request_timeout=20, max_limit_exceeded=0)


async def _all_room_events(client, room_id, limit=100, max_pages=500):
    """Every event of the room, newest first, through /messages."""
    events = []
    token = None
    for _ in range(max_pages):
        resp = await client.room_messages(room_id, start=token, direction=MessageDirection.back, limit=limit)
        assert isinstance(resp, RoomMessagesResponse), resp
        events.extend(resp.chunk)
        if not resp.chunk or not resp.end:
            return events
        token = resp.end
    raise AssertionError("pagination did not finish")


async def test_acknowledged_events_survive_sigkill():
    with tempfile.TemporaryDirectory() as d:
        srv = Server(d)
        srv.start()
        try:
            await asyncio.wait_for(_scenario(srv), 150)
        except BaseException:
            print("---- feldpost server log (tail) ----\n" + srv.log_tail(60))
            raise
        finally:
            srv.stop()


async def _scenario(srv: Server):
    setup = await make_user(srv.url, "alice")
    created = await setup.room_create(name="Dauerfeuer")
    assert isinstance(created, RoomCreateResponse), created
    room_id = created.room_id
    token, device_id, user_id = setup.access_token, setup.device_id, setup.user_id
    reader = await make_user(srv.url, "bob")
    invited = await setup.room_invite(room_id, reader.user_id)
    assert isinstance(invited, RoomInviteResponse), invited
    joined = await reader.join(room_id)
    assert isinstance(joined, JoinResponse), joined
    await setup.close()
    reader.config = no_retry_config()
    first = await reader.sync(timeout=0)
    assert isinstance(first, SyncResponse), first

    sender = AsyncClient(srv.url, user_id, device_id=device_id, config=no_retry_config())
    sender.restore_login(user_id, device_id, token)

    acked: list[tuple[str, str, int]] = []   # (event_id, body, worker)
    unanswered: list[tuple[str, str]] = []   # (tx_id, body) whose request got no answer
    refused: list = []                       # answers that were neither 200 nor a transport error
    in_flight = 0
    killed = asyncio.Event()

    async def worker(w: int):
        nonlocal in_flight
        i = 0
        while not killed.is_set():
            body = f"w{w}-{i:05d}"
            tx_id = uuid.uuid4().hex
            i += 1
            in_flight += 1
            try:
                resp = await sender.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body},
                                              tx_id=tx_id)
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
                if not killed.is_set():
                    refused.append(exc)
                    return
                unanswered.append((tx_id, body))
                continue
            finally:
                in_flight -= 1
            if isinstance(resp, RoomSendResponse):
                acked.append((resp.event_id, body, w))
            elif killed.is_set():
                # An error status while the server died (e.g. a half-written response): unacknowledged.
                unanswered.append((tx_id, body))
            else:
                refused.append(resp)
                return

    # One more writer changes the room's topic over and over (state events, one at a time).
    topics_acked: list[tuple[str, str]] = []   # (event_id, topic)
    topic_unanswered: list[str] = []

    async def topic_writer():
        nonlocal in_flight
        i = 0
        while not killed.is_set():
            topic = f"Thema {i:05d}"
            i += 1
            in_flight += 1
            try:
                resp = await sender.room_put_state(room_id, "m.room.topic", {"topic": topic})
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
                if not killed.is_set():
                    refused.append(exc)
                    return
                topic_unanswered.append(topic)
                continue
            finally:
                in_flight -= 1
            if isinstance(resp, RoomPutStateResponse):
                topics_acked.append((resp.event_id, topic))
            elif killed.is_set():
                topic_unanswered.append(topic)
            else:
                refused.append(resp)
                return

    # bob long-polls all along; whatever sync showed him before the kill must survive it too.
    synced: list[str] = []
    reader_since = first.next_batch

    async def read():
        nonlocal reader_since
        while not killed.is_set():
            try:
                resp = await reader.sync(timeout=5_000, since=reader_since)
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError):
                if killed.is_set():
                    return
                raise
            if not isinstance(resp, SyncResponse):
                if killed.is_set():
                    return
                raise AssertionError(f"sync failed before the kill: {resp}")
            synced.extend(e.event_id for e in timeline(resp, room_id))
            reader_since = resp.next_batch

    reading = asyncio.create_task(read())
    tasks = [asyncio.create_task(worker(w)) for w in range(SENDERS)]
    tasks.append(asyncio.create_task(topic_writer()))
    t0 = time.monotonic()
    # Wait (bounded) for the burst to get going, then let it run for the rest of ~2 seconds.
    while len(acked) < 20 and time.monotonic() - t0 < 20 and not refused:
        await asyncio.sleep(0.01)
    assert not refused, f"server refused a send before the kill: {refused[0]}"
    assert len(acked) >= 20, f"only {len(acked)} sends acknowledged in 20 s"
    await asyncio.sleep(max(0.0, BURST_SECONDS - (time.monotonic() - t0)))

    inflight_at_kill = in_flight
    srv.proc.send_signal(signal.SIGKILL)
    killed.set()
    await asyncio.to_thread(srv.proc.wait, 30)
    assert srv.proc.returncode == -signal.SIGKILL, srv.proc.returncode
    await asyncio.wait_for(asyncio.gather(*tasks, reading), 30)
    await sender.close()
    await reader.close()
    assert synced, "the reader's sync saw nothing during the burst"

    assert inflight_at_kill > 0, "no request was in flight when the server was killed"
    assert not refused, refused

    # Start again on the same data directory (same port).
    srv.start()

    client = AsyncClient(srv.url, user_id, device_id=device_id, config=no_retry_config())
    client.restore_login(user_id, device_id, token)
    try:
        who = await client.whoami()
        assert isinstance(who, WhoamiResponse) and who.user_id == user_id, who

        events = await _all_room_events(client, room_id)
        ids = [e.event_id for e in events]
        assert len(ids) == len(set(ids)), "duplicate events in /messages after restart"
        present = set(ids)
        missing = [(eid, body) for eid, body, _ in acked if eid not in present]
        assert not missing, (f"{len(missing)} of {len(acked)} acknowledged events lost after SIGKILL, "
                             f"e.g. {missing[:5]}")
        lost_topics = [eid for eid, _ in topics_acked if eid not in present]
        assert not lost_topics, f"{len(lost_topics)} of {len(topics_acked)} acknowledged state events lost"
        # The room's state is the last acknowledged topic, or the one in flight at the kill.
        assert topics_acked, "no topic change was acknowledged"
        state = await client.room_get_state_event(room_id, "m.room.topic")
        assert isinstance(state, RoomGetStateEventResponse), state
        allowed = [topics_acked[-1][1]] + topic_unanswered
        assert state.content.get("topic") in allowed, (state.content, allowed)
        lost_synced = [eid for eid in synced if eid not in present]
        assert not lost_synced, f"{len(lost_synced)} events served by /sync before the kill are gone"
        # Each worker sent sequentially, so its acknowledged events are in the timeline in that order.
        position = {eid: n for n, eid in enumerate(reversed(ids))}
        for w in range(SENDERS):
            mine = [position[eid] for eid, _, ww in acked if ww == w]
            assert mine == sorted(mine), f"worker {w}'s events are out of order after restart"
        # Bodies of acknowledged events are intact.
        body_of = {e.event_id: getattr(e, "body", None) for e in events}
        for eid, body, _ in acked:
            assert body_of[eid] == body, (eid, body_of[eid], body)

        # Retrying the unanswered requests with their transaction ids must not create duplicates:
        # a request that was committed before the kill returns its original event.
        committed_unanswered = 0
        for tx_id, body in unanswered:
            resp = await client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body},
                                          tx_id=tx_id)
            assert isinstance(resp, RoomSendResponse), resp
            committed_unanswered += resp.event_id in present
        events = await _all_room_events(client, room_id)
        bodies = [getattr(e, "body", None) for e in events if e.source.get("type") == "m.room.message"]
        dupes = sorted({b for b in bodies if bodies.count(b) > 1})
        assert not dupes, f"retried transactions created duplicates: {dupes[:5]}"
        expected = {body for _, body, _ in acked} | {body for _, body in unanswered}
        assert set(bodies) == expected, (len(set(bodies)), len(expected))
        # Current state as a fresh sync reports it agrees with the state endpoint.
        await initial_sync(client, full_state=True)
        assert client.rooms[room_id].topic == state.content.get("topic"), (client.rooms[room_id].topic, state.content)

        # The server works normally: a new message arrives through sync, and a new user can register.
        first = await client.sync(timeout=0)
        assert isinstance(first, SyncResponse), first
        resp = await client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "wieder da"})
        assert isinstance(resp, RoomSendResponse), resp
        await wait_for_events(client, first.next_batch, room_id, has_ids(resp.event_id))
        # A sync token handed out before the kill still works and does not go back in time: from
        # it, bob gets the new message and none of what he had already seen.
        bob = AsyncClient(srv.url, reader.user_id, device_id=reader.device_id, config=no_retry_config())
        bob.restore_login(reader.user_id, reader.device_id, reader.access_token)
        try:
            events, _ = await wait_for_events(bob, reader_since, room_id, has_ids(resp.event_id))
            again = {e.event_id for e in events} & set(synced)
            assert not again, f"a pre-crash sync token replayed {len(again)} events already delivered"
        finally:
            await bob.close()
        newcomer = await make_user(srv.url, "carol")
        await newcomer.close()
    finally:
        await client.close()
    print(f"topics acknowledged={len(topics_acked)} unanswered={topic_unanswered} "
          f"acknowledged={len(acked)} unanswered={len(unanswered)} (committed: {committed_unanswered}) "
          f"in_flight_at_kill={inflight_at_kill} seen_by_sync={len(synced)}")


async def test_acknowledged_uploads_survive_sigkill():
    """Media is acknowledged with its mxc URI only once stored: after a SIGKILL in the middle of
    concurrent uploads, every acknowledged URI downloads with the bytes that were uploaded."""
    with tempfile.TemporaryDirectory() as d:
        srv = Server(d)
        srv.start()
        try:
            await asyncio.wait_for(_upload_scenario(srv), 150)
        except BaseException:
            print("---- feldpost server log (tail) ----\n" + srv.log_tail(60))
            raise
        finally:
            srv.stop()


async def _upload_scenario(srv: Server):
    setup = await make_user(srv.url, "alice")
    user_id, device_id, token = setup.user_id, setup.device_id, setup.access_token
    await setup.close()
    uploader = AsyncClient(srv.url, user_id, device_id=device_id, config=no_retry_config())
    uploader.restore_login(user_id, device_id, token)

    acked: list[tuple[str, bytes]] = []
    refused: list = []
    in_flight = 0
    killed = asyncio.Event()

    async def worker(w: int):
        nonlocal in_flight
        i = 0
        while not killed.is_set():
            # 96 KiB, distinct per upload, so that a mix-up of files would show.
            data = f"{w}:{i}:".encode() + os.urandom(96 * 1024)
            i += 1
            in_flight += 1
            try:
                resp, _ = await uploader.upload(io.BytesIO(data), content_type="application/octet-stream",
                                                filename=f"f{w}-{i}.bin", filesize=len(data))
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
                if not killed.is_set():
                    refused.append(exc)
                    return
                continue
            finally:
                in_flight -= 1
            if isinstance(resp, UploadResponse):
                acked.append((resp.content_uri, data))
            elif not killed.is_set():
                refused.append(resp)
                return

    tasks = [asyncio.create_task(worker(w)) for w in range(SENDERS)]
    t0 = time.monotonic()
    while len(acked) < 10 and time.monotonic() - t0 < 20 and not refused:
        await asyncio.sleep(0.01)
    assert not refused, f"upload failed before the kill: {refused[0]}"
    assert len(acked) >= 10, f"only {len(acked)} uploads acknowledged in 20 s"
    await asyncio.sleep(max(0.0, BURST_SECONDS - (time.monotonic() - t0)))

    inflight_at_kill = in_flight
    srv.proc.send_signal(signal.SIGKILL)
    killed.set()
    await asyncio.to_thread(srv.proc.wait, 30)
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    await uploader.close()
    assert inflight_at_kill > 0, "no upload was in flight when the server was killed"
    assert not refused, refused

    srv.start()
    client = AsyncClient(srv.url, user_id, device_id=device_id, config=no_retry_config())
    client.restore_login(user_id, device_id, token)
    try:
        broken = []
        for uri, data in acked:
            got = await client.download(uri)
            if not isinstance(got, MemoryDownloadResponse) or got.body != data:
                broken.append((uri, got if not isinstance(got, MemoryDownloadResponse) else len(got.body)))
        assert not broken, f"{len(broken)} of {len(acked)} acknowledged uploads broken after SIGKILL: {broken[:3]}"
        # Uploads work again.
        resp, _ = await client.upload(io.BytesIO(b"wieder da"), content_type="text/plain", filename="x.txt",
                                      filesize=9)
        assert isinstance(resp, UploadResponse), resp
        got = await client.download(resp.content_uri)
        assert isinstance(got, MemoryDownloadResponse) and got.body == b"wieder da", got
    finally:
        await client.close()
    print(f"uploads acknowledged={len(acked)} in_flight_at_kill={inflight_at_kill}")
