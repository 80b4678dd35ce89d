//! Delivery of notifications to push gateways, per the Push Gateway API: one queue (a worker
//! task) per pusher that sends the user's pending notifications in order, retries with
//! exponential backoff after errors, and removes the pusher when the gateway rejects its
//! pushkey. The queue is the notifications table itself: each pusher remembers the last
//! notification it handed over, so nothing is lost across restarts.
//!
//! Every push is content-free (`event_id_only`: event id, room id, counts, devices, priority)
//! unless the operator allowed more for the pusher's app id and the pusher asked for it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use feldpost_storage::{NotificationRecord, PusherRecord, Store};
use parking_lot::Mutex;
use ruma::OwnedEventId;
use ruma::push::{Action, Tweak};
use serde_json::{Map, Value, json};
use tokio::sync::Notify;

use super::config::PushConfig;
use super::gateway::{Gateway, LocalBases};
use super::outbound::Outbound;
use crate::rooms::Rooms;
use crate::{Error, Result};

type PusherKey = (String, String, String);

fn key_of(p: &PusherRecord) -> PusherKey {
    (p.user_id.clone(), p.app_id.clone(), p.pushkey.clone())
}

struct Worker {
    wake: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

/// How one notification ended for one pusher.
#[derive(Debug, PartialEq, Eq)]
enum Sent {
    Delivered,
    Rejected,
    GaveUp,
}

pub struct Delivery {
    store: Arc<dyn Store>,
    rooms: Arc<Rooms>,
    config: PushConfig,
    http: Outbound,
    gateway: Arc<Gateway>,
    local: Arc<LocalBases>,
    /// Ordered by user first, so that a user's pushers are found without a scan of all.
    workers: Mutex<BTreeMap<PusherKey, Worker>>,
}

/// The tweaks of a rule's actions as the gateway expects them.
pub fn tweaks(actions: &[Action]) -> Map<String, Value> {
    let mut t = Map::new();
    for a in actions {
        if let Action::SetTweak(tw) = a {
            match tw {
                Tweak::Sound(s) => {
                    t.insert(
                        "sound".into(),
                        serde_json::to_value(s).unwrap_or(json!("default")),
                    );
                }
                Tweak::Highlight(h) => {
                    let on = matches!(h, ruma::push::HighlightTweakValue::Yes);
                    t.insert("highlight".into(), json!(on));
                }
                other => {
                    if let Ok(v) = serde_json::to_value(other)
                        && let (Some(name), Some(value)) =
                            (v.get("set_tweak").and_then(Value::as_str), v.get("value"))
                    {
                        t.insert(name.to_owned(), value.clone());
                    }
                }
            }
        }
    }
    t
}

impl Delivery {
    pub fn new(
        store: Arc<dyn Store>,
        rooms: Arc<Rooms>,
        config: PushConfig,
        http: Outbound,
        gateway: Arc<Gateway>,
        local: Arc<LocalBases>,
    ) -> Self {
        Self {
            store,
            rooms,
            config,
            http,
            gateway,
            local,
            workers: Mutex::default(),
        }
    }

    /// Starts a worker for every stored pusher, so that what was pending before a restart goes
    /// out.
    pub async fn start_all(self: &Arc<Self>) -> Result<()> {
        if !self.config.enabled {
            return Ok(());
        }
        for p in self.store.all_pushers().await? {
            self.restart(p);
        }
        Ok(())
    }

    /// (Re)starts the worker of a pusher with its current record.
    pub fn restart(self: &Arc<Self>, pusher: PusherRecord) {
        if !self.config.enabled {
            return;
        }
        let key = key_of(&pusher);
        let wake = Arc::new(Notify::new());
        let this = self.clone();
        let w = wake.clone();
        let task = tokio::spawn(async move { this.run(pusher, w).await });
        if let Some(old) = self.workers.lock().insert(key, Worker { wake, task }) {
            old.task.abort();
        }
        // A new worker looks for pending notifications at once.
    }

    /// Stops the worker of a removed pusher.
    pub fn stop(&self, user_id: &str, app_id: &str, pushkey: &str) {
        let key = (user_id.to_owned(), app_id.to_owned(), pushkey.to_owned());
        if let Some(w) = self.workers.lock().remove(&key) {
            w.task.abort();
        }
    }

    /// Stops the workers of other users' pushers with this app id and pushkey.
    pub fn stop_others(&self, app_id: &str, pushkey: &str, keep_user: &str) {
        self.workers.lock().retain(|k, w| {
            let other = k.1 == app_id && k.2 == pushkey && k.0 != keep_user;
            if other {
                w.task.abort();
            }
            !other
        });
    }

    /// Wakes the workers of a user's pushers: new notifications are waiting.
    pub fn kick_user(&self, user_id: &str) {
        let from = (user_id.to_owned(), String::new(), String::new());
        for (_, w) in self
            .workers
            .lock()
            .range(from..)
            .take_while(|(k, _)| k.0 == user_id)
        {
            w.wake.notify_one();
        }
    }

    async fn run(self: Arc<Self>, pusher: PusherRecord, wake: Arc<Notify>) {
        let mut last = pusher.pushed_through;
        loop {
            let batch = match self.store.pending_pushes(&pusher.user_id, last, 50).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "reading pending pushes failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if batch.is_empty() {
                wake.notified().await;
                continue;
            }
            for n in batch {
                match self.send_with_retry(&pusher, &n).await {
                    Sent::Rejected => {
                        tracing::info!(
                            user = %pusher.user_id,
                            app_id = %pusher.app_id,
                            "gateway rejected the pushkey; removing the pusher"
                        );
                        if let Err(e) = self
                            .store
                            .delete_pusher(&pusher.user_id, &pusher.app_id, &pusher.pushkey)
                            .await
                        {
                            tracing::warn!(error = %e, "removing a rejected pusher failed");
                        }
                        self.workers.lock().remove(&key_of(&pusher));
                        return;
                    }
                    Sent::Delivered | Sent::GaveUp => {}
                }
                last = n.id;
                if let Err(e) = self
                    .store
                    .set_pusher_progress(&pusher.user_id, &pusher.app_id, &pusher.pushkey, last)
                    .await
                {
                    tracing::warn!(error = %e, "recording push progress failed");
                }
            }
        }
    }

    async fn send_with_retry(&self, pusher: &PusherRecord, n: &NotificationRecord) -> Sent {
        let started = tokio::time::Instant::now();
        let give_up = Duration::from_millis(self.config.give_up_after_ms);
        let mut backoff = Duration::from_millis(self.config.initial_backoff_ms.max(1));
        let max = Duration::from_millis(self.config.max_backoff_ms.max(1));
        loop {
            match self.send_once(pusher, n).await {
                Ok(true) => return Sent::Rejected,
                Ok(false) => return Sent::Delivered,
                Err(e) if e.kind == crate::ErrorKind::Forbidden => {
                    tracing::warn!(error = %e, "push destination not allowed; dropping");
                    return Sent::GaveUp;
                }
                Err(e) => {
                    if started.elapsed() + backoff > give_up {
                        tracing::warn!(error = %e, event = %n.event_id, "giving up on a push");
                        return Sent::GaveUp;
                    }
                    tracing::debug!(error = %e, retry_in = ?backoff, "push failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(max);
                }
            }
        }
    }

    /// The request body for one notification to one pusher.
    pub async fn payload(&self, pusher: &PusherRecord, n: &NotificationRecord) -> Result<Value> {
        let mut data: Map<String, Value> = serde_json::from_str(&pusher.data).unwrap_or_default();
        data.remove("url");
        let actions: Vec<Action> = serde_json::from_str(&n.actions).unwrap_or_default();
        let tweaks = tweaks(&actions);
        let prio = if tweaks.contains_key("sound")
            || tweaks.get("highlight").and_then(Value::as_bool) == Some(true)
        {
            "high"
        } else {
            "low"
        };
        let unread = self.store.unread_total(&pusher.user_id).await?;
        let mut counts = Map::new();
        if unread > 0 {
            counts.insert("unread".into(), json!(unread));
        }
        let mut notification = json!({
            "event_id": n.event_id,
            "room_id": n.room_id,
            "counts": counts,
            "prio": prio,
            "devices": [{
                "app_id": pusher.app_id,
                "pushkey": pusher.pushkey,
                "pushkey_ts": pusher.pushkey_ts / 1000,
                "data": data,
                "tweaks": tweaks,
            }],
        });
        let wants_full = data.get("format").and_then(Value::as_str) != Some("event_id_only");
        let allowed = self
            .config
            .full_format_app_ids
            .iter()
            .any(|a| a == &pusher.app_id);
        if wants_full
            && allowed
            && let Ok(id) = OwnedEventId::try_from(n.event_id.as_str())
            && let Some(pdu) = self.rooms.pdu(&id).await?
        {
            notification["type"] = json!(pdu.kind.to_string());
            notification["sender"] = json!(pdu.sender.to_string());
            notification["content"] = pdu.content_value();
            if let Some(k) = &pdu.state_key {
                notification["user_is_target"] = json!(k == &pusher.user_id);
            }
        }
        Ok(json!({ "notification": notification }))
    }

    /// Sends once; `Ok(true)` when the gateway rejected the pushkey.
    async fn send_once(&self, pusher: &PusherRecord, n: &NotificationRecord) -> Result<bool> {
        let data: Value = serde_json::from_str(&pusher.data).unwrap_or(Value::Null);
        let url = data
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::forbidden("pusher without url"))?
            .to_owned();
        let body = self.payload(pusher, n).await?;
        let rejected: Vec<String> = if self.local.is_own_gateway(&url) && self.gateway.enabled() {
            // Our own gateway: no need for a round trip through HTTP.
            self.gateway.notify(&body).await?
        } else {
            let parsed = self.http.check_url(&url)?;
            let resp = self
                .http
                .client
                .post(parsed)
                .json(&body)
                .send()
                .await
                .map_err(|e| Error::internal(format!("gateway request failed: {e}")))?;
            let status = resp.status();
            if !status.is_success() {
                return Err(Error::internal(format!("gateway answered {status}")));
            }
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            v.get("rejected")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(rejected.iter().any(|k| k == &pusher.pushkey))
    }
}
