//! Pushers: `GET /pushers` and `POST /pushers/set` with the spec's validation. Only `http`
//! pushers exist here; `email` is not implemented and answered with `M_UNRECOGNIZED`.

use std::sync::Arc;

use feldpost_storage::{PusherRecord, Store};
use ruma::UserId;
use serde_json::{Value, json};

use super::delivery::Delivery;
use super::gateway::NOTIFY_PATH;
use crate::rooms::append::now_ms;
use crate::{Error, ErrorKind, Result};

const MAX_APP_ID_CHARS: usize = 64;
const MAX_PUSHKEY_BYTES: usize = 512;

pub struct Pushers {
    store: Arc<dyn Store>,
    delivery: Arc<Delivery>,
    allow_http: bool,
}

fn required_str<'a>(body: &'a Value, key: &str) -> Result<&'a str> {
    match body.get(key) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(Error::missing_param(format!("{key} is required"))),
        Some(_) => Err(Error::bad_json(format!("{key} must be a string"))),
    }
}

/// Checks a gateway URL: http(s), and the path of the Push Gateway API's notify endpoint.
pub fn check_gateway_url(url: &str, allow_http: bool) -> Result<()> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|_| Error::invalid_param("data.url must be an absolute URL"))?;
    match parsed.scheme() {
        "https" => {}
        "http" if allow_http => {}
        _ => return Err(Error::invalid_param("data.url must be an HTTPS URL")),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(Error::invalid_param("data.url must name a host"));
    }
    if !parsed.path().ends_with(NOTIFY_PATH) {
        return Err(Error::invalid_param(format!(
            "data.url must end in {NOTIFY_PATH}"
        )));
    }
    Ok(())
}

impl Pushers {
    pub fn new(store: Arc<dyn Store>, delivery: Arc<Delivery>, allow_http: bool) -> Self {
        Self {
            store,
            delivery,
            allow_http,
        }
    }

    /// `GET /pushers`.
    pub async fn list(&self, user: &UserId) -> Result<Value> {
        let pushers: Vec<Value> = self
            .store
            .pushers_for_user(user.as_str())
            .await?
            .into_iter()
            .map(|p| {
                let data: Value = serde_json::from_str(&p.data).unwrap_or(json!({}));
                let mut v = json!({
                    "pushkey": p.pushkey,
                    "kind": p.kind,
                    "app_id": p.app_id,
                    "app_display_name": p.app_display_name,
                    "device_display_name": p.device_display_name,
                    "lang": p.lang,
                    "data": data,
                });
                if let Some(tag) = p.profile_tag {
                    v["profile_tag"] = json!(tag);
                }
                v
            })
            .collect();
        Ok(json!({ "pushers": pushers }))
    }

    /// `POST /pushers/set`.
    pub async fn set(&self, user: &UserId, device_id: Option<&str>, body: &Value) -> Result<()> {
        let app_id = required_str(body, "app_id")?;
        let pushkey = required_str(body, "pushkey")?;
        if app_id.is_empty() || app_id.chars().count() > MAX_APP_ID_CHARS {
            return Err(Error::invalid_param("app_id must be 1 to 64 characters"));
        }
        if pushkey.is_empty() || pushkey.len() > MAX_PUSHKEY_BYTES {
            return Err(Error::invalid_param("pushkey must be 1 to 512 bytes"));
        }
        let kind = match body.get("kind") {
            None => return Err(Error::missing_param("kind is required")),
            Some(Value::Null) => {
                if self
                    .store
                    .delete_pusher(user.as_str(), app_id, pushkey)
                    .await?
                {
                    self.delivery.stop(user.as_str(), app_id, pushkey);
                }
                return Ok(());
            }
            Some(Value::String(k)) => k.as_str(),
            Some(_) => return Err(Error::bad_json("kind must be a string or null")),
        };
        match kind {
            "http" => {}
            "email" => {
                return Err(Error::new(
                    ErrorKind::Unrecognized,
                    "Email pushers are not supported by this server",
                ));
            }
            other => {
                return Err(Error::invalid_param(format!(
                    "Unknown pusher kind {other:?}"
                )));
            }
        }
        let mut missing = vec![];
        for key in ["app_display_name", "device_display_name", "lang", "data"] {
            if body.get(key).is_none_or(Value::is_null) {
                missing.push(key);
            }
        }
        if !missing.is_empty() {
            return Err(Error::missing_param(format!(
                "Missing parameters: {}",
                missing.join(", ")
            )));
        }
        let app_display_name = required_str(body, "app_display_name")?;
        let device_display_name = required_str(body, "device_display_name")?;
        let lang = required_str(body, "lang")?;
        let data = body
            .get("data")
            .filter(|d| d.is_object())
            .ok_or_else(|| Error::bad_json("data must be an object"))?;
        let url = match data.get("url") {
            Some(Value::String(u)) => u,
            None | Some(Value::Null) => {
                return Err(Error::missing_param(
                    "data.url is required for http pushers",
                ));
            }
            Some(_) => return Err(Error::bad_json("data.url must be a string")),
        };
        check_gateway_url(url, self.allow_http)?;
        if let Some(f) = data.get("format")
            && !f.is_string()
        {
            return Err(Error::bad_json("data.format must be a string"));
        }
        let profile_tag = match body.get("profile_tag") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(Error::bad_json("profile_tag must be a string")),
        };
        let append = match body.get("append") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(Error::bad_json("append must be a boolean")),
        };
        let record = PusherRecord {
            user_id: user.to_string(),
            app_id: app_id.to_owned(),
            pushkey: pushkey.to_owned(),
            kind: kind.to_owned(),
            app_display_name: app_display_name.to_owned(),
            device_display_name: device_display_name.to_owned(),
            profile_tag,
            lang: lang.to_owned(),
            data: data.to_string(),
            device_id: device_id.map(str::to_owned),
            pushkey_ts: now_ms(),
            pushed_through: 0,
        };
        self.store.set_pusher(record, append).await?;
        if !append {
            // Other users' pushers of the same app id and pushkey are gone.
            self.delivery.stop_others(app_id, pushkey, user.as_str());
        }
        if let Some(stored) = self
            .store
            .pushers_for_user(user.as_str())
            .await?
            .into_iter()
            .find(|p| p.app_id == app_id && p.pushkey == pushkey)
        {
            self.delivery.restart(stored);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_urls() {
        assert!(check_gateway_url("https://gw.example/_matrix/push/v1/notify", false).is_ok());
        assert!(check_gateway_url("http://gw.example/_matrix/push/v1/notify", false).is_err());
        assert!(check_gateway_url("http://gw.example/_matrix/push/v1/notify", true).is_ok());
        assert!(check_gateway_url("https://gw.example/notify", false).is_err());
        assert!(check_gateway_url("not a url", true).is_err());
    }
}
