//! The built-in push distributor: topics to which phones subscribe (the ntfy protocol subset that
//! UnifiedPush distributor apps speak), and to which Feldpost's gateway publishes. Messages are
//! kept in memory for a while so that a subscriber reconnecting with `since` catches up.
//!
//! A topic name is the only secret of a subscription, so names must be long enough to be
//! unguessable; publishing needs the gateway (in-process) or an authenticated local user, so a
//! stranger who learns a topic still cannot send to it. What is published is content-free.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use rand::Rng;
use rand::distributions::Alphanumeric;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::Clock;
use super::config::DistributorConfig;
use crate::{Error, Result};

/// The path prefix under which the distributor is served.
pub const PATH_PREFIX: &str = "/_feldpost/ntfy";

/// Messages a live subscriber may lag behind before it misses some (it can catch up with
/// `since`).
const CHANNEL_CAPACITY: usize = 256;

/// One message on a topic, in the shape ntfy clients read.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: String,
    /// Seconds since the epoch.
    pub time: i64,
    /// `open`, `keepalive` or `message`.
    pub event: &'static str,
    pub topic: String,
    pub message: Option<String>,
}

impl Message {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "time": self.time,
            "event": self.event,
            "topic": self.topic,
        });
        if let Some(m) = &self.message {
            v["message"] = json!(m);
        }
        v
    }
}

/// What a new subscription gets: the cached messages it asked for and a receiver of new ones.
pub type Subscription = (Vec<Arc<Message>>, broadcast::Receiver<Arc<Message>>);

/// Where a subscriber wants to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Since {
    /// Only new messages.
    None,
    /// Everything cached.
    All,
    /// Messages at or after this time (seconds).
    Time(i64),
    /// Messages after the one with this id.
    Id(String),
}

struct Topic {
    tx: broadcast::Sender<Arc<Message>>,
    cache: VecDeque<Arc<Message>>,
}

pub struct Distributor {
    config: DistributorConfig,
    clock: Arc<dyn Fn() -> i64 + Send + Sync>,
    topics: Mutex<HashMap<String, Topic>>,
}

fn random_id() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(12)
        .map(char::from)
        .collect()
}

impl Distributor {
    pub fn new(config: DistributorConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            config,
            clock: Arc::new(move || clock.now_ms()),
            topics: Mutex::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    pub fn keepalive_secs(&self) -> u64 {
        self.config.keepalive_secs.max(1)
    }

    fn now_secs(&self) -> i64 {
        (self.clock)() / 1000
    }

    /// `M_INVALID_PARAM` unless the name is a valid, long enough topic.
    pub fn check_topic(&self, topic: &str) -> Result<()> {
        let ok_chars = topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok_chars || topic.len() > 64 {
            return Err(Error::invalid_param(
                "Topic names are 1 to 64 letters, digits, - and _",
            ));
        }
        if topic.len() < self.config.min_topic_length {
            return Err(Error::invalid_param(format!(
                "Topic names must have at least {} characters, so that they cannot be guessed",
                self.config.min_topic_length
            )));
        }
        Ok(())
    }

    /// Publishes a message to a topic and returns it.
    pub fn publish(&self, topic: &str, body: String) -> Result<Arc<Message>> {
        self.check_topic(topic)?;
        let msg = Arc::new(Message {
            id: random_id(),
            time: self.now_secs(),
            event: "message",
            topic: topic.to_owned(),
            message: Some(body),
        });
        let mut topics = self.topics.lock();
        let t = topics.entry(topic.to_owned()).or_insert_with(|| Topic {
            tx: broadcast::channel(CHANNEL_CAPACITY).0,
            cache: VecDeque::new(),
        });
        t.cache.push_back(msg.clone());
        while t.cache.len() > self.config.cache_per_topic.max(1) {
            t.cache.pop_front();
        }
        // No receiver is fine: the message waits in the cache for `since`.
        let _ = t.tx.send(msg.clone());
        Ok(msg)
    }

    /// Subscribes: the cached messages `since` asks for, and a receiver of new ones.
    pub fn subscribe(&self, topic: &str, since: &Since) -> Result<Subscription> {
        self.check_topic(topic)?;
        let oldest = self.now_secs() - i64::try_from(self.config.cache_secs).unwrap_or(i64::MAX);
        let mut topics = self.topics.lock();
        let t = topics.entry(topic.to_owned()).or_insert_with(|| Topic {
            tx: broadcast::channel(CHANNEL_CAPACITY).0,
            cache: VecDeque::new(),
        });
        let fresh = t.cache.iter().filter(|m| m.time >= oldest);
        let backlog: Vec<Arc<Message>> = match since {
            Since::None => vec![],
            Since::All => fresh.cloned().collect(),
            Since::Time(ts) => fresh.filter(|m| m.time >= *ts).cloned().collect(),
            Since::Id(id) => {
                let all: Vec<Arc<Message>> = fresh.cloned().collect();
                match all.iter().position(|m| &m.id == id) {
                    Some(i) => all[i + 1..].to_vec(),
                    // An unknown id (expired or never seen): everything still cached.
                    None => all,
                }
            }
        };
        Ok((backlog, t.tx.subscribe()))
    }

    /// The `open` or `keepalive` event of a subscription.
    pub fn control(&self, topic: &str, event: &'static str) -> Message {
        Message {
            id: random_id(),
            time: self.now_secs(),
            event,
            topic: topic.to_owned(),
            message: None,
        }
    }

    /// Parses `since`: `all`, `none`, a Unix time in seconds, a duration (`30s`, `10m`, `2h`,
    /// `1d`) back from now, or a message id.
    pub fn parse_since(&self, s: Option<&str>) -> Since {
        let Some(s) = s.map(str::trim).filter(|s| !s.is_empty()) else {
            return Since::None;
        };
        match s {
            "all" => return Since::All,
            "none" => return Since::None,
            _ => {}
        }
        if let Ok(ts) = s.parse::<i64>() {
            return Since::Time(ts);
        }
        // The unit is the last character, which need not be ASCII in what a client sends.
        let split = s.char_indices().last().map_or(0, |(i, _)| i);
        let (num, unit) = s.split_at(split);
        if let Ok(n) = num.parse::<i64>() {
            let secs = match unit {
                "s" => Some(n),
                "m" => n.checked_mul(60),
                "h" => n.checked_mul(3600),
                "d" => n.checked_mul(86_400),
                _ => None,
            };
            if let Some(secs) = secs {
                return Since::Time(self.now_secs().saturating_sub(secs));
            }
        }
        Since::Id(s.to_owned())
    }

    /// Drops expired messages and topics nobody listens to and that hold nothing.
    pub fn prune(&self) {
        let oldest = self.now_secs() - i64::try_from(self.config.cache_secs).unwrap_or(i64::MAX);
        self.topics.lock().retain(|_, t| {
            while t.cache.front().is_some_and(|m| m.time < oldest) {
                t.cache.pop_front();
            }
            t.tx.receiver_count() > 0 || !t.cache.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::SystemClock;

    fn dist() -> Distributor {
        Distributor::new(DistributorConfig::default(), Arc::new(SystemClock))
    }

    #[test]
    fn topics_must_be_long() {
        let d = dist();
        assert!(d.check_topic("short").is_err());
        assert!(d.check_topic("upAbcdefghijkl").is_ok());
        assert!(d.check_topic("up/../abcdefghijk").is_err());
    }

    #[tokio::test]
    async fn publish_reaches_subscribers_and_cache() {
        let d = dist();
        let topic = "upAbcdefghijkl";
        let first = d.publish(topic, "one".into()).unwrap();
        let (backlog, mut rx) = d.subscribe(topic, &Since::All).unwrap();
        assert_eq!(backlog.len(), 1);
        d.publish(topic, "two".into()).unwrap();
        assert_eq!(rx.recv().await.unwrap().message.as_deref(), Some("two"));
        let (after_first, _) = d.subscribe(topic, &Since::Id(first.id.clone())).unwrap();
        assert_eq!(after_first.len(), 1);
        assert_eq!(d.parse_since(Some("all")), Since::All);
        assert!(matches!(d.parse_since(Some("10m")), Since::Time(_)));
        assert_eq!(d.parse_since(Some("abc")), Since::Id("abc".into()));
        assert_eq!(d.parse_since(Some("1ä")), Since::Id("1ä".into()));
    }
}
