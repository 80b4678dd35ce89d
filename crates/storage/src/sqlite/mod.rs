//! The SQLite engine: one writer connection (SQLite allows one writer at a time anyway) and a small
//! pool of readers, in WAL mode with `synchronous = FULL` so that a committed write survives a crash
//! of the process or the machine.

mod accounts;
mod admin;
mod keys;
mod migrations;
mod push;
mod rooms;
mod user_data;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, Transaction};

use crate::{Result, StorageError};

const READERS: usize = 4;

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        StorageError::Database(e.to_string())
    }
}

struct Inner {
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// The last stream position handed out; only advanced under the writer lock.
    allocated: AtomicI64,
    /// The last stream position whose transaction has committed.
    committed: AtomicI64,
}

/// The SQLite implementation of [`crate::Store`].
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

/// Hands out stream positions inside a write transaction; they become visible when it commits.
pub(crate) struct Positions<'a> {
    allocated: &'a AtomicI64,
    last: Option<i64>,
}

impl Positions<'_> {
    pub(crate) fn next(&mut self) -> i64 {
        let p = self.allocated.fetch_add(1, Ordering::SeqCst) + 1;
        self.last = Some(p);
        p
    }
}

fn open(path: &Path, flags: OpenFlags) -> Result<Connection> {
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA cache_size = -16000;",
    )?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub fn open(path: &Path) -> Result<Self> {
        let mut writer = open(path, OpenFlags::default())?;
        migrations::apply(&mut writer)?;
        let max: i64 =
            writer.query_row("SELECT value FROM meta WHERE key = 'stream'", [], |r| {
                r.get::<_, i64>(0)
            })?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(open(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                readers: Mutex::new(readers),
                allocated: AtomicI64::new(max),
                committed: AtomicI64::new(max),
            }),
        })
    }

    /// Runs `f` in a write transaction on a blocking thread. Stream positions taken from
    /// `Positions` are published only after the commit succeeded.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>, &mut Positions<'_>) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.writer.lock();
            let start = inner.allocated.load(Ordering::SeqCst);
            let mut positions = Positions {
                allocated: &inner.allocated,
                last: None,
            };
            let tx = conn.transaction()?;
            let out = f(&tx, &mut positions);
            match out {
                Ok(v) => {
                    if let Some(last) = positions.last {
                        tx.execute("UPDATE meta SET value = ?1 WHERE key = 'stream'", [last])?;
                    }
                    tx.commit()?;
                    if let Some(last) = positions.last {
                        inner.committed.store(last, Ordering::SeqCst);
                    }
                    Ok(v)
                }
                Err(e) => {
                    drop(tx);
                    // Positions taken by a failed transaction are given back.
                    inner.allocated.store(start, Ordering::SeqCst);
                    Err(e)
                }
            }
        })
        .await
        .map_err(|e| StorageError::Database(format!("writer task failed: {e}")))?
    }

    /// Runs `f` on a reader connection on a blocking thread.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = inner.readers.lock().pop();
            let Some(conn) = conn else {
                // All readers busy: fall back to the writer connection rather than wait.
                let w = inner.writer.lock();
                return f(&w);
            };
            let out = f(&conn);
            inner.readers.lock().push(conn);
            out
        })
        .await
        .map_err(|e| StorageError::Database(format!("reader task failed: {e}")))?
    }
}

impl crate::Store for SqliteStore {
    fn current_position(&self) -> i64 {
        self.inner.committed.load(Ordering::SeqCst)
    }
}

/// Placeholders `?, ?, ?` for an `IN (...)` list.
pub(crate) fn placeholders(n: usize, start: usize) -> String {
    (0..n)
        .map(|i| format!("?{}", start + i))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests;
