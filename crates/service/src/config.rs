//! The server's configuration, read from TOML by the binary. Every field has a default so that an
//! empty file (or none) yields a working single-node server on `localhost`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server_name: String,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// The client-facing base URL advertised in `/.well-known/matrix/client`.
    pub public_baseurl: Option<String>,
    pub registration: RegistrationConfig,
    pub limits: LimitsConfig,
    pub rate_limits: RateLimitsConfig,
    pub media: MediaConfig,
    pub log: LogConfig,
    pub outbound: OutboundConfig,
    pub rooms: RoomsConfig,
    /// Push: delivery, the built-in gateway and distributor, quiet hours (`crate::push::config`).
    pub push: crate::push::config::PushConfig,
    pub admin: AdminConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "localhost".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8008)),
            data_dir: PathBuf::from("feldpost-data"),
            public_baseurl: None,
            registration: RegistrationConfig::default(),
            limits: LimitsConfig::default(),
            rate_limits: RateLimitsConfig::default(),
            media: MediaConfig::default(),
            log: LogConfig::default(),
            outbound: OutboundConfig::default(),
            rooms: RoomsConfig::default(),
            push: crate::push::config::PushConfig::default(),
            admin: AdminConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationConfig {
    /// Registration without a token. Off by default.
    pub open: bool,
    /// Argon2 memory cost in KiB; lower it only for load tests.
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub min_password_length: usize,
    /// Secret for shared-secret registration through the admin API (`/_synapse/admin/v1/register`);
    /// that registration is off while it is unset.
    pub shared_secret: Option<String>,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            open: false,
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            min_password_length: 8,
            shared_secret: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest JSON request body, in bytes.
    pub max_json_body: usize,
    /// Largest timeline limit a sync or /messages may ask for.
    pub max_timeline_limit: u32,
    /// Longest long-poll a sync may hold, in milliseconds.
    pub max_sync_timeout_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_json_body: 1 << 20,
            max_timeline_limit: 1000,
            max_sync_timeout_ms: 120_000,
        }
    }
}

/// One bucket: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitsConfig {
    pub enabled: bool,
    pub login: Rate,
    pub registration: Rate,
    pub message: Rate,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            login: Rate {
                per_second: 0.2,
                burst: 5.0,
            },
            registration: Rate {
                per_second: 0.1,
                burst: 3.0,
            },
            message: Rate {
                per_second: 10.0,
                burst: 50.0,
            },
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    pub max_upload_size: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            max_upload_size: 50 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info,feldpost=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundConfig {
    /// Private or loopback ranges that outbound requests may reach anyway.
    pub allow_ranges: Vec<IpNet>,
}

impl OutboundConfig {
    /// Whether an outbound request may go to `ip`: public addresses always, private, loopback,
    /// link-local and similar only when listed in `allow_ranges`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        if self.allow_ranges.iter().any(|n| n.contains(&ip)) {
            return true;
        }
        !is_internal(ip)
    }
}

fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64 // 100.64/10 shared space
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // link local
        }
    }
}

/// The admin API, the admin console and the accounts the server itself uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// A separate listener for the admin API and console (e.g. on an internal interface); the
    /// main listener then no longer serves them. Default: both on the main listener.
    pub listen: Option<SocketAddr>,
    /// How long an enrollment stays usable unless its creator says otherwise.
    pub enrollment_lifetime_minutes: u64,
    /// Localpart of the account that sends server notices.
    pub notices_localpart: String,
    /// Display name of that account.
    pub notices_displayname: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: None,
            enrollment_lifetime_minutes: 15,
            notices_localpart: "feldpost-notices".into(),
            notices_displayname: "Feldpost".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomsConfig {
    pub default_room_version: String,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self {
            default_room_version: "11".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_refuses_internal_unless_allowed() {
        let mut o = OutboundConfig::default();
        assert!(!o.allows("127.0.0.1".parse().unwrap()));
        assert!(!o.allows("10.1.2.3".parse().unwrap()));
        assert!(!o.allows("::1".parse().unwrap()));
        assert!(!o.allows("::ffff:192.168.1.1".parse().unwrap()));
        assert!(o.allows("93.184.216.34".parse().unwrap()));
        o.allow_ranges.push("127.0.0.0/8".parse().unwrap());
        assert!(o.allows("127.0.0.5".parse().unwrap()));
        assert!(!o.allows("10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn empty_toml_is_the_default() {
        let c: Config = toml_like_default();
        assert_eq!(c.server_name, "localhost");
        assert!(!c.registration.open);
        assert!(c.rate_limits.enabled);
    }

    fn toml_like_default() -> Config {
        serde_json::from_str("{}").unwrap()
    }
}
