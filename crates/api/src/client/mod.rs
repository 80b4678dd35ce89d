//! The Client-Server API, one module per endpoint group.

mod account;
mod account_data;
mod devices;
mod directory;
mod discovery;
mod media;
mod presence;
mod profile;
mod receipts;
mod room_reads;
mod rooms;
mod send;
mod sync;
mod uia;
mod user_directory;

use axum::Router;

use crate::AppState;

pub fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .merge(discovery::routes())
        .merge(account::routes())
        .merge(account_data::routes())
        .merge(devices::routes())
        .merge(presence::routes())
        .merge(profile::routes())
        .merge(receipts::routes())
        .merge(user_directory::routes())
        .merge(rooms::routes())
        .merge(directory::routes())
        .merge(room_reads::routes())
        .merge(send::routes())
        .merge(media::routes(state))
        .merge(sync::routes(state))
}
