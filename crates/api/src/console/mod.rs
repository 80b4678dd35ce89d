//! The admin console: static HTML, CSS and JavaScript compiled into the binary (no build step),
//! served under `/_feldpost/console/`. It signs in with the client API's password login and
//! works through the admin API, so it can do nothing an admin's token could not.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;
use crate::enrollment_page::{asset, page_headers};

const INDEX: &str = include_str!("index.html");
const CSS: &str = include_str!("console.css");
const JS: &str = include_str!("console.js");

/// Only the console's own files; data for the QR code image comes as a `data:` URL.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_feldpost/console", get(redirect))
        .route("/_feldpost/console/", get(index))
        .route("/_feldpost/console/console.css", get(css))
        .route("/_feldpost/console/console.js", get(js))
}

async fn redirect() -> Response {
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, "/_feldpost/console/")],
    )
        .into_response()
}

async fn index() -> Response {
    let mut r = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response();
    page_headers(&mut r, CSP);
    r
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}
