//! Micro-benchmarks of hot paths: sending a message (build, hash, sign, authorize, store),
//! building /sync responses, and evaluating push rules for a message in a large room.
//!
//! `cargo bench -p feldpost-service --bench hot_paths` (add `-- --quick` for a short run).
//!
//! The services are opened as the binary opens them, on a temporary data directory, so SQLite
//! runs with its real settings (WAL, `synchronous = FULL`) and every stored event is an fsync.
//! The background tasks (`Services::spawn_background`) are not started: push evaluation runs
//! off the send path and would only add noise here.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use feldpost_service::Services;
use feldpost_service::config::Config;
use feldpost_service::rooms::NewPdu;
use feldpost_service::rooms::create::CreateRoom;
use feldpost_service::rooms::membership::Profile;
use feldpost_service::sync::{SyncRequest, SyncToken};
use ruma::{OwnedRoomId, OwnedUserId};
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tokio::sync::watch;

const DEVICE: &str = "BENCHDEVICE";
/// Rooms of the syncing user, and messages already in each when the benchmarks start (enough
/// to fill the default timeline limit of 10, so that initial sync returns full timelines).
const SYNC_ROOMS: usize = 50;
const MESSAGES_PER_ROOM: usize = 10;
/// Members of the room whose message push evaluation is timed (alice included).
const PUSH_MEMBERS: usize = 1_000;

/// One server with `alice` and `bob` joined to the same rooms. Field order matters: the
/// services (and their open database) are dropped before the data directory is removed.
struct Fixture {
    services: Arc<Services>,
    alice: OwnedUserId,
    bob: OwnedUserId,
    rooms: Vec<OwnedRoomId>,
    /// Kept so that the receiver the syncs get never reports a shutdown.
    _shutdown_tx: watch::Sender<bool>,
    shutdown: watch::Receiver<bool>,
    _dir: tempfile::TempDir,
}

fn runtime() -> Runtime {
    // Multi-threaded like the server's: storage work goes through spawn_blocking either way.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn text(body: String) -> NewPdu {
    NewPdu::message("m.room.message", json!({"msgtype": "m.text", "body": body}))
}

impl Fixture {
    async fn new(rooms: usize, messages_per_room: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let services = Services::open(config).expect("open services");
        // No passwords: argon2 hashing is not what is measured and would only slow the setup.
        let alice = services
            .accounts
            .register(Some("alice"), None, false)
            .await
            .expect("register alice");
        let bob = services
            .accounts
            .register(Some("bob"), None, false)
            .await
            .expect("register bob");
        services
            .accounts
            .create_session(&alice, Some(DEVICE), None)
            .await
            .expect("alice's device");
        let profile_of = |u: OwnedUserId| async move {
            Ok::<_, feldpost_service::Error>(Profile {
                displayname: Some(u.localpart().to_owned()),
                avatar_url: None,
            })
        };
        let mut room_ids = Vec::with_capacity(rooms);
        for i in 0..rooms {
            let req = CreateRoom {
                name: Some(format!("Room {i}")),
                preset: Some("public_chat".into()),
                ..CreateRoom::default()
            };
            let room = services
                .rooms
                .create_room(&alice, req, profile_of)
                .await
                .expect("create room");
            services
                .rooms
                .join(
                    &room,
                    &bob,
                    &profile_of(bob.clone()).await.expect("profile"),
                    None,
                )
                .await
                .expect("bob joins");
            for m in 0..messages_per_room {
                let sender = if m % 2 == 0 { &alice } else { &bob };
                services
                    .rooms
                    .append(&room, sender, text(format!("message {m}")))
                    .await
                    .expect("send");
            }
            room_ids.push(room);
        }
        let (shutdown_tx, shutdown) = watch::channel(false);
        Self {
            services,
            alice,
            bob,
            rooms: room_ids,
            _shutdown_tx: shutdown_tx,
            shutdown,
            _dir: dir,
        }
    }

    /// A sync of alice's device, written to JSON as it is served; with a zero timeout an
    /// incremental one never parks.
    async fn sync(&self, since: Option<SyncToken>) -> Vec<u8> {
        let req = SyncRequest {
            since,
            full_state: false,
            timeout: Duration::ZERO,
            filter: Default::default(),
        };
        self.services
            .sync
            .sync(&self.alice, DEVICE, req, &self.shutdown)
            .await
            .map(|body| serde_json::to_vec(&body))
            .expect("sync")
            .expect("JSON")
    }
}

/// The token a client would send with its next sync.
fn next_batch(body: &[u8]) -> SyncToken {
    parse(body)["next_batch"]
        .as_str()
        .and_then(SyncToken::parse)
        .expect("next_batch")
}

fn joined_rooms(body: &[u8]) -> usize {
    parse(body)["rooms"]["join"]
        .as_object()
        .map_or(0, |m| m.len())
}

fn parse(body: &[u8]) -> Value {
    serde_json::from_slice(body).expect("sync body is JSON")
}

fn send(c: &mut Criterion) {
    let rt = runtime();
    let fx = rt.block_on(Fixture::new(1, MESSAGES_PER_ROOM));
    let room = &fx.rooms[0];
    let mut g = c.benchmark_group("send");
    g.bench_function("build_and_sign", |b| {
        b.to_async(&rt).iter(|| async {
            fx.services
                .rooms
                .build_detached(room, &fx.alice, text("hello".into()))
                .await
                .expect("build")
        })
    });
    // With a transaction id, like a client's PUT /send: that adds the idempotency lookup.
    let mut txn = 0u64;
    g.bench_function("append_message", |b| {
        b.to_async(&rt).iter(|| {
            txn += 1;
            let mut new = text(format!("message {txn}"));
            new.txn = Some((DEVICE.into(), format!("bench{txn}")));
            let fx = &fx;
            async move {
                fx.services
                    .rooms
                    .append(room, &fx.alice, new)
                    .await
                    .expect("append")
            }
        })
    });
    g.finish();
}

fn sync(c: &mut Criterion) {
    let rt = runtime();
    let fx = rt.block_on(Fixture::new(SYNC_ROOMS, MESSAGES_PER_ROOM));
    // Check once that each case measures what its name says, so that a change in sync's
    // behaviour fails here instead of silently timing something else.
    let latest = rt.block_on(async {
        let initial = fx.sync(None).await;
        assert_eq!(joined_rooms(&initial), SYNC_ROOMS);
        let since = next_batch(&initial);
        assert_eq!(joined_rooms(&fx.sync(Some(since)).await), 0);
        fx.services
            .rooms
            .append(&fx.rooms[0], &fx.bob, text("check".into()))
            .await
            .expect("send");
        let body = fx.sync(Some(since)).await;
        assert_eq!(joined_rooms(&body), 1);
        next_batch(&body)
    });

    let mut g = c.benchmark_group(format!("sync_{SYNC_ROOMS}_rooms"));
    g.bench_function("initial", |b| b.to_async(&rt).iter(|| fx.sync(None)));
    g.bench_function("incremental_idle", |b| {
        b.to_async(&rt).iter(|| fx.sync(Some(latest)))
    });
    // Each iteration sends one message to the next room (untimed), then times the sync a client
    // makes with its last next_batch: one changed room among SYNC_ROOMS. A Cell carries the
    // token and the room from one batch of iterations to the next.
    let since = Cell::new(latest);
    let next_room = Cell::new(0usize);
    g.bench_function("incremental_one_new_message", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (fx, since, next_room) = (&fx, &since, &next_room);
            async move {
                let mut timed = Duration::ZERO;
                for i in 0..iters {
                    let room = &fx.rooms[next_room.get()];
                    next_room.set((next_room.get() + 1) % fx.rooms.len());
                    fx.services
                        .rooms
                        .append(room, &fx.bob, text(format!("new {i}")))
                        .await
                        .expect("send");
                    let start = Instant::now();
                    let body = fx.sync(Some(since.get())).await;
                    timed += start.elapsed();
                    since.set(next_batch(&body));
                }
                timed
            }
        })
    });
    g.finish();
}

/// Push evaluation of one message for every member of a large room: rules, quiet hours,
/// notification rows. Evaluating the same event again only adds rows, like a new message would.
/// A few members have rules or a quiet-hours schedule of their own, as in a real room.
/// `evaluate_message` includes storing the 999 notification rows; the other two show what
/// evaluation itself costs: an event no rule matches (every rule is tried, nothing is stored),
/// and the quiet-hours lookup every notified member gets.
fn push_evaluation(c: &mut Criterion) {
    let rt = runtime();
    let fx = rt.block_on(Fixture::new(1, 0));
    let room = &fx.rooms[0];
    let (members, message, unmatched, state) = rt.block_on(async {
        let services = &fx.services;
        // alice and bob are members already.
        let mut members = vec![fx.bob.clone()];
        for i in 2..PUSH_MEMBERS {
            let user: OwnedUserId = format!("@member{i}:{}", services.rooms.server_name())
                .try_into()
                .expect("user id");
            let profile = Profile {
                displayname: Some(format!("Member {i}")),
                avatar_url: None,
            };
            services
                .rooms
                .join(room, &user, &profile, None)
                .await
                .expect("join");
            if i % 100 == 0 {
                services
                    .push
                    .rules
                    .put_rule(
                        &user,
                        "global",
                        "content",
                        "lunch",
                        None,
                        None,
                        &json!({"pattern": "lunch", "actions": ["notify"]}),
                    )
                    .await
                    .expect("push rule");
            }
            if i % 50 == 0 {
                let schedule = json!({"timezone": "Europe/Berlin",
                    "windows": [{"day_of_week": [0, 6]}]});
                let Value::Object(schedule) = schedule else {
                    unreachable!()
                };
                services
                    .account_data
                    .set(&user, None, "org.feldpost.quiet_hours", schedule)
                    .await
                    .expect("schedule");
            }
            members.push(user);
        }
        let message = services
            .rooms
            .append(room, &fx.alice, text("hello everyone".into()))
            .await
            .expect("send");
        let unmatched = services
            .rooms
            .append(
                room,
                &fx.alice,
                NewPdu::message("org.feldpost.bench", json!({"body": "hello"})),
            )
            .await
            .expect("send");
        let state = services.rooms.current_state(room).await.expect("state");
        let evaluator = &services.push.evaluator;
        let evaluated = evaluator
            .notifications(&message.0, &state)
            .await
            .expect("evaluate");
        // Everyone but the sender alike: one room notification, no rows.
        assert_eq!(evaluated.pushed.len(), PUSH_MEMBERS - 1);
        assert!(evaluated.room.is_some() && evaluated.rows.is_empty());
        let evaluated = evaluator
            .notifications(&unmatched.0, &state)
            .await
            .expect("evaluate");
        assert!(evaluated.room.is_none() && evaluated.rows.is_empty());
        (members, message, unmatched, state)
    });
    let evaluator = &fx.services.push.evaluator;
    let mut g = c.benchmark_group(format!("push_{PUSH_MEMBERS}_members"));
    g.bench_function("evaluate_message", |b| {
        b.to_async(&rt).iter(|| async {
            evaluator
                .notifications(&message.0, &state)
                .await
                .expect("evaluate")
        })
    });
    g.bench_function("evaluate_unmatched_event", |b| {
        b.to_async(&rt).iter(|| async {
            evaluator
                .notifications(&unmatched.0, &state)
                .await
                .expect("evaluate")
        })
    });
    let now = fx.services.push.now_ms();
    g.bench_function("quiet_reason_all_members", |b| {
        b.to_async(&rt).iter(|| async {
            for user in &members {
                evaluator.quiet_reason(user, now).await.expect("quiet");
            }
        })
    });
    g.finish();
}

criterion_group!(benches, send, sync, push_evaluation);
criterion_main!(benches);
