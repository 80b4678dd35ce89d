//! Platform push providers behind Feldpost's gateway: Firebase Cloud Messaging (HTTP v1 API,
//! data-only messages, OAuth 2.0 service-account tokens) and the Apple Push Notification service
//! (HTTP/2, token-based authentication with an ES256 JWT, mutable-content wake-ups). Both only
//! ever carry a wake-up: event id, room id, unread count; the app fetches and decrypts the event.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use parking_lot::Mutex;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use serde_json::{Value, json};

use super::config::{ApnsConfig, FcmConfig};
use super::outbound::Outbound;
use crate::{Error, Result};

/// What a provider said about one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// The token is invalid or expired: the pusher must go.
    Rejected,
}

/// The DER bytes of the first PEM block (PKCS#8 private key) in `pem`.
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    STANDARD
        .decode(body)
        .map_err(|e| Error::internal(format!("unreadable PEM key: {e}")))
}

fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A signed JWT: `header.claims.signature`, with `sign` producing the signature bytes.
fn jwt(
    header: &Value,
    claims: &Value,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>>,
) -> Result<String> {
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let sig = sign(input.as_bytes())?;
    Ok(format!("{input}.{}", b64url(&sig)))
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Firebase Cloud Messaging, HTTP v1.
pub struct Fcm {
    pub app_ids: Vec<String>,
    client_email: String,
    key: RsaKeyPair,
    key_id: Option<String>,
    token_uri: String,
    send_url: String,
    /// The OAuth access token and when it expires (seconds).
    token: Mutex<Option<(String, i64)>>,
}

/// The OAuth 2.0 scope that FCM's HTTP v1 API documents for sending messages.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

impl Fcm {
    /// Reads the service account key file.
    pub fn load(cfg: &FcmConfig) -> Result<Self> {
        let text = std::fs::read_to_string(&cfg.service_account_file).map_err(|e| {
            Error::internal(format!(
                "reading FCM service account file {}: {e}",
                cfg.service_account_file.display()
            ))
        })?;
        let sa: Value = serde_json::from_str(&text)
            .map_err(|e| Error::internal(format!("FCM service account file: {e}")))?;
        let field = |k: &str| sa.get(k).and_then(Value::as_str).map(str::to_owned);
        let client_email = field("client_email")
            .ok_or_else(|| Error::internal("FCM service account file lacks client_email"))?;
        let pem = field("private_key")
            .ok_or_else(|| Error::internal("FCM service account file lacks private_key"))?;
        let key = RsaKeyPair::from_pkcs8(&pem_to_der(&pem)?)
            .map_err(|e| Error::internal(format!("FCM private key: {e}")))?;
        let project = cfg
            .project_id
            .clone()
            .or_else(|| field("project_id"))
            .ok_or_else(|| Error::internal("FCM project_id unknown"))?;
        Ok(Self {
            app_ids: cfg.app_ids.clone(),
            client_email,
            key,
            key_id: field("private_key_id"),
            token_uri: cfg
                .token_uri
                .clone()
                .or_else(|| field("token_uri"))
                .unwrap_or_else(|| super::config::DEFAULT_FCM_TOKEN_URI.into()),
            send_url: cfg.endpoint.replace("{project_id}", &project),
            token: Mutex::new(None),
        })
    }

    fn assertion(&self) -> Result<String> {
        let now = now_secs();
        let mut header = json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.key_id {
            header["kid"] = json!(kid);
        }
        let claims = json!({
            "iss": self.client_email,
            "scope": FCM_SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + 3600,
        });
        jwt(&header, &claims, |input| {
            let mut sig = vec![0u8; self.key.public().modulus_len()];
            self.key
                .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), input, &mut sig)
                .map_err(|_| Error::internal("RS256 signing failed"))?;
            Ok(sig)
        })
    }

    async fn access_token(&self, http: &Outbound) -> Result<String> {
        if let Some((t, exp)) = self.token.lock().clone()
            && exp > now_secs() + 60
        {
            return Ok(t);
        }
        let url = http.check_url(&self.token_uri)?;
        let assertion = self.assertion()?;
        let resp = http
            .client
            .post(url)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| Error::internal(format!("FCM token request failed: {e}")))?;
        if !resp.status().is_success() {
            return Err(Error::internal(format!(
                "FCM token request answered {}",
                resp.status()
            )));
        }
        let body: Value = resp
            .json()
            .await
            .map_err(|e| Error::internal(format!("FCM token response: {e}")))?;
        let token = body
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::internal("FCM token response without access_token"))?
            .to_owned();
        let expires = body
            .get("expires_in")
            .and_then(Value::as_i64)
            .unwrap_or(3600);
        *self.token.lock() = Some((token.clone(), now_secs() + expires));
        Ok(token)
    }

    /// Sends a data-only message to one registration token.
    pub async fn send(
        &self,
        http: &Outbound,
        token: &str,
        data: &BTreeMap<String, String>,
        high_priority: bool,
    ) -> Result<Outcome> {
        let access = self.access_token(http).await?;
        let url = http.check_url(&self.send_url)?;
        let body = json!({
            "message": {
                "token": token,
                "data": data,
                "android": {"priority": if high_priority { "HIGH" } else { "NORMAL" }},
                "apns": {"headers": {"apns-priority": if high_priority { "10" } else { "5" }}},
            }
        });
        let resp = http
            .client
            .post(url)
            .bearer_auth(access)
            .json(&body)
            .send()
            .await
            .map_err(|e| Error::internal(format!("FCM send failed: {e}")))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(Outcome::Delivered);
        }
        let err: Value = resp.json().await.unwrap_or(Value::Null);
        let codes: Vec<&str> = err
            .pointer("/error/details")
            .and_then(Value::as_array)
            .map(|d| {
                d.iter()
                    .filter_map(|x| x.get("errorCode").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default();
        if status.as_u16() == 404
            || codes
                .iter()
                .any(|c| matches!(*c, "UNREGISTERED" | "SENDER_ID_MISMATCH"))
        {
            return Ok(Outcome::Rejected);
        }
        if status.as_u16() == 401 {
            *self.token.lock() = None;
        }
        Err(Error::internal(format!("FCM answered {status}")))
    }
}

/// Apple Push Notification service.
pub struct Apns {
    pub app_ids: Vec<String>,
    team_id: String,
    key_id: String,
    key: EcdsaKeyPair,
    topic: String,
    endpoint: String,
    alert_body: String,
    /// The provider token and when it was made (seconds); Apple wants it renewed within an hour
    /// and not more often than every 20 minutes.
    token: Mutex<Option<(String, i64)>>,
}

const APNS_TOKEN_REUSE: Duration = Duration::from_secs(40 * 60);

impl Apns {
    pub fn load(cfg: &ApnsConfig) -> Result<Self> {
        let pem = std::fs::read_to_string(&cfg.key_file).map_err(|e| {
            Error::internal(format!(
                "reading APNs key file {}: {e}",
                cfg.key_file.display()
            ))
        })?;
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &pem_to_der(&pem)?,
            &SystemRandom::new(),
        )
        .map_err(|e| Error::internal(format!("APNs key: {e}")))?;
        Ok(Self {
            app_ids: cfg.app_ids.clone(),
            team_id: cfg.team_id.clone(),
            key_id: cfg.key_id.clone(),
            key,
            topic: cfg.topic.clone(),
            endpoint: cfg.endpoint.trim_end_matches('/').to_owned(),
            alert_body: cfg.alert_body.clone(),
            token: Mutex::new(None),
        })
    }

    fn provider_token(&self) -> Result<String> {
        let now = now_secs();
        if let Some((t, made)) = self.token.lock().clone()
            && now - made < APNS_TOKEN_REUSE.as_secs() as i64
        {
            return Ok(t);
        }
        let token = jwt(
            &json!({"alg": "ES256", "kid": self.key_id}),
            &json!({"iss": self.team_id, "iat": now}),
            |input| {
                self.key
                    .sign(&SystemRandom::new(), input)
                    .map(|s| s.as_ref().to_vec())
                    .map_err(|_| Error::internal("ES256 signing failed"))
            },
        )?;
        *self.token.lock() = Some((token.clone(), now));
        Ok(token)
    }

    /// The device token in hex: apps register it as hex or as base64 of the raw bytes.
    pub fn device_token(pushkey: &str) -> Option<String> {
        if !pushkey.is_empty() && pushkey.chars().all(|c| c.is_ascii_hexdigit()) {
            return Some(pushkey.to_ascii_lowercase());
        }
        STANDARD
            .decode(pushkey)
            .ok()
            .filter(|b| !b.is_empty())
            .map(hex::encode)
    }

    /// Sends a mutable-content alert that the app's notification service extension replaces
    /// with the decrypted message.
    pub async fn send(
        &self,
        http: &Outbound,
        pushkey: &str,
        custom: &BTreeMap<String, Value>,
        unread: Option<u64>,
        high_priority: bool,
    ) -> Result<Outcome> {
        let Some(device) = Self::device_token(pushkey) else {
            return Ok(Outcome::Rejected);
        };
        let url = http.check_url(&format!("{}/3/device/{device}", self.endpoint))?;
        let mut aps = json!({
            "alert": {"body": self.alert_body},
            "mutable-content": 1,
        });
        if let Some(n) = unread {
            aps["badge"] = json!(n);
        }
        let mut body = serde_json::Map::new();
        body.insert("aps".into(), aps);
        for (k, v) in custom {
            body.insert(k.clone(), v.clone());
        }
        let resp = http
            .h2_client
            .post(url)
            .header(
                "authorization",
                format!("bearer {}", self.provider_token()?),
            )
            .header("apns-topic", &self.topic)
            .header("apns-push-type", "alert")
            .header("apns-priority", if high_priority { "10" } else { "5" })
            .json(&Value::Object(body))
            .send()
            .await
            .map_err(|e| Error::internal(format!("APNs send failed: {e}")))?;
        let status = resp.status().as_u16();
        if status == 200 {
            return Ok(Outcome::Delivered);
        }
        let reason = resp
            .json::<Value>()
            .await
            .ok()
            .and_then(|v| v.get("reason").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_default();
        if status == 410
            || matches!(
                reason.as_str(),
                "BadDeviceToken" | "DeviceTokenNotForTopic" | "Unregistered"
            )
        {
            return Ok(Outcome::Rejected);
        }
        if reason == "ExpiredProviderToken" {
            *self.token.lock() = None;
        }
        Err(Error::internal(format!("APNs answered {status} {reason}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apns_tokens_hex_or_base64() {
        assert_eq!(Apns::device_token("ABCDEF01").as_deref(), Some("abcdef01"));
        assert_eq!(Apns::device_token("q83vAQ==").as_deref(), Some("abcdef01"));
        assert_eq!(Apns::device_token(""), None);
        assert_eq!(Apns::device_token("not base64!"), None);
    }
}
