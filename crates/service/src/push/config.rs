//! The `[push]` section of the configuration: delivery to gateways, Feldpost's own gateway and
//! distributor, and the organisation's side of quiet hours.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// Whether pushers receive notifications at all (counts and /notifications work regardless).
    pub enabled: bool,
    /// Accept pusher URLs with plain `http://`. The spec asks for HTTPS; this exists for gateways
    /// on an internal network (which must also be in `[outbound] allow_ranges`).
    pub allow_http_gateways: bool,
    /// App ids whose pushers may receive more than the content-free `event_id_only` shape
    /// (event type, sender, room name, content), if they ask for it. Empty by default: every
    /// push is content-free. Rooms carry no classification yet; once they do, rooms above the
    /// lowest level will stay content-free whatever this list says.
    pub full_format_app_ids: Vec<String>,
    /// First retry delay after a gateway failed, in milliseconds; doubled after each failure.
    pub initial_backoff_ms: u64,
    /// Longest delay between two retries, in milliseconds.
    pub max_backoff_ms: u64,
    /// A notification that could not be delivered for this long is dropped, in milliseconds.
    pub give_up_after_ms: u64,
    /// Timeout of one request to a gateway or provider, in milliseconds.
    pub request_timeout_ms: u64,
    pub gateway: GatewayConfig,
    pub distributor: DistributorConfig,
    pub quiet_hours: QuietHoursConfig,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            allow_http_gateways: false,
            full_format_app_ids: vec![],
            initial_backoff_ms: 1_000,
            max_backoff_ms: 600_000,
            give_up_after_ms: 86_400_000,
            request_timeout_ms: 10_000,
            gateway: GatewayConfig::default(),
            distributor: DistributorConfig::default(),
            quiet_hours: QuietHoursConfig::default(),
        }
    }
}

/// Feldpost's own push gateway at `/_matrix/push/v1/notify`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    pub enabled: bool,
    /// External UnifiedPush endpoints (pushkeys) the gateway forwards to: a pushkey must start
    /// with one of these prefixes. Endpoints of the built-in distributor need no entry.
    pub unifiedpush_allowed_prefixes: Vec<String>,
    pub fcm: Option<FcmConfig>,
    pub apns: Option<ApnsConfig>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            unifiedpush_allowed_prefixes: vec![],
            fcm: None,
            apns: None,
        }
    }
}

/// Firebase Cloud Messaging, HTTP v1 API, data-only messages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmConfig {
    /// Pushers with these app ids are delivered through FCM; the pushkey is the FCM token.
    pub app_ids: Vec<String>,
    /// The service account key file (JSON with `client_email`, `private_key`, `project_id`).
    pub service_account_file: PathBuf,
    /// Overrides the key file's `project_id`.
    #[serde(default)]
    pub project_id: Option<String>,
    /// The send endpoint; `{project_id}` is replaced.
    #[serde(default = "default_fcm_endpoint")]
    pub endpoint: String,
    /// Overrides the key file's `token_uri` (the OAuth 2.0 token endpoint).
    #[serde(default)]
    pub token_uri: Option<String>,
}

/// The documented OAuth 2.0 token endpoint, used when neither the key file nor the config names
/// one.
pub const DEFAULT_FCM_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

fn default_fcm_endpoint() -> String {
    "https://fcm.googleapis.com/v1/projects/{project_id}/messages:send".into()
}

/// Apple Push Notification service over HTTP/2 with token (JWT) authentication.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsConfig {
    /// Pushers with these app ids are delivered through APNs; the pushkey is the device token
    /// (hex, or base64 as some apps register it).
    pub app_ids: Vec<String>,
    pub team_id: String,
    pub key_id: String,
    /// The `.p8` signing key (PKCS#8 PEM).
    pub key_file: PathBuf,
    /// The app's bundle id (`apns-topic`).
    pub topic: String,
    #[serde(default = "default_apns_endpoint")]
    pub endpoint: String,
    /// The alert text shown until the app's notification service extension replaced it with
    /// the decrypted message.
    #[serde(default = "default_alert")]
    pub alert_body: String,
}

fn default_apns_endpoint() -> String {
    "https://api.push.apple.com".into()
}

fn default_alert() -> String {
    "New message".into()
}

/// The built-in push distributor (ntfy-compatible subset) under `/_feldpost/ntfy/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistributorConfig {
    pub enabled: bool,
    /// Shortest topic name accepted; topics are the only secret of a subscription.
    pub min_topic_length: usize,
    /// Seconds between keepalive messages on open subscriptions.
    pub keepalive_secs: u64,
    /// How long messages are kept for subscribers catching up with `since`, in seconds.
    pub cache_secs: u64,
    /// At most this many messages are kept per topic.
    pub cache_per_topic: usize,
}

impl Default for DistributorConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_topic_length: 12,
            keepalive_secs: 45,
            cache_secs: 12 * 3600,
            cache_per_topic: 100,
        }
    }
}

/// The organisation's side of quiet hours: urgent senders and the holiday calendar.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuietHoursConfig {
    /// Room mentions (`@room`) by senders with at least this power level are pushed during
    /// quiet hours.
    pub urgent_power_level: i64,
    /// Senders whose notifications are always pushed.
    pub urgent_senders: Vec<String>,
    /// Rooms whose notifications are always pushed.
    pub urgent_rooms: Vec<String>,
    /// The holiday region of users who set none (e.g. `DE-BY`).
    pub default_region: Option<String>,
    /// Additional organisation holidays (closing days), on top of the built-in public holidays.
    pub holidays: Vec<OrgHoliday>,
    /// The service account that answers quiet-hour commands (localpart).
    pub bot_localpart: String,
}

impl Default for QuietHoursConfig {
    fn default() -> Self {
        Self {
            urgent_power_level: 50,
            urgent_senders: vec![],
            urgent_rooms: vec![],
            default_region: None,
            holidays: vec![],
            bot_localpart: "ruhezeit".into(),
        }
    }
}

/// One organisation holiday: a date, a name, and the regions it applies to (all when empty).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgHoliday {
    /// `YYYY-MM-DD`, or `MM-DD` for every year.
    pub date: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub regions: Vec<String>,
}
