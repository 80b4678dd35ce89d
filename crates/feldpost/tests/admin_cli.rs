//! `feldpost admin …` on the data directory of a running server: users, enrollments, tokens.

mod common;

use clap::Parser;
use common::*;
use feldpost::cli::{Cli, Command};
use serde_json::json;

async fn cli(srv: &TestServer, args: &[&str]) -> anyhow::Result<()> {
    let dir = srv.dir.path().to_str().unwrap().to_owned();
    let mut argv = vec!["feldpost", "admin", "--data-dir", &dir];
    argv.extend_from_slice(args);
    let parsed = Cli::try_parse_from(argv)?;
    let Command::Admin(a) = parsed.command else {
        panic!("not an admin command")
    };
    feldpost::admin_cli::run(a).await
}

/// The status of `GET path` once it is `want`, or after two seconds: a running server notices
/// the CLI's writes (another process's) within a fraction of a second, not at once.
async fn settled(srv: &TestServer, path: &str, user: &User, want: u16) -> u16 {
    let mut status = 0;
    for _ in 0..40 {
        status = srv.get(path, user).await.0;
        if status == want {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    status
}

async fn login(srv: &TestServer, user: &str, password: &str) -> Option<User> {
    let (s, b) = srv
        .request(
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password})),
        )
        .await;
    (s == 200).then(|| User {
        user_id: b["user_id"].as_str().unwrap().into(),
        token: b["access_token"].as_str().unwrap().into(),
        device_id: b["device_id"].as_str().unwrap().into(),
    })
}

#[tokio::test]
async fn the_cli_administers_a_running_server() {
    let srv = TestServer::start().await;
    assert!(!srv.services.admin.has_admin().await.unwrap());

    cli(
        &srv,
        &[
            "user",
            "create",
            "boss",
            "--admin",
            "--password",
            "boss password",
            "--displayname",
            "Chef",
        ],
    )
    .await
    .unwrap();
    assert!(srv.services.admin.has_admin().await.unwrap());
    let boss = login(&srv, "boss", "boss password")
        .await
        .expect("boss signs in");
    let (s, _) = srv.get("/_synapse/admin/v1/server_version", &boss).await;
    assert_eq!(s, 200, "created as admin");
    assert!(
        cli(
            &srv,
            &["user", "create", "boss", "--password", "other password"]
        )
        .await
        .is_err()
    );
    assert!(
        cli(
            &srv,
            &[
                "user",
                "create",
                "feldpost-notices",
                "--password",
                "long enough"
            ]
        )
        .await
        .is_err()
    );
    cli(&srv, &["user", "list", "--search", "bo"])
        .await
        .unwrap();

    // Enrollments: create, then register with it; revoke another.
    cli(
        &srv,
        &[
            "enroll",
            "create",
            "neu",
            "--displayname",
            "Neu Ling",
            "--minutes",
            "30",
        ],
    )
    .await
    .unwrap();
    let pending = srv
        .services
        .registration_tokens
        .enrollments(false)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    let e = &pending[0];
    assert_eq!(e.bound_localpart.as_deref(), Some("neu"));
    assert!(e.expiry_time.unwrap() - e.created_ms >= 30 * 60_000 - 1000);
    let (s, b) = srv
        .request(
            "POST",
            "/_matrix/client/v3/register",
            None,
            Some(json!({"username": "neu", "password": "correct horse", "auth": {"type": "m.login.registration_token", "token": e.token}})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    cli(&srv, &["enroll", "create", "spaeter"]).await.unwrap();
    let later = srv
        .services
        .registration_tokens
        .enrollments(false)
        .await
        .unwrap();
    cli(&srv, &["enroll", "revoke", &later[0].id.to_string()])
        .await
        .unwrap();
    assert!(
        srv.services
            .registration_tokens
            .enrollments(false)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(cli(&srv, &["enroll", "revoke", "9999"]).await.is_err());
    assert!(
        cli(&srv, &["enroll", "create", "neu"]).await.is_err(),
        "name taken"
    );
    cli(&srv, &["enroll", "list", "--all"]).await.unwrap();

    // Registration tokens.
    cli(
        &srv,
        &[
            "token",
            "create",
            "--token",
            "cli-token",
            "--uses",
            "3",
            "--expires-in-hours",
            "2",
        ],
    )
    .await
    .unwrap();
    let t = srv
        .services
        .registration_tokens
        .get("cli-token")
        .await
        .unwrap();
    assert_eq!(t.uses_allowed, Some(3));
    cli(&srv, &["token", "list"]).await.unwrap();
    cli(&srv, &["token", "delete", "cli-token"]).await.unwrap();
    assert!(
        srv.services
            .registration_tokens
            .get("cli-token")
            .await
            .is_err()
    );

    // Passwords, admin rights, deactivation.
    let anna = srv.register("anna").await;
    let room = srv.create_room(&anna, json!({})).await;
    cli(
        &srv,
        &[
            "user",
            "reset-password",
            "anna",
            "--password",
            "fresh password",
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        settled(&srv, "/_matrix/client/v3/account/whoami", &anna, 401).await,
        401
    );
    let anna = login(&srv, "anna", "fresh password")
        .await
        .expect("new password works");
    cli(&srv, &["user", "set-admin", "anna", "true"])
        .await
        .unwrap();
    assert_eq!(
        settled(&srv, "/_synapse/admin/v1/server_version", &anna, 200).await,
        200
    );
    cli(&srv, &["user", "set-admin", "@anna:localhost", "false"])
        .await
        .unwrap();
    assert_eq!(
        settled(&srv, "/_synapse/admin/v1/server_version", &anna, 403).await,
        403
    );
    cli(&srv, &["user", "deactivate", "anna"]).await.unwrap();
    assert_eq!(
        settled(&srv, "/_matrix/client/v3/account/whoami", &anna, 401).await,
        401
    );
    assert!(cli(&srv, &["user", "deactivate", "anna"]).await.is_err());
    assert!(cli(&srv, &["user", "deactivate", "nobody"]).await.is_err());
    // The CLI wrote no room events; the server leaves the rooms itself.
    let (_, m) = srv
        .get(
            &format!("/_synapse/admin/v1/rooms/{}/members", enc(&room)),
            &boss,
        )
        .await;
    assert_eq!(m["members"], json!(["@anna:localhost"]));
    assert_eq!(
        srv.services
            .admin
            .leave_rooms_of_deactivated()
            .await
            .unwrap(),
        1
    );
    let (_, m) = srv
        .get(
            &format!("/_synapse/admin/v1/rooms/{}/members", enc(&room)),
            &boss,
        )
        .await;
    assert_eq!(m["members"], json!([]));

    // Every action is in the audit trail, attributed to the command line.
    let (_, a) = srv.get("/_feldpost/admin/v1/audit?limit=100", &boss).await;
    let cli_actions: Vec<&str> = a["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "cli")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for want in [
        "user.create",
        "enrollment.create",
        "enrollment.revoke",
        "registration_token.create",
        "registration_token.delete",
        "user.password",
        "user.admin.grant",
        "user.admin.revoke",
        "user.deactivate",
    ] {
        assert!(cli_actions.contains(&want), "{want}: {cli_actions:?}");
    }
}
