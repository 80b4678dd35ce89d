//! Push: push rules and their evaluation, unread counts, /notifications, pushers and delivery
//! to push gateways, Feldpost's own push gateway and distributor, and quiet hours.
//!
//! The send path evaluates each new event and stores its notifications with it (see `evaluate`);
//! delivery to pushers and the quiet-hours bot run in background tasks.

pub mod commands;
pub mod config;
pub mod delivery;
pub mod distributor;
pub mod evaluate;
pub mod gateway;
pub mod holidays;
pub mod outbound;
pub mod providers;
pub mod pushers;
pub mod quiet_hours;
pub mod rules;
pub(crate) mod sync_counts;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use feldpost_storage::Store;
use parking_lot::{Mutex, RwLock};
use ruma::{OwnedEventId, RoomId, UserId};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::account_data::AccountData;
use crate::config::Config;
use crate::pdu::Pdu;
use crate::rooms::Rooms;
use crate::{Error, Result};

use self::delivery::Delivery;
use self::distributor::Distributor;
use self::evaluate::Evaluator;
use self::gateway::{Gateway, LocalBases};
use self::outbound::Outbound;
use self::pushers::Pushers;
use self::rules::PushRules;

/// Where push takes the current time from; tests put in a clock they control.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

/// The system's wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::rooms::append::now_ms()
    }
}

/// A clock that only moves when told to.
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(ms: i64) -> Self {
        Self(AtomicI64::new(ms))
    }
    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A replaceable clock shared by the push services.
pub struct ClockCell(RwLock<Arc<dyn Clock>>);

impl Clock for ClockCell {
    fn now_ms(&self) -> i64 {
        self.0.read().now_ms()
    }
}

/// A stored event for the quiet-hours bot: the PDU and its stream position.
pub type NewEventNotice = (Arc<Pdu>, i64);

/// Push's part in storing an event: its notifications go into the event's own write, and once
/// durable the pushers with news are woken and the bot sees the event. Holds the services
/// weakly: rooms holds the hook, and they hold rooms.
struct Hook {
    evaluator: std::sync::Weak<Evaluator>,
    delivery: std::sync::Weak<Delivery>,
    queue: mpsc::UnboundedSender<NewEventNotice>,
    /// Wakes the task that moves waiting notification rows into place.
    mover: Arc<tokio::sync::Notify>,
}

/// Waiting notification rows moved per write: each row dirties two index pages, and a write
/// holds the single writer, and every message sent meanwhile, for its length.
const MOVE_CHUNK: usize = 128;

impl crate::rooms::EventHook for Hook {
    fn notifications<'a>(
        &'a self,
        pdu: &'a Pdu,
        state: &'a Arc<crate::rooms::StateMap>,
    ) -> futures::future::BoxFuture<'a, crate::rooms::EventNotifications> {
        Box::pin(async move {
            let Some(evaluator) = self.evaluator.upgrade() else {
                return Default::default();
            };
            match evaluator.notifications(pdu, state).await {
                Ok(n) => n,
                Err(e) => {
                    // The message matters more than its notification: it is stored without.
                    tracing::warn!(error = %e, event = %pdu.event_id, "push evaluation failed");
                    Default::default()
                }
            }
        })
    }

    fn stored(&self, pdu: &Arc<Pdu>, stream: i64, pushed: &[String], waiting: bool) {
        if waiting {
            self.mover.notify_one();
        }
        // Pushers read waiting rows where they are.
        if let Some(delivery) = self.delivery.upgrade() {
            for user in pushed {
                delivery.kick_user(user);
            }
        }
        let _ = self.queue.send((pdu.clone(), stream));
    }
}

/// Unread counts of one room for one user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomCounts {
    /// All threads together: (notifications, highlights).
    pub total: (u64, u64),
    /// The main timeline alone.
    pub main: (u64, u64),
    /// Per thread root.
    pub threads: Vec<(String, u64, u64)>,
}

impl RoomCounts {
    /// Adds counted notifications of one thread ("main" for the main timeline).
    fn add(&mut self, thread: &str, notifications: u64, highlights: u64) {
        // Every notification row counts once; a thread without one shows no entry.
        if notifications == 0 {
            return;
        }
        self.total.0 += notifications;
        self.total.1 += highlights;
        if thread == "main" {
            self.main.0 += notifications;
            self.main.1 += highlights;
        } else {
            // Sorted by thread root, so that responses list threads in a stable order.
            match self.threads.binary_search_by(|t| t.0.as_str().cmp(thread)) {
                Ok(i) => {
                    self.threads[i].1 += notifications;
                    self.threads[i].2 += highlights;
                }
                Err(i) => self
                    .threads
                    .insert(i, (thread.to_owned(), notifications, highlights)),
            }
        }
    }
}

pub struct Push {
    pub rules: Arc<PushRules>,
    pub pushers: Pushers,
    pub gateway: Arc<Gateway>,
    pub distributor: Arc<Distributor>,
    pub delivery: Arc<Delivery>,
    pub evaluator: Arc<Evaluator>,
    pub bot: Arc<commands::Bot>,
    store: Arc<dyn Store>,
    rooms: Arc<Rooms>,
    clock: Arc<ClockCell>,
    local: Arc<LocalBases>,
    queue: Mutex<Option<mpsc::UnboundedReceiver<NewEventNotice>>>,
    /// Wakes the mover of waiting notification rows (see `start`).
    mover: Arc<tokio::sync::Notify>,
    /// The stream position of the last stored event push has seen through (its notifications
    /// are stored with it; the bot reads it afterwards), so callers can wait for the bot.
    evaluated: Arc<std::sync::atomic::AtomicI64>,
    /// Unread counts per (user, room), brought up to date by counting only new notification
    /// rows while the user's receipts and memberships stay as they were. An initial sync puts
    /// every joined room of the user here (300,000 pairs in a deployment of 80,000 users), so an
    /// entry is kept small: one key allocation, and none for counts without threads.
    counts: Mutex<HashMap<Box<str>, CachedCounts>>,
}

/// The cache key of a (user, room) pair: a user ID holds no NUL, so the first one separates.
fn counts_key(user: &UserId, room: &RoomId) -> Box<str> {
    let mut key = String::with_capacity(user.as_str().len() + 1 + room.as_str().len());
    key.push_str(user.as_str());
    key.push('\0');
    key.push_str(room.as_str());
    key.into_boxed_str()
}

/// Counts as of stream position `at`, with the floors they were counted from.
struct CachedCounts {
    at: i64,
    /// Whether the user was joined (room notifications count only then).
    member: bool,
    floor: i64,
    thread_floors: Vec<(String, i64)>,
    counts: RoomCounts,
}

impl Push {
    pub fn new(
        config: &Config,
        store: Arc<dyn Store>,
        rooms: Arc<Rooms>,
        account_data: Arc<AccountData>,
    ) -> Result<Self> {
        let pc = &config.push;
        let clock = Arc::new(ClockCell(RwLock::new(Arc::new(SystemClock))));
        let local = Arc::new(LocalBases::default());
        if let Some(base) = &config.public_baseurl {
            local.add(base);
        }
        let http = Outbound::new(
            config.outbound.clone(),
            Duration::from_millis(pc.request_timeout_ms.max(1)),
        )?;
        let distributor = Arc::new(Distributor::new(pc.distributor.clone(), clock.clone()));
        let gateway = Arc::new(Gateway::new(
            pc.gateway.clone(),
            http.clone(),
            distributor.clone(),
            local.clone(),
        )?);
        let delivery = Arc::new(Delivery::new(
            store.clone(),
            rooms.clone(),
            pc.clone(),
            http,
            gateway.clone(),
            local.clone(),
        ));
        let rules = Arc::new(PushRules::new(account_data.clone()));
        let evaluator = Arc::new(Evaluator {
            store: store.clone(),
            rooms: rooms.clone(),
            rules: rules.clone(),
            account_data: account_data.clone(),
            clock: clock.clone(),
            quiet: pc.quiet_hours.clone(),
            members: Mutex::default(),
        });
        let bot = Arc::new(commands::Bot::new(
            store.clone(),
            rooms.clone(),
            account_data,
            evaluator.clone(),
            pc.quiet_hours.clone(),
        )?);
        let (tx, rx) = mpsc::unbounded_channel();
        let mover = Arc::new(tokio::sync::Notify::new());
        rooms.set_event_hook(Arc::new(Hook {
            evaluator: Arc::downgrade(&evaluator),
            delivery: Arc::downgrade(&delivery),
            queue: tx,
            mover: mover.clone(),
        }));
        Ok(Self {
            pushers: Pushers::new(store.clone(), delivery.clone(), pc.allow_http_gateways),
            rules,
            gateway,
            distributor,
            delivery,
            evaluator,
            bot,
            store,
            rooms,
            clock,
            local,
            queue: Mutex::new(Some(rx)),
            mover,
            evaluated: Arc::default(),
            counts: Mutex::default(),
        })
    }

    /// Reads ahead what evaluating the first message into each of `rooms` (the largest, at a
    /// start) needs; see `Evaluator::warm`.
    pub async fn warm(&self, rooms: &[ruma::OwnedRoomId]) {
        if let Err(e) = self.evaluator.warm(rooms).await {
            tracing::warn!(error = %e, "could not read ahead for the largest rooms' push rules");
        }
    }

    /// The stream position up to which new events have been evaluated for push.
    pub fn evaluated_up_to(&self) -> i64 {
        self.evaluated.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Replaces the clock quiet hours and the distributor read (tests, simulations).
    pub fn set_clock(&self, clock: Arc<dyn Clock>) {
        *self.clock.0.write() = clock;
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Records the address the server listens on as one of its own bases (for loopback and
    /// unspecified addresses also as `127.0.0.1` and `localhost`).
    pub fn register_listener(&self, addr: std::net::SocketAddr) {
        let port = addr.port();
        self.local.add(&format!("http://{addr}"));
        if addr.ip().is_unspecified() || addr.ip().is_loopback() {
            self.local.add(&format!("http://127.0.0.1:{port}"));
            self.local.add(&format!("http://localhost:{port}"));
        }
    }

    /// Records another base URL under which this server is reachable (its listen address).
    pub fn add_local_base(&self, base: &str) {
        self.local.add(base);
    }

    /// Starts the background work: the bot's look at new events, pusher queues, distributor
    /// upkeep.
    /// Runs once; later calls do nothing.
    pub fn start(self: &Arc<Self>) {
        let Some(mut rx) = self.queue.lock().take() else {
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            while let Some((pdu, stream)) = rx.recv().await {
                this.bot.on_event(&pdu).await;
                this.evaluated
                    .fetch_max(stream, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                this.mover.notified().await;
                this.move_waiting_notifications().await;
            }
        });
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.delivery.start_all().await {
                tracing::warn!(error = %e, "starting pusher queues failed");
            }
        });
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                this.distributor.prune();
            }
        });
    }

    /// Moves waiting notification rows into place, a chunk per write; retries after a failed
    /// write until nothing waits.
    async fn move_waiting_notifications(&self) {
        loop {
            match self.store.move_pending_notifications(MOVE_CHUNK).await {
                Ok(false) => return,
                Ok(true) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "moving notification rows failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Unread counts of a room for a user, after their read receipts. `joined_at` is the
    /// position of the user's current join when the caller knows it (sync holds the user's
    /// memberships), which saves a read when the counts are not cached.
    pub async fn room_counts(
        &self,
        user: &UserId,
        room: &RoomId,
        joined_at: Option<i64>,
    ) -> Result<RoomCounts> {
        let changes = self.store.changes();
        let key = counts_key(user, room);
        let now = self.store.current_position();
        let cached = self.counts.lock().get(&key).and_then(|c| {
            (!changes.reads_changed(user.as_str(), c.at)).then(|| {
                (
                    c.at,
                    c.member,
                    c.floor,
                    c.thread_floors.clone(),
                    c.counts.clone(),
                )
            })
        });
        if let Some((at, member, floor, thread_floors, mut counts)) = cached {
            // New rows of the user's own, or a room notification (written with an event, which
            // touches the room).
            if now > at
                && (changes.notifications_changed(user.as_str(), at)
                    || (member && changes.room_changed(room.as_str(), at)))
            {
                let delta = self
                    .store
                    .unread_counts(
                        user.as_str(),
                        room.as_str(),
                        floor,
                        thread_floors.clone(),
                        (at, now),
                        member,
                    )
                    .await?;
                for c in delta {
                    counts.add(&c.thread_id, c.notifications, c.highlights);
                }
            }
            let mut cache = self.counts.lock();
            if let Some(c) = cache.get_mut(&key)
                && c.at < now
                && c.member == member
                && c.floor == floor
                && c.thread_floors == thread_floors
            {
                c.at = now;
                c.counts = counts.clone();
            }
            return Ok(counts);
        }
        let positions = self
            .store
            .read_positions(user.as_str(), room.as_str())
            .await?;
        // Events before the user joined never count (the invite that brought them in, say).
        let joined_at = match joined_at {
            Some(at) => Some(at),
            None => self
                .store
                .membership(room.as_str(), user.as_str())
                .await?
                .filter(|m| m.membership == "join")
                .map(|m| m.stream),
        };
        let member = joined_at.is_some();
        let floor = positions
            .iter()
            .find(|(t, _)| t.is_empty())
            .map(|(_, s)| *s)
            .unwrap_or(0)
            .max(joined_at.unwrap_or(0));
        let thread_floors: Vec<(String, i64)> = positions
            .into_iter()
            .filter(|(t, _)| !t.is_empty())
            .collect();
        let rows = self
            .store
            .unread_counts(
                user.as_str(),
                room.as_str(),
                floor,
                thread_floors.clone(),
                (i64::MIN, now),
                member,
            )
            .await?;
        let mut counts = RoomCounts::default();
        for c in rows {
            counts.add(&c.thread_id, c.notifications, c.highlights);
        }
        let mut cache = self.counts.lock();
        if cache.len() >= 1_000_000 {
            cache.clear();
        }
        cache.insert(
            key,
            CachedCounts {
                at: now,
                member,
                floor,
                thread_floors,
                counts: counts.clone(),
            },
        );
        Ok(counts)
    }

    /// Rooms whose counts for the user changed in `(after, up_to]`.
    pub async fn rooms_with_new_notifications(
        &self,
        user: &UserId,
        after: i64,
        up_to: i64,
    ) -> Result<Vec<String>> {
        Ok(self
            .store
            .rooms_with_new_notifications(user.as_str(), after, up_to)
            .await?)
    }

    /// `GET /notifications`.
    pub async fn notifications(
        &self,
        user: &UserId,
        from: Option<&str>,
        limit: Option<u64>,
        only: Option<&str>,
    ) -> Result<Value> {
        let before = match from {
            None | Some("") => None,
            Some(f) => Some(
                f.parse::<i64>()
                    .map_err(|_| Error::invalid_param("Invalid from token"))?,
            ),
        };
        let limit = limit.unwrap_or(20).clamp(1, 100) as u32;
        let only_highlight = match only {
            None | Some("") => false,
            Some("highlight") => true,
            Some(_) => return Err(Error::invalid_param("only must be highlight")),
        };
        let rows = self
            .store
            .notifications(user.as_str(), before, limit, only_highlight)
            .await?;
        let mut read_cache: HashMap<String, Vec<(String, i64)>> = HashMap::new();
        let mut out = Vec::with_capacity(rows.len());
        for n in &rows {
            let Ok(id) = OwnedEventId::try_from(n.event_id.as_str()) else {
                continue;
            };
            let Some(pdu) = self.rooms.pdu(&id).await? else {
                continue;
            };
            if !read_cache.contains_key(&n.room_id) {
                let p = self.store.read_positions(user.as_str(), &n.room_id).await?;
                read_cache.insert(n.room_id.clone(), p);
            }
            let positions = read_cache.get(&n.room_id).map(Vec::as_slice).unwrap_or(&[]);
            let read = positions
                .iter()
                .any(|(t, s)| (t.is_empty() || *t == n.thread_id) && *s >= n.event_stream);
            let mut event = pdu.to_client_value();
            event.remove("room_id");
            let actions: Value = serde_json::from_str(&n.actions).unwrap_or(json!([]));
            let mut item = json!({
                "actions": actions,
                "event": event,
                "read": read,
                "room_id": n.room_id,
                "ts": n.ts,
            });
            if let Some(tag) = &n.profile_tag {
                item["profile_tag"] = json!(tag);
            }
            out.push(item);
        }
        let mut body = json!({ "notifications": out });
        if rows.len() as u32 == limit
            && let Some(last) = rows.last()
        {
            body["next_token"] = json!(last.id.to_string());
        }
        Ok(body)
    }
}
