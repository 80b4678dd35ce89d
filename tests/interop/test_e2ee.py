"""End-to-end encryption with matrix-nio and libolm (python-olm): device keys, one-time key claims,
olm-encrypted room keys sent to devices, megolm messages both ways, and device-list tracking when
a user adds a device."""

from __future__ import annotations

import asyncio
import tempfile
from typing import Callable

import pytest
from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinResponse,
    KeysUploadResponse,
    LoginResponse,
    MegolmEvent,
    RegisterResponse,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)

from interop_helpers import PASSWORD, WAIT, raw

pytestmark = pytest.mark.timeout(180)

# Users each device saw in `device_lists.changed`, by device id.
SEEN_CHANGED: dict[str, set[str]] = {}

ENCRYPTION = {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}


def e2e_config() -> AsyncClientConfig:
    return AsyncClientConfig(max_timeouts=1, request_timeout=60, max_limit_exceeded=0,
                             encryption_enabled=True, store_sync_tokens=False)


@pytest.fixture
def stores():
    """A fresh directory for each client's olm store."""
    dirs = []

    def make() -> str:
        d = tempfile.TemporaryDirectory()
        dirs.append(d)
        return d.name

    yield make
    for d in dirs:
        d.cleanup()


async def e2e_user(url: str, name: str, store: str) -> AsyncClient:
    c = AsyncClient(url, name, store_path=store, config=e2e_config())
    resp = await c.register(name, PASSWORD)
    assert isinstance(resp, RegisterResponse), resp
    return c


async def e2e_login(url: str, name: str, store: str) -> AsyncClient:
    c = AsyncClient(url, f"@{name}:localhost", store_path=store, config=e2e_config())
    resp = await c.login(PASSWORD, device_name=f"{name}'s second device")
    assert isinstance(resp, LoginResponse), resp
    return c


async def crypto_round(c: AsyncClient, timeout_ms: int = 0) -> SyncResponse:
    """One sync, then what a client does with it: upload keys when the server has too few, query
    the keys of users whose devices changed, claim one-time keys for new sessions, and send the
    queued to-device messages."""
    resp = await asyncio.wait_for(c.sync(timeout=timeout_ms), WAIT)
    assert isinstance(resp, SyncResponse), resp
    SEEN_CHANGED.setdefault(c.device_id, set()).update(resp.device_list.changed)
    if c.should_upload_keys:
        up = await c.keys_upload()
        assert isinstance(up, KeysUploadResponse), up
    if c.should_query_keys:
        await c.keys_query()
    if c.should_claim_keys:
        await c.keys_claim(c.get_users_for_key_claiming())
    await c.send_to_device_messages()
    return resp


async def until(what: str, clients: list[AsyncClient], pred: Callable[[], bool], timeout: float = WAIT):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out: {what}")
        for c in clients:
            await crypto_round(c, timeout_ms=200)


class Collector:
    """Decrypted texts and undecryptable events a client saw in a room's timeline."""

    def __init__(self, client: AsyncClient, room_id: str):
        self.texts: list[str] = []
        self.undecryptable = 0
        self.room_id = room_id
        client.add_event_callback(self.on_text, RoomMessageText)
        client.add_event_callback(self.on_megolm, MegolmEvent)

    async def on_text(self, room, event):
        if room.room_id == self.room_id:
            self.texts.append(event.body)

    async def on_megolm(self, room, event):
        if room.room_id == self.room_id:
            self.undecryptable += 1


async def encrypted_room(alice: AsyncClient, bob: AsyncClient) -> str:
    created = await alice.room_create(name="Verschluesselt", invite=[bob.user_id], initial_state=[ENCRYPTION])
    assert isinstance(created, RoomCreateResponse), created
    room_id = created.room_id
    await until("bob sees the invite", [bob], lambda: room_id in bob.invited_rooms)
    joined = await bob.join(room_id)
    assert isinstance(joined, JoinResponse), joined
    await until("both see an encrypted room with two members", [alice, bob],
                lambda: room_id in alice.rooms and room_id in bob.rooms and alice.rooms[room_id].encrypted
                and bob.rooms[room_id].encrypted and len(alice.rooms[room_id].users) == 2)
    return room_id


async def send_text(c: AsyncClient, room_id: str, body: str):
    # The client shares its megolm session first (claiming one-time keys, sending olm-encrypted
    # room keys to every device of the members), then sends the encrypted event.
    resp = await c.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body},
                             ignore_unverified_devices=True)
    assert isinstance(resp, RoomSendResponse), resp


async def test_encrypted_messages_both_ways(server, stores):
    alice = await e2e_user(server.url, "alice", stores())
    bob = await e2e_user(server.url, "bob", stores())
    try:
        for c in (alice, bob):
            await crypto_round(c)
        # The server publishes exactly what each device uploaded.
        status, keys, _ = await raw(alice, "POST", "/_matrix/client/v3/keys/query",
                                    {"device_keys": {bob.user_id: []}})
        assert status == 200, keys
        dev = keys["device_keys"][bob.user_id][bob.device_id]
        assert dev["keys"][f"ed25519:{bob.device_id}"] == bob.olm.account.identity_keys["ed25519"]
        assert dev["keys"][f"curve25519:{bob.device_id}"] == bob.olm.account.identity_keys["curve25519"]

        room_id = await encrypted_room(alice, bob)
        at_bob = Collector(bob, room_id)
        at_alice = Collector(alice, room_id)
        await send_text(alice, room_id, "Guten Morgen, Bob")
        await until("bob decrypts alice's message", [bob, alice], lambda: "Guten Morgen, Bob" in at_bob.texts)
        await send_text(bob, room_id, "Morgen, Alice")
        await until("alice decrypts bob's reply", [alice, bob], lambda: "Morgen, Alice" in at_alice.texts)
        assert at_bob.undecryptable == 0 and at_alice.undecryptable == 0

        # What the server stored is ciphertext only.
        status, page, _ = await raw(alice, "GET", f"/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=20")
        assert status == 200, page
        messages = [e for e in page["chunk"] if e["type"] in ("m.room.message", "m.room.encrypted")]
        assert messages and all(e["type"] == "m.room.encrypted" for e in messages), messages
        assert "Guten Morgen" not in str(page)
    finally:
        await alice.close()
        await bob.close()


async def test_a_new_device_is_tracked_and_receives_the_room_key(server, stores):
    alice = await e2e_user(server.url, "alice", stores())
    bob = await e2e_user(server.url, "bob", stores())
    phone = None
    try:
        for c in (alice, bob):
            await crypto_round(c)
        room_id = await encrypted_room(alice, bob)
        await send_text(alice, room_id, "vorher")
        at_bob = Collector(bob, room_id)
        await until("bob decrypts the first message", [bob, alice], lambda: "vorher" in at_bob.texts)

        # Bob adds a device: Alice's sync reports his device list as changed, her client queries it
        # and shares the next room key with the new device too.
        phone = await e2e_login(server.url, "bob", stores())
        await crypto_round(phone)
        SEEN_CHANGED.pop(alice.device_id, None)
        await until("alice learns of bob's new device", [alice, phone],
                    lambda: phone.device_id in alice.device_store[bob.user_id])
        assert bob.user_id in SEEN_CHANGED.get(alice.device_id, set())
        at_phone = Collector(phone, room_id)
        await send_text(alice, room_id, "nachher")
        await until("bob's new device decrypts the next message", [phone, alice, bob],
                    lambda: "nachher" in at_phone.texts)
        # The message from before the device existed stays unreadable to it: no key was sent.
        assert "vorher" not in at_phone.texts
    finally:
        for c in (alice, bob, phone):
            if c is not None:
                await c.close()
