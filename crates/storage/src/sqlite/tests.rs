//! Engine-level tests of the SQLite store: migrations, stream positions, durability of commits.

use super::SqliteStore;
use crate::{AccountStore, NewUser, Store, UserDataStore};

fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = SqliteStore::open(&dir.path().join("db.sqlite")).expect("open");
    (dir, s)
}

#[tokio::test]
async fn positions_increase_and_survive_reopen() {
    let (dir, s) = store();
    let a = s
        .set_account_data("@a:x", None, "t", "{}")
        .await
        .expect("write");
    let b = s
        .set_account_data("@a:x", Some("!r:x"), "t", "{}")
        .await
        .expect("write");
    assert!(b > a);
    assert_eq!(s.current_position(), b);
    drop(s);
    let s = SqliteStore::open(&dir.path().join("db.sqlite")).expect("reopen");
    assert_eq!(s.current_position(), b);
    let c = s
        .set_account_data("@a:x", None, "u", "{}")
        .await
        .expect("write");
    assert!(c > b);
}

#[tokio::test]
async fn duplicate_user_is_a_conflict() {
    let (_d, s) = store();
    let u = NewUser {
        user_id: "@a:x".into(),
        password_hash: None,
        displayname: None,
        is_admin: false,
        created_ms: 0,
    };
    s.create_user(u.clone()).await.expect("first");
    assert!(matches!(
        s.create_user(u).await,
        Err(crate::StorageError::Conflict(_))
    ));
}

#[tokio::test]
async fn filters_are_per_user() {
    let (_d, s) = store();
    let id = s.put_filter("@a:x", "{}").await.expect("put");
    assert!(s.get_filter("@a:x", &id).await.expect("get").is_some());
    assert!(s.get_filter("@b:x", &id).await.expect("get").is_none());
    assert!(s.get_filter("@a:x", "nope").await.expect("get").is_none());
}

/// Many writes queued at once share transactions; a failing one among them rolls back alone and
/// gives its position back, and every success is visible with its own position.
#[tokio::test]
async fn group_commit_isolates_a_failing_write() {
    let (_d, s) = store();
    let u = NewUser {
        user_id: "@dup:x".into(),
        password_hash: None,
        displayname: None,
        is_admin: false,
        created_ms: 0,
    };
    s.create_user(u.clone()).await.expect("first");
    let mut tasks = Vec::new();
    for i in 0..200 {
        let s = s.clone();
        let u = u.clone();
        tasks.push(tokio::spawn(async move {
            if i == 100 {
                // A conflict in the middle of a batch.
                s.create_user(u).await.map(|_| -1)
            } else {
                s.set_account_data("@a:x", None, &format!("t{i}"), "{}")
                    .await
            }
        }));
    }
    let mut positions = Vec::new();
    let mut failures = 0;
    for t in tasks {
        match t.await.expect("join") {
            Ok(p) => positions.push(p),
            Err(crate::StorageError::Conflict(_)) => failures += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(failures, 1);
    positions.sort();
    positions.dedup();
    assert_eq!(positions.len(), 199, "each success has its own position");
    assert_eq!(s.current_position(), *positions.last().expect("some"));
    let all = s
        .account_data_since("@a:x", 0, s.current_position())
        .await
        .expect("read");
    assert_eq!(all.len(), 199);
}

/// The change index knows what a commit touched before its position becomes visible.
#[tokio::test]
async fn commits_record_what_they_changed() {
    let (_d, s) = store();
    let before = s.current_position();
    assert!(!s.changes().user_changed("@a:x", before));
    s.set_account_data("@a:x", None, "t", "{}")
        .await
        .expect("write");
    assert!(s.changes().user_changed("@a:x", before));
    assert!(!s.changes().user_changed("@a:x", s.current_position()));
    assert!(!s.changes().user_changed("@b:x", before));
}

/// The in-memory tails answer exactly what the database would (a reopened store has none).
#[tokio::test]
async fn recent_events_match_the_database() {
    use crate::{EventFilter, NewEvent, NewRoom, RoomStore};
    let (dir, s) = store();
    s.create_room(NewRoom {
        room_id: "!r:x".into(),
        room_version: "11".into(),
        creator: "@a:x".into(),
        created_ms: 0,
    })
    .await
    .expect("room");
    let event = |i: usize, sender: &str, json: &str| NewEvent {
        event_id: format!("$e{i}"),
        room_id: "!r:x".into(),
        sender: sender.into(),
        event_type: if i.is_multiple_of(3) {
            "m.reaction"
        } else {
            "m.room.message"
        }
        .into(),
        state_key: None,
        depth: i as i64,
        origin_server_ts: 0,
        json: json.into(),
        unsigned: None,
        state_group_before: None,
        new_state_group: None,
        prev_events: vec![],
        membership: None,
        relation: None,
        txn: Some((sender.into(), "D".into(), format!("t{i}"))),
        redaction: None,
    };
    let mut first = 0;
    for i in 0..12usize {
        let sender = if i.is_multiple_of(2) { "@a:x" } else { "@b:x" };
        let json = if i.is_multiple_of(4) {
            r#"{"content":{"url":"mxc://x/y"}}"#
        } else {
            "{}"
        };
        let p = s
            .persist_event(event(i, sender, json))
            .await
            .expect("persist");
        if i == 0 {
            first = p.stream;
        }
    }
    let mut redaction = event(12, "@a:x", "{}");
    redaction.redaction = Some(("$e4".into(), r#"{"redacted":true}"#.into()));
    s.persist_event(redaction).await.expect("redact");
    let now = s.current_position();
    let filters = [
        EventFilter::default(),
        EventFilter {
            types: Some(vec!["m.room.*".into()]),
            ..Default::default()
        },
        EventFilter {
            not_senders: vec!["@b:x".into()],
            contains_url: Some(false),
            ..Default::default()
        },
        EventFilter {
            contains_url: Some(true),
            ..Default::default()
        },
    ];
    let afters = [first - 1, first + 3, now - 1];
    // The first store answers from memory, the reopened one from the database.
    assert!(
        s.recent()
            .backward("!r:x", now, first - 1, 50, &filters[0])
            .is_some()
    );
    let cached = all_reads(&s, &filters, &afters, now).await;
    drop(s);
    let s = SqliteStore::open(&dir.path().join("db.sqlite")).expect("reopen");
    assert!(
        s.recent()
            .backward("!r:x", now, first - 1, 50, &filters[0])
            .is_none()
    );
    let from_db = all_reads(&s, &filters, &afters, now).await;
    let key = |v: &Vec<crate::StoredEvent>| {
        v.iter()
            .map(|e| {
                let e = e.clone();
                (
                    e.event_id,
                    e.json,
                    e.redacted_by,
                    e.txn,
                    e.state_group_after,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(cached.len(), from_db.len());
    for (i, (c, d)) in cached.iter().zip(&from_db).enumerate() {
        assert_eq!(key(c), key(d), "read {i}");
    }
}

/// `room_events_backward` for every filter, lower bound and limit of the grid, in order.
async fn all_reads(
    s: &SqliteStore,
    filters: &[crate::EventFilter],
    afters: &[i64],
    now: i64,
) -> Vec<Vec<crate::StoredEvent>> {
    use crate::RoomStore;
    let mut out = Vec::new();
    for f in filters {
        for &after in afters {
            for limit in [1, 3, 50] {
                let got = s
                    .room_events_backward("!r:x", now, after, limit, f)
                    .await
                    .expect("read");
                out.push(got);
            }
        }
    }
    out
}
