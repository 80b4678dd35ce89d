//! Request extractors that fail with Matrix errors: the authenticated requester, JSON bodies
//! (`M_NOT_JSON` / `M_BAD_JSON` / `M_MISSING_PARAM`), query strings and path segments.

use std::borrow::Cow;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use bytes::Bytes;
use feldpost_service::ErrorKind;
use feldpost_service::accounts::Requester;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::ApiError;

/// The access token of a request: the `Authorization: Bearer` header, or (deprecated but still in
/// the spec) the `access_token` query parameter.
pub fn access_token(parts: &Parts) -> Option<String> {
    if let Some(h) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let v = h.to_str().ok()?;
        let token = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))?;
        return Some(token.trim().to_owned());
    }
    let q = parts.uri.query()?;
    form_urlencoded_pairs(q)
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.into_owned())
}

/// The pairs of a query string, decoded; a pair that is not UTF-8 once decoded is skipped. Both
/// halves borrow from the query unless they hold escapes (every `/sync` is parsed here).
fn form_urlencoded_pairs(q: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    fn decode(s: &str) -> Option<Cow<'_, str>> {
        if s.contains('+') {
            let spaced = s.replace('+', " ");
            let decoded = percent_encoding::percent_decode_str(&spaced)
                .decode_utf8()
                .ok()?;
            return Some(Cow::Owned(decoded.into_owned()));
        }
        percent_encoding::percent_decode_str(s).decode_utf8().ok()
    }
    q.split('&').filter_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        Some((decode(k)?, decode(v)?))
    })
}

/// An authenticated requester.
pub struct Auth(pub Requester);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = access_token(parts)
            .ok_or_else(|| ApiError::new(ErrorKind::MissingToken, "Missing access token"))?;
        let (requester, seen_due) = state.services.accounts.authenticate_seen(&token).await?;
        if seen_due {
            let ip = parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_string())
                .unwrap_or_default();
            // Last-seen data is informational: written off the request path, with others.
            state.services.accounts.seen(&requester, ip);
        }
        Ok(Auth(requester))
    }
}

/// The client's address, for rate limits before login.
pub struct ClientIp(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string())
            .unwrap_or_else(|| "unknown".into());
        Ok(ClientIp(ip))
    }
}

/// Maps a serde error to the Matrix error a client should get.
pub fn json_error(e: serde_json::Error) -> ApiError {
    let msg = e.to_string();
    if msg.starts_with("missing field") {
        ApiError::new(ErrorKind::MissingParam, msg)
    } else {
        ApiError::new(ErrorKind::BadJson, msg)
    }
}

/// Parses a JSON body into `T`.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(ErrorKind::NotJson, format!("Content not JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::new(
            ErrorKind::BadJson,
            "Body must be a JSON object",
        ));
    }
    serde_json::from_value(value).map_err(json_error)
}

/// A JSON request body. An empty body reads as `{}`, as several clients send none.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(ErrorKind::TooLarge, "Request body too large")
            } else {
                ApiError::new(ErrorKind::BadJson, format!("Unreadable body: {e}"))
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Json(parse_json(b"{}")?));
        }
        Ok(Json(parse_json(&bytes)?))
    }
}

/// A query string. Unknown parameters are ignored; bad ones are `M_INVALID_PARAM`.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        serde_urlencoded_from_str(q).map(Query)
    }
}

fn serde_urlencoded_from_str<T: DeserializeOwned>(q: &str) -> Result<T, ApiError> {
    // Collect into a JSON object of strings (repeated keys become arrays), then deserialize with
    // string-to-number coercion done by the target types' `deserialize_with` helpers.
    let mut map = serde_json::Map::new();
    for (k, v) in form_urlencoded_pairs(q) {
        if k.is_empty() {
            continue;
        }
        let v = serde_json::Value::String(v.into_owned());
        match map.get_mut(k.as_ref()) {
            Some(serde_json::Value::Array(a)) => a.push(v),
            Some(existing) => {
                let prev = existing.take();
                *existing = serde_json::Value::Array(vec![prev, v]);
            }
            None => {
                map.insert(k.into_owned(), v);
            }
        }
    }
    serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| {
        let msg = e.to_string();
        if msg.starts_with("missing field") {
            ApiError::new(ErrorKind::MissingParam, msg)
        } else {
            ApiError::new(ErrorKind::InvalidParam, msg)
        }
    })
}

/// Path segments, percent-decoded. A malformed segment is `M_INVALID_PARAM`.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| ApiError::new(ErrorKind::InvalidParam, format!("Invalid path: {e}")))
    }
}

/// Serde helpers for query values that arrive as strings.
pub mod qs {
    use serde::{Deserialize, Deserializer};

    pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        match s {
            None => Ok(None),
            Some(s) if s.is_empty() => Ok(None),
            Some(s) => s.parse().map(Some).map_err(serde::de::Error::custom),
        }
    }

    pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        match s.as_deref() {
            None | Some("") => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(serde::de::Error::custom(format!(
                "expected true or false, got {other}"
            ))),
        }
    }

    /// A parameter that may repeat (`?a=1&a=2`).
    pub fn vec_string<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(match Option::<OneOrMany>::deserialize(d)? {
            None => vec![],
            Some(OneOrMany::One(s)) => vec![s],
            Some(OneOrMany::Many(v)) => v,
        })
    }
}

/// Parses an identifier from a path or body, `M_INVALID_PARAM` when malformed.
pub fn parse_id<T>(s: &str, what: &str) -> Result<T, ApiError>
where
    T: for<'a> TryFrom<&'a str>,
{
    T::try_from(s)
        .map_err(|_| ApiError::new(ErrorKind::InvalidParam, format!("Invalid {what}: {s}")))
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::form_urlencoded_pairs;

    #[test]
    fn query_pairs_decode_and_borrow_what_needs_no_decoding() {
        let pairs: Vec<_> =
            form_urlencoded_pairs("since=s5_1&q=a+b&path=%2Fx%20y&flag&bad=%FF&timeout=30000")
                .collect();
        let plain: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (&**k, &**v)).collect();
        assert_eq!(
            plain,
            [
                ("since", "s5_1"),
                ("q", "a b"),
                ("path", "/x y"),
                ("flag", ""),
                ("timeout", "30000")
            ],
            "a value that is not UTF-8 once decoded is skipped"
        );
        assert!(matches!(pairs[0].1, Cow::Borrowed(_)));
        assert!(matches!(pairs[2].1, Cow::Owned(_)));
    }
}
