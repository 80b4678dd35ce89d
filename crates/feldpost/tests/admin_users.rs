//! Synapse-compatible user administration: shared-secret registration, server version, the user
//! list with filters and pagination, details, create/modify, deactivation, password reset, the
//! admin flag, devices, whois, joined rooms.

mod common;

use common::*;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

async fn setup() -> (TestServer, User) {
    let srv =
        TestServer::start_with(|c| c.registration.shared_secret = Some("s3cret".into())).await;
    let root = srv.register("root").await;
    make_admin(&srv, &root).await;
    (srv, root)
}

fn mac(secret: &str, nonce: &str, user: &str, password: &str, admin: bool) -> String {
    let mut m = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(nonce.as_bytes());
    m.update(b"\0");
    m.update(user.as_bytes());
    m.update(b"\0");
    m.update(password.as_bytes());
    m.update(b"\0");
    m.update(if admin { b"admin" } else { b"notadmin" });
    hex::encode(m.finalize().into_bytes())
}

async fn nonce(srv: &TestServer) -> String {
    let (s, b) = srv
        .request("GET", "/_synapse/admin/v1/register", None, None)
        .await;
    assert_eq!(s, 200, "{b}");
    b["nonce"].as_str().unwrap().to_owned()
}

async fn login(srv: &TestServer, user: &str, password: &str) -> (u16, Value) {
    srv.request(
        "POST",
        "/_matrix/client/v3/login",
        None,
        Some(json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password})),
    )
    .await
}

#[tokio::test]
async fn shared_secret_registration() {
    let (srv, root) = setup().await;
    let n = nonce(&srv).await;
    let body = |n: &str, mac: String| json!({"nonce": n, "username": "ops", "displayname": "Operations", "password": "ops password", "admin": true, "mac": mac});
    // A wrong MAC is refused, and burns the nonce.
    let (s, b) = srv
        .request(
            "POST",
            "/_synapse/admin/v1/register",
            None,
            Some(body(&n, mac("wrong", &n, "ops", "ops password", true))),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{b}"
    );
    let (s, b) = srv
        .request(
            "POST",
            "/_synapse/admin/v1/register",
            None,
            Some(body(&n, mac("s3cret", &n, "ops", "ops password", true))),
        )
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (400, Some("unrecognised nonce")),
        "{b}"
    );
    // The admin flag is covered by the MAC.
    let n = nonce(&srv).await;
    let (s, _) = srv
        .request(
            "POST",
            "/_synapse/admin/v1/register",
            None,
            Some(body(&n, mac("s3cret", &n, "ops", "ops password", false))),
        )
        .await;
    assert_eq!(s, 403);
    let n = nonce(&srv).await;
    let (s, b) = srv
        .request(
            "POST",
            "/_synapse/admin/v1/register",
            None,
            Some(body(&n, mac("s3cret", &n, "ops", "ops password", true))),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["user_id"], "@ops:localhost");
    assert_eq!(b["home_server"], "localhost");
    let ops = User {
        user_id: "@ops:localhost".into(),
        token: b["access_token"].as_str().unwrap().into(),
        device_id: b["device_id"].as_str().unwrap().into(),
    };
    let (s, v) = srv.get("/_synapse/admin/v1/server_version", &ops).await;
    assert_eq!(s, 200, "an admin registered this way is an admin");
    assert!(
        v["server_version"]
            .as_str()
            .unwrap()
            .starts_with("Feldpost ")
    );
    let (_, u) = srv
        .get("/_synapse/admin/v2/users/@ops:localhost", &root)
        .await;
    assert_eq!(u["displayname"], "Operations");
    // Nonces are single use; the same name cannot be taken twice; malformed bodies are 400.
    let (s, _) = srv
        .request(
            "POST",
            "/_synapse/admin/v1/register",
            None,
            Some(body(&n, mac("s3cret", &n, "ops", "ops password", true))),
        )
        .await;
    assert_eq!(s, 400);
    let n = nonce(&srv).await;
    let (s, b) = srv
        .request(
            "POST",
            "/_synapse/admin/v1/register",
            None,
            Some(body(&n, mac("s3cret", &n, "ops", "ops password", true))),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_USER_IN_USE")),
        "{b}"
    );
    let (s, b) = srv
        .request(
            "POST",
            "/_synapse/admin/v1/register",
            None,
            Some(json!({"nonce": 1, "username": "x"})),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
    let n = nonce(&srv).await;
    let (s, b) = srv
        .request(
            "POST",
            "/_synapse/admin/v1/register",
            None,
            Some(json!({"nonce": n, "username": "x", "password": "long enough", "mac": "not hex"})),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{b}"
    );
}

#[tokio::test]
async fn shared_secret_registration_is_off_without_a_secret() {
    let srv = TestServer::start().await;
    for method in ["GET", "POST"] {
        let body = (method == "POST").then(
            || json!({"nonce": "n", "username": "u", "password": "long enough", "mac": "00"}),
        );
        let (s, b) = srv
            .request(method, "/_synapse/admin/v1/register", None, body)
            .await;
        assert_eq!(
            (s, b["error"].as_str()),
            (400, Some("Shared secret registration is not enabled")),
            "{b}"
        );
    }
}

#[tokio::test]
async fn user_list_filters_and_pages() {
    let (srv, root) = setup().await;
    // Prefixed names keep the server's own accounts out of the filtered lists.
    for name in ["t-anna", "t-bert", "t-carla", "t-dora"] {
        srv.register(name).await;
    }
    srv.put(
        "/_matrix/client/v3/profile/@root:localhost/displayname",
        &root,
        json!({"displayname": "The Boss"}),
    )
    .await;
    let list = |q: &str| {
        let path = format!("/_synapse/admin/v2/users{q}");
        let srv = &srv;
        let root = &root;
        async move {
            let (s, b) = srv.get(&path, root).await;
            assert_eq!(s, 200, "{path}: {b}");
            b
        }
    };
    let names = |b: &Value| -> Vec<String> {
        b["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let everyone = list("").await;
    assert!(everyone["total"].as_u64().unwrap() >= 5, "{everyone}");
    assert!(names(&everyone).contains(&"@feldpost-notices:localhost".to_owned()));
    let all = list("?user_id=%40t-").await;
    assert_eq!(all["total"], 4, "{all}");
    assert!(all.get("next_token").is_none());
    let first = &all["users"][0];
    assert_eq!(first["name"], "@t-anna:localhost");
    for key in [
        "admin",
        "deactivated",
        "is_guest",
        "creation_ts",
        "displayname",
        "user_type",
        "shadow_banned",
        "locked",
    ] {
        assert!(first.get(key).is_some(), "{key} missing: {first}");
    }
    let page = list("?user_id=%40t-&from=0&limit=2").await;
    assert_eq!(names(&page), ["@t-anna:localhost", "@t-bert:localhost"]);
    assert_eq!(page["next_token"], "2");
    let page = list("?user_id=%40t-&from=2&limit=2").await;
    assert_eq!(names(&page), ["@t-carla:localhost", "@t-dora:localhost"]);
    assert!(page.get("next_token").is_none());
    let rev = list("?user_id=%40t-&dir=b&limit=1").await;
    assert_eq!(names(&rev), ["@t-dora:localhost"]);
    assert_eq!(names(&list("?name=boss").await), ["@root:localhost"]);
    assert_eq!(names(&list("?user_id=carl").await), ["@t-carla:localhost"]);
    assert_eq!(names(&list("?admins=true").await), ["@root:localhost"]);
    assert_eq!(list("?admins=false&user_id=%40t-").await["total"], 4);
    let ordered = list("?order_by=creation_ts&dir=b&limit=1&guests=false").await;
    assert_eq!(ordered["users"].as_array().unwrap().len(), 1);
    // Deactivated users only when asked for.
    srv.post(
        "/_synapse/admin/v1/deactivate/@t-dora:localhost",
        &root,
        json!({}),
    )
    .await;
    assert_eq!(list("?user_id=%40t-").await["total"], 3);
    let with = list("?user_id=%40t-&deactivated=true").await;
    assert_eq!(with["total"], 4);
    assert!(
        with["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["name"] == "@t-dora:localhost" && u["deactivated"] == true)
    );
    for bad in [
        "?order_by=shoe_size",
        "?dir=x",
        "?from=-1",
        "?limit=ten",
        "?admins=maybe",
    ] {
        let (s, b) = srv
            .get(&format!("/_synapse/admin/v2/users{bad}"), &root)
            .await;
        assert_eq!(
            (s, b["errcode"].as_str()),
            (400, Some("M_INVALID_PARAM")),
            "{bad}: {b}"
        );
    }
}

#[tokio::test]
async fn create_modify_and_reactivate_users() {
    let (srv, root) = setup().await;
    let path = "/_synapse/admin/v2/users/@neo:localhost";
    let (s, b) = srv.get(path, &root).await;
    assert_eq!((s, b["errcode"].as_str()), (404, Some("M_NOT_FOUND")));
    let (s, b) = srv
        .put(
            path,
            &root,
            json!({"password": "neo password", "displayname": "Neo", "admin": false, "threepids": [], "external_ids": []}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["name"], "@neo:localhost");
    assert_eq!(b["displayname"], "Neo");
    assert_eq!(b["threepids"], json!([]));
    assert!(
        b["creation_ts"].as_i64().unwrap() < 100_000_000_000,
        "seconds, as Synapse reports"
    );
    let (s, _) = login(&srv, "neo", "neo password").await;
    assert_eq!(s, 200);

    // Modify: 200, display name and admin flag; a new password signs out devices.
    let (s, b) = srv
        .put(path, &root, json!({"displayname": "Neo A.", "admin": true}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (b["displayname"].as_str(), b["admin"].as_bool()),
        (Some("Neo A."), Some(true))
    );
    let (_, session) = login(&srv, "neo", "neo password").await;
    let neo = User {
        user_id: "@neo:localhost".into(),
        token: session["access_token"].as_str().unwrap().into(),
        device_id: session["device_id"].as_str().unwrap().into(),
    };
    let (s, _) = srv
        .put(path, &root, json!({"password": "second password"}))
        .await;
    assert_eq!(s, 200);
    let (s, _) = srv.get("/_matrix/client/v3/account/whoami", &neo).await;
    assert_eq!(s, 401, "devices signed out");
    assert_eq!(login(&srv, "neo", "second password").await.0, 200);

    // Deactivate through PUT; reactivating needs a password.
    let (s, b) = srv.put(path, &root, json!({"deactivated": true})).await;
    assert_eq!((s, b["deactivated"].as_bool()), (200, Some(true)), "{b}");
    assert_eq!(login(&srv, "neo", "second password").await.0, 403);
    let (s, b) = srv.put(path, &root, json!({"deactivated": false})).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
    let (s, b) = srv
        .put(
            path,
            &root,
            json!({"deactivated": false, "password": "third password"}),
        )
        .await;
    assert_eq!((s, b["deactivated"].as_bool()), (200, Some(false)), "{b}");
    assert_eq!(login(&srv, "neo", "third password").await.0, 200);

    // What this server does not have is said so; wrong types are 400.
    let (s, b) = srv
        .put(
            path,
            &root,
            json!({"threepids": [{"medium": "email", "address": "a@b.c"}]}),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (404, Some("M_UNRECOGNIZED")),
        "{b}"
    );
    let (s, b) = srv.put(path, &root, json!({"locked": true})).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (404, Some("M_UNRECOGNIZED")),
        "{b}"
    );
    for body in [
        json!({"admin": "yes"}),
        json!({"displayname": 5}),
        json!({"user_type": "bot"}),
    ] {
        let (s, b) = srv.put(path, &root, body.clone()).await;
        assert_eq!(
            (s, b["errcode"].as_str()),
            (400, Some("M_INVALID_PARAM")),
            "{body}: {b}"
        );
    }
    let (s, b) = srv
        .put("/_synapse/admin/v2/users/@x:elsewhere", &root, json!({}))
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
    let (s, _) = srv
        .put("/_synapse/admin/v2/users/not-a-user-id", &root, json!({}))
        .await;
    assert_eq!(s, 400);
    let (s, b) = srv
        .put(
            "/_synapse/admin/v2/users/@Upper:localhost",
            &root,
            json!({"password": "long enough"}),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_USERNAME")),
        "{b}"
    );
    // The server's own notices account is not for operators to take over.
    let (s, b) = srv
        .put(
            "/_synapse/admin/v2/users/@feldpost-notices:localhost",
            &root,
            json!({"password": "takeover password"}),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{b}"
    );
}

#[tokio::test]
async fn deactivate_reset_password_and_admin_flag() {
    let (srv, root) = setup().await;
    let anna = srv.register("anna").await;
    let room = srv
        .create_room(&anna, json!({"name": "Lage", "preset": "public_chat"}))
        .await;
    srv.join(&root, &room).await;

    // Reset password: the old one stops working, devices are signed out unless kept.
    let (s, b) = srv
        .post(
            "/_synapse/admin/v1/reset_password/@anna:localhost",
            &root,
            json!({"new_password": "new anna password", "logout_devices": false}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        srv.get("/_matrix/client/v3/account/whoami", &anna).await.0,
        200
    );
    assert_eq!(login(&srv, "anna", "correct horse").await.0, 403);
    assert_eq!(login(&srv, "anna", "new anna password").await.0, 200);
    let (s, _) = srv
        .post(
            "/_synapse/admin/v1/reset_password/@anna:localhost",
            &root,
            json!({"new_password": "newer anna password"}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        srv.get("/_matrix/client/v3/account/whoami", &anna).await.0,
        401
    );
    let (s, b) = srv
        .post(
            "/_synapse/admin/v1/reset_password/@anna:localhost",
            &root,
            json!({"new_password": "short"}),
        )
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_WEAK_PASSWORD")));
    let (s, b) = srv
        .post(
            "/_synapse/admin/v1/reset_password/@anna:localhost",
            &root,
            json!({}),
        )
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_MISSING_PARAM")));
    let (s, _) = srv
        .post(
            "/_synapse/admin/v1/reset_password/@nobody:localhost",
            &root,
            json!({"new_password": "long enough"}),
        )
        .await;
    assert_eq!(s, 404);

    // Admin flag.
    let (s, b) = srv
        .get("/_synapse/admin/v1/users/@anna:localhost/admin", &root)
        .await;
    assert_eq!((s, b), (200, json!({"admin": false})));
    let (s, _) = srv
        .put(
            "/_synapse/admin/v1/users/@anna:localhost/admin",
            &root,
            json!({"admin": true}),
        )
        .await;
    assert_eq!(s, 200);
    let (_, b) = srv
        .get("/_synapse/admin/v1/users/@anna:localhost/admin", &root)
        .await;
    assert_eq!(b, json!({"admin": true}));
    let (s, b) = srv
        .put(
            "/_synapse/admin/v1/users/@root:localhost/admin",
            &root,
            json!({"admin": false}),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "no self-demotion: {b}"
    );
    let (s, _) = srv
        .put(
            "/_synapse/admin/v1/users/@anna:localhost/admin",
            &root,
            json!({}),
        )
        .await;
    assert_eq!(s, 400);

    // Deactivate with erase: the account leaves its rooms and loses its profile.
    let (_, jr) = srv
        .get(
            "/_synapse/admin/v1/users/@anna:localhost/joined_rooms",
            &root,
        )
        .await;
    assert_eq!(jr, json!({"total": 1, "joined_rooms": [room]}));
    let (s, b) = srv
        .post(
            "/_synapse/admin/v1/deactivate/@anna:localhost",
            &root,
            json!({"erase": true}),
        )
        .await;
    assert_eq!(
        (s, b["id_server_unbind_result"].as_str()),
        (200, Some("no-support")),
        "{b}"
    );
    let (_, u) = srv
        .get("/_synapse/admin/v2/users/@anna:localhost", &root)
        .await;
    assert_eq!(
        (u["deactivated"].as_bool(), u["displayname"].as_str()),
        (Some(true), None),
        "{u}"
    );
    let (_, m) = srv
        .get(
            &format!("/_synapse/admin/v1/rooms/{}/members", enc(&room)),
            &root,
        )
        .await;
    assert_eq!(m["members"], json!(["@root:localhost"]));
    let (s, _) = srv
        .post(
            "/_synapse/admin/v1/deactivate/@nobody:localhost",
            &root,
            json!({}),
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = srv
        .post(
            "/_synapse/admin/v1/deactivate/@anna:localhost",
            &root,
            json!({"erase": "yes"}),
        )
        .await;
    assert_eq!(s, 400);

    // The audit trail has it all.
    let (_, a) = srv.get("/_feldpost/admin/v1/audit?limit=100", &root).await;
    let actions: Vec<&str> = a["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for want in ["user.password", "user.admin.grant", "user.deactivate"] {
        assert!(actions.contains(&want), "{want}: {actions:?}");
    }
    assert_eq!(a["entries"][0]["actor"], "@root:localhost");
}

#[tokio::test]
async fn devices_and_whois() {
    let (srv, root) = setup().await;
    let anna = srv.register("anna").await;
    // Activity is written in batches, and flushed before it is read.
    srv.get("/_matrix/client/v3/account/whoami", &anna).await;
    let base = "/_synapse/admin/v2/users/@anna:localhost/devices";
    let (s, b) = srv.get(base, &root).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["total"], 1);
    let d = &b["devices"][0];
    assert_eq!(d["device_id"], anna.device_id.as_str());
    assert_eq!(d["user_id"], "@anna:localhost");
    assert_eq!(d["last_seen_ip"], "127.0.0.1");
    let one = format!("{base}/{}", anna.device_id);
    let (s, _) = srv
        .put(&one, &root, json!({"display_name": "Diensthandy"}))
        .await;
    assert_eq!(s, 200);
    let (_, d) = srv.get(&one, &root).await;
    assert_eq!(d["display_name"], "Diensthandy");
    let (s, _) = srv.get(&format!("{base}/NOPE"), &root).await;
    assert_eq!(s, 404);

    let (s, w) = srv
        .get("/_synapse/admin/v1/whois/@anna:localhost", &root)
        .await;
    assert_eq!(s, 200, "{w}");
    assert_eq!(w["user_id"], "@anna:localhost");
    let conns = &w["devices"][anna.device_id.as_str()]["sessions"][0]["connections"];
    assert_eq!(conns[0]["ip"], "127.0.0.1");
    assert!(conns[0]["last_seen"].is_i64());

    // A second device, then delete both ways.
    let (_, second) = login(&srv, "anna", "correct horse").await;
    let second_id = second["device_id"].as_str().unwrap().to_owned();
    let (s, _) = srv
        .post(
            "/_synapse/admin/v2/users/@anna:localhost/delete_devices",
            &root,
            json!({"devices": [second_id]}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = srv.request("DELETE", &one, Some(&root.token), None).await;
    assert_eq!(s, 200);
    let (_, b) = srv.get(base, &root).await;
    assert_eq!(b["total"], 0);
    assert_eq!(
        srv.get("/_matrix/client/v3/account/whoami", &anna).await.0,
        401
    );
    let (s, b) = srv
        .post(
            "/_synapse/admin/v2/users/@anna:localhost/delete_devices",
            &root,
            json!({}),
        )
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_MISSING_PARAM")));
    let (s, _) = srv
        .get("/_synapse/admin/v2/users/@nobody:localhost/devices", &root)
        .await;
    assert_eq!(s, 404);
    let (s, _) = srv
        .get("/_synapse/admin/v1/whois/@nobody:localhost", &root)
        .await;
    assert_eq!(s, 404);
}
