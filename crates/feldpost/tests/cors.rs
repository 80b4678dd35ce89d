//! Browser clients: every response carries the CORS headers, and `OPTIONS` on any endpoint is
//! answered with them alone, without running the endpoint.

mod common;

use common::*;

fn assert_cors(headers: &reqwest::header::HeaderMap) {
    assert_eq!(headers["access-control-allow-origin"], "*");
    let methods = headers["access-control-allow-methods"]
        .to_str()
        .expect("ascii");
    for m in ["GET", "POST", "PUT", "DELETE", "OPTIONS"] {
        assert!(methods.contains(m), "{methods}");
    }
    let allowed = headers["access-control-allow-headers"]
        .to_str()
        .expect("ascii")
        .to_ascii_lowercase();
    for h in ["x-requested-with", "content-type", "authorization"] {
        assert!(allowed.contains(h), "{allowed}");
    }
}

#[tokio::test]
async fn every_response_carries_cors_headers_and_a_date() {
    let srv = TestServer::start().await;
    let http = reqwest::Client::new();
    for path in [
        "/_matrix/client/versions",
        "/_matrix/client/v3/account/whoami",
        "/_matrix/client/v3/nonsense",
        // Answered in front of the router, as an error here.
        "/_matrix/client/v3/sync",
    ] {
        let resp = http.get(srv.url(path)).send().await.expect("request");
        assert_cors(resp.headers());
        let date = resp.headers()["date"].to_str().expect("ascii").to_owned();
        assert!(httpdate::parse_http_date(&date).is_ok(), "{date}");
    }
    // And a sync that succeeds.
    let alice = srv.register("alice").await;
    let resp = http
        .get(srv.url("/_matrix/client/v3/sync?timeout=0"))
        .bearer_auth(&alice.token)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert_cors(resp.headers());
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert!(resp.headers().contains_key("date"));
    // The router's own 405 keeps its Matrix body and gains the headers too.
    let resp = http
        .delete(srv.url("/_matrix/client/v3/login"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 405);
    assert_cors(resp.headers());
}

#[tokio::test]
async fn options_runs_no_endpoint_logic() {
    let srv = TestServer::start().await;
    let http = reqwest::Client::new();
    // A preflight for registration, as a browser sends it: answered, and nobody registered.
    let resp = http
        .request(
            reqwest::Method::OPTIONS,
            srv.url("/_matrix/client/v3/register"),
        )
        .header("origin", "https://client.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .json(&serde_json::json!({
            "username": "anyone", "password": "long enough password", "auth": {"type": "m.login.dummy"}
        }))
        .send()
        .await
        .expect("request");
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_cors(resp.headers());
    // Without a preflight's headers, and on a path no route has, still only the headers.
    for path in ["/_matrix/client/v3/sync", "/_matrix/client/v3/nonsense"] {
        let resp = http
            .request(reqwest::Method::OPTIONS, srv.url(path))
            .send()
            .await
            .expect("request");
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        assert_cors(resp.headers());
        assert!(resp.headers().contains_key("date"), "{path}");
    }
    let (s, b) = srv
        .request(
            "GET",
            "/_matrix/client/v3/register/available?username=anyone",
            None,
            None,
        )
        .await;
    assert_eq!((s, b["available"].as_bool()), (200, Some(true)));
}
