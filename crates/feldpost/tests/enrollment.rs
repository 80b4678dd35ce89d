//! Token-authenticated registration and enrollments: the registration_token UIA stage, the
//! validity endpoint, enrollments bound to one username (single use, short-lived, revocable,
//! audited), and the public enrollment page.

mod common;

use common::*;
use serde_json::{Value, json};

async fn closed() -> TestServer {
    TestServer::start_with(|c| c.registration.open = false).await
}

async fn admin(srv: &TestServer) -> User {
    // Registration is closed: create the admin through the service layer.
    let id = srv
        .services
        .accounts
        .register(Some("root"), Some("correct horse"), true)
        .await
        .expect("admin");
    let s = srv
        .services
        .accounts
        .create_session(&id, None, None)
        .await
        .expect("session");
    User {
        user_id: s.user_id.to_string(),
        token: s.access_token,
        device_id: s.device_id,
    }
}

async fn register_with_token(srv: &TestServer, username: &str, token: &str) -> (u16, Value) {
    srv.request(
        "POST",
        "/_matrix/client/v3/register",
        None,
        Some(json!({
            "username": username,
            "password": "correct horse",
            "auth": {"type": "m.login.registration_token", "token": token},
        })),
    )
    .await
}

async fn enroll(srv: &TestServer, admin: &User, body: Value) -> Value {
    let (s, b) = srv
        .post("/_feldpost/admin/v1/enrollments", admin, body)
        .await;
    assert_eq!(s, 200, "{b}");
    b
}

async fn validity(srv: &TestServer, token: &str) -> bool {
    let (s, b) = srv
        .request(
            "GET",
            &format!(
                "/_matrix/client/v1/register/m.login.registration_token/validity?token={}",
                enc(token)
            ),
            None,
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    b["valid"].as_bool().expect("valid")
}

#[tokio::test]
async fn closed_registration_offers_only_the_token_stage() {
    let srv = closed().await;
    let (s, b) = srv
        .request(
            "POST",
            "/_matrix/client/v3/register",
            None,
            Some(json!({"username": "x", "password": "long enough"})),
        )
        .await;
    assert_eq!(s, 401, "{b}");
    assert_eq!(
        b["flows"],
        json!([{"stages": ["m.login.registration_token"]}])
    );
    let session = b["session"].as_str().unwrap();
    // The dummy stage does not open a closed server.
    let (s, b) = srv
        .request(
            "POST",
            "/_matrix/client/v3/register",
            None,
            Some(json!({"username": "x", "password": "long enough", "auth": {"type": "m.login.dummy", "session": session}})),
        )
        .await;
    assert_eq!(s, 401, "{b}");
    assert!(b["completed"].as_array().unwrap().is_empty());
    // An unknown token fails the stage with M_FORBIDDEN in the UIA body.
    let (s, b) = register_with_token(&srv, "x", "nonexistent").await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (401, Some("M_FORBIDDEN")),
        "{b}"
    );
    // A missing token is a missing parameter.
    let (s, b) = srv
        .request(
            "POST",
            "/_matrix/client/v3/register",
            None,
            Some(json!({"username": "x", "password": "long enough", "auth": {"type": "m.login.registration_token"}})),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (401, Some("M_MISSING_PARAM")),
        "{b}"
    );

    // The usual two-step flow: the session from the first 401 completes with a valid token.
    srv.services
        .registration_tokens
        .create(
            &feldpost_service::enrollment::Actor::Cli,
            feldpost_service::enrollment::NewToken {
                token: Some("two-step".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (s, b) = srv
        .request(
            "POST",
            "/_matrix/client/v3/register",
            None,
            Some(json!({"username": "x", "password": "long enough", "auth": {"type": "m.login.registration_token", "token": "two-step", "session": session}})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["user_id"], "@x:localhost");
}

#[tokio::test]
async fn open_registration_offers_dummy_and_token() {
    let srv = TestServer::start().await;
    let (s, b) = srv
        .request(
            "POST",
            "/_matrix/client/v3/register",
            None,
            Some(json!({"username": "x", "password": "long enough"})),
        )
        .await;
    assert_eq!(s, 401);
    assert_eq!(
        b["flows"],
        json!([{"stages": ["m.login.dummy"]}, {"stages": ["m.login.registration_token"]}])
    );
    // An enrollment still works, and brings its display name.
    let root = srv.register("root").await;
    make_admin(&srv, &root).await;
    let e = enroll(
        &srv,
        &root,
        json!({"username": "neu", "displayname": "Neu Ling"}),
    )
    .await;
    let (s, b) = register_with_token(&srv, "neu", e["token"].as_str().unwrap()).await;
    assert_eq!(s, 200, "{b}");
    let (_, p) = srv
        .request(
            "GET",
            "/_matrix/client/v3/profile/@neu:localhost",
            None,
            None,
        )
        .await;
    assert_eq!(p["displayname"], "Neu Ling");
}

#[tokio::test]
async fn an_enrollment_registers_exactly_one_user() {
    let srv = closed().await;
    let root = admin(&srv).await;
    let e = enroll(
        &srv,
        &root,
        json!({"username": "anna", "displayname": "Anna Beispiel"}),
    )
    .await;
    let token = e["token"].as_str().unwrap().to_owned();
    assert!(token.len() >= 32, "enrollment tokens are long: {token}");
    assert_eq!(e["user_id"], "@anna:localhost");
    assert_eq!(e["state"], "valid");
    assert!(e["qr_svg"].as_str().unwrap().contains("<svg"));
    let link = e["link"].as_str().unwrap();
    assert_eq!(link, format!("{}/_feldpost/enroll/{token}", srv.base));
    // Default lifetime: 15 minutes.
    let created = e["created_ts"].as_i64().unwrap();
    let expiry = e["expiry_time"].as_i64().unwrap();
    assert!((expiry - created - 15 * 60_000).abs() < 5_000, "{e}");
    assert!(validity(&srv, &token).await);

    // Bound to anna: nobody else can use it, and trying does not use it up.
    let (s, b) = register_with_token(&srv, "mallory", &token).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (401, Some("M_FORBIDDEN")),
        "{b}"
    );
    let (s, b) = srv
        .request(
            "POST",
            "/_matrix/client/v3/register",
            None,
            Some(json!({"password": "correct horse", "auth": {"type": "m.login.registration_token", "token": token}})),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (401, Some("M_FORBIDDEN")),
        "{b}"
    );
    assert!(validity(&srv, &token).await);

    let (s, b) = register_with_token(&srv, "anna", &token).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["user_id"], "@anna:localhost");
    let anna = User {
        user_id: b["user_id"].as_str().unwrap().into(),
        token: b["access_token"].as_str().unwrap().into(),
        device_id: b["device_id"].as_str().unwrap().into(),
    };
    let (_, p) = srv
        .get("/_matrix/client/v3/profile/@anna:localhost", &anna)
        .await;
    assert_eq!(p["displayname"], "Anna Beispiel");

    // Single use: spent.
    assert!(!validity(&srv, &token).await);
    let (s, b) = register_with_token(&srv, "anna2", &token).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (401, Some("M_FORBIDDEN")),
        "{b}"
    );
    let (s, b) = srv
        .get(
            &format!("/_feldpost/admin/v1/enrollments/{}", e["id"]),
            &root,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["state"], "used");
    assert_eq!(b["used_by"], "@anna:localhost");
    // It is no longer among the pending ones, but is listed with all.
    let (_, b) = srv.get("/_feldpost/admin/v1/enrollments", &root).await;
    assert!(b["enrollments"].as_array().unwrap().is_empty(), "{b}");
    let (_, b) = srv
        .get("/_feldpost/admin/v1/enrollments?all=true", &root)
        .await;
    assert_eq!(b["enrollments"].as_array().unwrap().len(), 1);

    // Audited: created and used.
    let (_, a) = srv.get("/_feldpost/admin/v1/audit", &root).await;
    let actions: Vec<&str> = a["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"enrollment.create"), "{a}");
    assert!(actions.contains(&"enrollment.use"), "{a}");
}

#[tokio::test]
async fn enrollments_are_listed_revoked_and_refused_for_taken_names() {
    let srv = closed().await;
    let root = admin(&srv).await;
    let e = enroll(&srv, &root, json!({"username": "@bert:localhost"})).await;
    assert_eq!(e["username"], "bert");
    let id = e["id"].as_i64().unwrap();
    let (s, b) = srv.get("/_feldpost/admin/v1/enrollments", &root).await;
    assert_eq!(s, 200);
    assert_eq!(b["enrollments"][0]["id"], id);

    // The QR code as an SVG image.
    let resp = srv
        .http
        .get(srv.url(&format!("/_feldpost/admin/v1/enrollments/{id}/qr.svg")))
        .bearer_auth(&root.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/svg+xml");
    assert!(resp.text().await.unwrap().contains("<svg"));

    let (s, b) = srv
        .request(
            "DELETE",
            &format!("/_feldpost/admin/v1/enrollments/{id}"),
            Some(&root.token),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let token = e["token"].as_str().unwrap();
    assert!(!validity(&srv, token).await);
    let (s, b) = register_with_token(&srv, "bert", token).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (401, Some("M_FORBIDDEN")),
        "{b}"
    );
    let (s, b) = srv
        .request(
            "DELETE",
            &format!("/_feldpost/admin/v1/enrollments/{id}"),
            Some(&root.token),
            None,
        )
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_INVALID_PARAM")));
    let (s, _) = srv
        .request(
            "DELETE",
            "/_feldpost/admin/v1/enrollments/99999",
            Some(&root.token),
            None,
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = srv
        .get("/_feldpost/admin/v1/enrollments/not-a-number", &root)
        .await;
    assert_eq!(s, 404);

    // Names that exist, or are not valid, cannot be enrolled.
    let (s, b) = srv
        .post(
            "/_feldpost/admin/v1/enrollments",
            &root,
            json!({"username": "root"}),
        )
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_USER_IN_USE")));
    for bad in ["Bad", "with space", "@x:elsewhere", ""] {
        let (s, b) = srv
            .post(
                "/_feldpost/admin/v1/enrollments",
                &root,
                json!({"username": bad}),
            )
            .await;
        assert_eq!(
            (s, b["errcode"].as_str()),
            (400, Some("M_INVALID_USERNAME")),
            "{bad}: {b}"
        );
    }
    for body in [
        json!({"username": "x", "lifetime_minutes": 0}),
        json!({"username": "x", "lifetime_minutes": 100000}),
        json!({"username": "x", "displayname": "a\u{7}b"}),
        json!({"username": "x", "lifetime_minutes": "ten"}),
    ] {
        let (s, b) = srv
            .post("/_feldpost/admin/v1/enrollments", &root, body.clone())
            .await;
        assert_eq!(
            (s, b["errcode"].as_str()),
            (400, Some("M_INVALID_PARAM")),
            "{body}: {b}"
        );
    }
    let (s, b) = srv
        .post("/_feldpost/admin/v1/enrollments", &root, json!({}))
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_MISSING_PARAM")));
    let (_, a) = srv.get("/_feldpost/admin/v1/audit?limit=1", &root).await;
    assert_eq!(a["entries"][0]["action"], "enrollment.revoke");
    assert_eq!(a["entries"][0]["target"], "@bert:localhost");
    assert!(a["next_before"].is_i64());
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let srv = closed().await;
    let root = admin(&srv).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let (s, b) = srv
        .post(
            "/_synapse/admin/v1/registration_tokens/new",
            &root,
            json!({"token": "shortlived", "expiry_time": now + 800}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(validity(&srv, "shortlived").await);
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    assert!(!validity(&srv, "shortlived").await);
    let (s, b) = register_with_token(&srv, "late", "shortlived").await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (401, Some("M_FORBIDDEN")),
        "{b}"
    );
    let (s, b) = srv
        .request("GET", "/_feldpost/enroll/shortlived", None, None)
        .await;
    assert_eq!(s, 410, "{b}");
}

#[tokio::test]
async fn a_plain_token_serves_several_users_up_to_its_limit() {
    let srv = closed().await;
    let root = admin(&srv).await;
    let (s, b) = srv
        .post(
            "/_synapse/admin/v1/registration_tokens/new",
            &root,
            json!({"token": "team-2", "uses_allowed": 2}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    for name in ["one", "two"] {
        let (s, b) = register_with_token(&srv, name, "team-2").await;
        assert_eq!(s, 200, "{b}");
    }
    let (s, b) = register_with_token(&srv, "three", "team-2").await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (401, Some("M_FORBIDDEN")),
        "{b}"
    );
    let (_, t) = srv
        .get("/_synapse/admin/v1/registration_tokens/team-2", &root)
        .await;
    assert_eq!(
        t,
        json!({"token": "team-2", "uses_allowed": 2, "pending": 0, "completed": 2, "expiry_time": null})
    );
    // A registration that fails after the token stage gives its use back.
    let (_, _) = srv
        .request(
            "PUT",
            "/_synapse/admin/v1/registration_tokens/team-2",
            Some(&root.token),
            Some(json!({"uses_allowed": 3})),
        )
        .await;
    let (s, b) = srv
        .request(
            "POST",
            "/_matrix/client/v3/register",
            None,
            Some(json!({"username": "weak", "password": "x", "auth": {"type": "m.login.registration_token", "token": "team-2"}})),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_WEAK_PASSWORD")),
        "{b}"
    );
    let (_, t) = srv
        .get("/_synapse/admin/v1/registration_tokens/team-2", &root)
        .await;
    assert_eq!(
        (t["completed"].as_i64(), t["pending"].as_i64()),
        (Some(2), Some(0)),
        "{t}"
    );
    let (s, b) = register_with_token(&srv, "three", "team-2").await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn the_enrollment_page_shows_what_to_type_escaped_and_locked_down() {
    let srv = closed().await;
    let root = admin(&srv).await;
    let e = enroll(
        &srv,
        &root,
        json!({"username": "carla", "displayname": "<script>alert(1)</script> & \"Co\""}),
    )
    .await;
    let token = e["token"].as_str().unwrap();
    let resp = srv
        .http
        .get(srv.url(&format!("/_feldpost/enroll/{token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(resp.headers()["referrer-policy"], "no-referrer");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    let html = resp.text().await.unwrap();
    assert!(
        !html.contains("<script>alert"),
        "display name must be escaped"
    );
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;Co&quot;"));
    assert!(html.contains(token));
    assert!(html.contains(&srv.base), "server address on the page");
    assert!(html.contains("carla"));
    assert!(html.contains("lang=\"de\"") && html.contains("lang=\"en\""));
    assert!(html.contains("Registrierungs-Token") && html.contains("Registration token"));
    // No inline script or style.
    assert!(!html.contains("<script>") && !html.contains("style="));
    for asset in ["/_feldpost/enroll.css", "/_feldpost/enroll.js"] {
        let r = srv.http.get(srv.url(asset)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{asset}");
    }

    // Unknown, malformed and used tokens get a page that says so, without the token.
    let r = srv
        .http
        .get(srv.url("/_feldpost/enroll/doesnotexist"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = srv
        .http
        .get(srv.url("/_feldpost/enroll/%3Cb%3E"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(!r.text().await.unwrap().contains("<b>"));
    let (s, _) = register_with_token(&srv, "carla", token).await;
    assert_eq!(s, 200);
    let r = srv
        .http
        .get(srv.url(&format!("/_feldpost/enroll/{token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410);
    let text = r.text().await.unwrap();
    assert!(!text.contains(token));
    assert!(text.contains("bereits verwendet") && text.contains("already been used"));
}

#[tokio::test]
async fn a_reservation_holds_the_last_use() {
    use feldpost_storage::Reservation;
    let srv = closed().await;
    let root = admin(&srv).await;
    let (s, _) = srv
        .post(
            "/_synapse/admin/v1/registration_tokens/new",
            &root,
            json!({"token": "single", "uses_allowed": 1}),
        )
        .await;
    assert_eq!(s, 200);
    let store = &srv.services.store;
    let hash = feldpost_service::accounts::hash_token("single");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let a = store
        .reserve_registration_token(&hash, "session-a", now, now + 60_000)
        .await
        .unwrap();
    assert!(matches!(a, Reservation::Reserved { .. }));
    // The same session may renew; another may not take it.
    let again = store
        .reserve_registration_token(&hash, "session-a", now, now + 60_000)
        .await
        .unwrap();
    assert!(matches!(again, Reservation::Reserved { .. }));
    let b = store
        .reserve_registration_token(&hash, "session-b", now, now + 60_000)
        .await
        .unwrap();
    assert_eq!(b, Reservation::Invalid);
    let (_, t) = srv
        .get("/_synapse/admin/v1/registration_tokens/single", &root)
        .await;
    assert_eq!(
        (t["pending"].as_i64(), t["completed"].as_i64()),
        (Some(1), Some(0))
    );
    assert!(!validity(&srv, "single").await);
    // A lapsed reservation frees the use.
    let later = now + 120_000;
    let b = store
        .reserve_registration_token(&hash, "session-b", later, later + 60_000)
        .await
        .unwrap();
    assert!(matches!(b, Reservation::Reserved { .. }));
}
