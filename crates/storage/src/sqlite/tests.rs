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
