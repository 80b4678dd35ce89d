//! The content repository over HTTP: uploads, downloads, thumbnails, limits and the headers that
//! keep served content harmless.

mod common;

use std::io::Cursor;
use std::path::Path;

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CSP: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn send(req: reqwest::RequestBuilder) -> Reply {
    let resp = req.send().await.expect("request");
    Reply {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.bytes().await.expect("body").to_vec(),
    }
}

async fn upload(
    srv: &TestServer,
    u: &User,
    content_type: Option<&str>,
    filename: Option<&str>,
    data: Vec<u8>,
) -> Reply {
    let mut req = srv
        .http
        .post(srv.url("/_matrix/media/v3/upload"))
        .bearer_auth(&u.token)
        .body(data);
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    if let Some(f) = filename {
        req = req.query(&[("filename", f)]);
    }
    send(req).await
}

/// Uploads and returns the media id.
async fn upload_ok(
    srv: &TestServer,
    u: &User,
    content_type: Option<&str>,
    filename: Option<&str>,
    data: Vec<u8>,
) -> String {
    let r = upload(srv, u, content_type, filename, data).await;
    assert_eq!(r.status, 200, "{}", r.json());
    let uri = r.json()["content_uri"]
        .as_str()
        .expect("content_uri")
        .to_owned();
    uri.strip_prefix("mxc://localhost/")
        .expect("local mxc uri")
        .to_owned()
}

async fn get(srv: &TestServer, path: &str, token: Option<&str>) -> Reply {
    let mut req = srv.http.get(srv.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    send(req).await
}

fn download_path(id: &str) -> String {
    format!("/_matrix/client/v1/media/download/localhost/{id}")
}

fn thumbnail_path(id: &str, query: &str) -> String {
    format!("/_matrix/client/v1/media/thumbnail/localhost/{id}?{query}")
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 7])
    });
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .expect("encode png");
    out
}

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb([200, 100, 50]));
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Jpeg)
        .expect("encode jpeg");
    out
}

fn dimensions(data: &[u8]) -> (u32, u32) {
    let img = image::load_from_memory(data).expect("thumbnail decodes");
    (img.width(), img.height())
}

/// Stored originals: files named by a 64-hex SHA-256 outside `tmp` and `thumbnails`.
fn stored_files(dir: &Path) -> Vec<std::path::PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read media dir").flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if name != "tmp" && name != "thumbnails" {
                    walk(&path, out);
                }
            } else if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dir.join("media"), &mut out);
    out
}

fn assert_protected(r: &Reply) {
    assert_eq!(r.header("content-security-policy"), CSP);
    assert_eq!(r.header("x-content-type-options"), "nosniff");
    assert_eq!(r.header("cross-origin-resource-policy"), "cross-origin");
}

#[tokio::test]
async fn upload_then_download_returns_the_same_bytes() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let data = b"Lagebericht 0600: alles ruhig.\n".to_vec();
    let id = upload_ok(
        &srv,
        &alice,
        Some("text/plain"),
        Some("bericht.txt"),
        data.clone(),
    )
    .await;

    // Any local user may fetch it, with the headers that keep it inert.
    let r = get(&srv, &download_path(&id), Some(&bob.token)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    assert_eq!(r.header("content-type"), "text/plain");
    assert_eq!(
        r.header("content-disposition"),
        "inline; filename=\"bericht.txt\""
    );
    assert_eq!(r.header("content-length"), data.len().to_string());
    assert_protected(&r);

    // The file name in the path wins, encoded per RFC 6266 when it is not plain ASCII.
    let r = get(
        &srv,
        &format!("{}/{}", download_path(&id), enc("Übersicht.txt")),
        Some(&bob.token),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    assert_eq!(
        r.header("content-disposition"),
        "inline; filename=\"_bersicht.txt\"; filename*=utf-8''%C3%9Cbersicht.txt"
    );

    // Without a type or a name: octet-stream, attachment, no filename.
    let id = upload_ok(&srv, &alice, None, None, vec![0, 1, 2, 255]).await;
    let r = get(&srv, &download_path(&id), Some(&alice.token)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, vec![0, 1, 2, 255]);
    assert_eq!(r.header("content-type"), "application/octet-stream");
    assert_eq!(r.header("content-disposition"), "attachment");

    // Content survives a restart.
    let dir = srv.stop().await;
    let config = test_config(dir.path());
    let srv = TestServer::start_in(dir, config).await;
    let r = get(&srv, &download_path(&id), Some(&alice.token)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, vec![0, 1, 2, 255]);
}

#[tokio::test]
async fn identical_content_is_stored_once() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let data = png(20, 10);
    let a = upload_ok(&srv, &alice, Some("image/png"), Some("a.png"), data.clone()).await;
    let b = upload_ok(&srv, &bob, Some("image/png"), Some("b.png"), data.clone()).await;
    assert_ne!(a, b, "every upload gets its own media id");
    let files = stored_files(srv.dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(std::fs::read(&files[0]).expect("stored file"), data);
    // Both ids keep their own metadata.
    let r = get(&srv, &download_path(&b), Some(&alice.token)).await;
    assert_eq!(
        r.header("content-disposition"),
        "inline; filename=\"b.png\""
    );
    assert_eq!(r.body, data);

    upload_ok(&srv, &alice, Some("text/plain"), None, b"other".to_vec()).await;
    assert_eq!(stored_files(srv.dir.path()).len(), 2);
    // No temporary files are left behind.
    let tmp = std::fs::read_dir(srv.dir.path().join("media").join("tmp"))
        .expect("tmp dir")
        .count();
    assert_eq!(tmp, 0);
}

#[tokio::test]
async fn thumbnails_scale_and_crop() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let id = upload_ok(
        &srv,
        &alice,
        Some("image/png"),
        Some("karte.png"),
        png(400, 200),
    )
    .await;
    let t = &alice.token;

    // scale keeps the aspect ratio, fitting the requested box.
    let r = get(
        &srv,
        &thumbnail_path(&id, "width=100&height=100&method=scale"),
        Some(t),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.header("content-type"), "image/png");
    assert_eq!(
        r.header("content-disposition"),
        "inline; filename=\"thumbnail.png\""
    );
    assert_protected(&r);
    assert_eq!(dimensions(&r.body), (100, 50));

    // crop has exactly the requested size and aspect.
    let r = get(
        &srv,
        &thumbnail_path(&id, "width=50&height=80&method=crop"),
        Some(t),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(dimensions(&r.body), (50, 80));
    // Again, from the cache: the same bytes.
    let again = get(
        &srv,
        &thumbnail_path(&id, "width=50&height=80&method=crop"),
        Some(t),
    )
    .await;
    assert_eq!(again.body, r.body);
    let cached = srv.dir.path().join("media").join("thumbnails");
    assert!(cached.exists());

    // Never upscaled: a box larger than the image yields the image's own size.
    let r = get(
        &srv,
        &thumbnail_path(&id, "width=800&height=600&method=scale"),
        Some(t),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(dimensions(&r.body), (400, 200));
    // method defaults to scale.
    let r = get(&srv, &thumbnail_path(&id, "width=200&height=200"), Some(t)).await;
    assert_eq!(dimensions(&r.body), (200, 100));

    // A JPEG gives JPEG thumbnails.
    let id = upload_ok(&srv, &alice, Some("image/jpeg"), None, jpeg(320, 240)).await;
    let r = get(
        &srv,
        &thumbnail_path(&id, "width=32&height=32&method=crop"),
        Some(t),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "image/jpeg");
    assert_eq!(dimensions(&r.body), (32, 32));
}

#[tokio::test]
async fn oversized_uploads_are_refused() {
    let srv = TestServer::start_with(|c| c.media.max_upload_size = 1024).await;
    let alice = srv.register("alice").await;
    let r = upload(
        &srv,
        &alice,
        Some("application/octet-stream"),
        None,
        vec![7; 4096],
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.json());
    assert_eq!(r.json()["errcode"], "M_TOO_LARGE");
    // Exactly at the limit is fine.
    upload_ok(&srv, &alice, None, None, vec![7; 1024]).await;

    // A chunked body declares no length: it is cut off while streaming.
    let mut tcp = tokio::net::TcpStream::connect(srv.addr)
        .await
        .expect("connect");
    let chunk = vec![b'x'; 700];
    let mut req = format!(
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        alice.token
    )
    .into_bytes();
    for _ in 0..3 {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(&chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    tcp.write_all(&req).await.expect("write");
    let mut resp = Vec::new();
    let _ = tcp.read_to_end(&mut resp).await;
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(resp.contains("M_TOO_LARGE"), "{resp}");
    assert_eq!(stored_files(srv.dir.path()).len(), 1);

    let (s, b) = srv.get("/_matrix/client/v1/media/config", &alice).await;
    assert_eq!(s, 200);
    assert_eq!(b, json!({"m.upload.size": 1024}));
}

#[tokio::test]
async fn media_config_is_served() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    for path in [
        "/_matrix/client/v1/media/config",
        "/_matrix/media/v3/config",
    ] {
        let (s, b) = srv.get(path, &alice).await;
        assert_eq!(s, 200, "{path}: {b}");
        assert_eq!(b["m.upload.size"], 50 * 1024 * 1024);
    }
}

#[tokio::test]
async fn unknown_media_is_not_found() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let id = upload_ok(&srv, &alice, Some("text/plain"), None, b"da".to_vec()).await;
    for path in [
        download_path("nosuchmedia"),
        thumbnail_path("nosuchmedia", "width=32&height=32"),
        format!("/_matrix/client/v1/media/download/elsewhere.example/{id}"),
        download_path("bad%2E%2E%2Fid"),
    ] {
        let r = get(&srv, &path, Some(&alice.token)).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.json()["errcode"], "M_NOT_FOUND", "{path}");
    }
}

#[tokio::test]
async fn authenticated_endpoints_need_a_token() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let id = upload_ok(&srv, &alice, Some("text/plain"), None, b"geheim".to_vec()).await;
    for path in [
        download_path(&id),
        format!("{}/x.txt", download_path(&id)),
        thumbnail_path(&id, "width=32&height=32"),
        "/_matrix/client/v1/media/config".to_owned(),
    ] {
        let r = get(&srv, &path, None).await;
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.json()["errcode"], "M_MISSING_TOKEN", "{path}");
        let r = get(&srv, &path, Some("not-a-token")).await;
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.json()["errcode"], "M_UNKNOWN_TOKEN", "{path}");
    }
    let r = send(srv.http.post(srv.url("/_matrix/media/v3/upload")).body("x")).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["errcode"], "M_MISSING_TOKEN");

    // The deprecated unauthenticated endpoints are frozen.
    for path in [
        format!("/_matrix/media/v3/download/localhost/{id}"),
        format!("/_matrix/media/v3/download/localhost/{id}/x.txt"),
        format!("/_matrix/media/v3/thumbnail/localhost/{id}?width=32&height=32"),
    ] {
        let r = get(&srv, &path, None).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.json()["errcode"], "M_NOT_FOUND", "{path}");
    }
}

#[tokio::test]
async fn active_content_is_an_attachment() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let html = b"<script>alert(document.cookie)</script>".to_vec();
    for ct in [
        "text/html",
        "image/svg+xml",
        "application/xhtml+xml; charset=utf-8",
    ] {
        let id = upload_ok(&srv, &alice, Some(ct), Some("x.html"), html.clone()).await;
        let r = get(&srv, &download_path(&id), Some(&alice.token)).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), ct);
        assert_eq!(
            r.header("content-disposition"),
            "attachment; filename=\"x.html\""
        );
        assert_protected(&r);
    }
}

#[tokio::test]
async fn bad_thumbnail_parameters_are_400() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let id = upload_ok(&srv, &alice, Some("image/png"), None, png(64, 64)).await;
    for (query, errcode) in [
        ("width=abc&height=32", "M_INVALID_PARAM"),
        ("width=-5&height=32", "M_INVALID_PARAM"),
        ("width=1.5&height=32", "M_INVALID_PARAM"),
        ("width=0&height=32", "M_INVALID_PARAM"),
        ("width=32&height=32&method=stretch", "M_INVALID_PARAM"),
        ("width=32&height=32&animated=maybe", "M_INVALID_PARAM"),
        ("width=32", "M_MISSING_PARAM"),
    ] {
        let r = get(&srv, &thumbnail_path(&id, query), Some(&alice.token)).await;
        assert_eq!(r.status, 400, "{query}: {}", r.json());
        assert_eq!(r.json()["errcode"], errcode, "{query}");
    }
}

#[tokio::test]
async fn corrupt_or_non_images_do_not_fail_the_server() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let mut truncated = png(300, 300);
    truncated.truncate(truncated.len() / 2);
    let mut garbage = png(8, 8)[..16].to_vec();
    garbage.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef].repeat(64));
    for (ct, data) in [
        ("image/png", truncated),
        ("image/png", garbage),
        ("text/plain", b"not an image".to_vec()),
        ("image/png", Vec::new()),
    ] {
        let id = upload_ok(&srv, &alice, Some(ct), None, data).await;
        let r = get(
            &srv,
            &thumbnail_path(&id, "width=32&height=32&method=crop"),
            Some(&alice.token),
        )
        .await;
        assert_eq!(r.status, 400, "{}", r.json());
        assert_eq!(r.json()["errcode"], "M_UNKNOWN");
    }
}

#[tokio::test]
async fn async_upload_to_a_created_id() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let (s, b) = srv
        .post("/_matrix/media/v1/create", &alice, json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    let uri = b["content_uri"].as_str().expect("content_uri");
    let id = uri
        .strip_prefix("mxc://localhost/")
        .expect("local")
        .to_owned();
    assert!(b["unused_expires_at"].as_i64().expect("expiry") > 0);

    // Not there yet.
    let r = get(
        &srv,
        &format!("{}?timeout_ms=0", download_path(&id)),
        Some(&alice.token),
    )
    .await;
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["errcode"], "M_NOT_YET_UPLOADED");

    // A download that waits gets the content as soon as it arrives.
    let waiter = {
        let (url, token) = (
            srv.url(&format!("{}?timeout_ms=10000", download_path(&id))),
            bob.token.clone(),
        );
        let http = srv.http.clone();
        tokio::spawn(async move { send(http.get(url).bearer_auth(token)).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let put_path = format!("/_matrix/media/v3/upload/localhost/{id}");
    let put = |u: &User, data: &'static [u8]| {
        send(
            srv.http
                .put(srv.url(&put_path))
                .bearer_auth(&u.token)
                .header("Content-Type", "text/plain")
                .query(&[("filename", "spät.txt")])
                .body(data),
        )
    };
    // Only the creator may fill it.
    let r = put(&bob, b"nicht meins").await;
    assert_eq!(r.status, 403, "{}", r.json());
    assert_eq!(r.json()["errcode"], "M_FORBIDDEN");
    let r = put(&alice, b"endlich da").await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json(), json!({}));
    let r = put(&alice, b"noch einmal").await;
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["errcode"], "M_CANNOT_OVERWRITE_MEDIA");

    let r = waiter.await.expect("waiter");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"endlich da");
    assert_eq!(
        r.header("content-disposition"),
        "inline; filename=\"sp_t.txt\"; filename*=utf-8''sp%C3%A4t.txt"
    );

    // Uploading to an id nobody created, or of another server, is M_NOT_FOUND.
    for path in [
        "/_matrix/media/v3/upload/localhost/neverCreated",
        "/_matrix/media/v3/upload/other.example/neverCreated",
    ] {
        let r = send(
            srv.http
                .put(srv.url(path))
                .bearer_auth(&alice.token)
                .body("x"),
        )
        .await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.json()["errcode"], "M_NOT_FOUND");
    }
}

#[tokio::test]
async fn byte_ranges_are_served() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    // Larger than the JSON body limit: the upload routes have their own.
    let data: Vec<u8> = (0..=255u8).cycle().take(3 << 20).collect();
    let id = upload_ok(&srv, &alice, Some("video/mp4"), None, data.clone()).await;
    let r = send(
        srv.http
            .get(srv.url(&download_path(&id)))
            .bearer_auth(&alice.token)
            .header("Range", "bytes=100000-100009"),
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, data[100_000..100_010]);
    assert_eq!(r.header("content-range"), "bytes 100000-100009/3145728");
    let r = send(
        srv.http
            .get(srv.url(&download_path(&id)))
            .bearer_auth(&alice.token)
            .header("Range", "bytes=4000000-"),
    )
    .await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), "bytes */3145728");
    // The whole file streams intact across many chunks.
    let r = get(&srv, &download_path(&id), Some(&alice.token)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
}
