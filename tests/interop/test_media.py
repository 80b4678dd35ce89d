"""Scenarios 3 and 6: media upload and download with nio, image/file messages, and a voice message."""

import io
import math
import os
import struct
import urllib.parse
import wave
import zlib

from nio import (
    DownloadError,
    MemoryDownloadResponse,
    RoomMessageAudio,
    RoomMessageFile,
    ResizingMethod,
    RoomMessageImage,
    ThumbnailResponse,
    UploadResponse,
)

from interop_helpers import by_id, has_ids, raw, send, shared_room, wait_for_events


def make_png(width: int = 3, height: int = 2) -> bytes:
    """A small valid RGB PNG."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(
        b"\x00" + b"".join(bytes(((x * 80) % 256, (y * 120) % 256, 200)) for x in range(width))
        for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def make_wav(seconds: float = 1.0, rate: int = 8000) -> tuple[bytes, int]:
    """A mono 16-bit PCM WAV with a 440 Hz tone. Returns (bytes, duration in ms)."""
    frames = int(seconds * rate)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(
            struct.pack("<h", int(12000 * math.sin(2 * math.pi * 440 * i / rate))) for i in range(frames)))
    return buf.getvalue(), int(frames * 1000 / rate)


async def upload(client, data: bytes, content_type: str, filename: str) -> str:
    resp, keys = await client.upload(io.BytesIO(data), content_type=content_type, filename=filename,
                                     filesize=len(data))
    assert isinstance(resp, UploadResponse), resp
    assert keys is None
    uri = resp.content_uri
    parsed = urllib.parse.urlparse(uri)
    assert parsed.scheme == "mxc" and parsed.netloc and parsed.path.strip("/"), uri
    return uri


async def download(client, mxc: str, **kwargs) -> MemoryDownloadResponse:
    resp = await client.download(mxc, **kwargs)
    assert isinstance(resp, MemoryDownloadResponse), resp
    return resp


def mxc_parts(mxc: str) -> tuple[str, str]:
    p = urllib.parse.urlparse(mxc)
    return p.netloc, p.path.strip("/")


async def test_upload_send_download(alice, bob):
    room_id, _, b_since = await shared_room(alice, bob)
    png = make_png()
    blob = os.urandom(1_500_000)  # larger than the JSON body limit (1 MiB), below the upload limit

    png_uri = await upload(alice, png, "image/png", "lage.png")
    blob_uri = await upload(alice, blob, "application/octet-stream", "bericht.bin")
    assert png_uri != blob_uri

    image_id = await send(alice, room_id, {
        "msgtype": "m.image", "body": "lage.png", "url": png_uri,
        "info": {"mimetype": "image/png", "size": len(png), "w": 3, "h": 2},
    })
    file_id = await send(alice, room_id, {
        "msgtype": "m.file", "body": "bericht.bin", "filename": "bericht.bin", "url": blob_uri,
        "info": {"mimetype": "application/octet-stream", "size": len(blob)},
    })

    events, _ = await wait_for_events(bob, b_since, room_id, has_ids(image_id, file_id))
    image, file = by_id(events, image_id), by_id(events, file_id)
    assert isinstance(image, RoomMessageImage), image
    assert image.url == png_uri and image.body == "lage.png", image.source
    assert image.source["content"]["info"] == {"mimetype": "image/png", "size": len(png), "w": 3, "h": 2}
    assert isinstance(file, RoomMessageFile), file
    assert file.url == blob_uri, file.source
    assert file.source["content"]["info"]["size"] == len(blob)

    # nio 0.25 downloads through the authenticated /_matrix/client/v1/media/download endpoint.
    got = await download(bob, image.url)
    assert got.body == png, f"{len(got.body)} bytes back for a {len(png)} byte PNG"
    assert got.content_type.split(";")[0].strip() == "image/png", got.content_type
    got = await download(bob, file.url)
    assert got.body == blob, f"{len(got.body)} bytes back for {len(blob)} bytes uploaded"
    # With an explicit file name (the /download/{server}/{mediaId}/{fileName} form).
    got = await download(bob, image.url, filename="anders.png")
    assert got.body == png
    assert got.filename in (None, "anders.png"), got.filename

    # The uploader can download too.
    got = await download(alice, png_uri)
    assert got.body == png

    server, media_id = mxc_parts(png_uri)
    # The authenticated endpoint refuses requests without an access token.
    status, body, _ = await raw(bob, "GET", f"/_matrix/client/v1/media/download/{server}/{media_id}", auth=False)
    assert status == 401 and body and body.get("errcode") == "M_MISSING_TOKEN", (status, body)

    # A media id that does not exist is a 404 M_NOT_FOUND.
    missing = await bob.download(f"mxc://{server}/doesnotexist0123456789")
    assert isinstance(missing, DownloadError), missing
    assert missing.status_code == "M_NOT_FOUND", missing

    # The config endpoint tells clients the upload limit (nio has no method for it: raw request).
    status, body, _ = await raw(bob, "GET", "/_matrix/client/v1/media/config")
    assert status == 200 and isinstance(body, dict), (status, body)
    assert body.get("m.upload.size", 0) >= len(blob), body


async def test_legacy_media_endpoints_are_frozen(alice, bob):
    """Feldpost freezes the unauthenticated /_matrix/media/v3/download endpoint as the spec asks of
    servers since v1.11/v1.12: media uploaded after the freeze (all of it, here) is served only by
    /_matrix/client/v1/media, which nio 0.25 uses. Old clients that only know the legacy endpoint
    get M_NOT_FOUND. nio has no method for the legacy endpoint, so these are raw requests."""
    png = make_png()
    uri = await upload(alice, png, "image/png", "alt.png")
    server, media_id = mxc_parts(uri)
    for auth in (False, True):
        status, body, data = await raw(bob, "GET", f"/_matrix/media/v3/download/{server}/{media_id}", auth=auth)
        assert status == 404 and body and body.get("errcode") == "M_NOT_FOUND", (auth, status, data[:200])
    # The authenticated endpoint serves it, with the headers the spec requires of downloads.
    status, _, data = await raw(bob, "GET", f"/_matrix/client/v1/media/download/{server}/{media_id}")
    assert status == 200 and data == png, (status, data[:100])


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    return struct.unpack(">II", data[16:24])


async def test_download_headers_and_thumbnail(alice, bob):
    blob = b"%PDF-1.4 not really a pdf\n" * 10
    uri = await upload(alice, blob, "application/pdf", "einsatzplan.pdf")
    server, media_id = mxc_parts(uri)
    # nio exposes only body, type and file name; the headers need the raw response.
    resp = await bob.send("GET", f"/_matrix/client/v1/media/download/{server}/{media_id}",
                          headers={"Authorization": f"Bearer {bob.access_token}"})
    data = await resp.read()
    assert resp.status == 200 and data == blob, resp.status
    assert resp.headers.get("Content-Type", "").startswith("application/pdf"), resp.headers
    disposition = resp.headers.get("Content-Disposition", "")
    assert disposition.startswith("attachment") and "einsatzplan.pdf" in disposition, disposition
    got = await download(bob, uri)
    assert got.filename == "einsatzplan.pdf", got.filename

    # Thumbnails of an uploaded image, through nio.
    big = make_png(64, 48)
    uri = await upload(alice, big, "image/png", "karte.png")
    server, media_id = mxc_parts(uri)
    thumb = await bob.thumbnail(server, media_id, 32, 32, method=ResizingMethod.scale)
    assert isinstance(thumb, ThumbnailResponse), thumb
    assert thumb.content_type.startswith("image/"), thumb.content_type
    if thumb.content_type.startswith("image/png"):
        # Never larger than the original, and "scale" keeps the aspect ratio (4:3).
        w, h = png_size(thumb.body)
        assert 0 < w <= 64 and 0 < h <= 48, (w, h)
        assert abs(w / h - 4 / 3) < 0.15, (w, h)
    thumb = await bob.thumbnail(server, media_id, 16, 16, method=ResizingMethod.crop)
    assert isinstance(thumb, ThumbnailResponse), thumb
    assert thumb.content_type.startswith("image/") and len(thumb.body) > 0


async def test_voice_message(alice, bob):
    room_id, _, b_since = await shared_room(alice, bob)
    wav, duration = make_wav(1.0)
    uri = await upload(alice, wav, "audio/wav", "Sprachnachricht.wav")
    waveform = [int(500 + 500 * math.sin(i / 5)) for i in range(64)]
    content = {
        "msgtype": "m.audio",
        "body": "Sprachnachricht",
        "url": uri,
        "info": {"mimetype": "audio/wav", "size": len(wav), "duration": duration},
        "org.matrix.msc1767.text": "Sprachnachricht",
        "org.matrix.msc1767.file": {"url": uri, "name": "Sprachnachricht.wav",
                                    "mimetype": "audio/wav", "size": len(wav)},
        "org.matrix.msc1767.audio": {"duration": duration, "waveform": waveform},
        "org.matrix.msc3245.voice": {},
    }
    event_id = await send(alice, room_id, content)

    events, _ = await wait_for_events(bob, b_since, room_id, has_ids(event_id))
    ev = by_id(events, event_id)
    assert isinstance(ev, RoomMessageAudio), ev
    assert ev.url == uri
    # Every key arrives exactly as sent, including the unstable voice and waveform keys.
    assert ev.source["content"] == content, ev.source["content"]

    got = await download(bob, ev.url)
    assert got.body == wav
    with wave.open(io.BytesIO(got.body), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
        assert w.getnframes() * 1000 // w.getframerate() == duration
