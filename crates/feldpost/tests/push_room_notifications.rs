//! Room notifications: an event that notifies most members of a group alike is stored once for
//! the room, with rows only for the members whose outcome differs. Seen from outside nothing may
//! change: every member's unread counts, /notifications and pushes are what they would be with
//! a row per member — also for the sender, the mentioned, the muted, late joiners, readers, and
//! after a restart.

mod common;
mod push_common;

use std::time::Duration;

use common::{TestServer, User, enc, test_config};
use push_common::{FakeGateway, counts, parked_sync, push_server, read_receipt, set_pusher};
use serde_json::{Value, json};

/// A public room of `owner` that everyone in `members` joined.
async fn group(s: &TestServer, owner: &User, members: &[&User]) -> String {
    let room = s.create_room(owner, json!({"preset": "public_chat"})).await;
    for m in members {
        s.join(m, &room).await;
    }
    room
}

/// alice, bob, carol, dave and erin.
async fn five(s: &TestServer) -> [User; 5] {
    let mut users = Vec::new();
    for name in ["alice", "bob", "carol", "dave", "erin"] {
        users.push(s.register(name).await);
    }
    users.try_into().expect("five users")
}

/// A server with a group of three: alice, who created it, bob and carol.
async fn trio() -> (TestServer, [User; 3], String) {
    let s = push_server().await;
    let [a, b, c] = {
        let [a, b, c, ..] = five(&s).await;
        [a, b, c]
    };
    let room = group(&s, &a, &[&b, &c]).await;
    (s, [a, b, c], room)
}

static TXN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

async fn send(s: &TestServer, u: &User, room: &str, content: Value) -> String {
    let (st, b) = s
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
                enc(room),
                TXN.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            ),
            u,
            content,
        )
        .await;
    assert_eq!(st, 200, "{b}");
    b["event_id"].as_str().expect("event_id").to_owned()
}

/// Mutes a room for `u` (a room rule without actions).
async fn mute(s: &TestServer, u: &User, room: &str) {
    let (st, b) = s
        .put(
            &format!("/_matrix/client/v3/pushrules/global/room/{}", enc(room)),
            u,
            json!({"actions": []}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
}

/// The event ids /notifications lists for `u` (newest first), with their `read` flags.
async fn listed(s: &TestServer, u: &User, query: &str) -> Vec<(String, bool)> {
    let (st, b) = s
        .get(&format!("/_matrix/client/v3/notifications{query}"), u)
        .await;
    assert_eq!(st, 200, "{b}");
    b["notifications"]
        .as_array()
        .expect("notifications")
        .iter()
        .map(|n| {
            (
                n["event"]["event_id"].as_str().unwrap_or("").to_owned(),
                n["read"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

#[tokio::test]
async fn members_count_a_room_notification_alike_but_for_their_exceptions() {
    let s = push_server().await;
    let [a, b, c, d, e] = five(&s).await;
    let room = group(&s, &a, &[&b, &c, &d, &e]).await;
    mute(&s, &d, &room).await;
    // Counted now, each member's count is later brought up to date from memory; after the
    // restart below it is counted from the database.
    for u in [&a, &b, &c, &d, &e] {
        assert_eq!(counts(&s, u, &room).await, (0, 0));
    }
    let first = send(
        &s,
        &a,
        &room,
        json!({"msgtype": "m.text", "body": "hello carol",
               "m.mentions": {"user_ids": [c.user_id]}}),
    )
    .await;
    assert_eq!(counts(&s, &a, &room).await, (0, 0), "not for the sender");
    assert_eq!(counts(&s, &b, &room).await, (1, 0));
    assert_eq!(counts(&s, &c, &room).await, (1, 1), "mentioned");
    assert_eq!(counts(&s, &d, &room).await, (0, 0), "muted");
    assert_eq!(counts(&s, &e, &room).await, (1, 0));

    // Someone joining later is not reached by what came before.
    let f = s.register("frank").await;
    s.join(&f, &room).await;
    assert_eq!(counts(&s, &f, &room).await, (0, 0));
    let second = send(&s, &a, &room, json!({"msgtype": "m.text", "body": "again"})).await;
    assert_eq!(counts(&s, &f, &room).await, (1, 0));
    assert_eq!(counts(&s, &b, &room).await, (2, 0));
    assert_eq!(counts(&s, &c, &room).await, (2, 1));

    // Reading clears what is read.
    read_receipt(&s, &b, &room, &first, None).await;
    assert_eq!(counts(&s, &b, &room).await, (1, 0));

    assert_eq!(
        listed(&s, &b, "").await,
        vec![(second.clone(), false), (first.clone(), true)]
    );
    assert_eq!(listed(&s, &d, "").await, vec![]);
    assert_eq!(listed(&s, &a, "").await, vec![]);
    assert_eq!(listed(&s, &f, "").await, vec![(second.clone(), false)]);
    assert_eq!(
        listed(&s, &c, "?only=highlight").await,
        vec![(first.clone(), false)]
    );
    // Pages of one: the token continues after the room notification.
    let (_, page) = s.get("/_matrix/client/v3/notifications?limit=1", &e).await;
    let token = page["next_token"].as_str().expect("next_token").to_owned();
    assert_eq!(page["notifications"][0]["event"]["event_id"], json!(second));
    assert_eq!(
        listed(&s, &e, &format!("?limit=1&from={token}")).await,
        vec![(first.clone(), false)]
    );

    // A new display name keeps the membership a join: nothing is lost.
    let (st, _) = s
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", enc(&e.user_id)),
            &e,
            json!({"displayname": "Erin"}),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(listed(&s, &e, "").await.len(), 2);

    // Leaving ends it: a rejoin starts afresh.
    let (st, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
            &f,
            json!({}),
        )
        .await;
    assert_eq!(st, 200);
    // What reached frank while joined stays listed.
    assert_eq!(listed(&s, &f, "").await, vec![(second.clone(), false)]);
    s.join(&f, &room).await;
    assert_eq!(counts(&s, &f, &room).await, (0, 0));
    assert_eq!(listed(&s, &f, "").await, vec![(second.clone(), false)]);

    // The same after a restart, from the database.
    let dir = s.stop().await;
    let mut config = test_config(dir.path());
    config.outbound.allow_ranges = vec!["127.0.0.0/8".parse().expect("range")];
    config.push.allow_http_gateways = true;
    let s = TestServer::start_in(dir, config).await;
    assert_eq!(counts(&s, &a, &room).await, (0, 0));
    assert_eq!(counts(&s, &b, &room).await, (1, 0));
    assert_eq!(counts(&s, &c, &room).await, (2, 1));
    assert_eq!(counts(&s, &d, &room).await, (0, 0));
    assert_eq!(counts(&s, &f, &room).await, (0, 0));
    assert_eq!(listed(&s, &e, "").await.len(), 2);
    assert_eq!(listed(&s, &f, "").await, vec![(second, false)]);
}

#[tokio::test]
async fn a_waiting_sync_sees_the_message_and_its_count_together() {
    let (s, [a, b, _], room) = trio().await;
    send(&s, &a, &room, json!({"msgtype": "m.text", "body": "one"})).await;
    assert_eq!(counts(&s, &b, &room).await, (1, 0), "cached from here on");
    let poll = parked_sync(&s, &b).await;
    send(&s, &a, &room, json!({"msgtype": "m.text", "body": "two"})).await;
    let body = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("answered")
        .expect("sync");
    let joined = &body["rooms"]["join"][&room];
    assert_eq!(
        joined["timeline"]["events"]
            .as_array()
            .map(|a| a.len())
            .unwrap_or(0),
        1,
        "{body}"
    );
    assert_eq!(
        joined["unread_notifications"]["notification_count"],
        json!(2),
        "{body}"
    );
}

#[tokio::test]
async fn pushers_get_room_notifications_in_order_with_the_badge() {
    let s = push_server().await;
    let gw = FakeGateway::start().await;
    let [a, b, c, d, e] = five(&s).await;
    // Bob and erin share the outcome of every message: each is a room notification.
    let room = group(&s, &a, &[&b, &c, &d, &e]).await;
    mute(&s, &d, &room).await;
    set_pusher(&s, &b, &gw.url, "org.example.app", "bob-key").await;
    set_pusher(&s, &c, &gw.url, "org.example.app", "carol-key").await;
    set_pusher(&s, &d, &gw.url, "org.example.app", "dave-key").await;
    let mut sent = Vec::new();
    for i in 0..3 {
        // The second mentions carol: her row of her own replaces the room's, once.
        let mut content = json!({"msgtype": "m.text", "body": format!("m{i}")});
        if i == 1 {
            content["m.mentions"] = json!({"user_ids": [c.user_id]});
        }
        sent.push(send(&s, &a, &room, content).await);
    }
    gw.wait_for(6, Duration::from_secs(10)).await;
    // Give a stray push for the muted member time to show.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got: Vec<Value> = gw.received().await;
    assert_eq!(got.len(), 6, "{got:?}");
    for key in ["bob-key", "carol-key"] {
        let mine: Vec<&Value> = got
            .iter()
            .filter(|n| n["notification"]["devices"][0]["pushkey"] == json!(key))
            .collect();
        let events: Vec<&str> = mine
            .iter()
            .filter_map(|n| n["notification"]["event_id"].as_str())
            .collect();
        assert_eq!(events, sent.iter().map(String::as_str).collect::<Vec<_>>());
        let badges: Vec<u64> = mine
            .iter()
            .filter_map(|n| n["notification"]["counts"]["unread"].as_u64())
            .collect();
        // The badge is counted when the push goes out: at least the messages so far, at most
        // all.
        assert_eq!(badges.len(), 3, "{got:?}");
        for (i, n) in badges.iter().enumerate() {
            assert!((i as u64 + 1..=3).contains(n), "{key}: {badges:?}");
        }
        assert_eq!(badges[2], 3, "{key}");
    }
    // The mention is pushed with its highlight.
    let mention = got
        .iter()
        .find(|n| {
            n["notification"]["devices"][0]["pushkey"] == json!("carol-key")
                && n["notification"]["event_id"] == json!(sent[1])
        })
        .expect("carol's mention");
    assert_eq!(
        mention["notification"]["devices"][0]["tweaks"]["highlight"],
        json!(true),
        "{mention}"
    );
}

#[tokio::test]
async fn a_filter_that_hides_the_message_still_shows_its_count() {
    let (s, [a, b, _], room) = trio().await;
    let filter = enc(r#"{"room":{"timeline":{"types":["m.reaction"]}}}"#);
    let (st, first) = s
        .get(&format!("/_matrix/client/v3/sync?filter={filter}"), &b)
        .await;
    assert_eq!(st, 200, "{first}");
    let since = first["next_batch"].as_str().expect("next_batch").to_owned();
    send(
        &s,
        &a,
        &room,
        json!({"msgtype": "m.text", "body": "hidden"}),
    )
    .await;
    let (st, next) = s
        .get(
            &format!("/_matrix/client/v3/sync?filter={filter}&since={since}&timeout=0"),
            &b,
        )
        .await;
    assert_eq!(st, 200, "{next}");
    let joined = &next["rooms"]["join"][&room];
    assert_eq!(
        joined["unread_notifications"]["notification_count"],
        json!(1),
        "{next}"
    );
    assert!(
        joined["timeline"]["events"]
            .as_array()
            .is_none_or(|e| e.is_empty()),
        "{next}"
    );
}

/// A room of 100 members or more has its member list kept between messages: it follows every
/// join and leave, including a mention of someone who only just joined.
#[tokio::test]
async fn a_large_rooms_member_list_follows_joins_and_leaves() {
    let s = push_server().await;
    let owner = s.register("owner").await;
    let mut members = Vec::new();
    for i in 0..100 {
        members.push(s.register(&format!("member{i}")).await);
    }
    let room = group(&s, &owner, &members.iter().collect::<Vec<_>>()).await;
    let hello = json!({"msgtype": "m.text", "body": "hello"});
    send(&s, &owner, &room, hello.clone()).await;
    assert_eq!(counts(&s, &members[0], &room).await, (1, 0));

    // Joined after the list was kept: reached by the next message, and by a mention.
    let late = s.register("late").await;
    s.join(&late, &room).await;
    send(&s, &owner, &room, hello.clone()).await;
    assert_eq!(counts(&s, &late, &room).await, (1, 0));
    send(
        &s,
        &owner,
        &room,
        json!({"msgtype": "m.text", "body": "welcome",
               "m.mentions": {"user_ids": [late.user_id]}}),
    )
    .await;
    assert_eq!(counts(&s, &late, &room).await, (2, 1));
    assert_eq!(counts(&s, &members[1], &room).await, (3, 0));

    // Left after it was kept: not reached any more.
    let (st, b) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
            &members[2],
            json!({}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    send(&s, &owner, &room, hello).await;
    let (st, b) = s
        .get("/_matrix/client/v3/notifications?limit=10", &members[2])
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        b["notifications"].as_array().map(Vec::len),
        Some(3),
        "the message after the leave is not listed: {b}"
    );
    assert_eq!(counts(&s, &members[3], &room).await, (4, 0));
}
