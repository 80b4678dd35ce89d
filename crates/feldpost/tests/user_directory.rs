//! The user directory: who can be found, by what, ranking, limits and input checks.

mod common;

use common::*;
use serde_json::{Value, json};

const SEARCH: &str = "/_matrix/client/v3/user_directory/search";

async fn search(srv: &TestServer, u: &User, term: &str) -> Vec<String> {
    let (s, b) = srv.post(SEARCH, u, json!({"search_term": term})).await;
    assert_eq!(s, 200, "{b}");
    ids(&b)
}

fn ids(b: &Value) -> Vec<String> {
    b["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["user_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn set_name(srv: &TestServer, u: &User, name: &str) {
    let (s, _) = srv
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", enc(&u.user_id)),
            u,
            json!({"displayname": name}),
        )
        .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn finds_users_sharing_a_room() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let carol = srv.register("carol").await;
    set_name(&srv, &bob, "Robert Baumeister").await;
    set_name(&srv, &carol, "Carola Baum").await;
    // A private room: sharing it makes Bob visible to Alice.
    let room = srv
        .create_room(
            &alice,
            json!({"preset": "private_chat", "invite": [bob.user_id]}),
        )
        .await;
    srv.join(&bob, &room).await;

    assert_eq!(
        search(&srv, &alice, "robert").await,
        vec![bob.user_id.clone()]
    );
    assert_eq!(search(&srv, &alice, "BOB").await, vec![bob.user_id.clone()]);
    let (_, b) = srv
        .post(SEARCH, &alice, json!({"search_term": "baum"}))
        .await;
    assert_eq!(
        b,
        json!({"results": [{"user_id": bob.user_id, "display_name": "Robert Baumeister"}], "limited": false})
    );
    // Carol shares no room with anyone: nobody finds her, except by her exact id.
    assert!(search(&srv, &alice, "carol").await.is_empty());
    assert_eq!(
        search(&srv, &alice, &carol.user_id).await,
        vec![carol.user_id.clone()]
    );
    // Search terms are not patterns.
    assert!(search(&srv, &alice, "%").await.is_empty());
    assert!(search(&srv, &alice, "b_b").await.is_empty());
}

#[tokio::test]
async fn finds_members_of_public_rooms() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let carol = srv.register("carol").await;
    let dave = srv.register("dave").await;
    assert!(search(&srv, &alice, "carol").await.is_empty());
    // Carol joins a public room Alice is not in; Dave sits in a world-readable invite-only room.
    let public = srv
        .create_room(&bob, json!({"preset": "public_chat"}))
        .await;
    srv.join(&carol, &public).await;
    let readable = srv
        .create_room(&dave, json!({"preset": "private_chat"}))
        .await;
    let (s, b) = srv
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.history_visibility/",
                enc(&readable)
            ),
            &dave,
            json!({"history_visibility": "world_readable"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        search(&srv, &alice, "carol").await,
        vec![carol.user_id.clone()]
    );
    assert_eq!(
        search(&srv, &alice, "dave").await,
        vec![dave.user_id.clone()]
    );
    // Deactivated users are not found.
    let (_, b) = srv
        .post("/_matrix/client/v3/account/deactivate", &carol, json!({}))
        .await;
    let session = b["session"].as_str().unwrap().to_owned();
    let (s, b) = srv
        .post(
            "/_matrix/client/v3/account/deactivate",
            &carol,
            json!({"auth": {"type": "m.login.password", "session": session, "password": "correct horse", "identifier": {"type": "m.id.user", "user": "carol"}}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(search(&srv, &alice, "carol").await.is_empty());
}

#[tokio::test]
async fn ranking_and_limits() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let room = srv
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    let mut users = Vec::new();
    for name in ["ann", "joanna", "hannah", "anna", "zanny"] {
        let u = srv.register(name).await;
        srv.join(&u, &room).await;
        users.push(u);
    }
    // Exact match first, then prefix matches, then the rest.
    let found = search(&srv, &alice, "ann").await;
    assert_eq!(found[0], "@ann:localhost", "{found:?}");
    assert_eq!(found[1], "@anna:localhost", "{found:?}");
    assert_eq!(found.len(), 5, "{found:?}");

    let (s, b) = srv
        .post(SEARCH, &alice, json!({"search_term": "ann", "limit": 2}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(ids(&b).len(), 2);
    assert_eq!(b["limited"], true);
    let (_, b) = srv
        .post(SEARCH, &alice, json!({"search_term": "ann", "limit": 5}))
        .await;
    assert_eq!((ids(&b).len(), &b["limited"]), (5, &json!(false)));
    let (_, b) = srv
        .post(SEARCH, &alice, json!({"search_term": "ann", "limit": 0}))
        .await;
    assert_eq!((ids(&b).len(), &b["limited"]), (0, &json!(true)));
    // Default limit is 10.
    for i in 0..8 {
        let u = srv.register(&format!("annex{i}")).await;
        srv.join(&u, &room).await;
    }
    let (_, b) = srv
        .post(SEARCH, &alice, json!({"search_term": "ann"}))
        .await;
    assert_eq!((ids(&b).len(), &b["limited"]), (10, &json!(true)));
    let (_, b) = srv
        .post(
            SEARCH,
            &alice,
            json!({"search_term": "ann", "limit": 1_000_000_000_000u64}),
        )
        .await;
    assert_eq!((ids(&b).len(), &b["limited"]), (13, &json!(false)));
}

#[tokio::test]
async fn bad_input() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    for (body, errcode) in [
        (json!({}), "M_MISSING_PARAM"),
        (json!({"search_term": 5}), "M_BAD_JSON"),
        (json!({"search_term": "a", "limit": "ten"}), "M_BAD_JSON"),
        (json!({"search_term": "a", "limit": -1}), "M_BAD_JSON"),
    ] {
        let (s, b) = srv.post(SEARCH, &alice, body.clone()).await;
        assert_eq!(
            (s, b["errcode"].as_str()),
            (400, Some(errcode)),
            "{body}: {b}"
        );
    }
    let (s, b) = srv
        .request("POST", SEARCH, None, Some(json!({"search_term": "a"})))
        .await;
    assert_eq!((s, b["errcode"].as_str()), (401, Some("M_MISSING_TOKEN")));
}
