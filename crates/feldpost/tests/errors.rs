//! Bad requests get the spec's Matrix error and status, and change nothing.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn unknown_endpoints_and_methods() {
    let srv = TestServer::start().await;
    let (s, b) = srv
        .request("GET", "/_matrix/client/v3/nonsense", None, None)
        .await;
    assert_eq!((s, b["errcode"].as_str()), (404, Some("M_UNRECOGNIZED")));
    let (s, b) = srv
        .request("DELETE", "/_matrix/client/v3/login", None, None)
        .await;
    assert_eq!((s, b["errcode"].as_str()), (405, Some("M_UNRECOGNIZED")));
    let (s, b) = srv.request("GET", "/totally/elsewhere", None, None).await;
    assert_eq!((s, b["errcode"].as_str()), (404, Some("M_UNRECOGNIZED")));
}

#[tokio::test]
async fn tokens() {
    let srv = TestServer::start().await;
    let (s, b) = srv
        .request("GET", "/_matrix/client/v3/account/whoami", None, None)
        .await;
    assert_eq!((s, b["errcode"].as_str()), (401, Some("M_MISSING_TOKEN")));
    let (s, b) = srv
        .request(
            "GET",
            "/_matrix/client/v3/account/whoami",
            Some("made-up"),
            None,
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str(), b["soft_logout"].as_bool()),
        (401, Some("M_UNKNOWN_TOKEN"), Some(false))
    );
    let alice = srv.register("alice").await;
    let (s, _) = srv
        .request(
            "GET",
            &format!(
                "/_matrix/client/v3/account/whoami?access_token={}",
                alice.token
            ),
            None,
            None,
        )
        .await;
    assert_eq!(s, 200, "query-parameter tokens still work");
}

#[tokio::test]
async fn malformed_bodies() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let room = srv.create_room(&alice, json!({})).await;
    let send = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/x1",
        enc(&room)
    );
    let (s, b) = srv
        .raw("PUT", &send, Some(&alice.token), b"{not json")
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_NOT_JSON")));
    let (s, b) = srv.raw("PUT", &send, Some(&alice.token), b"[1,2,3]").await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_BAD_JSON")));
    let (s, b) = srv
        .post("/_matrix/client/v3/createRoom", &alice, json!({"name": 5}))
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{b}");
    let (s, b) = srv
        .post(
            "/_matrix/client/v3/createRoom",
            &alice,
            json!({"invite": ["not a user"]}),
        )
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{b}");
    let (s, b) = srv
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            &alice,
            json!({}),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_MISSING_PARAM")),
        "{b}"
    );
    // Floats are not canonical JSON and cannot go into an event.
    let (s, b) = srv
        .put(
            &send,
            &alice,
            json!({"msgtype": "m.text", "body": "x", "n": 1.5}),
        )
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{b}");
    // Nothing was sent.
    let (_, m) = srv
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
                enc(&room)
            ),
            &alice,
        )
        .await;
    assert!(
        m["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["type"] != "m.room.message")
    );
}

#[tokio::test]
async fn oversized_requests() {
    let srv = TestServer::start_with(|c| c.limits.max_json_body = 4096).await;
    let alice = srv.register("alice").await;
    let room = srv.create_room(&alice, json!({})).await;
    let big = "x".repeat(10_000);
    let (s, b) = srv
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/big",
                enc(&room)
            ),
            &alice,
            json!({"msgtype": "m.text", "body": big}),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (413, Some("M_TOO_LARGE")),
        "{b}"
    );
    // An event over the PDU size limit is refused even when the body limit allows it.
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let room = srv.create_room(&alice, json!({})).await;
    let big = "x".repeat(70_000);
    let (s, b) = srv
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/big",
                enc(&room)
            ),
            &alice,
            json!({"msgtype": "m.text", "body": big}),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (413, Some("M_TOO_LARGE")),
        "{b}"
    );
}

#[tokio::test]
async fn malformed_identifiers_and_params() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let (s, b) = srv
        .put(
            "/_matrix/client/v3/rooms/not-a-room/send/m.room.message/t",
            &alice,
            json!({}),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
    let (s, b) = srv.get("/_matrix/client/v3/sync?timeout=abc", &alice).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
    let (s, b) = srv
        .get("/_matrix/client/v3/sync?since=garbage", &alice)
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
    let room = srv.create_room(&alice, json!({})).await;
    let (s, b) = srv
        .get(
            &format!("/_matrix/client/v3/rooms/{}/messages", enc(&room)),
            &alice,
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_MISSING_PARAM")),
        "{b}"
    );
    let (s, b) = srv
        .get(
            &format!("/_matrix/client/v3/rooms/{}/messages?dir=x", enc(&room)),
            &alice,
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
    let (s, b) = srv
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&from=zzz",
                enc(&room)
            ),
            &alice,
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
    let (s, b) = srv
        .get("/_matrix/client/v3/user/@alice:localhost/filter/99", &alice)
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{b}"
    );
}

#[tokio::test]
async fn message_rate_limit() {
    let srv = TestServer::start_with(|c| {
        c.rate_limits.enabled = true;
        c.rate_limits.registration = feldpost_service::config::Rate {
            per_second: 100.0,
            burst: 100.0,
        };
        c.rate_limits.message = feldpost_service::config::Rate {
            per_second: 0.01,
            burst: 3.0,
        };
    })
    .await;
    let alice = srv.register("alice").await;
    let room = srv.create_room(&alice, json!({})).await;
    let mut limited = None;
    for i in 0..5 {
        let (s, b) = srv
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{}/send/m.room.message/r{i}",
                    enc(&room)
                ),
                &alice,
                json!({"msgtype": "m.text", "body": "x"}),
            )
            .await;
        if s == 429 {
            limited = Some(b);
            break;
        }
    }
    let b = limited.expect("rate limited");
    assert_eq!(b["errcode"], "M_LIMIT_EXCEEDED");
    assert!(b["retry_after_ms"].as_u64().unwrap() > 0);
}
