//! Push storage: pushers, notifications and the unread counts derived from them.

use std::collections::BTreeMap;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, Transaction, params};

use super::{CachedExt, Positions, SqliteStore};
use crate::recent_notifications::{NotificationChange, RoomTailRow, TailRow};
use crate::{
    NewNotification, NewRoomNotification, NotificationRecord, PushStore, PusherRecord, Result,
    ThreadCount,
};

const PUSHER_COLUMNS: &str =
    "user_id, app_id, pushkey, kind, app_display_name, device_display_name,
    profile_tag, lang, data, device_id, pushkey_ts, pushed_through";

/// The listed columns of a user's own rows (in either table).
const OWN_COLUMNS: &str =
    "event_stream, room_id, event_id, thread_id, highlight, push, actions, profile_tag, ts";

/// The same columns of the room notifications (`b`) that reach the user `?1` through their joined
/// rooms (`m`): joined before the event without a break since, not the sender, and without a row
/// of their own for the event. Followed by the caller's further conditions on `b`.
const SHARED_NOTIFICATIONS: &str = "SELECT b.event_stream, b.room_id, b.event_id, b.thread_id,
        b.highlight, b.push, b.actions, NULL, b.ts
     FROM memberships m JOIN push_room_notifications b ON b.room_id = m.room_id
     WHERE m.user_id = ?1 AND m.membership = 'join' AND b.event_stream > m.joined_stream
       AND b.sender != ?1
       AND NOT EXISTS (SELECT 1 FROM push_notifications n
            WHERE n.user_id = ?1 AND n.room_id = b.room_id AND n.event_stream = b.event_stream)
       AND NOT EXISTS (SELECT 1 FROM push_pending_notifications p
            WHERE p.user_id = ?1 AND p.event_stream = b.event_stream)";

/// The parts of a member's unread counts in a room, per thread as (thread_id, n, h) — counts of
/// notifications and highlights — from the named parameters `:user`, `:room`, `:floor`,
/// `:after`, `:up_to`, `:member` (and `:thread` when `one_thread`): the user's own notifying rows
/// in both tables, plus the room's notifications when a member (not the user's own messages),
/// minus those among them the user has a row of their own for. Subtracting probes the room's
/// notifications only for the user's few rows, where excluding them probed the user's rows for
/// every room notification; each part is summed on its own, so no row is sorted.
fn count_terms(one_thread: bool) -> String {
    let (own_thread, room_thread) = if one_thread {
        ("AND thread_id = :thread", "AND b.thread_id = :thread")
    } else {
        ("", "")
    };
    let own = |table: &str, notify: &str| {
        format!(
            "FROM {table}
              WHERE user_id = :user AND room_id = :room {notify} AND event_stream > :floor
                AND stream > :after AND stream <= :up_to"
        )
    };
    format!(
        "SELECT thread_id, count(*) AS n, sum(highlight) AS h {} {own_thread} GROUP BY thread_id
         UNION ALL
         SELECT thread_id, count(*), sum(highlight) {} {own_thread} GROUP BY thread_id
         UNION ALL
         SELECT b.thread_id, count(*), sum(b.highlight) FROM push_room_notifications b
          WHERE :member AND b.room_id = :room AND b.sender != :user AND b.event_stream > :floor
            AND b.event_stream > :after AND b.event_stream <= :up_to {room_thread}
          GROUP BY b.thread_id
         UNION ALL
         SELECT b.thread_id, -count(*), -sum(b.highlight)
           FROM (SELECT event_stream {} UNION ALL SELECT event_stream {}) o
           JOIN push_room_notifications b ON b.event_stream = o.event_stream
          WHERE :member AND b.room_id = :room AND b.sender != :user {room_thread}
          GROUP BY b.thread_id",
        own("push_notifications", "AND notify = 1"),
        own("push_pending_notifications", "AND notify = 1"),
        own("push_notifications", ""),
        own("push_pending_notifications", ""),
    )
}

/// Receipt types that mark events read for the counts: public and private read receipts alike.
const READ_TYPES: &str = "('m.read', 'm.read.private')";

fn pusher_row(r: &Row<'_>) -> rusqlite::Result<PusherRecord> {
    Ok(PusherRecord {
        user_id: r.get(0)?,
        app_id: r.get(1)?,
        pushkey: r.get(2)?,
        kind: r.get(3)?,
        app_display_name: r.get(4)?,
        device_display_name: r.get(5)?,
        profile_tag: r.get(6)?,
        lang: r.get(7)?,
        data: r.get(8)?,
        device_id: r.get(9)?,
        pushkey_ts: r.get(10)?,
        pushed_through: r.get(11)?,
    })
}

/// A row of `OWN_COLUMNS` (or `SHARED_NOTIFICATIONS`) as the user's notification.
fn notification_row(user_id: &str, r: &Row<'_>) -> rusqlite::Result<NotificationRecord> {
    let event_stream = r.get(0)?;
    Ok(NotificationRecord {
        id: event_stream,
        user_id: user_id.to_owned(),
        room_id: r.get(1)?,
        event_id: r.get(2)?,
        event_stream,
        thread_id: r.get(3)?,
        highlight: r.get(4)?,
        push: r.get(5)?,
        actions: r.get(6)?,
        profile_tag: r.get(7)?,
        ts: r.get(8)?,
    })
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

#[async_trait]
impl PushStore for SqliteStore {
    async fn set_pusher(&self, p: PusherRecord, append: bool) -> Result<()> {
        self.write(move |tx, pos| {
            if !append {
                tx.exec(
                    "DELETE FROM pushers WHERE app_id = ?1 AND pushkey = ?2 AND user_id != ?3",
                    params![p.app_id, p.pushkey, p.user_id],
                )?;
            }
            // A new pusher starts now: what was notified before is not replayed.
            let latest = pos.allocated();
            tx.exec(
                "INSERT INTO pushers (user_id, app_id, pushkey, kind, app_display_name,
                    device_display_name, profile_tag, lang, data, device_id, pushkey_ts,
                    pushed_through)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                 ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET kind = excluded.kind,
                    app_display_name = excluded.app_display_name,
                    device_display_name = excluded.device_display_name,
                    profile_tag = excluded.profile_tag, lang = excluded.lang, data = excluded.data,
                    device_id = excluded.device_id, pushkey_ts = excluded.pushkey_ts",
                params![
                    p.user_id,
                    p.app_id,
                    p.pushkey,
                    p.kind,
                    p.app_display_name,
                    p.device_display_name,
                    p.profile_tag,
                    p.lang,
                    p.data,
                    p.device_id,
                    p.pushkey_ts,
                    latest
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn delete_pusher(&self, user_id: &str, app_id: &str, pushkey: &str) -> Result<bool> {
        let (u, a, k) = (user_id.to_owned(), app_id.to_owned(), pushkey.to_owned());
        self.write(move |tx, _| {
            Ok(tx.exec(
                "DELETE FROM pushers WHERE user_id = ?1 AND app_id = ?2 AND pushkey = ?3",
                params![u, a, k],
            )? > 0)
        })
        .await
    }

    async fn pushers_for_user(&self, user_id: &str) -> Result<Vec<PusherRecord>> {
        let u = user_id.to_owned();
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {PUSHER_COLUMNS} FROM pushers WHERE user_id = ?1 ORDER BY app_id, pushkey"
            ))?;
            Ok(st
                .query_map([u], pusher_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn all_pushers(&self) -> Result<Vec<PusherRecord>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!("SELECT {PUSHER_COLUMNS} FROM pushers"))?;
            Ok(st
                .query_map([], pusher_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn set_pusher_progress(
        &self,
        user_id: &str,
        app_id: &str,
        pushkey: &str,
        last: i64,
    ) -> Result<()> {
        let (u, a, k) = (user_id.to_owned(), app_id.to_owned(), pushkey.to_owned());
        self.write(move |tx, _| {
            tx.exec(
                "UPDATE pushers SET pushed_through = max(pushed_through, ?4)
                 WHERE user_id = ?1 AND app_id = ?2 AND pushkey = ?3",
                params![u, a, k, last],
            )?;
            Ok(())
        })
        .await
    }

    async fn move_pending_notifications(&self, max: usize) -> Result<bool> {
        self.write(move |tx, _| move_pending_notifications(tx, max))
            .await
    }

    async fn notifications(
        &self,
        user_id: &str,
        before: Option<i64>,
        limit: u32,
        only_highlight: bool,
    ) -> Result<Vec<NotificationRecord>> {
        let u = user_id.to_owned();
        let before = before.unwrap_or(i64::MAX);
        self.read(move |c| {
            // One statement, so one snapshot: a row moving between the tables is seen once.
            let own = |table: &str| {
                format!(
                    "SELECT * FROM (SELECT {OWN_COLUMNS} FROM {table}
                      WHERE user_id = ?1 AND event_stream < ?2 AND notify = 1
                        AND (?3 = 0 OR highlight = 1)
                      ORDER BY event_stream DESC LIMIT ?4)"
                )
            };
            let mut st = c.prepare_cached(&format!(
                "{} UNION ALL {} UNION ALL
                 SELECT * FROM ({SHARED_NOTIFICATIONS} AND b.event_stream < ?2
                    AND (?3 = 0 OR b.highlight = 1) ORDER BY b.event_stream DESC LIMIT ?4)
                 ORDER BY 1 DESC LIMIT ?4",
                own("push_notifications"),
                own("push_pending_notifications"),
            ))?;
            Ok(st
                .query_map(params![u, before, only_highlight, limit], |r| {
                    notification_row(&u, r)
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn pending_pushes(
        &self,
        user_id: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<NotificationRecord>> {
        let u = user_id.to_owned();
        self.read(move |c| {
            // One statement, so one snapshot: positions commit in order, so nothing at or below
            // the last one returned can appear later.
            let own = |table: &str| {
                format!(
                    "SELECT * FROM (SELECT {OWN_COLUMNS} FROM {table}
                      WHERE user_id = ?1 AND event_stream > ?2 AND push = 1
                      ORDER BY event_stream LIMIT ?3)"
                )
            };
            let mut st = c.prepare_cached(&format!(
                "{} UNION ALL {} UNION ALL
                 SELECT * FROM ({SHARED_NOTIFICATIONS} AND b.event_stream > ?2 AND b.push = 1
                    ORDER BY b.event_stream LIMIT ?3)
                 ORDER BY 1 LIMIT ?3",
                own("push_notifications"),
                own("push_pending_notifications"),
            ))?;
            Ok(st
                .query_map(params![u, after, limit], |r| notification_row(&u, r))?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn read_positions(&self, user_id: &str, room_id: &str) -> Result<Vec<(String, i64)>> {
        let (u, r) = (user_id.to_owned(), room_id.to_owned());
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT rc.thread_id, max(e.stream) FROM receipts rc
                 JOIN events e ON e.event_id = rc.event_id
                 WHERE rc.room_id = ?1 AND rc.user_id = ?2 AND rc.receipt_type IN {READ_TYPES}
                 GROUP BY rc.thread_id"
            ))?;
            Ok(st
                .query_map(params![r, u], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn unread_counts(
        &self,
        user_id: &str,
        room_id: &str,
        floor: i64,
        thread_floors: Vec<(String, i64)>,
        window: (i64, i64),
        member: bool,
    ) -> Result<Vec<ThreadCount>> {
        let (after, up_to) = window;
        // A window (a cached count brought up to date) is usually answered from memory.
        if after != i64::MIN
            && let Some(counts) = self.recent_notifications().counts(
                user_id,
                room_id,
                floor,
                &thread_floors,
                after,
                up_to,
                member,
            )
        {
            return Ok(counts);
        }
        let (u, r) = (user_id.to_owned(), room_id.to_owned());
        self.read(move |c| {
            let mut counts: BTreeMap<String, ThreadCount> = BTreeMap::new();
            // One statement, so one snapshot: a waiting row moved meanwhile counts once. Room
            // notifications are written at their event's position (`stream` = `event_stream`).
            let mut st = c.prepare_cached(&format!(
                "SELECT thread_id, sum(n), coalesce(sum(h), 0) FROM ({}) GROUP BY thread_id",
                count_terms(false)
            ))?;
            let all = rusqlite::named_params! {
                ":user": u, ":room": r, ":floor": floor, ":after": after, ":up_to": up_to,
                ":member": member,
            };
            for row in st.query_map(all, |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })? {
                let (thread_id, n, h) = row?;
                counts.insert(
                    thread_id.clone(),
                    ThreadCount {
                        thread_id,
                        notifications: to_u64(n),
                        highlights: to_u64(h),
                    },
                );
            }
            // A thread's own receipt may be further along than the unthreaded one.
            let mut one = c.prepare_cached(&format!(
                "SELECT coalesce(sum(n), 0), coalesce(sum(h), 0) FROM ({})",
                count_terms(true)
            ))?;
            for (thread, thread_floor) in thread_floors {
                if thread_floor <= floor || !counts.contains_key(&thread) {
                    continue;
                }
                let params = rusqlite::named_params! {
                    ":user": u, ":room": r, ":floor": thread_floor, ":after": after,
                    ":up_to": up_to, ":member": member, ":thread": thread,
                };
                let (n, h): (i64, i64) = one
                    .query_row(params, |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()?
                    .unwrap_or((0, 0));
                counts.insert(
                    thread.clone(),
                    ThreadCount {
                        thread_id: thread,
                        notifications: to_u64(n),
                        highlights: to_u64(h),
                    },
                );
            }
            Ok(counts
                .into_values()
                .filter(|c| c.notifications > 0)
                .collect())
        })
        .await
    }

    async fn unread_total(&self, user_id: &str) -> Result<u64> {
        let u = user_id.to_owned();
        self.read(move |c| {
            // Per joined room, as its counts: after the join and the unthreaded read receipt;
            // the user's own rows, plus the room's notifications, minus those the user has a
            // row of their own for (see `count_terms`).
            let own = |table: &str, notify: &str| {
                format!(
                    "FROM f JOIN {table} n ON n.user_id = ?1 AND n.room_id = f.room_id
                        AND n.event_stream > f.floor {notify}"
                )
            };
            let matched = "JOIN push_room_notifications b ON b.event_stream = n.event_stream
                AND b.room_id = f.room_id AND b.sender != ?1";
            let n: i64 = c
                .prepare_cached(&format!(
                    "WITH f AS (
                        SELECT m.room_id, max(m.stream, coalesce(
                            (SELECT max(e.stream) FROM receipts rc
                               JOIN events e ON e.event_id = rc.event_id
                              WHERE rc.room_id = m.room_id AND rc.user_id = ?1
                                AND rc.thread_id = '' AND rc.receipt_type IN {READ_TYPES}),
                            0)) AS floor
                          FROM memberships m WHERE m.user_id = ?1 AND m.membership = 'join')
                     SELECT (SELECT count(*) {})
                          + (SELECT count(*) {})
                          + (SELECT count(*) FROM f JOIN push_room_notifications b
                              ON b.room_id = f.room_id AND b.event_stream > f.floor
                             AND b.sender != ?1)
                          - (SELECT count(*) {} {matched})
                          - (SELECT count(*) {} {matched})",
                    own("push_notifications", "AND n.notify = 1"),
                    own("push_pending_notifications", "AND n.notify = 1"),
                    own("push_notifications", ""),
                    own("push_pending_notifications", ""),
                ))?
                .query_row([u], |r| r.get(0))?;
            Ok(to_u64(n))
        })
        .await
    }

    async fn rooms_with_room_notifications(
        &self,
        user_id: &str,
        rooms: Vec<String>,
        after: i64,
        up_to: i64,
    ) -> Result<Vec<String>> {
        if after >= up_to || rooms.is_empty() {
            return Ok(vec![]);
        }
        let u = user_id.to_owned();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM push_room_notifications
                  WHERE room_id = ?1 AND event_stream > ?2 AND event_stream <= ?3
                    AND sender != ?4)",
            )?;
            let mut out = Vec::new();
            for room in rooms {
                if st.query_row(params![room, after, up_to, u], |r| r.get::<_, bool>(0))? {
                    out.push(room);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn rooms_with_new_notifications(
        &self,
        user_id: &str,
        after: i64,
        up_to: i64,
    ) -> Result<Vec<String>> {
        if after >= up_to {
            return Ok(vec![]);
        }
        if let Some(rooms) = self
            .recent_notifications()
            .rooms_changed(user_id, after, up_to)
        {
            return Ok(rooms);
        }
        let u = user_id.to_owned();
        self.read(move |c| {
            // Rows are written at their event's position, and both tables are indexed by it.
            let mut st = c.prepare_cached(
                "SELECT room_id FROM push_notifications
                  WHERE user_id = ?1 AND event_stream > ?2 AND event_stream <= ?3
                 UNION
                 SELECT room_id FROM push_pending_notifications
                  WHERE user_id = ?1 AND event_stream > ?2 AND event_stream <= ?3
                 ORDER BY 1",
            )?;
            Ok(st
                .query_map(params![u, after, up_to], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }
}

/// Rows an event's write puts straight into `push_notifications`; more wait in
/// `push_pending_notifications` (see migration 0008).
pub(crate) const INLINE_NOTIFICATIONS: usize = 32;

/// The columns both notification tables share, in insert order.
const ROW_COLUMNS: &str = "user_id, room_id, event_id, event_stream, stream, thread_id, notify,
    highlight, push, actions, profile_tag, ts";

/// Stores an event's notification rows, written at the event's position `stream`. The change
/// index and the in-memory tails learn of them now, whichever table they go to. Returns whether
/// they wait in `push_pending_notifications`.
pub(super) fn insert_notifications(
    tx: &Transaction<'_>,
    pos: &mut Positions,
    stream: i64,
    rows: &[NewNotification],
) -> Result<bool> {
    if rows.is_empty() {
        return Ok(false);
    }
    let pending = rows.len() > INLINE_NOTIFICATIONS;
    let table = if pending {
        "push_pending_notifications"
    } else {
        "push_notifications"
    };
    let mut st = tx.prepare_cached(&format!(
        "INSERT INTO {table} ({ROW_COLUMNS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
    ))?;
    for n in rows {
        pos.touch(crate::ChangeKey::Notifications(n.user_id.clone()));
        pos.notification(NotificationChange::Row(TailRow {
            user_id: n.user_id.clone(),
            room_id: n.room_id.clone(),
            thread_id: n.thread_id.clone(),
            notify: n.notify,
            highlight: n.highlight,
            event_stream: stream,
            stream,
        }));
        st.execute(params![
            n.user_id,
            n.room_id,
            n.event_id,
            stream,
            stream,
            n.thread_id,
            n.notify,
            n.highlight,
            n.push,
            n.actions,
            n.profile_tag,
            n.ts
        ])?;
    }
    Ok(pending)
}

/// Stores an event's room notification at the event's position `stream`. It touches no user in
/// the change index: the event touches the room, which wakes and refreshes every member.
pub(super) fn insert_room_notification(
    tx: &Transaction<'_>,
    pos: &mut Positions,
    stream: i64,
    n: &NewRoomNotification,
) -> Result<()> {
    pos.notification(NotificationChange::Room(RoomTailRow {
        room_id: n.room_id.clone(),
        sender: n.sender.clone(),
        thread_id: n.thread_id.clone(),
        highlight: n.highlight,
        event_stream: stream,
    }));
    tx.exec(
        "INSERT INTO push_room_notifications (event_stream, room_id, event_id, sender, thread_id,
            highlight, push, actions, ts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            stream,
            n.room_id,
            n.event_id,
            n.sender,
            n.thread_id,
            n.highlight,
            n.push,
            n.actions,
            n.ts
        ],
    )?;
    Ok(())
}

/// Room notifications kept per ended join, at most.
const KEPT_ON_LEAVE: i64 = 1_000;

/// Turns the room notifications a local member had when their join ends into rows of their own,
/// newest first: a room notification reaches joined members only, and `/notifications` still
/// lists them. Not pushed; written at `stream` (the leave's position) but with their events'
/// positions, which lie before the leave, so they are new to no count, and neither the change
/// index nor the tails need to learn of them.
pub(super) fn keep_room_notifications(
    tx: &Transaction<'_>,
    room_id: &str,
    user_id: &str,
    stream: i64,
) -> Result<()> {
    tx.exec(
        &format!(
            "INSERT INTO push_notifications ({ROW_COLUMNS})
             SELECT ?2, b.room_id, b.event_id, b.event_stream, ?3, b.thread_id, 1, b.highlight,
                    0, b.actions, NULL, b.ts
               FROM memberships m JOIN push_room_notifications b
                 ON b.room_id = m.room_id AND b.event_stream > m.joined_stream
              WHERE m.room_id = ?1 AND m.user_id = ?2 AND m.membership = 'join'
                AND b.sender != ?2
                AND EXISTS (SELECT 1 FROM users WHERE user_id = ?2)
                AND NOT EXISTS (SELECT 1 FROM push_notifications n WHERE n.user_id = ?2
                     AND n.room_id = ?1 AND n.event_stream = b.event_stream)
                AND NOT EXISTS (SELECT 1 FROM push_pending_notifications p WHERE p.user_id = ?2
                     AND p.event_stream = b.event_stream)
              ORDER BY b.event_stream DESC LIMIT {KEPT_ON_LEAVE}"
        ),
        params![room_id, user_id, stream],
    )?;
    Ok(())
}

/// Moves up to `max` waiting rows, oldest first, into `push_notifications`. Readers read both
/// tables, and the change index and tails learnt of the rows when they were first stored, so
/// this touches nothing. Returns whether anything waited.
pub(super) fn move_pending_notifications(tx: &Transaction<'_>, max: usize) -> Result<bool> {
    let max = i64::try_from(max).unwrap_or(i64::MAX);
    let last: Option<i64> = tx.q_row(
        "SELECT max(id) FROM (SELECT id FROM push_pending_notifications ORDER BY id LIMIT ?1)",
        [max],
        |r| r.get(0),
    )?;
    let Some(last) = last else {
        return Ok(false);
    };
    tx.exec(
        &format!(
            "INSERT INTO push_notifications ({ROW_COLUMNS})
             SELECT {ROW_COLUMNS} FROM push_pending_notifications WHERE id <= ?1 ORDER BY id"
        ),
        [last],
    )?;
    tx.exec(
        "DELETE FROM push_pending_notifications WHERE id <= ?1",
        [last],
    )?;
    Ok(true)
}
