//! The HTTP face of Feldpost: axum routers for the Client-Server API (and later federation,
//! admin and push), with Matrix error mapping. Handlers parse, authenticate and call services;
//! they never touch storage.

mod admin;
mod app;
pub mod client;
mod console;
mod conventions;
mod cors;
mod enrollment_page;
pub mod error;
pub mod extract;
mod http_date;
pub mod push;
mod router;

use std::sync::Arc;

use feldpost_service::Services;

pub use app::App;
pub use router::{admin_router, router};

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub services: Arc<Services>,
    /// Flips to `true` at shutdown so that parked syncs answer at once.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}
