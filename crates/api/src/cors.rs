//! Cross-origin resource sharing, as the Client-Server API asks of every server: browser clients
//! on any origin may call every endpoint (`conventions` adds these headers to every response and
//! answers `OPTIONS` with them alone, without running any endpoint's logic).

use axum::http::{HeaderMap, HeaderValue, header};

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
