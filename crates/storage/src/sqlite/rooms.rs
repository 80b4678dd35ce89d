//! Rooms: events, the DAG tip, state groups, current state, memberships, relations, aliases.

use async_trait::async_trait;
use rusqlite::{
    Connection, OptionalExtension, Row, Transaction, params, params_from_iter, types::Value,
};

use super::{CachedExt, SqliteStore, placeholders};
use crate::recent::{RecentChange, contains_url};
use crate::{
    AliasRecord, EventFilter, MemberSummary, MembershipRecord, NewEvent, NewRoom, PersistedEvent,
    RelationQuery, Result, RoomHead, RoomRecord, RoomStore, StateEntry, StateGroupRecord,
    StorageError, StoredEvent,
};

const EVENT_COLS: &str = "event_id, room_id, stream, json, event_type, sender, state_key, \
    state_group_before, state_group_after, redacted_by, txn_device, txn_id, unsigned";

fn event_row(r: &Row<'_>) -> rusqlite::Result<StoredEvent> {
    let dev: Option<String> = r.get(10)?;
    let txn: Option<String> = r.get(11)?;
    Ok(StoredEvent {
        event_id: r.get(0)?,
        room_id: r.get(1)?,
        stream: r.get(2)?,
        json: r.get(3)?,
        event_type: r.get(4)?,
        sender: r.get(5)?,
        state_key: r.get(6)?,
        state_group_before: r.get(7)?,
        state_group_after: r.get(8)?,
        redacted_by: r.get(9)?,
        txn: dev.zip(txn),
        unsigned: r.get(12)?,
    })
}

fn membership_row(r: &Row<'_>) -> rusqlite::Result<MembershipRecord> {
    Ok(MembershipRecord {
        room_id: r.get(0)?,
        user_id: r.get(1)?,
        membership: r.get(2)?,
        event_id: r.get(3)?,
        stream: r.get(4)?,
        forgotten: r.get(5)?,
    })
}

const MEMBERSHIP_COLS: &str = "room_id, user_id, membership, event_id, stream, forgotten";

/// Appends the SQL conditions of an event filter, with its parameters.
fn filter_sql(f: &EventFilter, args: &mut Vec<Value>) -> String {
    let mut sql = String::new();
    let mut list = |col: &str, items: &[String], negate: bool, args: &mut Vec<Value>| {
        if items.is_empty() {
            if !negate {
                sql.push_str(" AND 0");
            }
            return;
        }
        let start = args.len() + 1;
        let mut parts = Vec::new();
        for (i, item) in items.iter().enumerate() {
            // `*` is a wildcard in filter type lists.
            if col == "event_type" && item.contains('*') {
                parts.push(format!("{col} GLOB ?{}", start + i));
            } else {
                parts.push(format!("{col} = ?{}", start + i));
            }
            args.push(Value::Text(item.clone()));
        }
        let joined = parts.join(" OR ");
        if negate {
            sql.push_str(&format!(" AND NOT ({joined})"));
        } else {
            sql.push_str(&format!(" AND ({joined})"));
        }
    };
    if let Some(types) = &f.types {
        list("event_type", types, false, args);
    }
    if !f.not_types.is_empty() {
        list("event_type", &f.not_types, true, args);
    }
    if let Some(senders) = &f.senders {
        list("sender", senders, false, args);
    }
    if !f.not_senders.is_empty() {
        list("sender", &f.not_senders, true, args);
    }
    match f.contains_url {
        Some(true) => sql.push_str(" AND contains_url = 1"),
        Some(false) => sql.push_str(" AND contains_url = 0"),
        None => {}
    }
    sql
}

fn persist(tx: &Transaction<'_>, stream: i64, e: &NewEvent) -> Result<Option<i64>> {
    let mut state_after = e.state_group_before;
    if let Some(group) = &e.new_state_group {
        tx.exec(
            "INSERT INTO state_groups (room_id, prev_group, chain_len) VALUES (?1, ?2, ?3)",
            params![e.room_id, group.prev, group.chain_len],
        )?;
        let id = tx.last_insert_rowid();
        let mut st = tx.prepare_cached(
            "INSERT INTO state_group_entries (group_id, event_type, state_key, event_id) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for s in &group.entries {
            st.execute(params![id, s.event_type, s.state_key, s.event_id])?;
        }
        state_after = Some(id);
    }
    let contains_url = contains_url(&e.json);
    let (txn_device, txn_id) = match &e.txn {
        Some((_, d, t)) => (Some(d.clone()), Some(t.clone())),
        None => (None, None),
    };
    tx.exec(
        "INSERT INTO events (stream, event_id, room_id, sender, event_type, state_key, depth,
            origin_server_ts, json, state_group_before, state_group_after, txn_device, txn_id, contains_url, unsigned)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        params![
            stream, e.event_id, e.room_id, e.sender, e.event_type, e.state_key, e.depth,
            e.origin_server_ts, e.json, e.state_group_before, state_after, txn_device, txn_id, contains_url, e.unsigned
        ],
    )?;
    for prev in &e.prev_events {
        tx.exec(
            "INSERT OR IGNORE INTO event_edges (event_id, prev_event_id) VALUES (?1, ?2)",
            params![e.event_id, prev],
        )?;
        tx.exec(
            "DELETE FROM forward_extremities WHERE room_id = ?1 AND event_id = ?2",
            params![e.room_id, prev],
        )?;
    }
    tx.exec(
        "INSERT INTO forward_extremities (room_id, event_id) VALUES (?1, ?2)",
        params![e.room_id, e.event_id],
    )?;
    let group = state_after.unwrap_or(0);
    tx.exec(
        "INSERT INTO room_heads (room_id, max_depth, state_group) VALUES (?1, ?2, ?3)
         ON CONFLICT (room_id) DO UPDATE SET max_depth = max(max_depth, excluded.max_depth), state_group = excluded.state_group",
        params![e.room_id, e.depth, group],
    )?;
    if let Some(key) = &e.state_key {
        tx.exec(
            "INSERT INTO current_state (room_id, event_type, state_key, event_id) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (room_id, event_type, state_key) DO UPDATE SET event_id = excluded.event_id",
            params![e.room_id, e.event_type, key, e.event_id],
        )?;
    }
    if let Some(m) = &e.membership {
        if m.membership != "join" {
            // Read before the membership changes: the join that ends now.
            super::push::keep_room_notifications(tx, &e.room_id, &m.user_id, stream)?;
        }
        tx.exec(
            "INSERT INTO memberships (room_id, user_id, membership, event_id, stream, forgotten, joined_stream)
             VALUES (?1, ?2, ?3, ?4, ?5, 0, ?5)
             ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership,
                event_id = excluded.event_id, stream = excluded.stream, forgotten = 0,
                joined_stream = CASE WHEN membership = 'join' AND excluded.membership = 'join'
                    THEN joined_stream ELSE excluded.stream END",
            params![e.room_id, m.user_id, m.membership, e.event_id, stream],
        )?;
    }
    if let Some(rel) = &e.relation {
        tx.exec(
            "INSERT OR IGNORE INTO event_relations (event_id, relates_to, rel_type, room_id, event_type, sender, stream)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![e.event_id, rel.relates_to, rel.rel_type, e.room_id, e.event_type, e.sender, stream],
        )?;
    }
    if let Some((user, device, txn)) = &e.txn {
        tx.exec(
            "INSERT INTO txn_ids (user_id, device_id, txn_id, event_id) VALUES (?1, ?2, ?3, ?4)",
            params![user, device, txn, e.event_id],
        )?;
    }
    if let Some((target, redacted_json)) = &e.redaction {
        // The original content is dropped for good: a redaction is a request to forget it.
        tx.exec(
            "UPDATE events SET json = ?2, redacted_by = ?3, contains_url = 0 WHERE event_id = ?1",
            params![target, redacted_json, e.event_id],
        )?;
        tx.exec("DELETE FROM event_relations WHERE event_id = ?1", [target])?;
    }
    Ok(state_after)
}

fn get_events(c: &Connection, ids: &[String]) -> Result<Vec<StoredEvent>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let sql = format!(
            "SELECT {EVENT_COLS} FROM events WHERE event_id IN ({})",
            placeholders(chunk.len(), 1)
        );
        let mut st = c.prepare_cached(&sql)?;
        let rows = st.query_map(params_from_iter(chunk.iter()), event_row)?;
        for r in rows {
            out.push(r?);
        }
    }
    Ok(out)
}

/// Events relating to `q.event_id`, and (for `depth` > 1) events relating to those, up to `depth`
/// levels; the type filters and bounds apply to every level. Each event has one parent, so the
/// walk is a tree and cannot loop.
fn relations(c: &Connection, q: &RelationQuery, depth: u32) -> Result<Vec<StoredEvent>> {
    let mut args = vec![
        Value::Text(q.event_id.clone()),
        Value::Text(q.room_id.clone()),
        Value::Integer(i64::from(depth)),
    ];
    let mut cond = String::new();
    if let Some(rt) = &q.rel_type {
        args.push(Value::Text(rt.clone()));
        cond.push_str(&format!(" AND r.rel_type = ?{}", args.len()));
    }
    if let Some(et) = &q.event_type {
        args.push(Value::Text(et.clone()));
        cond.push_str(&format!(" AND r.event_type = ?{}", args.len()));
    }
    let (cmp_from, cmp_to, order) = if q.forward {
        (">", "<", "ASC")
    } else {
        ("<", ">", "DESC")
    };
    if let Some(from) = q.from {
        args.push(Value::Integer(from));
        cond.push_str(&format!(" AND r.stream {cmp_from} ?{}", args.len()));
    }
    if let Some(to) = q.to {
        args.push(Value::Integer(to));
        cond.push_str(&format!(" AND r.stream {cmp_to}= ?{}", args.len()));
    }
    args.push(Value::Integer(i64::from(q.limit)));
    let cols = EVENT_COLS
        .split(", ")
        .map(|c| format!("e.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    // Direct relations page straight off the (relates_to, stream) index; ?3 is then unused.
    let source = if depth > 1 {
        "(WITH RECURSIVE tree(event_id, level) AS (
            SELECT event_id, 1 FROM event_relations WHERE relates_to = ?1 AND room_id = ?2
            UNION ALL
            SELECT x.event_id, tree.level + 1 FROM event_relations x
            JOIN tree ON x.relates_to = tree.event_id
            WHERE tree.level < ?3 AND x.room_id = ?2
         ) SELECT r.* FROM tree JOIN event_relations r ON r.event_id = tree.event_id)"
    } else {
        "(SELECT * FROM event_relations WHERE relates_to = ?1 AND room_id = ?2)"
    };
    let sql = format!(
        "SELECT {cols} FROM {source} r JOIN events e ON e.event_id = r.event_id
         WHERE 1 = 1{cond} ORDER BY r.stream {order} LIMIT ?{}",
        args.len()
    );
    let mut st = c.prepare_cached(&sql)?;
    Ok(st
        .query_map(params_from_iter(args), event_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?)
}

#[async_trait]
impl RoomStore for SqliteStore {
    async fn create_room(&self, room: NewRoom) -> Result<()> {
        self.write(move |tx, _| {
            let n = tx.exec(
                "INSERT OR IGNORE INTO rooms (room_id, room_version, creator, created_ms) VALUES (?1, ?2, ?3, ?4)",
                params![room.room_id, room.room_version, room.creator, room.created_ms],
            )?;
            if n == 0 {
                return Err(StorageError::Conflict(format!("room {} exists", room.room_id)));
            }
            Ok(())
        })
        .await
    }

    async fn get_room(&self, room_id: &str) -> Result<Option<RoomRecord>> {
        let room_id = room_id.to_owned();
        self.read(move |c| {
            Ok(c.q_row(
                "SELECT room_id, room_version, creator, published FROM rooms WHERE room_id = ?1",
                [room_id],
                |r| {
                    Ok(RoomRecord {
                        room_id: r.get(0)?,
                        room_version: r.get(1)?,
                        creator: r.get(2)?,
                        published: r.get(3)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    async fn set_room_published(&self, room_id: &str, published: bool) -> Result<()> {
        let room_id = room_id.to_owned();
        self.write(move |tx, _| {
            tx.exec(
                "UPDATE rooms SET published = ?2 WHERE room_id = ?1",
                params![room_id, published],
            )?;
            Ok(())
        })
        .await
    }

    async fn published_rooms(&self) -> Result<Vec<String>> {
        self.read(|c| {
            let mut st =
                c.prepare_cached("SELECT room_id FROM rooms WHERE published = 1 ORDER BY room_id")?;
            Ok(st
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?)
        })
        .await
    }

    async fn persist_event(&self, event: NewEvent) -> Result<PersistedEvent> {
        self.write(move |tx, pos| {
            // A retried transaction: checked here, in the writer whose page cache is warm,
            // rather than by a reader before every send.
            if let Some((user, device, txn)) = &event.txn {
                let existing: Option<String> = tx
                    .q_row(
                        "SELECT event_id FROM txn_ids WHERE user_id = ?1 AND device_id = ?2 AND txn_id = ?3",
                        params![user, device, txn],
                        |r| r.get(0),
                    )
                    .optional()?;
                if existing.is_some() {
                    return Ok(PersistedEvent {
                        stream: -1,
                        existing,
                        state_group_after: None,
                        notifications_waiting: false,
                    });
                }
            }
            let stream = pos.next();
            let state_group_after = persist(tx, stream, &event)?;
            pos.touch_room(&event.room_id);
            pos.recent(RecentChange::Event(StoredEvent {
                event_id: event.event_id.clone(),
                room_id: event.room_id.clone(),
                stream,
                json: event.json.clone(),
                unsigned: event.unsigned.clone(),
                event_type: event.event_type.clone(),
                sender: event.sender.clone(),
                state_key: event.state_key.clone(),
                state_group_before: event.state_group_before,
                state_group_after,
                redacted_by: None,
                txn: event.txn.as_ref().map(|(_, d, t)| (d.clone(), t.clone())),
            }));
            if let Some((target, json)) = &event.redaction {
                pos.recent(RecentChange::Redacted {
                    room_id: event.room_id.clone(),
                    event_id: target.clone(),
                    json: json.clone(),
                    redacted_by: event.event_id.clone(),
                });
            }
            if let Some(m) = &event.membership {
                pos.touch_user(&m.user_id);
                pos.touch(crate::ChangeKey::Reads(m.user_id.clone()));
            }
            let notifications_waiting =
                super::push::insert_notifications(tx, pos, stream, &event.notifications)?;
            if let Some(n) = &event.room_notification {
                super::push::insert_room_notification(tx, pos, stream, n)?;
            }
            Ok(PersistedEvent {
                stream,
                existing: None,
                state_group_after,
                notifications_waiting,
            })
        })
        .await
    }

    async fn get_event(&self, event_id: &str) -> Result<Option<StoredEvent>> {
        if let Some(e) = self.event_rows().get(event_id) {
            return Ok(Some(e));
        }
        let version = self.event_rows().version();
        let id = event_id.to_owned();
        let found = self
            .read(move |c| {
                Ok(c.q_row(
                    &format!("SELECT {EVENT_COLS} FROM events WHERE event_id = ?1"),
                    [id],
                    event_row,
                )
                .optional()?)
            })
            .await?;
        if let Some(e) = &found {
            self.event_rows().fill(version, std::slice::from_ref(e));
        }
        Ok(found)
    }

    async fn get_events(&self, event_ids: &[String]) -> Result<Vec<StoredEvent>> {
        let (mut found, missing) = self.event_rows().get_many(event_ids);
        if missing.is_empty() {
            return Ok(found);
        }
        let version = self.event_rows().version();
        let read = self.read(move |c| get_events(c, &missing)).await?;
        self.event_rows().fill(version, &read);
        found.extend(read);
        Ok(found)
    }

    async fn event_for_txn(
        &self,
        user_id: &str,
        device_id: &str,
        txn_id: &str,
    ) -> Result<Option<String>> {
        let (u, d, t) = (user_id.to_owned(), device_id.to_owned(), txn_id.to_owned());
        self.read(move |c| {
            Ok(c.q_row(
                "SELECT event_id FROM txn_ids WHERE user_id = ?1 AND device_id = ?2 AND txn_id = ?3",
                params![u, d, t],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    async fn room_head(&self, room_id: &str) -> Result<Option<RoomHead>> {
        let room_id = room_id.to_owned();
        self.read(move |c| {
            let head: Option<(i64, i64)> = c
                .q_row(
                    "SELECT max_depth, state_group FROM room_heads WHERE room_id = ?1",
                    [&room_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((max_depth, state_group)) = head else {
                return Ok(None);
            };
            let mut st =
                c.prepare_cached("SELECT event_id FROM forward_extremities WHERE room_id = ?1")?;
            let forward_extremities = st
                .query_map([&room_id], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(Some(RoomHead {
                forward_extremities,
                max_depth,
                state_group,
            }))
        })
        .await
    }

    async fn state_group_chain(&self, group: i64) -> Result<Vec<StateGroupRecord>> {
        self.read(move |c| state_group_chain(c, group)).await
    }

    async fn state_group(&self, group: i64) -> Result<Option<StateGroupRecord>> {
        self.read(move |c| state_group_record(c, group)).await
    }

    async fn current_state(&self, room_id: &str) -> Result<Vec<StateEntry>> {
        let room_id = room_id.to_owned();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT event_type, state_key, event_id FROM current_state WHERE room_id = ?1",
            )?;
            Ok(st
                .query_map([room_id], state_entry_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn room_events_backward(
        &self,
        room_id: &str,
        before: i64,
        after: i64,
        limit: u32,
        filter: &EventFilter,
    ) -> Result<Vec<StoredEvent>> {
        // The newest events of a room are usually in memory (see `recent`).
        if let Some(events) = self
            .recent()
            .backward(room_id, before, after, limit, filter)
        {
            return Ok(events);
        }
        let room_id = room_id.to_owned();
        let filter = filter.clone();
        self.read(move |c| {
            let mut args = vec![Value::Text(room_id), Value::Integer(before), Value::Integer(after)];
            let cond = filter_sql(&filter, &mut args);
            args.push(Value::Integer(limit as i64));
            let sql = format!(
                "SELECT {EVENT_COLS} FROM events WHERE room_id = ?1 AND stream <= ?2 AND stream > ?3{cond}
                 ORDER BY stream DESC LIMIT ?{}",
                args.len()
            );
            let mut st = c.prepare_cached(&sql)?;
            Ok(st.query_map(params_from_iter(args), event_row)?.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn room_events_forward(
        &self,
        room_id: &str,
        after: i64,
        before: i64,
        limit: u32,
        filter: &EventFilter,
    ) -> Result<Vec<StoredEvent>> {
        let room_id = room_id.to_owned();
        let filter = filter.clone();
        self.read(move |c| {
            let mut args = vec![Value::Text(room_id), Value::Integer(after), Value::Integer(before)];
            let cond = filter_sql(&filter, &mut args);
            args.push(Value::Integer(limit as i64));
            let sql = format!(
                "SELECT {EVENT_COLS} FROM events WHERE room_id = ?1 AND stream > ?2 AND stream < ?3{cond}
                 ORDER BY stream ASC LIMIT ?{}",
                args.len()
            );
            let mut st = c.prepare_cached(&sql)?;
            Ok(st.query_map(params_from_iter(args), event_row)?.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn rooms_for_user(&self, user_id: &str) -> Result<Vec<MembershipRecord>> {
        let u = user_id.to_owned();
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {MEMBERSHIP_COLS} FROM memberships WHERE user_id = ?1"
            ))?;
            Ok(st
                .query_map([u], membership_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn room_members(&self, room_id: &str) -> Result<Vec<MembershipRecord>> {
        let r = room_id.to_owned();
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {MEMBERSHIP_COLS} FROM memberships WHERE room_id = ?1"
            ))?;
            Ok(st
                .query_map([r], membership_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn largest_rooms(&self, min_joined: usize, limit: usize) -> Result<Vec<String>> {
        let (min_joined, limit) = (min_joined as i64, limit as i64);
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT room_id FROM memberships WHERE membership = 'join' GROUP BY room_id
                 HAVING COUNT(*) >= ?1 ORDER BY COUNT(*) DESC LIMIT ?2",
            )?;
            Ok(st
                .query_map([min_joined, limit], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?)
        })
        .await
    }

    async fn member_summary(
        &self,
        room_id: &str,
        viewer: &str,
        heroes: u32,
    ) -> Result<MemberSummary> {
        let (r, v) = (room_id.to_owned(), viewer.to_owned());
        self.read(move |c| {
            let mut out = MemberSummary::default();
            let mut st = c.prepare_cached(
                "SELECT membership, count(*) FROM memberships
                 WHERE room_id = ?1 AND membership IN ('join', 'invite') GROUP BY membership",
            )?;
            for row in st.query_map([&r], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })? {
                let (m, n) = row?;
                let n = u64::try_from(n).unwrap_or(0);
                if m == "join" {
                    out.joined = n;
                } else {
                    out.invited = n;
                }
            }
            let mut st = c.prepare_cached(
                "SELECT user_id FROM memberships
                 WHERE room_id = ?1 AND membership IN ('join', 'invite') AND user_id != ?2
                 ORDER BY user_id LIMIT ?3",
            )?;
            out.heroes = st
                .query_map(params![r, v, heroes], |row| row.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(out)
        })
        .await
    }

    async fn membership(&self, room_id: &str, user_id: &str) -> Result<Option<MembershipRecord>> {
        let (r, u) = (room_id.to_owned(), user_id.to_owned());
        self.read(move |c| {
            Ok(c.q_row(
                &format!(
                    "SELECT {MEMBERSHIP_COLS} FROM memberships WHERE room_id = ?1 AND user_id = ?2"
                ),
                params![r, u],
                membership_row,
            )
            .optional()?)
        })
        .await
    }

    async fn forget_room(&self, room_id: &str, user_id: &str) -> Result<()> {
        let (r, u) = (room_id.to_owned(), user_id.to_owned());
        self.write(move |tx, pos| {
            tx.exec(
                "UPDATE memberships SET forgotten = 1 WHERE room_id = ?1 AND user_id = ?2",
                params![r, u],
            )?;
            pos.touch_user(&u);
            Ok(())
        })
        .await
    }

    async fn relations(&self, q: RelationQuery) -> Result<Vec<StoredEvent>> {
        self.read(move |c| relations(c, &q, 1)).await
    }

    async fn relations_recursive(&self, q: RelationQuery, depth: u32) -> Result<Vec<StoredEvent>> {
        self.read(move |c| relations(c, &q, depth.max(1))).await
    }

    async fn thread_summary(
        &self,
        room_id: &str,
        root: &str,
        user_id: &str,
    ) -> Result<(u64, bool)> {
        let (r, t, u) = (room_id.to_owned(), root.to_owned(), user_id.to_owned());
        self.read(move |c| {
            Ok(c.q_row(
                "SELECT count(*), coalesce(max(sender = ?3), 0) FROM event_relations
                 WHERE relates_to = ?2 AND room_id = ?1 AND rel_type = 'm.thread'",
                params![r, t, u],
                |row| Ok((row.get::<_, i64>(0)?.max(0) as u64, row.get::<_, bool>(1)?)),
            )?)
        })
        .await
    }

    async fn threads(
        &self,
        room_id: &str,
        before: i64,
        limit: u32,
        participated_by: Option<&str>,
    ) -> Result<Vec<(StoredEvent, i64)>> {
        let room_id = room_id.to_owned();
        let participant = participated_by.map(str::to_owned);
        self.read(move |c| {
            // A thread is ordered by its latest reply; `before` bounds that position.
            let cols = EVENT_COLS.split(", ").map(|c| format!("e.{c}")).collect::<Vec<_>>().join(", ");
            let participant_cond = if participant.is_some() {
                " AND (e.sender = ?4 OR EXISTS (SELECT 1 FROM event_relations p WHERE p.relates_to = t.relates_to
                   AND p.rel_type = 'm.thread' AND p.sender = ?4))"
            } else {
                ""
            };
            let sql = format!(
                "SELECT {cols}, t.latest FROM
                   (SELECT relates_to, max(stream) AS latest FROM event_relations
                    WHERE room_id = ?1 AND rel_type = 'm.thread' GROUP BY relates_to) t
                 JOIN events e ON e.event_id = t.relates_to
                 WHERE e.room_id = ?1 AND t.latest < ?2{participant_cond}
                 ORDER BY t.latest DESC LIMIT ?3"
            );
            let mut st = c.prepare_cached(&sql)?;
            let map = |r: &Row<'_>| Ok((event_row(r)?, r.get::<_, i64>(13)?));
            let rows = match &participant {
                Some(p) => st.query_map(params![room_id, before, limit, p], map)?.collect::<rusqlite::Result<Vec<_>>>()?,
                None => st.query_map(params![room_id, before, limit], map)?.collect::<rusqlite::Result<Vec<_>>>()?,
            };
            Ok(rows)
        })
        .await
    }

    async fn put_alias(&self, alias: &str, room_id: &str, creator: &str) -> Result<()> {
        let (a, r, u) = (alias.to_owned(), room_id.to_owned(), creator.to_owned());
        self.write(move |tx, _| {
            let n = tx.exec(
                "INSERT OR IGNORE INTO room_aliases (alias, room_id, creator) VALUES (?1, ?2, ?3)",
                params![a, r, u],
            )?;
            if n == 0 {
                return Err(StorageError::Conflict(format!("alias {a} exists")));
            }
            Ok(())
        })
        .await
    }

    async fn get_alias(&self, alias: &str) -> Result<Option<AliasRecord>> {
        let a = alias.to_owned();
        self.read(move |c| {
            Ok(c.q_row(
                "SELECT alias, room_id, creator FROM room_aliases WHERE alias = ?1",
                [a],
                |r| {
                    Ok(AliasRecord {
                        alias: r.get(0)?,
                        room_id: r.get(1)?,
                        creator: r.get(2)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    async fn delete_alias(&self, alias: &str) -> Result<bool> {
        let a = alias.to_owned();
        self.write(move |tx, _| Ok(tx.exec("DELETE FROM room_aliases WHERE alias = ?1", [a])? > 0))
            .await
    }

    async fn aliases_for_room(&self, room_id: &str) -> Result<Vec<String>> {
        let r = room_id.to_owned();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT alias FROM room_aliases WHERE room_id = ?1 ORDER BY alias",
            )?;
            Ok(st
                .query_map([r], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?)
        })
        .await
    }

    async fn shared_rooms(&self, a: &str, b: &str) -> Result<bool> {
        let (a, b) = (a.to_owned(), b.to_owned());
        self.read(move |c| {
            Ok(c.q_row(
                "SELECT EXISTS (SELECT 1 FROM memberships x JOIN memberships y ON x.room_id = y.room_id
                 WHERE x.user_id = ?1 AND y.user_id = ?2 AND x.membership = 'join' AND y.membership = 'join')",
                params![a, b],
                |r| r.get(0),
            )?)
        })
        .await
    }
}

/// A `(event_type, state_key, event_id)` row.
fn state_entry_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StateEntry> {
    Ok(StateEntry {
        event_type: r.get(0)?,
        state_key: r.get(1)?,
        event_id: r.get(2)?,
    })
}

/// A group and the groups its delta builds on, newest first, in one statement: two queries per
/// group made a chain of a hundred deltas cost two hundred trips through SQLite, the largest
/// part of an initial sync.
fn state_group_chain(c: &Connection, group: i64) -> Result<Vec<StateGroupRecord>> {
    let mut st = c.prepare_cached(
        "WITH RECURSIVE chain(id, prev, chain_len, depth) AS (
             SELECT id, prev_group, chain_len, 0 FROM state_groups WHERE id = ?1
             UNION ALL
             SELECT g.id, g.prev_group, g.chain_len, chain.depth + 1
             FROM state_groups g JOIN chain ON g.id = chain.prev
             WHERE chain.depth < ?2
         )
         SELECT chain.depth, chain.id, chain.prev, chain.chain_len,
                e.event_type, e.state_key, e.event_id
         FROM chain LEFT JOIN state_group_entries e ON e.group_id = chain.id",
    )?;
    let mut out: Vec<StateGroupRecord> = Vec::new();
    let mut rows = st.query(params![group, MAX_CHAIN_WALK])?;
    while let Some(r) = rows.next()? {
        let depth: i64 = r.get(0)?;
        let depth = usize::try_from(depth)
            .map_err(|_| StorageError::Database("negative state chain depth".into()))?;
        if out.len() <= depth {
            out.resize_with(depth + 1, || StateGroupRecord {
                id: 0,
                prev: None,
                chain_len: 0,
                entries: Vec::new(),
            });
        }
        let rec = &mut out[depth];
        rec.id = r.get(1)?;
        rec.prev = r.get(2)?;
        rec.chain_len = r.get(3)?;
        if let Some(event_type) = r.get::<_, Option<String>>(4)? {
            rec.entries.push(StateEntry {
                event_type,
                state_key: r.get(5)?,
                event_id: r.get(6)?,
            });
        }
    }
    Ok(out)
}

/// Groups a chain walk follows at most: chains are cut by a full snapshot long before this, so
/// only a damaged database (a loop of groups) reaches it.
const MAX_CHAIN_WALK: i64 = 100_000;

/// One state group record.
fn state_group_record(c: &Connection, group: i64) -> Result<Option<StateGroupRecord>> {
    let head: Option<(Option<i64>, i64)> = c
        .q_row(
            "SELECT prev_group, chain_len FROM state_groups WHERE id = ?1",
            [group],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((prev, chain_len)) = head else {
        return Ok(None);
    };
    let mut st = c.prepare_cached(
        "SELECT event_type, state_key, event_id FROM state_group_entries WHERE group_id = ?1",
    )?;
    let entries = st
        .query_map([group], state_entry_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(StateGroupRecord {
        id: group,
        prev,
        chain_len,
        entries,
    }))
}
