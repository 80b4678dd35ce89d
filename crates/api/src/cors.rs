//! Cross-origin resource sharing, as the Client-Server API asks of every server: browser clients
//! on any origin may call every endpoint, and an `OPTIONS` request is answered with the CORS
//! headers alone, without running any endpoint's logic.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

const ALLOW_ORIGIN: HeaderValue = HeaderValue::from_static("*");
const ALLOW_METHODS: HeaderValue = HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS");
const ALLOW_HEADERS: HeaderValue =
    HeaderValue::from_static("X-Requested-With, Content-Type, Authorization, Accept");

/// Adds the headers the specification recommends on all responses. They never change, so over
/// HTTP/2 each costs one byte after the first response on a connection.
pub fn add_headers(headers: &mut HeaderMap) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, ALLOW_ORIGIN);
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS);
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS);
}

/// The answer to any `OPTIONS` request (a browser's preflight or a client's discovery).
pub fn preflight() -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    add_headers(resp.headers_mut());
    resp
}
