//! The few Client-Server API calls the load generator makes. Only the standard API, so it runs
//! against any homeserver.

use std::fmt::Write as _;

use anyhow::{Context, Result, anyhow, bail};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

/// How accounts are created.
#[derive(Debug, Clone)]
pub enum Registration {
    /// Open registration with the dummy auth stage.
    Open,
    /// Registration with a registration token.
    Token(String),
    /// Shared-secret registration through the admin API that many homeservers offer.
    SharedSecret(String),
}

impl std::str::FromStr for Registration {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.split_once(':') {
            None if s == "open" => Ok(Self::Open),
            Some(("token", t)) => Ok(Self::Token(t.to_owned())),
            Some(("shared-secret", t)) => Ok(Self::SharedSecret(t.to_owned())),
            _ => bail!("registration must be open, token:<TOKEN> or shared-secret:<SECRET>"),
        }
    }
}

/// Percent-encodes one path segment.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    enc_into(&mut out, s);
    out
}

/// Appends `s` percent-encoded as one path segment or query value (RFC 3986 unreserved
/// characters stay as they are).
pub fn enc_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => {
                out.push('%');
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 15)] as char);
            }
        }
    }
}

async fn json_of(resp: reqwest::Response) -> Result<(u16, Value)> {
    let status = resp.status().as_u16();
    let body = resp.bytes().await.context("reading response")?;
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

fn ok(status: u16, body: &Value, what: &str) -> Result<()> {
    if status == 200 {
        Ok(())
    } else {
        Err(anyhow!(
            "{what}: HTTP {status} {}",
            body.get("errcode").and_then(Value::as_str).unwrap_or("")
        ))
    }
}

/// Registers `name` and returns (user_id, access_token, device_id).
pub async fn register(
    http: &reqwest::Client,
    base: &str,
    mode: &Registration,
    name: &str,
    password: &str,
) -> Result<(String, String, String)> {
    let body = match mode {
        Registration::SharedSecret(secret) => {
            let url = format!("{base}/_synapse/admin/v1/register");
            let (s, nonce) = json_of(http.get(&url).send().await?).await?;
            ok(s, &nonce, "nonce")?;
            let nonce = nonce["nonce"]
                .as_str()
                .ok_or_else(|| anyhow!("no nonce"))?
                .to_owned();
            let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes())
                .map_err(|e| anyhow!("{e}"))?;
            mac.update(format!("{nonce}\0{name}\0{password}\0notadmin").as_bytes());
            let mac = hex::encode(mac.finalize().into_bytes());
            let req = json!({"nonce": nonce, "username": name, "password": password, "admin": false, "mac": mac});
            let (s, b) = json_of(http.post(&url).json(&req).send().await?).await?;
            ok(s, &b, "shared-secret registration")?;
            b
        }
        Registration::Open | Registration::Token(_) => {
            let url = format!("{base}/_matrix/client/v3/register");
            let first = json!({"username": name, "password": password, "initial_device_display_name": "feldpost-bench"});
            let (s, b) = json_of(http.post(&url).json(&first).send().await?).await?;
            if s == 200 {
                b
            } else if s == 401 {
                let session = b["session"].as_str().unwrap_or_default().to_owned();
                let auth = match mode {
                    Registration::Token(t) => {
                        json!({"type": "m.login.registration_token", "token": t, "session": session})
                    }
                    _ => json!({"type": "m.login.dummy", "session": session}),
                };
                let mut req = first.clone();
                req["auth"] = auth;
                let (s, mut b) = json_of(http.post(&url).json(&req).send().await?).await?;
                if s == 401 && matches!(mode, Registration::Token(_)) {
                    // Token flows usually end with a dummy stage.
                    req["auth"] = json!({"type": "m.login.dummy", "session": session});
                    let r = json_of(http.post(&url).json(&req).send().await?).await?;
                    ok(r.0, &r.1, "registration")?;
                    b = r.1;
                } else {
                    ok(s, &b, "registration")?;
                }
                b
            } else {
                ok(s, &b, "registration")?;
                b
            }
        }
    };
    let get = |k: &str| {
        body[k]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("registration response lacks {k}"))
    };
    Ok((get("user_id")?, get("access_token")?, get("device_id")?))
}

pub async fn create_room(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    name: &str,
) -> Result<String> {
    let req = json!({"preset": "public_chat", "name": name});
    post_for_field(
        http,
        format!("{base}/_matrix/client/v3/createRoom"),
        token,
        &req,
        "createRoom",
        "room_id",
    )
    .await
}

/// POSTs `body` with the access token and returns the string `field` of a successful answer.
async fn post_for_field(
    http: &reqwest::Client,
    url: String,
    token: &str,
    body: &Value,
    what: &str,
    field: &str,
) -> Result<String> {
    let (s, b) = json_of(http.post(url).bearer_auth(token).json(body).send().await?).await?;
    ok(s, &b, what)?;
    b[field]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("{what}: no {field}"))
}

pub async fn join(http: &reqwest::Client, base: &str, token: &str, room: &str) -> Result<()> {
    let (s, b) = json_of(
        http.post(format!("{base}/_matrix/client/v3/join/{}", enc(room)))
            .bearer_auth(token)
            .json(&json!({}))
            .send()
            .await?,
    )
    .await?;
    ok(s, &b, "join")
}

/// Sends a text message carrying a bench id; returns the HTTP status (errors are counted by kind).
/// A send is idempotent by its transaction id, so one lost with a kept-alive connection that the
/// server closed at that moment is sent once more, as clients do.
pub async fn send(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    room: &str,
    txn: &str,
    id: u64,
) -> Result<u16> {
    let content =
        json!({"msgtype": "m.text", "body": format!("bench {id}"), "org.feldpost.bench": id});
    let url = format!(
        "{base}/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
        enc(room)
    );
    let attempt = || http.put(&url).bearer_auth(token).json(&content).send();
    let resp = match attempt().await {
        Ok(r) => r,
        Err(e) if !e.is_timeout() => attempt().await?,
        Err(e) => return Err(e.into()),
    };
    let status = resp.status().as_u16();
    let _ = resp.bytes().await?;
    Ok(status)
}

/// Sync filters that keep responses small (no presence, account data or ephemeral events,
/// lazy-loaded members). The initial sync takes one event per room; later syncs take up to a
/// hundred, so that no delivery is hidden behind a `limited` timeline.
pub const INITIAL_FILTER: &str = r#"{"presence":{"types":[]},"account_data":{"types":[]},"room":{"timeline":{"limit":1},"state":{"lazy_load_members":true},"account_data":{"types":[]},"ephemeral":{"types":[]}}}"#;
pub const LIVE_FILTER: &str = r#"{"presence":{"types":[]},"account_data":{"types":[]},"room":{"timeline":{"limit":100},"state":{"lazy_load_members":true},"account_data":{"types":[]},"ephemeral":{"types":[]}}}"#;

/// The parts of a sync response the load generator reads. Parsed into these types, not into a
/// generic JSON tree, so that the generator's own cost per delivery stays small: everything
/// else is skipped without being allocated.
#[derive(serde::Deserialize, Default)]
struct SyncBody {
    next_batch: Option<String>,
    #[serde(default)]
    rooms: SyncRooms,
}

#[derive(serde::Deserialize, Default)]
struct SyncRooms {
    #[serde(default)]
    join: std::collections::HashMap<String, JoinedRoom>,
}

#[derive(serde::Deserialize, Default)]
struct JoinedRoom {
    #[serde(default)]
    timeline: Timeline,
}

#[derive(serde::Deserialize, Default)]
struct Timeline {
    #[serde(default)]
    events: Vec<TimelineEvent>,
}

#[derive(serde::Deserialize)]
struct TimelineEvent {
    #[serde(default)]
    content: BenchContent,
}

#[derive(serde::Deserialize, Default)]
struct BenchContent {
    /// The message's bench id, when it is one of ours.
    #[serde(rename = "org.feldpost.bench", default)]
    bench_id: Option<u64>,
}

/// Uploads a filter for the user, as real clients do before they long-poll; returns its id.
pub async fn create_filter(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    user_id: &str,
    filter: &str,
) -> Result<String> {
    let body: Value = serde_json::from_str(filter).context("filter JSON")?;
    post_for_field(
        http,
        format!("{base}/_matrix/client/v3/user/{}/filter", enc(user_id)),
        token,
        &body,
        "filter",
        "filter_id",
    )
    .await
}

/// How a sync client reaches the server: the general client (HTTP/1.1, one connection each), or
/// a shared HTTP/2 connection (`h2`).
#[derive(Clone)]
pub enum Transport {
    Http(reqwest::Client),
    H2(std::sync::Arc<crate::h2::Connection>),
}

/// An access token, and the `Authorization` header that carries it, built once per client.
pub struct AccessToken {
    pub text: String,
    bearer: http::HeaderValue,
}

impl AccessToken {
    pub fn new(text: &str) -> Result<Self> {
        let bearer = http::HeaderValue::try_from(format!("Bearer {text}"))
            .context("access token is not a valid header value")?;
        Ok(Self {
            text: text.to_owned(),
            bearer,
        })
    }
}

/// Runs one sync with `filter` (a stored filter's id, or inline JSON, which is encoded here);
/// returns the status, the next_batch token and the bench ids seen. No answer within
/// `timeout_ms` plus `grace` is an error (`is_timeout`).
pub async fn sync(
    http: &Transport,
    base: &str,
    token: &AccessToken,
    filter: &str,
    since: Option<&str>,
    timeout_ms: u64,
    grace: std::time::Duration,
) -> Result<(u16, Option<String>, Vec<u64>, usize)> {
    let mut path = String::with_capacity(96 + filter.len() + since.map_or(0, str::len));
    // Writing into a String cannot fail.
    let _ = write!(path, "/_matrix/client/v3/sync?timeout={timeout_ms}&filter=");
    enc_into(&mut path, filter);
    if let Some(s) = since {
        path.push_str("&since=");
        enc_into(&mut path, s);
    }
    let (status, bytes) = match http {
        Transport::Http(http) => {
            let resp = http
                .get(format!("{base}{path}"))
                .bearer_auth(&token.text)
                .timeout(std::time::Duration::from_millis(timeout_ms) + grace)
                .send()
                .await?;
            let status = resp.status().as_u16();
            (status, resp.bytes().await?)
        }
        Transport::H2(conn) => {
            conn.get(
                path,
                &token.bearer,
                std::time::Duration::from_millis(timeout_ms) + grace,
            )
            .await?
        }
    };
    if status != 200 {
        return Ok((status, None, vec![], bytes.len()));
    }
    let v: SyncBody = serde_json::from_slice(&bytes).context("sync body")?;
    let ids = v
        .rooms
        .join
        .into_values()
        .flat_map(|room| room.timeline.events)
        .filter_map(|e| e.content.bench_id)
        .collect();
    Ok((status, v.next_batch, ids, bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enc_keeps_unreserved_and_escapes_the_rest() {
        assert_eq!(enc("aZ09-_.~"), "aZ09-_.~");
        assert_eq!(enc("!room:example.org"), "%21room%3Aexample.org");
        assert_eq!(enc("{\"a\": 1}"), "%7B%22a%22%3A%201%7D");
        assert_eq!(enc("ä"), "%C3%A4");
    }
}
