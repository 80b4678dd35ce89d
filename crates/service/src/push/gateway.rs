//! Feldpost's own push gateway (`/_matrix/push/v1/notify`): takes a notification from a
//! homeserver (Feldpost itself, usually in-process) and forwards each device's wake-up by its
//! pushkey: to a topic of the built-in distributor, to an external UnifiedPush endpoint on the
//! operator's allow-list, or through FCM or APNs for the app ids configured there. Whatever the
//! homeserver sent, only the content-free shape leaves: event id, room id, counts, priority.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;
use serde_json::{Map, Value, json};

use super::config::GatewayConfig;
use super::distributor::{Distributor, PATH_PREFIX};
use super::outbound::Outbound;
use super::providers::{Apns, Fcm, Outcome};
use crate::{Error, Result};

/// The path of the Push Gateway API's notify endpoint.
pub const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";

/// The base URLs under which this server is reachable (its public base URL and the address it
/// listens on), to recognise its own gateway and distributor in pusher URLs and pushkeys.
#[derive(Default)]
pub struct LocalBases {
    bases: RwLock<Vec<reqwest::Url>>,
}

impl LocalBases {
    pub fn add(&self, base: &str) {
        if let Ok(u) = reqwest::Url::parse(base) {
            let mut b = self.bases.write();
            if !b.contains(&u) {
                b.push(u);
            }
        }
    }

    /// The path of `url` below one of the local bases, if it is one of ours.
    fn local_path(&self, url: &str) -> Option<String> {
        let u = reqwest::Url::parse(url).ok()?;
        self.bases.read().iter().find_map(|b| {
            if b.origin() != u.origin() {
                return None;
            }
            let prefix = b.path().trim_end_matches('/');
            u.path().strip_prefix(prefix).map(str::to_owned)
        })
    }

    /// Whether `url` is this server's own push gateway.
    pub fn is_own_gateway(&self, url: &str) -> bool {
        self.local_path(url).as_deref() == Some(NOTIFY_PATH)
    }

    /// The distributor topic a pushkey (a UnifiedPush endpoint URL) names, if it is ours.
    pub fn own_topic(&self, url: &str) -> Option<String> {
        let path = self.local_path(url)?;
        let topic = path.strip_prefix(PATH_PREFIX)?.strip_prefix('/')?;
        (!topic.is_empty() && !topic.contains('/')).then(|| topic.to_owned())
    }
}

pub struct Gateway {
    config: GatewayConfig,
    http: Outbound,
    distributor: Arc<Distributor>,
    local: Arc<LocalBases>,
    fcm: Option<Fcm>,
    apns: Option<Apns>,
}

/// The content-free form of a notification for one device.
pub fn content_free(notification: &Map<String, Value>, device: &Value) -> Value {
    let mut n = Map::new();
    for key in ["event_id", "room_id", "counts", "prio"] {
        if let Some(v) = notification.get(key) {
            n.insert(key.into(), v.clone());
        }
    }
    let mut d = Map::new();
    for key in ["app_id", "pushkey", "pushkey_ts", "data", "tweaks"] {
        if let Some(v) = device.get(key) {
            d.insert(key.into(), v.clone());
        }
    }
    n.insert("devices".into(), json!([d]));
    json!({ "notification": n })
}

impl Gateway {
    pub fn new(
        config: GatewayConfig,
        http: Outbound,
        distributor: Arc<Distributor>,
        local: Arc<LocalBases>,
    ) -> Result<Self> {
        let fcm = config.fcm.as_ref().map(Fcm::load).transpose()?;
        let apns = config.apns.as_ref().map(Apns::load).transpose()?;
        Ok(Self {
            config,
            http,
            distributor,
            local,
            fcm,
            apns,
        })
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// Handles one notify request; returns the rejected pushkeys. An error means a temporary
    /// failure: the homeserver should retry.
    pub async fn notify(&self, body: &Value) -> Result<Vec<String>> {
        let notification = body
            .get("notification")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::bad_json("notification is required"))?;
        let devices = notification
            .get("devices")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::bad_json("notification.devices is required"))?;
        let mut rejected = Vec::new();
        let mut failure = None;
        for device in devices {
            let (Some(app_id), Some(pushkey)) = (
                device.get("app_id").and_then(Value::as_str),
                device.get("pushkey").and_then(Value::as_str),
            ) else {
                return Err(Error::bad_json("every device needs app_id and pushkey"));
            };
            match self.forward(notification, device, app_id, pushkey).await {
                Ok(Outcome::Delivered) => {}
                Ok(Outcome::Rejected) => rejected.push(pushkey.to_owned()),
                Err(e) => {
                    tracing::warn!(app_id, error = %e, "push forwarding failed");
                    failure = Some(e);
                }
            }
        }
        match failure {
            Some(e) if rejected.is_empty() => Err(e),
            _ => Ok(rejected),
        }
    }

    async fn forward(
        &self,
        notification: &Map<String, Value>,
        device: &Value,
        app_id: &str,
        pushkey: &str,
    ) -> Result<Outcome> {
        let str_field = |k: &str| notification.get(k).and_then(Value::as_str);
        let unread = notification
            .get("counts")
            .and_then(|c| c.get("unread"))
            .and_then(Value::as_u64);
        let high = str_field("prio") != Some("low");
        if let Some(fcm) = self
            .fcm
            .as_ref()
            .filter(|f| f.app_ids.iter().any(|a| a == app_id))
        {
            let mut data = BTreeMap::new();
            for k in ["event_id", "room_id"] {
                if let Some(v) = str_field(k) {
                    data.insert(k.to_owned(), v.to_owned());
                }
            }
            data.insert("unread_count".into(), unread.unwrap_or(0).to_string());
            data.insert("prio".into(), if high { "high" } else { "normal" }.into());
            return fcm.send(&self.http, pushkey, &data, high).await;
        }
        if let Some(apns) = self
            .apns
            .as_ref()
            .filter(|a| a.app_ids.iter().any(|x| x == app_id))
        {
            let mut custom = BTreeMap::new();
            for k in ["event_id", "room_id"] {
                if let Some(v) = str_field(k) {
                    custom.insert(k.to_owned(), json!(v));
                }
            }
            custom.insert("unread_count".into(), json!(unread.unwrap_or(0)));
            return apns.send(&self.http, pushkey, &custom, unread, high).await;
        }
        let payload = content_free(notification, device).to_string();
        if let Some(topic) = self.local.own_topic(pushkey) {
            if !self.distributor.enabled() {
                return Ok(Outcome::Rejected);
            }
            return match self.distributor.publish(&topic, payload) {
                Ok(_) => Ok(Outcome::Delivered),
                Err(_) => Ok(Outcome::Rejected),
            };
        }
        if self
            .config
            .unifiedpush_allowed_prefixes
            .iter()
            .any(|p| !p.is_empty() && pushkey.starts_with(p.as_str()))
        {
            let url = match self.http.check_url(pushkey) {
                Ok(u) => u,
                Err(_) => return Ok(Outcome::Rejected),
            };
            let resp = self
                .http
                .client
                .post(url)
                .header("content-type", "application/json")
                .body(payload)
                .send()
                .await
                .map_err(|e| Error::internal(format!("UnifiedPush endpoint failed: {e}")))?;
            let status = resp.status().as_u16();
            return match status {
                200..=299 => Ok(Outcome::Delivered),
                404 | 410 => Ok(Outcome::Rejected),
                _ => Err(Error::internal(format!(
                    "UnifiedPush endpoint answered {status}"
                ))),
            };
        }
        // Nothing this gateway may deliver to: the pushkey is not valid here.
        Ok(Outcome::Rejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_own_urls() {
        let l = LocalBases::default();
        l.add("https://matrix.example.org");
        l.add("http://127.0.0.1:8008");
        assert!(l.is_own_gateway("https://matrix.example.org/_matrix/push/v1/notify"));
        assert!(!l.is_own_gateway("https://other.example.org/_matrix/push/v1/notify"));
        assert_eq!(
            l.own_topic("http://127.0.0.1:8008/_feldpost/ntfy/upAbc123?up=1")
                .as_deref(),
            Some("upAbc123")
        );
        assert_eq!(
            l.own_topic("http://127.0.0.1:8009/_feldpost/ntfy/upAbc"),
            None
        );
        assert_eq!(
            l.own_topic("http://127.0.0.1:8008/_feldpost/ntfy/a/b"),
            None
        );
    }

    #[test]
    fn strips_content() {
        let n = json!({"event_id": "$e", "room_id": "!r", "content": {"body": "secret"},
            "sender": "@a:x", "counts": {"unread": 2}, "devices": []});
        let d = json!({"app_id": "a", "pushkey": "k", "data": {"format": "full"}});
        let out = content_free(n.as_object().unwrap(), &d);
        let s = out.to_string();
        assert!(!s.contains("secret") && !s.contains("@a:x"));
        assert_eq!(out["notification"]["counts"]["unread"], 2);
    }
}
