//! Push endpoints that are not part of the Client-Server API: Feldpost's own push gateway
//! (`/_matrix/push/v1/notify`) and the built-in push distributor (`/_feldpost/ntfy/…`).

mod distributor;
mod gateway;

use axum::Router;

use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(gateway::routes())
        .merge(distributor::routes())
}
