//! Synapse-compatible registration tokens: new, list (with the valid filter), get, update,
//! delete, with their validation errors.

mod common;

use common::*;
use serde_json::json;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn registration_token_lifecycle() {
    let srv = TestServer::start_with(|c| c.registration.open = false).await;
    let id = srv
        .services
        .accounts
        .register(Some("root"), Some("correct horse"), true)
        .await
        .unwrap();
    let s = srv
        .services
        .accounts
        .create_session(&id, None, None)
        .await
        .unwrap();
    let root = User {
        user_id: id.to_string(),
        token: s.access_token,
        device_id: s.device_id,
    };
    let base = "/_synapse/admin/v1/registration_tokens";

    // A random token of the default length, and one of a chosen length.
    let (st, t) = srv.post(&format!("{base}/new"), &root, json!({})).await;
    assert_eq!(st, 200, "{t}");
    let random = t["token"].as_str().unwrap().to_owned();
    assert_eq!(random.len(), 16);
    assert_eq!(
        t,
        json!({"token": random, "uses_allowed": null, "pending": 0, "completed": 0, "expiry_time": null})
    );
    let (_, t) = srv
        .post(
            &format!("{base}/new"),
            &root,
            json!({"length": 40, "uses_allowed": null, "expiry_time": null}),
        )
        .await;
    assert_eq!(t["token"].as_str().unwrap().len(), 40);
    let expiry = now_ms() + 3_600_000;
    let (st, t) = srv
        .post(
            &format!("{base}/new"),
            &root,
            json!({"token": "Team_Alpha-1.x~", "uses_allowed": 5, "expiry_time": expiry}),
        )
        .await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(
        (t["uses_allowed"].as_i64(), t["expiry_time"].as_i64()),
        (Some(5), Some(expiry))
    );

    // Refused: duplicates and malformed values.
    for body in [
        json!({"token": "Team_Alpha-1.x~"}),
        json!({"token": "has space"}),
        json!({"token": "x".repeat(65)}),
        json!({"token": ""}),
        json!({"token": 7}),
        json!({"length": 0}),
        json!({"length": 65}),
        json!({"length": "8"}),
        json!({"uses_allowed": -1}),
        json!({"uses_allowed": 1.5}),
        json!({"uses_allowed": "many"}),
        json!({"expiry_time": 1000}),
        json!({"expiry_time": "tomorrow"}),
    ] {
        let (st, b) = srv.post(&format!("{base}/new"), &root, body.clone()).await;
        assert_eq!(
            (st, b["errcode"].as_str()),
            (400, Some("M_INVALID_PARAM")),
            "{body}: {b}"
        );
    }

    // Get, list, the valid filter.
    let (st, t) = srv.get(&format!("{base}/Team_Alpha-1.x~"), &root).await;
    assert_eq!((st, t["uses_allowed"].as_i64()), (200, Some(5)));
    let (st, b) = srv.get(&format!("{base}/unknown"), &root).await;
    assert_eq!((st, b["errcode"].as_str()), (404, Some("M_NOT_FOUND")));
    let (_, l) = srv.get(base, &root).await;
    assert_eq!(l["registration_tokens"].as_array().unwrap().len(), 3);

    // Update: uses down to zero makes it invalid; null lifts limits.
    let (st, t) = srv
        .put(
            &format!("{base}/Team_Alpha-1.x~"),
            &root,
            json!({"uses_allowed": 0}),
        )
        .await;
    assert_eq!((st, t["uses_allowed"].as_i64()), (200, Some(0)), "{t}");
    let (_, valid) = srv.get(&format!("{base}?valid=true"), &root).await;
    let (_, invalid) = srv.get(&format!("{base}?valid=false"), &root).await;
    assert_eq!(valid["registration_tokens"].as_array().unwrap().len(), 2);
    assert_eq!(
        invalid["registration_tokens"][0]["token"],
        "Team_Alpha-1.x~"
    );
    let (st, _) = srv.get(&format!("{base}?valid=perhaps"), &root).await;
    assert_eq!(st, 400);
    let (_, t) = srv
        .put(
            &format!("{base}/Team_Alpha-1.x~"),
            &root,
            json!({"uses_allowed": null, "expiry_time": null}),
        )
        .await;
    assert_eq!(
        (t["uses_allowed"].clone(), t["expiry_time"].clone()),
        (json!(null), json!(null))
    );
    let (_, t) = srv
        .put(&format!("{base}/Team_Alpha-1.x~"), &root, json!({}))
        .await;
    assert_eq!(
        t["token"], "Team_Alpha-1.x~",
        "an empty update changes nothing"
    );
    for body in [
        json!({"uses_allowed": -5}),
        json!({"expiry_time": 5}),
        json!({"expiry_time": true}),
    ] {
        let (st, b) = srv
            .put(&format!("{base}/Team_Alpha-1.x~"), &root, body.clone())
            .await;
        assert_eq!(
            (st, b["errcode"].as_str()),
            (400, Some("M_INVALID_PARAM")),
            "{body}: {b}"
        );
    }
    let (st, _) = srv.put(&format!("{base}/unknown"), &root, json!({})).await;
    assert_eq!(st, 404);

    // Use it, then see it counted.
    let (st, b) = srv
        .request(
            "POST",
            "/_matrix/client/v3/register",
            None,
            Some(json!({"username": "newbie", "password": "correct horse", "auth": {"type": "m.login.registration_token", "token": "Team_Alpha-1.x~"}})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let (_, t) = srv.get(&format!("{base}/Team_Alpha-1.x~"), &root).await;
    assert_eq!(t["completed"], 1);

    // Delete.
    let (st, b) = srv
        .request(
            "DELETE",
            &format!("{base}/Team_Alpha-1.x~"),
            Some(&root.token),
            None,
        )
        .await;
    assert_eq!((st, b), (200, json!({})));
    let (st, _) = srv.get(&format!("{base}/Team_Alpha-1.x~"), &root).await;
    assert_eq!(st, 404);
    let (st, _) = srv
        .request(
            "DELETE",
            &format!("{base}/Team_Alpha-1.x~"),
            Some(&root.token),
            None,
        )
        .await;
    assert_eq!(st, 404);
    let (st, b) = srv
        .request(
            "POST",
            "/_matrix/client/v3/register",
            None,
            Some(json!({"username": "late", "password": "correct horse", "auth": {"type": "m.login.registration_token", "token": "Team_Alpha-1.x~"}})),
        )
        .await;
    assert_eq!((st, b["errcode"].as_str()), (401, Some("M_FORBIDDEN")));

    let (_, a) = srv.get("/_feldpost/admin/v1/audit", &root).await;
    let actions: Vec<&str> = a["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for want in [
        "registration_token.create",
        "registration_token.update",
        "registration_token.use",
        "registration_token.delete",
    ] {
        assert!(actions.contains(&want), "{want}: {actions:?}");
    }
}
