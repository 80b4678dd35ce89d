//! Schema migrations. Each has a unique name and runs once, inside a transaction; applied names are
//! recorded in `schema_migrations`. They run in list order, and each must stand on its own (touch
//! only its own tables), so that work landing in any order stays consistent.

use rusqlite::{Connection, OptionalExtension};

use crate::Result;

const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_foundation",
        include_str!("migrations/0001_foundation.sql"),
    ),
    ("0003_admin", include_str!("migrations/0003_admin.sql")),
    ("0002_e2ee", include_str!("migrations/0002_e2ee.sql")),
    ("0004_push", include_str!("migrations/0004_push.sql")),
    ("0005_scale", include_str!("migrations/0005_scale.sql")),
    (
        "0006_notification_writes",
        include_str!("migrations/0006_notification_writes.sql"),
    ),
    (
        "0007_deactivated_users",
        include_str!("migrations/0007_deactivated_users.sql"),
    ),
    (
        "0008_pending_notifications",
        include_str!("migrations/0008_pending_notifications.sql"),
    ),
    (
        "0009_room_notifications",
        include_str!("migrations/0009_room_notifications.sql"),
    ),
];

pub(crate) fn apply(conn: &mut Connection) -> Result<()> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_ms INTEGER NOT NULL)")?;
    for (name, sql) in MIGRATIONS {
        let done: Option<i64> = conn
            .query_row(
                "SELECT 1 FROM schema_migrations WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        if done.is_some() {
            continue;
        }
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        tx.execute(
            "INSERT INTO schema_migrations (name, applied_ms) VALUES (?1, ?2)",
            rusqlite::params![name, now],
        )?;
        tx.commit()?;
        tracing::info!(migration = name, "applied schema migration");
    }
    Ok(())
}
