//! The `Date` header, formatted once a second per thread and marked never-indexed: over HTTP/2
//! the connection's header table would otherwise collect one entry per second, and every later
//! response's lookup would compare its date against all of them.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::HeaderValue;

thread_local! {
    static CACHED: RefCell<(u64, HeaderValue)> =
        const { RefCell::new((u64::MAX, HeaderValue::from_static(""))) };
}

/// The current time as an HTTP date.
pub fn now() -> HeaderValue {
    let now = SystemTime::now();
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    CACHED.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let text = httpdate::fmt_http_date(now);
            if let Ok(mut v) = HeaderValue::from_str(&text) {
                v.set_sensitive(true);
                *cached = (secs, v);
            }
        }
        cached.1.clone()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn is_an_http_date_and_never_indexed() {
        let v = super::now();
        assert!(v.is_sensitive());
        let text = v.to_str().expect("ascii");
        assert!(httpdate::parse_http_date(text).is_ok(), "{text}");
    }
}
