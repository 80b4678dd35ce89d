//! Engine-level tests of the SQLite store: migrations, stream positions, durability of commits.

use super::SqliteStore;
use crate::{AccountStore, NewUser, Store, UserDataStore};

fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = SqliteStore::open(&dir.path().join("db.sqlite")).expect("open");
    (dir, s)
}

/// A message by `@a:x` into `!r:x`, with no relations, transaction or state.
fn message(id: &str, json: &str) -> crate::NewEvent {
    crate::NewEvent {
        event_id: id.into(),
        room_id: "!r:x".into(),
        sender: "@a:x".into(),
        event_type: "m.room.message".into(),
        state_key: None,
        depth: 1,
        origin_server_ts: 0,
        json: json.into(),
        unsigned: None,
        state_group_before: None,
        new_state_group: None,
        prev_events: vec![],
        membership: None,
        relation: None,
        txn: None,
        redaction: None,
        notifications: vec![],
        room_notification: None,
    }
}

/// A store holding one room, `!r:x`, created by `@a:x`.
async fn store_with_room() -> (tempfile::TempDir, SqliteStore) {
    use crate::{NewRoom, RoomStore};
    let (dir, s) = store();
    s.create_room(NewRoom {
        room_id: "!r:x".into(),
        room_version: "11".into(),
        creator: "@a:x".into(),
        created_ms: 0,
    })
    .await
    .expect("room");
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
    use crate::{EventFilter, NewEvent, RoomStore};
    let (dir, s) = store_with_room().await;
    let event = |i: usize, sender: &str, json: &str| NewEvent {
        sender: sender.into(),
        event_type: if i.is_multiple_of(3) {
            "m.reaction"
        } else {
            "m.room.message"
        }
        .into(),
        depth: i as i64,
        txn: Some((sender.into(), "D".into(), format!("t{i}"))),
        ..message(&format!("$e{i}"), json)
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

/// The in-memory notification tails give the database's answers: the same rooms with new rows
/// and the same windowed counts, across rooms, threads, highlights, receipts, windows and room
/// notifications with their exceptions. The first store answers from memory, the reopened one
/// from the database.
#[tokio::test]
async fn recent_notifications_match_the_database() {
    use crate::{NewNotification, NewRoom, NewRoomNotification, PushStore, RoomStore};
    let (dir, s) = store_with_room().await;
    s.create_room(NewRoom {
        room_id: "!s:x".into(),
        room_version: "11".into(),
        creator: "@a:x".into(),
        created_ms: 0,
    })
    .await
    .expect("room");
    let users = ["@a:x", "@b:x"];
    let rooms = ["!r:x", "!s:x"];
    let start = s.current_position();
    for i in 0..30usize {
        let thread = if i % 3 == 0 { "$root" } else { "main" };
        let row = |user: &str, notify: bool, highlight: bool| NewNotification {
            user_id: user.into(),
            room_id: rooms[i % 2].into(),
            event_id: format!("$e{i}"),
            event_stream: 0,
            thread_id: thread.into(),
            notify,
            highlight,
            push: true,
            actions: "[]".into(),
            profile_tag: None,
            ts: 0,
        };
        let mut e = message(&format!("$e{i}"), "{}");
        e.room_id = rooms[i % 2].into();
        if i % 4 == 1 || i % 4 == 3 {
            // A room notification: by someone else, or by @a:x (which it then never reaches);
            // @b:x has a row of its own in some: silent, or highlighted.
            e.sender = if i % 4 == 1 { "@c:x" } else { "@a:x" }.into();
            e.room_notification = Some(NewRoomNotification {
                room_id: rooms[i % 2].into(),
                event_id: format!("$e{i}"),
                sender: e.sender.clone(),
                thread_id: thread.into(),
                highlight: i % 8 == 1,
                push: true,
                actions: "[]".into(),
                ts: 0,
            });
            match i % 5 {
                0 | 1 => e.notifications = vec![row("@b:x", false, false)],
                2 => e.notifications = vec![row("@b:x", true, true)],
                _ => {}
            }
        } else {
            e.notifications = users
                .iter()
                .filter(|u| i % 5 != 0 || **u == "@a:x")
                .map(|u| row(u, i % 7 != 0, i % 4 == 0))
                .collect();
        }
        s.persist_event(e).await.expect("persist");
    }
    let now = s.current_position();
    assert_eq!(now, start + 30, "one position per event");
    let windows: Vec<(i64, i64)> = vec![
        (start, now),
        (start + 5, now),
        (start + 11, now - 3),
        (now - 1, now),
        (now, now),
    ];
    let floors: Vec<(i64, Vec<(String, i64)>)> = vec![
        (0, vec![]),
        (start + 10, vec![]),
        (start + 5, vec![("$root".into(), start + 20)]),
        (start + 25, vec![("$root".into(), start + 1)]),
    ];
    type Answers = Vec<(Vec<String>, Vec<(String, u64, u64)>)>;
    async fn answers(
        s: &SqliteStore,
        users: &[&str],
        rooms: &[&str],
        windows: &[(i64, i64)],
        floors: &[(i64, Vec<(String, i64)>)],
    ) -> Answers {
        let mut out = Vec::new();
        for u in users {
            for &(after, up_to) in windows {
                let changed = s
                    .rooms_with_new_notifications(u, after, up_to)
                    .await
                    .expect("rooms");
                for (r, member) in rooms.iter().flat_map(|r| [(r, true), (r, false)]) {
                    for (floor, threads) in floors {
                        let mut counts: Vec<(String, u64, u64)> = s
                            .unread_counts(u, r, *floor, threads.clone(), (after, up_to), member)
                            .await
                            .expect("counts")
                            .into_iter()
                            .map(|c| (c.thread_id, c.notifications, c.highlights))
                            .collect();
                        counts.sort();
                        out.push((changed.clone(), counts));
                    }
                }
            }
        }
        out
    }
    assert!(
        s.recent_notifications()
            .rooms_changed("@a:x", start, now)
            .is_some()
    );
    let cached = answers(&s, &users, &rooms, &windows, &floors).await;
    drop(s);
    let s = SqliteStore::open(&dir.path().join("db.sqlite")).expect("reopen");
    assert!(
        s.recent_notifications()
            .rooms_changed("@a:x", start, now)
            .is_none()
    );
    let from_db = answers(&s, &users, &rooms, &windows, &floors).await;
    assert_eq!(cached, from_db);
    // Non-trivial: some windows hold counts, some are empty, and room notifications add to a
    // member's counts.
    assert!(cached.iter().any(|(_, c)| c.iter().any(|t| t.1 > 0)));
    assert!(cached.iter().any(|(r, _)| r.is_empty()));
    let total = |member: bool| {
        let s = s.clone();
        async move {
            s.unread_counts("@b:x", "!s:x", 0, vec![], (i64::MIN, now), member)
                .await
                .expect("counts")
                .iter()
                .map(|c| c.notifications)
                .sum::<u64>()
        }
    };
    assert!(total(true).await > total(false).await);
}

/// Events read by id are kept in memory; a redaction committed after a read is what the next
/// read sees, from memory as from a reopened store.
#[tokio::test]
async fn events_read_by_id_follow_redactions() {
    use crate::RoomStore;
    let event = message;
    let (dir, s) = store_with_room().await;
    s.persist_event(event("$m", r#"{"content":{"body":"secret"}}"#))
        .await
        .expect("persist");
    s.persist_event(event("$n", "{}")).await.expect("persist");
    let ids = vec!["$m".to_owned(), "$n".to_owned(), "$unknown".to_owned()];
    // Read twice: from the database, then from memory.
    for _ in 0..2 {
        let e = s.get_event("$m").await.expect("read").expect("exists");
        assert!(e.json.contains("secret"));
        assert_eq!(s.get_events(&ids).await.expect("read").len(), 2);
    }
    assert!(s.get_event("$unknown").await.expect("read").is_none());
    let mut redaction = event("$r", "{}");
    redaction.redaction = Some(("$m".into(), r#"{"content":{}}"#.into()));
    s.persist_event(redaction).await.expect("redact");
    let check = |e: crate::StoredEvent| {
        assert!(!e.json.contains("secret"), "redacted content is gone");
        assert_eq!(e.redacted_by.as_deref(), Some("$r"));
    };
    check(s.get_event("$m").await.expect("read").expect("exists"));
    let many = s.get_events(&ids).await.expect("read");
    let Some(m) = many.into_iter().find(|e| e.event_id == "$m") else {
        panic!("$m is read");
    };
    check(m);
    drop(s);
    let s = SqliteStore::open(&dir.path().join("db.sqlite")).expect("reopen");
    check(s.get_event("$m").await.expect("read").expect("exists"));
}

/// An event with many rows stores them in the waiting table. Counts, listings and pushers read
/// them there at once and after the move alike, and a reopen moves what was left.
#[tokio::test]
async fn waiting_notification_rows_are_read_where_they_wait() {
    use crate::{NewNotification, PushStore, RoomStore};
    let (dir, s) = store_with_room().await;
    let row = |user: String, push: bool| NewNotification {
        user_id: user,
        room_id: "!r:x".into(),
        event_id: String::new(),
        event_stream: 0,
        thread_id: "main".into(),
        notify: true,
        highlight: false,
        push,
        actions: "[]".into(),
        profile_tag: None,
        ts: 0,
    };
    let many = super::push::INLINE_NOTIFICATIONS + 8;
    let start = s.current_position();
    let mut big = message("$big", "{}");
    big.notifications = (0..many)
        .map(|i| row(format!("@u{i}:x"), i % 2 == 0))
        .collect();
    let first = s.persist_event(big).await.expect("persist");
    assert!(first.notifications_waiting);
    let mut small = message("$small", "{}");
    small.notifications = vec![row("@u0:x".into(), true)];
    let second = s.persist_event(small).await.expect("persist");
    assert!(!second.notifications_waiting);
    let now = s.current_position();

    // From the database (the tails forget everything up to now).
    let check = |s: &SqliteStore| {
        let s = s.clone();
        async move {
            s.recent_notifications().clear(now);
            let counts = s
                .unread_counts("@u0:x", "!r:x", 0, vec![], (i64::MIN, now), true)
                .await
                .expect("counts");
            assert_eq!(counts.len(), 1);
            assert_eq!(counts[0].notifications, 2);
            let rooms = s
                .rooms_with_new_notifications("@u0:x", start, now)
                .await
                .expect("rooms");
            assert_eq!(rooms, vec!["!r:x".to_owned()]);
            let listed = s
                .notifications("@u0:x", None, 10, false)
                .await
                .expect("list");
            let streams: Vec<i64> = listed.iter().map(|n| n.event_stream).collect();
            assert_eq!(streams, vec![second.stream, first.stream], "newest first");
            assert_eq!(listed[0].id, second.stream);
            let pushes = s.pending_pushes("@u0:x", 0, 10).await.expect("pushes");
            let streams: Vec<i64> = pushes.iter().map(|n| n.event_stream).collect();
            assert_eq!(streams, vec![first.stream, second.stream], "oldest first");
            let after_first = s
                .pending_pushes("@u0:x", first.stream, 10)
                .await
                .expect("pushes");
            assert_eq!(after_first.len(), 1);
            // @u1:x's row is not to be pushed.
            assert!(
                s.pending_pushes("@u1:x", 0, 10)
                    .await
                    .expect("pushes")
                    .is_empty()
            );
        }
    };
    check(&s).await;

    while s.move_pending_notifications(16).await.expect("move") {}
    check(&s).await;

    // Rows left waiting at a stop move when the store opens.
    let mut third = message("$third", "{}");
    third.notifications = (0..many).map(|i| row(format!("@u{i}:x"), false)).collect();
    assert!(
        s.persist_event(third)
            .await
            .expect("persist")
            .notifications_waiting
    );
    drop(s);
    let s = SqliteStore::open(&dir.path().join("db.sqlite")).expect("reopen");
    assert_eq!(
        s.notifications("@u0:x", None, 10, false)
            .await
            .expect("list")
            .len(),
        3
    );
    assert!(!s.move_pending_notifications(16).await.expect("move"));
}

/// A state group's chain comes back newest first, each group with its own entries (none for a
/// group without), ending at the full snapshot; an unknown group has no chain.
#[tokio::test]
async fn state_group_chains_are_read_whole() {
    use crate::{NewStateGroup, RoomStore, StateEntry};
    let (_dir, s) = store_with_room().await;
    let entry = |t: &str, k: &str, id: &str| StateEntry {
        event_type: t.into(),
        state_key: k.into(),
        event_id: id.into(),
    };
    let deltas = [
        vec![
            entry("m.room.create", "", "$create"),
            entry("m.room.member", "@a:x", "$join"),
        ],
        vec![entry("m.room.name", "", "$name")],
        vec![],
        vec![entry("m.room.member", "@a:x", "$rejoin")],
    ];
    let mut groups: Vec<i64> = Vec::new();
    for (i, entries) in deltas.iter().enumerate() {
        let mut e = message(&format!("$state{i}"), "{}");
        e.state_key = Some(String::new());
        e.state_group_before = groups.last().copied();
        e.new_state_group = Some(NewStateGroup {
            prev: groups.last().copied(),
            chain_len: i as i64,
            entries: entries.clone(),
        });
        let persisted = s.persist_event(e).await.expect("persist");
        groups.push(persisted.state_group_after.expect("a new group"));
    }
    let chain = s.state_group_chain(groups[3]).await.expect("chain");
    let ids: Vec<i64> = chain.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![groups[3], groups[2], groups[1], groups[0]]);
    assert_eq!(chain[0].prev, Some(groups[2]));
    assert_eq!(chain[3].prev, None);
    assert_eq!(
        chain.iter().map(|r| r.chain_len).collect::<Vec<_>>(),
        vec![3, 2, 1, 0]
    );
    for (rec, delta) in chain.iter().zip(deltas.iter().rev()) {
        let mut got: Vec<&str> = rec.entries.iter().map(|e| e.event_id.as_str()).collect();
        let mut want: Vec<&str> = delta.iter().map(|e| e.event_id.as_str()).collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "entries of group {}", rec.id);
    }
    // A chain from the middle stops at the snapshot too.
    assert_eq!(
        s.state_group_chain(groups[1])
            .await
            .expect("chain")
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>(),
        vec![groups[1], groups[0]]
    );
    assert!(
        s.state_group_chain(groups[3] + 100)
            .await
            .expect("chain")
            .is_empty()
    );
}

/// SQLite runs without its memory statistics (and so without their process-wide lock): the
/// bytes it reports in use stay zero however much it allocates.
#[tokio::test]
async fn sqlite_keeps_no_memory_statistics() {
    use crate::RoomStore;
    let (_dir, s) = store_with_room().await;
    for i in 0..50 {
        s.persist_event(message(&format!("$m{i}"), "{}"))
            .await
            .expect("persist");
    }
    // SAFETY: reads a counter; callable at any time.
    let used = unsafe { rusqlite::ffi::sqlite3_memory_used() };
    assert_eq!(used, 0);
}

/// The rooms to warm at a start: the largest by joined members first, the small and those
/// members have left not at all.
#[tokio::test]
async fn largest_rooms_count_joined_members() {
    use crate::{MembershipUpdate, NewRoom, RoomStore};
    let (_dir, s) = store();
    let mut n = 0;
    for (room, joined, left) in [("!small:x", 1, 0), ("!big:x", 4, 0), ("!mid:x", 3, 2)] {
        s.create_room(NewRoom {
            room_id: room.into(),
            room_version: "11".into(),
            creator: "@a:x".into(),
            created_ms: 0,
        })
        .await
        .expect("room");
        for i in 0..joined + left {
            for membership in ["join", "leave"]
                .iter()
                .take(if i < joined { 1 } else { 2 })
            {
                n += 1;
                let mut e = message(&format!("$m{n}"), "{}");
                e.room_id = room.into();
                e.event_type = "m.room.member".into();
                e.state_key = Some(format!("@u{i}:x"));
                e.membership = Some(MembershipUpdate {
                    user_id: format!("@u{i}:x"),
                    membership: (*membership).into(),
                });
                s.persist_event(e).await.expect("member");
            }
        }
    }
    assert_eq!(
        s.largest_rooms(2, 10).await.expect("read"),
        ["!big:x", "!mid:x"]
    );
    assert_eq!(s.largest_rooms(2, 1).await.expect("read"), ["!big:x"]);
}
