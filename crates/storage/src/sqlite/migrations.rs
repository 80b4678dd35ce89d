//! Versioned schema migrations. Each entry runs once, in order, inside a transaction; the applied
//! version is kept in `PRAGMA user_version`.

use rusqlite::Connection;

use crate::Result;

const MIGRATIONS: &[&str] = &[include_str!("migrations/0001_foundation.sql")];

pub(crate) fn apply(conn: &mut Connection) -> Result<()> {
    let current: usize =
        conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied schema migration");
    }
    Ok(())
}
