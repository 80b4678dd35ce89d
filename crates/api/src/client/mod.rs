//! The Client-Server API, one module per endpoint group.

mod account;
mod discovery;
mod rooms;
mod send;
mod sync;
mod uia;

use axum::Router;

use crate::AppState;

pub fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .merge(discovery::routes())
        .merge(account::routes())
        .merge(rooms::routes())
        .merge(send::routes())
        .merge(sync::routes(state))
}
