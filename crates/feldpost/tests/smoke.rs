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

    let waiter = {
        let (base, token, since) = (srv.base.clone(), bob.token.clone(), since.clone());
        tokio::spawn(async move {
            let r = reqwest::Client::new()
                .get(format!(
                    "{base}/_matrix/client/v3/sync?timeout=10000&since={since}"
                ))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            r.json::<serde_json::Value>().await.unwrap()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    srv.send_text(&alice, &room, "Guten Morgen").await;
    let s = waiter.await.unwrap();
    assert_eq!(timeline_bodies(&s, &room), vec!["Guten Morgen"]);
}
