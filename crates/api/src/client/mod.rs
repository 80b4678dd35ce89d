//! The Client-Server API, one module per endpoint group.

pub(crate) mod account;
mod account_data;
mod devices;
mod directory;
mod discovery;
mod keys;
mod media;
mod notifications;
mod presence;
mod profile;
mod push_rules;
mod pushers;
mod receipts;
mod registration_token;
mod room_keys;
mod room_reads;
mod rooms;
mod send;
pub(crate) mod sync;
mod to_device;
mod uia;
mod user_directory;

use axum::Router;

use crate::AppState;

pub fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .merge(discovery::routes())
        .merge(account::routes())
        .merge(registration_token::routes())
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
        .merge(keys::routes())
        .merge(to_device::routes())
        .merge(room_keys::routes())
        .merge(push_rules::routes())
        .merge(pushers::routes())
        .merge(notifications::routes())
}
