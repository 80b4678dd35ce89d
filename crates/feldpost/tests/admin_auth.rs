//! Who may use the admin API: server admins only. Every admin endpoint answers 401 without a
//! token, 403 M_FORBIDDEN to users who are not admins (or no longer are), and 401 to a
//! deactivated admin's old token. `[admin] listen` moves the admin API and the console to their
//! own listener and off the main one.

mod common;

use common::*;
use feldpost::Application;
use serde_json::{Value, json};

/// Every admin endpoint, with a body where it takes one.
fn endpoints() -> Vec<(&'static str, String, Option<Value>)> {
    let u = "@victim:localhost";
    let u = enc(u);
    let r = enc("!room:localhost");
    vec![
        ("GET", "/_synapse/admin/v1/server_version".into(), None),
        ("GET", "/_synapse/admin/v2/users".into(), None),
        ("GET", format!("/_synapse/admin/v2/users/{u}"), None),
        (
            "PUT",
            format!("/_synapse/admin/v2/users/{u}"),
            Some(json!({"admin": true})),
        ),
        (
            "POST",
            format!("/_synapse/admin/v1/deactivate/{u}"),
            Some(json!({})),
        ),
        (
            "POST",
            format!("/_synapse/admin/v1/reset_password/{u}"),
            Some(json!({"new_password": "hijacked password"})),
        ),
        ("GET", format!("/_synapse/admin/v1/users/{u}/admin"), None),
        (
            "PUT",
            format!("/_synapse/admin/v1/users/{u}/admin"),
            Some(json!({"admin": true})),
        ),
        (
            "GET",
            format!("/_synapse/admin/v1/users/{u}/joined_rooms"),
            None,
        ),
        ("GET", format!("/_synapse/admin/v2/users/{u}/devices"), None),
        (
            "GET",
            format!("/_synapse/admin/v2/users/{u}/devices/D"),
            None,
        ),
        (
            "PUT",
            format!("/_synapse/admin/v2/users/{u}/devices/D"),
            Some(json!({"display_name": "x"})),
        ),
        (
            "DELETE",
            format!("/_synapse/admin/v2/users/{u}/devices/D"),
            None,
        ),
        (
            "POST",
            format!("/_synapse/admin/v2/users/{u}/delete_devices"),
            Some(json!({"devices": []})),
        ),
        ("GET", format!("/_synapse/admin/v1/whois/{u}"), None),
        (
            "POST",
            "/_synapse/admin/v1/send_server_notice".into(),
            Some(
                json!({"user_id": "@victim:localhost", "content": {"msgtype": "m.text", "body": "x"}}),
            ),
        ),
        ("GET", "/_synapse/admin/v1/registration_tokens".into(), None),
        (
            "POST",
            "/_synapse/admin/v1/registration_tokens/new".into(),
            Some(json!({})),
        ),
        (
            "GET",
            "/_synapse/admin/v1/registration_tokens/abc".into(),
            None,
        ),
        (
            "PUT",
            "/_synapse/admin/v1/registration_tokens/abc".into(),
            Some(json!({})),
        ),
        (
            "DELETE",
            "/_synapse/admin/v1/registration_tokens/abc".into(),
            None,
        ),
        ("GET", "/_synapse/admin/v1/rooms".into(), None),
        ("GET", format!("/_synapse/admin/v1/rooms/{r}"), None),
        (
            "DELETE",
            format!("/_synapse/admin/v1/rooms/{r}"),
            Some(json!({})),
        ),
        ("GET", format!("/_synapse/admin/v1/rooms/{r}/members"), None),
        ("GET", format!("/_synapse/admin/v1/rooms/{r}/state"), None),
        ("GET", format!("/_synapse/admin/v1/rooms/{r}/block"), None),
        (
            "PUT",
            format!("/_synapse/admin/v1/rooms/{r}/block"),
            Some(json!({"block": true})),
        ),
        (
            "DELETE",
            format!("/_synapse/admin/v2/rooms/{r}"),
            Some(json!({})),
        ),
        (
            "GET",
            format!("/_synapse/admin/v2/rooms/{r}/delete_status"),
            None,
        ),
        (
            "GET",
            "/_synapse/admin/v2/rooms/delete_status/abc".into(),
            None,
        ),
        ("GET", format!("/_synapse/admin/v1/users/{u}/media"), None),
        ("GET", format!("/_synapse/admin/v1/room/{r}/media"), None),
        (
            "POST",
            "/_synapse/admin/v1/media/quarantine/localhost/abc".into(),
            Some(json!({})),
        ),
        (
            "POST",
            "/_synapse/admin/v1/media/unquarantine/localhost/abc".into(),
            Some(json!({})),
        ),
        (
            "POST",
            format!("/_synapse/admin/v1/room/{r}/media/quarantine"),
            Some(json!({})),
        ),
        (
            "POST",
            format!("/_synapse/admin/v1/user/{u}/media/quarantine"),
            Some(json!({})),
        ),
        ("GET", "/_feldpost/admin/v1/enrollments".into(), None),
        (
            "POST",
            "/_feldpost/admin/v1/enrollments".into(),
            Some(json!({"username": "sneaky"})),
        ),
        ("GET", "/_feldpost/admin/v1/enrollments/1".into(), None),
        ("DELETE", "/_feldpost/admin/v1/enrollments/1".into(), None),
        (
            "GET",
            "/_feldpost/admin/v1/enrollments/1/qr.svg".into(),
            None,
        ),
        ("GET", "/_feldpost/admin/v1/audit".into(), None),
        (
            "POST",
            "/_feldpost/admin/v1/server_notices".into(),
            Some(json!({"user_id": "@victim:localhost", "body": "x"})),
        ),
    ]
}

async fn expect_all(srv: &TestServer, token: Option<&str>, status: u16, errcode: &str) {
    for (method, path, body) in endpoints() {
        let (s, b) = srv.request(method, &path, token, body).await;
        assert_eq!(
            (s, b["errcode"].as_str()),
            (status, Some(errcode)),
            "{method} {path}: {b}"
        );
    }
}

#[tokio::test]
async fn only_server_admins_get_in() {
    let srv = TestServer::start().await;
    let victim = srv.register("victim").await;
    let user = srv.register("user").await;
    expect_all(&srv, None, 401, "M_MISSING_TOKEN").await;
    expect_all(&srv, Some("not-a-token"), 401, "M_UNKNOWN_TOKEN").await;
    expect_all(&srv, Some(&user.token), 403, "M_FORBIDDEN").await;
    // Nothing the refused requests asked for happened.
    let (s, _) = srv.get("/_matrix/client/v3/account/whoami", &victim).await;
    assert_eq!(s, 200, "victim still signed in");
    let u = srv
        .services
        .accounts
        .user(&ruma::OwnedUserId::try_from("@victim:localhost").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(!u.is_admin && !u.deactivated);
    let enrollments = srv
        .services
        .registration_tokens
        .enrollments(true)
        .await
        .unwrap();
    assert!(enrollments.is_empty());
}

#[tokio::test]
async fn a_demoted_admin_is_refused_and_a_deactivated_admins_token_is_dead() {
    let srv = TestServer::start().await;
    let root = srv.register("root").await;
    let deputy = srv.register("deputy").await;
    make_admin(&srv, &root).await;
    make_admin(&srv, &deputy).await;
    let (s, _) = srv.get("/_synapse/admin/v1/server_version", &deputy).await;
    assert_eq!(s, 200);

    // Demoted: 403 from then on.
    let (s, b) = srv
        .put(
            "/_synapse/admin/v1/users/@deputy:localhost/admin",
            &root,
            json!({"admin": false}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    expect_all(&srv, Some(&deputy.token), 403, "M_FORBIDDEN").await;

    // Promoted again, then deactivated: the token no longer works at all.
    let (s, _) = srv
        .put(
            "/_synapse/admin/v1/users/@deputy:localhost/admin",
            &root,
            json!({"admin": true}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, b) = srv
        .post(
            "/_synapse/admin/v1/deactivate/@deputy:localhost",
            &root,
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    expect_all(&srv, Some(&deputy.token), 401, "M_UNKNOWN_TOKEN").await;
    // And logging in again is refused.
    let (s, _) = srv
        .request(
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "deputy"}, "password": "correct horse"})),
        )
        .await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn the_console_is_served_with_a_strict_policy() {
    let srv = TestServer::start().await;
    let r = srv
        .http
        .get(srv.url("/_feldpost/console/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let html = r.text().await.unwrap();
    assert!(html.contains("/_feldpost/console/console.js"));
    assert!(html.contains("<label for=\"login-user\""));
    for (path, ty) in [
        (
            "/_feldpost/console/console.js",
            "text/javascript; charset=utf-8",
        ),
        ("/_feldpost/console/console.css", "text/css; charset=utf-8"),
    ] {
        let r = srv.http.get(srv.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], ty);
    }
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(srv.url("/_feldpost/console"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "/_feldpost/console/");
}

#[tokio::test]
async fn a_separate_admin_listener_takes_the_admin_api_and_console() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.admin.listen = Some("127.0.0.1:0".parse().unwrap());
    let app = Application::build(config).await.unwrap();
    let main = format!("http://{}", app.local_addr().unwrap());
    let admin = format!("http://{}", app.admin_addr().expect("admin listener"));
    let handle = app.shutdown_handle();
    let task = tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::new();

    // Register on the main listener; sign in on the admin listener, as the console does.
    let (s, b) = post(
        &http,
        &format!("{main}/_matrix/client/v3/register"),
        None,
        json!({"username": "root", "password": "correct horse", "auth": {"type": "m.login.dummy"}}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = post(
        &http,
        &format!("{admin}/_matrix/client/v3/login"),
        None,
        json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "root"}, "password": "correct horse"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let token = b["access_token"].as_str().unwrap().to_owned();
    let root = User {
        user_id: "@root:localhost".into(),
        token: token.clone(),
        device_id: String::new(),
    };
    {
        // Promote through the database, as `feldpost admin` would while the server runs.
        use feldpost_storage::AdminStore;
        let store =
            feldpost_storage::sqlite::SqliteStore::open(&dir.path().join("feldpost.sqlite"))
                .unwrap();
        assert!(store.set_user_admin(&root.user_id, true).await.unwrap());
    }

    let get = |url: String| {
        let http = http.clone();
        let token = token.clone();
        async move {
            let r = http.get(url).bearer_auth(token).send().await.unwrap();
            let s = r.status().as_u16();
            let b: Value = r.json().await.unwrap_or(Value::Null);
            (s, b)
        }
    };
    let (s, b) = get(format!("{admin}/_synapse/admin/v1/server_version")).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = get(format!("{admin}/_matrix/client/v3/account/whoami")).await;
    assert_eq!((s, b["user_id"].as_str()), (200, Some("@root:localhost")));
    let r = http
        .get(format!("{admin}/_feldpost/console/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The main listener serves neither any more.
    let (s, b) = get(format!("{main}/_synapse/admin/v1/server_version")).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (404, Some("M_UNRECOGNIZED")),
        "{b}"
    );
    let (s, _) = get(format!("{main}/_feldpost/admin/v1/enrollments")).await;
    assert_eq!(s, 404);
    let r = http
        .get(format!("{main}/_feldpost/console/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Nor does the admin listener serve the rest of the client API.
    let (s, _) = get(format!("{admin}/_matrix/client/v3/joined_rooms")).await;
    assert_eq!(s, 404);

    // An enrollment made on the admin listener links to the main listener's enrollment page.
    let (s, e) = post(
        &http,
        &format!("{admin}/_feldpost/admin/v1/enrollments"),
        Some(&token),
        json!({"username": "neu"}),
    )
    .await;
    assert_eq!(s, 200, "{e}");
    let link = e["link"].as_str().unwrap();
    assert!(
        link.starts_with(&format!("{main}/_feldpost/enroll/")),
        "{link}"
    );
    let page = format!("{main}/_feldpost/enroll/{}", e["token"].as_str().unwrap());
    assert_eq!(http.get(page).send().await.unwrap().status(), 200);

    handle.shutdown();
    task.await.unwrap().unwrap();
}

async fn post(http: &reqwest::Client, url: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut r = http.post(url).json(&body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}
