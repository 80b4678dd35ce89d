//! The SQLite engine: one writer thread (SQLite allows one writer at a time anyway) and a small
//! pool of readers, in WAL mode with `synchronous = FULL` so that a committed write survives a crash
//! of the process or the machine.
//!
//! Group commit: the writer takes every write that queued up while it was busy and runs them in
//! one transaction, each inside its own savepoint, so that one fsync acknowledges them all. A
//! write that fails rolls back to its savepoint without disturbing the others; nobody is answered
//! before the commit is durable.

mod accounts;
mod admin;
mod keys;
mod migrations;
mod push;
mod rooms;
mod user_data;

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc;

use parking_lot::{Condvar, Mutex};
use rusqlite::{Connection, OpenFlags, Transaction};

use crate::changes::{ChangeIndex, ChangeKey};
use crate::event_rows::EventRows;
use crate::recent::{RecentChange, RecentEvents};
use crate::recent_notifications::{NotificationChange, RecentNotifications};
use crate::{Result, StorageError};

/// Reader connections kept open; more concurrent reads wait for one to come back.
const READERS: usize = 8;
/// At most this many writes share one transaction, so that a burst does not delay the first
/// acknowledgement without bound.
const MAX_BATCH: usize = 256;
/// Pages in the write-ahead log that make the writer copy it into the database (4 KiB each).
const CHECKPOINT_PAGES: u32 = 10_000;

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        StorageError::Database(e.to_string())
    }
}

/// Called once the batch holding a write has committed (or failed to).
type Reply = Box<dyn FnOnce(Result<()>) + Send>;
/// A write: runs in the batch transaction; `None` means it failed (and has answered already).
type Job = Box<dyn FnOnce(&Transaction<'_>, &mut Positions<'_>) -> Option<Reply> + Send>;

struct Shared {
    /// The last stream position handed out; only advanced by the writer thread.
    allocated: AtomicI64,
    /// The last stream position whose transaction has committed.
    committed: AtomicI64,
    changes: ChangeIndex,
    recent: RecentEvents,
    notifications: RecentNotifications,
    /// Events by id as read (see `event_rows`).
    event_rows: EventRows,
}

struct Inner {
    shared: Arc<Shared>,
    jobs: Mutex<mpsc::Sender<Job>>,
    readers: Mutex<Vec<Connection>>,
    reader_back: Condvar,
    /// One permit per reader connection, taken before a blocking thread is: waiting reads wait
    /// as tasks, not as parked threads (each of which would cost a stack and an allocator heap).
    read_permits: tokio::sync::Semaphore,
}

/// The SQLite implementation of [`crate::Store`].
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

/// Hands out stream positions inside a write transaction; they become visible when it commits.
/// A write also names what it changed ([`ChangeKey`]), for the change index.
pub(crate) struct Positions<'a> {
    allocated: &'a AtomicI64,
    last: Option<i64>,
    touched: Vec<ChangeKey>,
    recent: Vec<RecentChange>,
    notifications: Vec<NotificationChange>,
}

impl Positions<'_> {
    pub(crate) fn next(&mut self) -> i64 {
        let p = self.allocated.fetch_add(1, Ordering::SeqCst) + 1;
        self.last = Some(p);
        p
    }

    /// The highest position handed out so far: every later write's positions are above it.
    pub(crate) fn allocated(&self) -> i64 {
        self.allocated.load(Ordering::SeqCst)
    }

    /// Records that this write changed `key`; a write that touches something takes a position.
    pub(crate) fn touch(&mut self, key: ChangeKey) {
        if self.last.is_none() {
            self.next();
        }
        self.touched.push(key);
    }

    pub(crate) fn touch_room(&mut self, room_id: &str) {
        self.touch(ChangeKey::Room(room_id.to_owned()));
    }

    pub(crate) fn touch_user(&mut self, user_id: &str) {
        self.touch(ChangeKey::User(user_id.to_owned()));
    }

    /// Records a change for the in-memory tails of recent events, applied at commit.
    pub(crate) fn recent(&mut self, change: RecentChange) {
        self.recent.push(change);
    }

    /// Records a change for the in-memory tails of notification rows, applied at commit.
    pub(crate) fn notification(&mut self, change: NotificationChange) {
        self.notifications.push(change);
    }
}

/// Statements run through the per-connection statement cache: parsing SQL anew for every query
/// cost more than running most of them.
pub(crate) trait CachedExt {
    fn q_row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>;
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
}

impl CachedExt for Connection {
    fn q_row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }
}

/// Turns off SQLite's memory statistics before its first connection. Kept on, every allocation
/// SQLite makes takes one process-wide mutex, which its reader threads and the writer then queue
/// on (page-cache fills after each commit are allocations); nothing here reads the statistics.
fn configure_sqlite() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: `sqlite3_config` may only run before SQLite initialises; this `Once` runs before
        // this process opens its first connection. Should another library have initialised
        // SQLite already, the call returns SQLITE_MISUSE and changes nothing.
        let rc = unsafe {
            rusqlite::ffi::sqlite3_config(
                rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS,
                0 as std::ffi::c_int,
            )
        };
        if rc != rusqlite::ffi::SQLITE_OK {
            tracing::debug!(
                rc,
                "SQLite was initialised already; memory statistics stay on"
            );
        }
    });
}

fn open(path: &Path, flags: OpenFlags) -> Result<Connection> {
    configure_sqlite();
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // Temporary storage in memory: every write runs in a savepoint (see `run_batch`), whose
    // journal of changed pages would otherwise go to a temporary file.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA cache_size = -16000;
         PRAGMA temp_store = MEMORY;",
    )?;
    conn.set_prepared_statement_cache_capacity(256);
    Ok(conn)
}

fn open_reader(path: &Path) -> Result<Connection> {
    open(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub fn open(path: &Path) -> Result<Self> {
        let mut writer = open(path, OpenFlags::default())?;
        migrations::apply(&mut writer)?;
        // Notification rows a stop left waiting: moved at once (they are read where they are,
        // but only the running server's mover empties the table).
        {
            let tx = writer.transaction()?;
            while push::move_pending_notifications(&tx, 10_000)? {}
            tx.commit()?;
        }
        let max: i64 =
            writer.query_row("SELECT value FROM meta WHERE key = 'stream'", [], |r| {
                r.get::<_, i64>(0)
            })?;
        // SQLite copies the write-ahead log into the database inside a commit once the log
        // holds `CHECKPOINT_PAGES`; writes queued behind that commit wait for it. Ten times
        // its default: the pages written over and over (indexes, the stream position) are
        // copied once instead of ten times.
        writer.execute_batch(&format!("PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES};"))?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(open_reader(path)?);
        }
        let shared = Arc::new(Shared {
            allocated: AtomicI64::new(max),
            committed: AtomicI64::new(max),
            changes: ChangeIndex::new(max),
            recent: RecentEvents::new(max),
            notifications: RecentNotifications::new(max),
            event_rows: EventRows::new(),
        });
        let (tx, rx) = mpsc::channel::<Job>();
        let writer_shared = shared.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(writer, &writer_shared, rx))
            .map_err(|e| StorageError::Database(format!("cannot start the writer: {e}")))?;
        let inner = Arc::new(Inner {
            shared,
            jobs: Mutex::new(tx),
            readers: Mutex::new(readers),
            reader_back: Condvar::new(),
            read_permits: tokio::sync::Semaphore::new(READERS),
        });
        let watch = open_reader(path)?;
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("sqlite-watch".into())
            .spawn(move || watch_other_writers(watch, weak))
            .map_err(|e| StorageError::Database(format!("cannot start the watcher: {e}")))?;
        Ok(Self { inner })
    }

    /// Runs `f` in a write transaction (shared with other queued writes, each in its own
    /// savepoint). Answers after the commit is durable; stream positions taken from `Positions`
    /// are published only then.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>, &mut Positions<'_>) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel::<Result<T>>();
        let job: Job = Box::new(move |tx, pos| match f(tx, pos) {
            Ok(v) => Some(Box::new(move |committed: Result<()>| {
                let _ = reply.send(committed.map(|()| v));
            })),
            Err(e) => {
                let _ = reply.send(Err(e));
                None
            }
        });
        self.inner
            .jobs
            .lock()
            .send(job)
            .map_err(|_| StorageError::Database("the writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StorageError::Database("the write was abandoned".into()))?
    }

    /// Runs `f` on a reader connection on a blocking thread.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        let permit = self
            .inner
            .read_permits
            .acquire()
            .await
            .map_err(|_| StorageError::Database("the store is closed".into()))?;
        let out = tokio::task::spawn_blocking(move || {
            let conn = {
                let mut pool = inner.readers.lock();
                loop {
                    if let Some(c) = pool.pop() {
                        break c;
                    }
                    inner.reader_back.wait(&mut pool);
                }
            };
            let out = std::panic::catch_unwind(AssertUnwindSafe(|| f(&conn)));
            inner.readers.lock().push(conn);
            inner.reader_back.notify_one();
            out.unwrap_or_else(|_| Err(StorageError::Database("a read panicked".into())))
        })
        .await
        .map_err(|e| StorageError::Database(format!("reader task failed: {e}")))?;
        drop(permit);
        out
    }
}

/// How often the database is checked for writes by another process.
const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// Notices writes by another process (`feldpost admin` on the same database) within
/// [`WATCH_INTERVAL`]: an empty batch then makes the writer take over their positions and void
/// what the change index (and the caches built on it) knew. Ends with the store.
fn watch_other_writers(conn: Connection, inner: std::sync::Weak<Inner>) {
    loop {
        std::thread::sleep(WATCH_INTERVAL);
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let stored = conn.query_row("SELECT value FROM meta WHERE key = 'stream'", [], |r| {
            r.get::<_, i64>(0)
        });
        if let Ok(v) = stored
            && v > inner.shared.allocated.load(Ordering::SeqCst)
        {
            let noop: Job = Box::new(|_, _| Some(Box::new(|_| {})));
            let _ = inner.jobs.lock().send(noop);
        }
    }
}

/// The writer thread: waits for a write, takes whatever else queued meanwhile, commits them
/// together. Ends when every `SqliteStore` handle is gone.
fn writer_loop(mut conn: Connection, shared: &Shared, jobs: mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        run_batch(&mut conn, shared, batch);
    }
}

/// A write batch slower than this is logged, split into its jobs' time and the commit's (which
/// includes the write-ahead log's checkpoints): every send waits behind it.
const SLOW_BATCH: std::time::Duration = std::time::Duration::from_millis(100);

fn run_batch(conn: &mut Connection, shared: &Shared, batch: Vec<Job>) {
    let began = std::time::Instant::now();
    let jobs = batch.len();
    let start = shared.allocated.load(Ordering::SeqCst);
    // Immediate: the write lock first, so that the position read below is the latest.
    let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            tracing::error!(error = %e, "cannot begin a write transaction");
            // Dropping the jobs answers each with an error.
            return;
        }
    };
    // Another process (`feldpost admin`) may have written since our last batch: continue after
    // its positions, and forget what the change index knew.
    let external = match tx.q_row("SELECT value FROM meta WHERE key = 'stream'", [], |r| {
        r.get::<_, i64>(0)
    }) {
        Ok(v) if v > start => Some(v),
        Ok(_) => None,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the stream position");
            drop(tx);
            return;
        }
    };
    if let Some(v) = external {
        shared.allocated.store(v, Ordering::SeqCst);
    }
    let start = shared.allocated.load(Ordering::SeqCst);
    let fail_all = |replies: Vec<Reply>, why: &str| {
        shared.allocated.store(start, Ordering::SeqCst);
        for r in replies {
            r(Err(StorageError::Database(why.to_owned())));
        }
    };
    let mut replies: Vec<Reply> = Vec::with_capacity(batch.len());
    let mut touched: Vec<ChangeKey> = Vec::new();
    let mut recent: Vec<RecentChange> = Vec::new();
    let mut notifications: Vec<NotificationChange> = Vec::new();
    let mut last: Option<i64> = None;
    for job in batch {
        if let Err(e) = tx.exec("SAVEPOINT job", []) {
            tracing::error!(error = %e, "cannot open a savepoint");
            drop(tx);
            return fail_all(replies, "write batch failed");
        }
        let before = shared.allocated.load(Ordering::SeqCst);
        let mut pos = Positions {
            allocated: &shared.allocated,
            last: None,
            touched: Vec::new(),
            recent: Vec::new(),
            notifications: Vec::new(),
        };
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| job(&tx, &mut pos)));
        match outcome {
            Ok(Some(reply)) => {
                if let Err(e) = tx.exec("RELEASE job", []) {
                    tracing::error!(error = %e, "cannot release a savepoint");
                    drop(tx);
                    replies.push(reply);
                    return fail_all(replies, "write batch failed");
                }
                replies.push(reply);
                touched.append(&mut pos.touched);
                recent.append(&mut pos.recent);
                notifications.append(&mut pos.notifications);
                last = pos.last.or(last);
            }
            failed => {
                if failed.is_err() {
                    tracing::error!("a write panicked; rolled back");
                }
                // Positions taken by a failed write are given back.
                shared.allocated.store(before, Ordering::SeqCst);
                if let Err(e) = tx
                    .exec("ROLLBACK TO job", [])
                    .and_then(|_| tx.exec("RELEASE job", []))
                {
                    tracing::error!(error = %e, "cannot roll back a savepoint");
                    drop(tx);
                    return fail_all(replies, "write batch failed");
                }
            }
        }
    }
    let worked = began.elapsed();
    let committed = (|| -> rusqlite::Result<()> {
        if let Some(last) = last {
            tx.exec("UPDATE meta SET value = ?1 WHERE key = 'stream'", [last])?;
        }
        tx.commit()
    })();
    let took = began.elapsed();
    if took >= SLOW_BATCH {
        tracing::info!(
            jobs,
            work_ms = worked.as_millis() as u64,
            commit_ms = (took - worked).as_millis() as u64,
            "slow write batch"
        );
    }
    match committed {
        Ok(()) => {
            if let Some(v) = external {
                shared.changes.forget_before(v);
                shared.recent.clear(v);
                shared.notifications.clear(v);
                shared.event_rows.clear();
                shared.committed.fetch_max(v, Ordering::SeqCst);
            }
            if let Some(last) = last {
                // The index and the tails first, then the position: a sync that sees `last`
                // sees its changes.
                shared.changes.record(&touched, last);
                shared.event_rows.apply(&recent);
                shared.recent.apply(recent);
                shared.notifications.apply(notifications, last);
                shared.committed.store(last, Ordering::SeqCst);
            }
            for r in replies {
                r(Ok(()));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "commit failed");
            fail_all(replies, &format!("commit failed: {e}"));
        }
    }
}

impl crate::Store for SqliteStore {
    fn current_position(&self) -> i64 {
        self.inner.shared.committed.load(Ordering::SeqCst)
    }

    fn changes(&self) -> &ChangeIndex {
        &self.inner.shared.changes
    }
}

impl SqliteStore {
    pub(crate) fn event_rows(&self) -> &EventRows {
        &self.inner.shared.event_rows
    }

    pub(crate) fn recent(&self) -> &RecentEvents {
        &self.inner.shared.recent
    }

    pub(crate) fn recent_notifications(&self) -> &RecentNotifications {
        &self.inner.shared.notifications
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
