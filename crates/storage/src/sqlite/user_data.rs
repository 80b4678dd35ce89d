//! Per-user records: account data, receipts, filters, presence, media metadata.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, params, params_from_iter, types::Value};

use super::{CachedExt, SqliteStore, placeholders};
use crate::{
    AccountDataRecord, ChangeKey, MediaRecord, PresenceRecord, ReceiptRecord, Result, StorageError,
    UserDataStore,
};

fn presence_row(r: &Row<'_>) -> rusqlite::Result<PresenceRecord> {
    Ok(PresenceRecord {
        user_id: r.get(0)?,
        state: r.get(1)?,
        status_msg: r.get(2)?,
        last_active_ms: r.get(3)?,
        stream: r.get(4)?,
    })
}

fn receipt_row(r: &Row<'_>) -> rusqlite::Result<ReceiptRecord> {
    Ok(ReceiptRecord {
        room_id: r.get(0)?,
        receipt_type: r.get(1)?,
        user_id: r.get(2)?,
        thread_id: r.get(3)?,
        event_id: r.get(4)?,
        ts: r.get(5)?,
        stream: r.get(6)?,
    })
}

#[async_trait]
impl UserDataStore for SqliteStore {
    async fn set_account_data(
        &self,
        user_id: &str,
        room_id: Option<&str>,
        kind: &str,
        content: &str,
    ) -> Result<i64> {
        let (u, r, k, c) = (
            user_id.to_owned(),
            room_id.unwrap_or("").to_owned(),
            kind.to_owned(),
            content.to_owned(),
        );
        self.write(move |tx, pos| {
            let stream = pos.next();
            tx.exec(
                "INSERT INTO account_data (user_id, room_id, kind, content, stream) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (user_id, room_id, kind) DO UPDATE SET content = excluded.content, stream = excluded.stream",
                params![u, r, k, c, stream],
            )?;
            pos.touch_user(&u);
            Ok(stream)
        })
        .await
    }

    async fn global_account_data_of(
        &self,
        user_ids: Vec<String>,
        kind: &str,
    ) -> Result<Vec<(String, String)>> {
        let k = kind.to_owned();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT content FROM account_data WHERE user_id = ?1 AND room_id = '' AND kind = ?2",
            )?;
            let mut out = Vec::new();
            for u in user_ids {
                let content: Option<String> =
                    st.query_row(params![u, k], |r| r.get(0)).optional()?;
                if let Some(content) = content {
                    out.push((u, content));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn get_account_data(
        &self,
        user_id: &str,
        room_id: Option<&str>,
        kind: &str,
    ) -> Result<Option<String>> {
        let (u, r, k) = (
            user_id.to_owned(),
            room_id.unwrap_or("").to_owned(),
            kind.to_owned(),
        );
        self.read(move |c| {
            Ok(c.q_row(
                "SELECT content FROM account_data WHERE user_id = ?1 AND room_id = ?2 AND kind = ?3",
                params![u, r, k],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    async fn account_data_since(
        &self,
        user_id: &str,
        after: i64,
        up_to: i64,
    ) -> Result<Vec<AccountDataRecord>> {
        let u = user_id.to_owned();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT room_id, kind, content, stream FROM account_data
                 WHERE user_id = ?1 AND stream > ?2 AND stream <= ?3 ORDER BY stream",
            )?;
            Ok(st
                .query_map(params![u, after, up_to], |r| {
                    let room: String = r.get(0)?;
                    Ok(AccountDataRecord {
                        room_id: if room.is_empty() { None } else { Some(room) },
                        kind: r.get(1)?,
                        content: r.get(2)?,
                        stream: r.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn set_receipt(&self, rec: ReceiptRecord) -> Result<i64> {
        self.write(move |tx, pos| {
            let stream = pos.next();
            tx.exec(
                "INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, ts, stream)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE SET
                    event_id = excluded.event_id, ts = excluded.ts, stream = excluded.stream",
                params![rec.room_id, rec.receipt_type, rec.user_id, rec.thread_id, rec.event_id, rec.ts, stream],
            )?;
            pos.touch_room(&rec.room_id);
            pos.touch(ChangeKey::Receipts(rec.room_id.clone()));
            pos.touch_user(&rec.user_id);
            pos.touch(ChangeKey::Reads(rec.user_id.clone()));
            Ok(stream)
        })
        .await
    }

    async fn get_receipt(
        &self,
        room_id: &str,
        receipt_type: &str,
        user_id: &str,
        thread_id: &str,
    ) -> Result<Option<ReceiptRecord>> {
        let (r, k, u, t) = (
            room_id.to_owned(),
            receipt_type.to_owned(),
            user_id.to_owned(),
            thread_id.to_owned(),
        );
        self.read(move |c| {
            Ok(c.q_row(
                "SELECT room_id, receipt_type, user_id, thread_id, event_id, ts, stream FROM receipts
                 WHERE room_id = ?1 AND receipt_type = ?2 AND user_id = ?3 AND thread_id = ?4",
                params![r, k, u, t],
                receipt_row,
            )
            .optional()?)
        })
        .await
    }

    async fn receipts_since(
        &self,
        room_id: &str,
        after: i64,
        up_to: i64,
    ) -> Result<Vec<ReceiptRecord>> {
        let r = room_id.to_owned();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT room_id, receipt_type, user_id, thread_id, event_id, ts, stream FROM receipts
                 WHERE room_id = ?1 AND stream > ?2 AND stream <= ?3 ORDER BY stream",
            )?;
            Ok(st.query_map(params![r, after, up_to], receipt_row)?.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn put_filter(&self, user_id: &str, json: &str) -> Result<String> {
        let (u, j) = (user_id.to_owned(), json.to_owned());
        self.write(move |tx, _| {
            let next: i64 = tx.q_row(
                "SELECT coalesce(max(filter_id), -1) + 1 FROM filters WHERE user_id = ?1",
                [&u],
                |r| r.get(0),
            )?;
            tx.exec(
                "INSERT INTO filters (user_id, filter_id, json) VALUES (?1, ?2, ?3)",
                params![u, next, j],
            )?;
            Ok(next.to_string())
        })
        .await
    }

    async fn get_filter(&self, user_id: &str, filter_id: &str) -> Result<Option<String>> {
        let Ok(id) = filter_id.parse::<i64>() else {
            return Ok(None);
        };
        let u = user_id.to_owned();
        self.read(move |c| {
            Ok(c.q_row(
                "SELECT json FROM filters WHERE user_id = ?1 AND filter_id = ?2",
                params![u, id],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    async fn set_presence(&self, p: PresenceRecord) -> Result<i64> {
        self.write(move |tx, pos| {
            let stream = pos.next();
            tx.exec(
                "INSERT INTO presence (user_id, state, status_msg, last_active_ms, stream) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, status_msg = excluded.status_msg,
                    last_active_ms = excluded.last_active_ms, stream = excluded.stream",
                params![p.user_id, p.state, p.status_msg, p.last_active_ms, stream],
            )?;
            pos.touch(ChangeKey::Presence);
            Ok(stream)
        })
        .await
    }

    async fn get_presence(&self, user_id: &str) -> Result<Option<PresenceRecord>> {
        let u = user_id.to_owned();
        self.read(move |c| {
            Ok(c.q_row(
                "SELECT user_id, state, status_msg, last_active_ms, stream FROM presence WHERE user_id = ?1",
                [u],
                presence_row,
            )
            .optional()?)
        })
        .await
    }

    async fn presence_since(
        &self,
        user_ids: &[String],
        after: i64,
        up_to: i64,
    ) -> Result<Vec<PresenceRecord>> {
        let ids = user_ids.to_vec();
        self.read(move |c| {
            let mut out = Vec::new();
            for chunk in ids.chunks(500) {
                let sql = format!(
                    "SELECT user_id, state, status_msg, last_active_ms, stream FROM presence
                     WHERE stream > ?1 AND stream <= ?2 AND user_id IN ({})",
                    placeholders(chunk.len(), 3)
                );
                let mut args = vec![Value::Integer(after), Value::Integer(up_to)];
                args.extend(chunk.iter().map(|s| Value::Text(s.clone())));
                let mut st = c.prepare_cached(&sql)?;
                for r in st.query_map(params_from_iter(args), presence_row)? {
                    out.push(r?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn insert_media(&self, m: MediaRecord) -> Result<()> {
        self.write(move |tx, _| {
            let n = tx.exec(
                "INSERT OR IGNORE INTO media (media_id, content_hash, content_type, filename, size, uploader, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![m.media_id, m.content_hash, m.content_type, m.filename, m.size, m.uploader, m.created_ms],
            )?;
            if n == 0 {
                return Err(StorageError::Conflict(format!("media {} exists", m.media_id)));
            }
            Ok(())
        })
        .await
    }

    async fn get_media(&self, media_id: &str) -> Result<Option<MediaRecord>> {
        let id = media_id.to_owned();
        self.read(move |c| {
            Ok(c.q_row(
                "SELECT media_id, content_hash, content_type, filename, size, uploader, created_ms FROM media WHERE media_id = ?1",
                [id],
                |r| {
                    Ok(MediaRecord {
                        media_id: r.get(0)?,
                        content_hash: r.get(1)?,
                        content_type: r.get(2)?,
                        filename: r.get(3)?,
                        size: r.get(4)?,
                        uploader: r.get(5)?,
                        created_ms: r.get(6)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    async fn complete_media(&self, m: MediaRecord) -> Result<bool> {
        self.write(move |tx, _| {
            let n = tx.exec(
                "UPDATE media SET content_hash = ?2, content_type = ?3, filename = ?4, size = ?5
                 WHERE media_id = ?1 AND uploader = ?6 AND content_hash = ''",
                params![
                    m.media_id,
                    m.content_hash,
                    m.content_type,
                    m.filename,
                    m.size,
                    m.uploader
                ],
            )?;
            Ok(n == 1)
        })
        .await
    }
}
