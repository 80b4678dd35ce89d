//! The first conversation: register, create a room, invite, join, send, sync.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn two_users_talk() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let room = srv
        .create_room(&alice, json!({"name": "Lage", "invite": [bob.user_id]}))
        .await;
    let s = srv.sync(&bob, None, 0).await;
    assert!(s["rooms"]["invite"][&room].is_object(), "{s}");
    srv.join(&bob, &room).await;
    let since = srv.sync(&bob, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let room_for_send = room.clone();

    // The long poll may return for other news first (a presence change, say); a client then
    // polls again.
    let waiter = {
        let (base, token) = (srv.base.clone(), bob.token.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut since = since;
            loop {
                let r = client
                    .get(format!(
                        "{base}/_matrix/client/v3/sync?timeout=10000&since={since}"
                    ))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                let s = r.json::<serde_json::Value>().await.unwrap();
                let events = &s["rooms"]["join"][&room]["timeline"]["events"];
                if events.as_array().is_some_and(|e| !e.is_empty()) {
                    return (s, room);
                }
                since = s["next_batch"].as_str().unwrap().to_owned();
            }
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    srv.send_text(&alice, &room_for_send, "Guten Morgen").await;
    let (s, room) = tokio::time::timeout(std::time::Duration::from_secs(15), waiter)
        .await
        .expect("the message reaches the long poll")
        .unwrap();
    assert_eq!(timeline_bodies(&s, &room), vec!["Guten Morgen"], "{s}");
}
