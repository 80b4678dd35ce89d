//! End-to-end encryption against Feldpost with the matrix-sdk crate, as a real client would do it:
//!
//! 1. Alice and Bob (each one device) talk in an encrypted room: messages both ways decrypt.
//! 2. Alice bootstraps cross-signing; Bob's client sees her device as cross-signed by her.
//! 3. Alice enables recovery (secret storage and key backup); a third device of Alice logs in,
//!    recovers with the recovery key, downloads the room keys from the backup and decrypts the
//!    history of the room.
//!
//! The server: `FELDPOST_URL` if set, otherwise the binary at `FELDPOST_BIN`, started here on a
//! free port with a fresh data directory (open registration, cheap password hashing, no rate
//! limits). Exits non-zero, saying which step failed, when anything does not work.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use matrix_sdk::config::SyncSettings;
use matrix_sdk::encryption::{BackupDownloadStrategy, EncryptionSettings};
use matrix_sdk::room::MessagesOptions;
use matrix_sdk::ruma::api::client::account::register;
use matrix_sdk::ruma::api::client::uiaa;
use matrix_sdk::ruma::events::room::message::{
    MessageType, OriginalSyncRoomMessageEvent, RoomMessageEventContent,
};
use matrix_sdk::ruma::{OwnedRoomId, RoomId};
use matrix_sdk::{Client, Room};

const PASSWORD: &str = "correct horse battery staple";

/// How long any one step may take: a healthy server needs milliseconds, a loaded build machine
/// rather more.
const STEP: Duration = Duration::from_secs(90);

/// A Feldpost started for this run; stopped when dropped.
struct Server {
    child: Child,
    _dir: tempfile::TempDir,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const CONFIG: &str = r#"
[registration]
argon2_memory_kib = 64
argon2_iterations = 1
[rate_limits]
enabled = false
[log]
level = "warn"
"#;

fn start_server() -> Result<Server> {
    let bin = std::env::var("FELDPOST_BIN")
        .context("set FELDPOST_URL to a running server or FELDPOST_BIN to the feldpost binary")?;
    let dir = tempfile::tempdir()?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config = dir.path().join("feldpost.toml");
    std::fs::write(&config, CONFIG)?;
    let log = std::fs::File::create(dir.path().join("server.log"))?;
    let child = Command::new(&bin)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--open-registration")
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
        .with_context(|| format!("starting {bin}"))?;
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("feldpost did not start listening on port {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(server)
}

fn settings() -> EncryptionSettings {
    EncryptionSettings {
        auto_enable_cross_signing: false,
        backup_download_strategy: BackupDownloadStrategy::Manual,
        auto_enable_backups: false,
    }
}

async fn new_client(url: &str) -> Result<Client> {
    Ok(Client::builder()
        .homeserver_url(url)
        .with_encryption_settings(settings())
        .build()
        .await?)
}

/// Registers `name` (answering the dummy auth stage) and returns the logged-in client.
async fn register(url: &str, name: &str) -> Result<Client> {
    let client = new_client(url).await?;
    let mut req = register::v3::Request::new();
    req.username = Some(name.to_owned());
    req.password = Some(PASSWORD.to_owned());
    req.initial_device_display_name = Some(format!("{name}'s first device"));
    if let Err(e) = client.matrix_auth().register(req.clone()).await {
        let session = e
            .as_uiaa_response()
            .and_then(|i| i.session.clone())
            .with_context(|| format!("registering {name}: {e}"))?;
        let mut dummy = uiaa::Dummy::new();
        dummy.session = Some(session);
        req.auth = Some(uiaa::AuthData::Dummy(dummy));
        client
            .matrix_auth()
            .register(req)
            .await
            .with_context(|| format!("registering {name}"))?;
    }
    Ok(client)
}

async fn login(url: &str, name: &str, device_name: &str) -> Result<Client> {
    let client = new_client(url).await?;
    client
        .matrix_auth()
        .login_username(name, PASSWORD)
        .initial_device_display_name(device_name)
        .send()
        .await
        .with_context(|| format!("logging in {name}"))?;
    Ok(client)
}

async fn sync(client: &Client) -> Result<()> {
    client
        .sync_once(SyncSettings::default().timeout(Duration::from_millis(300)))
        .await
        .context("sync")?;
    Ok(())
}

/// Plain-text bodies of `m.room.message` events a client decrypted while syncing.
#[derive(Clone, Default)]
struct Inbox(Arc<Mutex<Vec<String>>>);

impl Inbox {
    fn attach(client: &Client) -> Self {
        let inbox = Inbox::default();
        let seen = inbox.clone();
        client.add_event_handler(move |ev: OriginalSyncRoomMessageEvent| {
            let seen = seen.clone();
            async move {
                if let MessageType::Text(text) = ev.content.msgtype
                    && let Ok(mut v) = seen.0.lock()
                {
                    v.push(text.body);
                }
            }
        });
        inbox
    }

    fn contains(&self, body: &str) -> bool {
        self.0
            .lock()
            .map(|v| v.iter().any(|b| b == body))
            .unwrap_or(false)
    }
}

/// Syncs `clients` in turn until `done` holds.
async fn sync_until<F, Fut>(what: &str, clients: &[&Client], mut done: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + STEP;
    loop {
        for c in clients {
            sync(c).await?;
        }
        if done().await? {
            println!("ok: {what}");
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn room(client: &Client, id: &RoomId) -> Result<Room> {
    client.get_room(id).with_context(|| {
        format!(
            "{} does not know room {id}",
            client.user_id().map(|u| u.to_string()).unwrap_or_default()
        )
    })
}

/// Text bodies a client can decrypt in the room's history (via `/messages`).
async fn history(client: &Client, id: &RoomId) -> Result<Vec<String>> {
    let room = room(client, id).await?;
    let mut opts = MessagesOptions::backward();
    opts.limit = 50u32.into();
    let page = room.messages(opts).await?;
    let mut bodies = Vec::new();
    for ev in page.chunk {
        let json: serde_json::Value = serde_json::from_str(ev.raw().json().get())?;
        if json["type"] == "m.room.message"
            && let Some(body) = json["content"]["body"].as_str()
        {
            bodies.push(body.to_owned());
        }
    }
    Ok(bodies)
}

async fn run(url: &str) -> Result<()> {
    let alice = register(url, "alice").await?;
    let bob = register(url, "bob").await?;
    let alice_inbox = Inbox::attach(&alice);
    let bob_inbox = Inbox::attach(&bob);
    // The first syncs publish each device's keys.
    sync(&alice).await?;
    sync(&bob).await?;
    let alice_id = alice.user_id().context("alice's user id")?.to_owned();
    let bob_id = bob.user_id().context("bob's user id")?.to_owned();
    let alice_device = alice.device_id().context("alice's device id")?.to_owned();

    // 1. An encrypted room, messages both ways.
    let created = alice
        .create_dm(&bob_id)
        .await
        .context("creating the room")?;
    let room_id: OwnedRoomId = created.room_id().to_owned();
    sync_until("bob sees the invite", &[&bob], || async {
        Ok(bob.get_room(&room_id).is_some())
    })
    .await?;
    bob.join_room_by_id(&room_id).await.context("bob joins")?;
    sync_until(
        "both see the encrypted room with both members",
        &[&alice, &bob],
        || async {
            let a = room(&alice, &room_id).await?;
            let b = room(&bob, &room_id).await?;
            Ok(a.latest_encryption_state().await?.is_encrypted()
                && b.latest_encryption_state().await?.is_encrypted()
                && a.joined_members_count() == 2)
        },
    )
    .await?;
    room(&alice, &room_id)
        .await?
        .send(RoomMessageEventContent::text_plain("Guten Morgen, Bob"))
        .await
        .context("alice sends")?;
    sync_until("bob decrypts alice's message", &[&alice, &bob], || async {
        Ok(bob_inbox.contains("Guten Morgen, Bob"))
    })
    .await?;
    room(&bob, &room_id)
        .await?
        .send(RoomMessageEventContent::text_plain("Morgen, Alice"))
        .await
        .context("bob sends")?;
    sync_until("alice decrypts bob's reply", &[&alice, &bob], || async {
        Ok(alice_inbox.contains("Morgen, Alice"))
    })
    .await?;

    // 2. Cross-signing: the first upload needs no password; Bob then sees Alice's device signed.
    alice
        .encryption()
        .bootstrap_cross_signing(None)
        .await
        .context("bootstrapping cross-signing")?;
    let status = alice
        .encryption()
        .cross_signing_status()
        .await
        .context("no cross-signing status")?;
    if !status.is_complete() {
        bail!("cross-signing incomplete after bootstrap: {status:?}");
    }
    println!("ok: alice bootstrapped cross-signing");
    sync_until(
        "bob sees alice's device as cross-signed",
        &[&alice, &bob],
        || async {
            let device = bob
                .encryption()
                .get_device(&alice_id, &alice_device)
                .await?;
            Ok(device.is_some_and(|d| d.is_cross_signed_by_owner()))
        },
    )
    .await?;

    // 3. Key backup and recovery.
    let recovery_key = alice
        .encryption()
        .recovery()
        .enable()
        .wait_for_backups_to_upload()
        .await
        .context("enabling recovery and key backup")?;
    println!("ok: recovery and key backup enabled");
    sync(&alice).await?;
    alice
        .encryption()
        .backups()
        .wait_for_steady_state()
        .await
        .context("waiting for the backup upload")?;
    println!("ok: room keys uploaded to the backup");

    let laptop = login(url, "alice", "alice's laptop").await?;
    sync(&laptop).await?;
    let before = history(&laptop, &room_id).await?;
    if before.iter().any(|b| b == "Guten Morgen, Bob") {
        bail!("the new device decrypted history before it had any keys");
    }
    laptop
        .encryption()
        .recovery()
        .recover(&recovery_key)
        .await
        .context("recovering with the recovery key")?;
    println!("ok: the third device recovered its secrets");
    laptop
        .encryption()
        .backups()
        .download_room_keys_for_room(&room_id)
        .await
        .context("downloading room keys from the backup")?;
    let after = history(&laptop, &room_id).await?;
    for expected in ["Guten Morgen, Bob", "Morgen, Alice"] {
        if !after.iter().any(|b| b == expected) {
            bail!(
                "the third device cannot decrypt {expected:?} after restoring the backup (saw {after:?})"
            );
        }
    }
    println!("ok: the third device decrypts the room history from the key backup");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let (url, _server) = match std::env::var("FELDPOST_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let s = start_server()?;
            (s.url.clone(), Some(s))
        }
    };
    match tokio::time::timeout(Duration::from_secs(600), run(&url)).await {
        Ok(Ok(())) => {
            println!("matrix-sdk interop: all steps passed");
            Ok(())
        }
        Ok(Err(e)) => Err(e),
        Err(_) => bail!("the interop run took longer than ten minutes"),
    }
}
