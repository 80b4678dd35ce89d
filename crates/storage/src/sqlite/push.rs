//! Push storage: pushers, notifications and the unread counts derived from them.

use std::collections::BTreeMap;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, Transaction, params};

use super::{CachedExt, Positions, SqliteStore};
use crate::recent_notifications::{NotificationChange, TailRow};
use crate::{NewNotification, NotificationRecord, PushStore, PusherRecord, Result, ThreadCount};

const PUSHER_COLUMNS: &str =
    "user_id, app_id, pushkey, kind, app_display_name, device_display_name,
    profile_tag, lang, data, device_id, pushkey_ts, last_notification_id";

const NOTIFICATION_COLUMNS: &str = "id, user_id, room_id, event_id, event_stream, thread_id,
    highlight, push, actions, profile_tag, ts";

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
        last_notification_id: r.get(11)?,
    })
}

fn notification_row(r: &Row<'_>) -> rusqlite::Result<NotificationRecord> {
    Ok(NotificationRecord {
        id: r.get(0)?,
        user_id: r.get(1)?,
        room_id: r.get(2)?,
        event_id: r.get(3)?,
        event_stream: r.get(4)?,
        thread_id: r.get(5)?,
        highlight: r.get(6)?,
        push: r.get(7)?,
        actions: r.get(8)?,
        profile_tag: r.get(9)?,
        ts: r.get(10)?,
    })
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

#[async_trait]
impl PushStore for SqliteStore {
    async fn set_pusher(&self, p: PusherRecord, append: bool) -> Result<()> {
        self.write(move |tx, _| {
            if !append {
                tx.exec(
                    "DELETE FROM pushers WHERE app_id = ?1 AND pushkey = ?2 AND user_id != ?3",
                    params![p.app_id, p.pushkey, p.user_id],
                )?;
            }
            let latest: i64 = tx.q_row(
                "SELECT coalesce(max(id), 0) FROM push_notifications WHERE user_id = ?1",
                [&p.user_id],
                |r| r.get(0),
            )?;
            tx.exec(
                "INSERT INTO pushers (user_id, app_id, pushkey, kind, app_display_name,
                    device_display_name, profile_tag, lang, data, device_id, pushkey_ts,
                    last_notification_id)
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
                "UPDATE pushers SET last_notification_id = max(last_notification_id, ?4)
                 WHERE user_id = ?1 AND app_id = ?2 AND pushkey = ?3",
                params![u, a, k, last],
            )?;
            Ok(())
        })
        .await
    }

    async fn add_notifications(&self, rows: Vec<NewNotification>) -> Result<i64> {
        self.write(move |tx, pos| {
            let stream = pos.next();
            insert_notifications(tx, pos, stream, None, &rows)?;
            Ok(stream)
        })
        .await
    }

    async fn move_pending_notifications(&self, max: usize) -> Result<Option<Vec<String>>> {
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
            let mut st = c.prepare_cached(&format!(
                "SELECT {NOTIFICATION_COLUMNS} FROM push_notifications
                 WHERE user_id = ?1 AND id < ?2 AND notify = 1 AND (?3 = 0 OR highlight = 1)
                 ORDER BY id DESC LIMIT ?4"
            ))?;
            Ok(st
                .query_map(params![u, before, only_highlight, limit], notification_row)?
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
            let mut st = c.prepare_cached(&format!(
                "SELECT {NOTIFICATION_COLUMNS} FROM push_notifications
                 WHERE user_id = ?1 AND id > ?2 AND push = 1 ORDER BY id LIMIT ?3"
            ))?;
            Ok(st
                .query_map(params![u, after, limit], notification_row)?
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
            )
        {
            return Ok(counts);
        }
        let (u, r) = (user_id.to_owned(), room_id.to_owned());
        self.read(move |c| {
            let mut counts: BTreeMap<String, ThreadCount> = BTreeMap::new();
            let mut st = c.prepare_cached(
                // One statement, so one snapshot: a waiting row moved meanwhile counts once.
                "SELECT thread_id, count(*), coalesce(sum(highlight), 0) FROM (
                    SELECT thread_id, highlight FROM push_notifications
                     WHERE user_id = ?1 AND room_id = ?2 AND notify = 1 AND event_stream > ?3
                       AND stream > ?4 AND stream <= ?5
                    UNION ALL
                    SELECT thread_id, highlight FROM push_pending_notifications
                     WHERE user_id = ?1 AND room_id = ?2 AND notify = 1 AND event_stream > ?3
                       AND stream > ?4 AND stream <= ?5)
                 GROUP BY thread_id",
            )?;
            for row in st.query_map(params![u, r, floor, after, up_to], |row| {
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
            let mut one = c.prepare_cached(
                "SELECT count(*), coalesce(sum(highlight), 0) FROM (
                    SELECT highlight FROM push_notifications
                     WHERE user_id = ?1 AND room_id = ?2 AND notify = 1 AND thread_id = ?3
                       AND event_stream > ?4 AND stream > ?5 AND stream <= ?6
                    UNION ALL
                    SELECT highlight FROM push_pending_notifications
                     WHERE user_id = ?1 AND room_id = ?2 AND notify = 1 AND thread_id = ?3
                       AND event_stream > ?4 AND stream > ?5 AND stream <= ?6)",
            )?;
            for (thread, thread_floor) in thread_floors {
                if thread_floor <= floor || !counts.contains_key(&thread) {
                    continue;
                }
                let (n, h): (i64, i64) = one
                    .query_row(params![u, r, thread, thread_floor, after, up_to], |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })
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
            let n: i64 = c
                .prepare_cached(&format!(
                    "SELECT count(*) FROM push_notifications n
                     JOIN memberships m ON m.room_id = n.room_id AND m.user_id = n.user_id
                        AND m.membership = 'join'
                     WHERE n.user_id = ?1 AND n.notify = 1 AND n.event_stream > m.stream
                       AND n.event_stream > coalesce(
                        (SELECT max(e.stream) FROM receipts rc JOIN events e ON e.event_id = rc.event_id
                         WHERE rc.room_id = n.room_id AND rc.user_id = ?1 AND rc.thread_id = ''
                           AND rc.receipt_type IN {READ_TYPES}), 0)"
                ))?
                .query_row([u], |r| r.get(0))?;
            Ok(to_u64(n))
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
            let mut rooms: std::collections::BTreeSet<String> = Default::default();
            // Waiting rows first: one moved between the two reads is then seen at least once.
            let mut waiting = c.prepare_cached(
                "SELECT DISTINCT room_id FROM push_pending_notifications
                 WHERE user_id = ?1 AND stream > ?2 AND stream <= ?3",
            )?;
            for room in waiting.query_map(params![u, after, up_to], |r| r.get::<_, String>(0))? {
                rooms.insert(room?);
            }
            // Newest first along (user_id, id): rows enter this table in position order, so the
            // walk stops at the first row at or before `after` and reads only the new ones.
            let mut st = c.prepare_cached(
                "SELECT room_id, stream FROM push_notifications WHERE user_id = ?1 ORDER BY id DESC",
            )?;
            let mut rows = st.query([u])?;
            while let Some(row) = rows.next()? {
                let stream: i64 = row.get(1)?;
                if stream <= after {
                    break;
                }
                if stream <= up_to {
                    rooms.insert(row.get(0)?);
                }
            }
            Ok(rooms.into_iter().collect())
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

/// Stores notification rows, visible from `stream`; `event_stream`, when given, replaces the
/// rows' own (an event's rows are evaluated before the event has a position). The change index
/// and the in-memory tails learn of them now, whichever table they go to. Returns whether they
/// wait in `push_pending_notifications`.
pub(super) fn insert_notifications(
    tx: &Transaction<'_>,
    pos: &mut Positions,
    stream: i64,
    event_stream: Option<i64>,
    rows: &[NewNotification],
) -> Result<bool> {
    if rows.is_empty() {
        return Ok(false);
    }
    let pending = rows.len() > INLINE_NOTIFICATIONS
        || tx.q_row(
            "SELECT EXISTS (SELECT 1 FROM push_pending_notifications)",
            [],
            |r| r.get::<_, bool>(0),
        )?;
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
        let event_stream = event_stream.unwrap_or(n.event_stream);
        pos.touch(crate::ChangeKey::Notifications(n.user_id.clone()));
        pos.notification(NotificationChange::Row(TailRow {
            user_id: n.user_id.clone(),
            room_id: n.room_id.clone(),
            thread_id: n.thread_id.clone(),
            notify: n.notify,
            highlight: n.highlight,
            event_stream,
            stream,
        }));
        st.execute(params![
            n.user_id,
            n.room_id,
            n.event_id,
            event_stream,
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

/// Moves up to `max` waiting rows, oldest first, into `push_notifications`. Their change-index
/// entries and tails were recorded when they were first stored, so this touches nothing.
/// Returns `None` when nothing waited, else the users of moved rows that are to be pushed.
pub(super) fn move_pending_notifications(
    tx: &Transaction<'_>,
    max: usize,
) -> Result<Option<Vec<String>>> {
    let max = i64::try_from(max).unwrap_or(i64::MAX);
    let last: Option<i64> = tx.q_row(
        "SELECT max(id) FROM (SELECT id FROM push_pending_notifications ORDER BY id LIMIT ?1)",
        [max],
        |r| r.get(0),
    )?;
    let Some(last) = last else {
        return Ok(None);
    };
    let mut pushed: Vec<String> = {
        let mut st = tx.prepare_cached(
            "SELECT DISTINCT user_id FROM push_pending_notifications WHERE id <= ?1 AND push = 1",
        )?;
        st.query_map([last], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?
    };
    pushed.sort();
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
    Ok(Some(pushed))
}
