//! The route table and the layers every request passes through.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::Response;
use feldpost_service::ErrorKind;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::AppState;
use crate::app::App;
use crate::conventions::Conventions;
use crate::error::{ApiError, json_response};
use crate::{admin, client, console, enrollment_page};

async fn unrecognized() -> ApiError {
    ApiError::new(ErrorKind::Unrecognized, "Unrecognized request")
}

pub(crate) fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    json_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        &serde_json::json!({"errcode": "M_UNKNOWN", "error": "Internal server error"}),
    )
}

/// The main listener: the client API and the public enrollment pages, and the admin API and
/// console unless `[admin] listen` gives them a listener of their own; `/sync` in front of
/// the router (see `app`).
pub fn router(state: AppState) -> App {
    let mut routes = Router::new()
        .merge(client::routes(&state))
        .merge(crate::push::routes())
        .merge(enrollment_page::routes());
    if state.services.config.admin.listen.is_none() {
        routes = routes.merge(admin::routes()).merge(console::routes());
    }
    App::new(with_layers(routes, state.clone()), state)
}

/// The separate admin listener: the admin API, the console, and the login the console uses.
pub fn admin_router(state: AppState) -> Router {
    let routes = Router::new()
        .merge(admin::routes())
        .merge(console::routes())
        .merge(client::account::session_routes());
    with_layers(routes, state)
}

fn with_layers(routes: Router<AppState>, state: AppState) -> Router {
    let max_json = state.services.config.limits.max_json_body;
    routes
        .fallback(unrecognized)
        .layer(DefaultBodyLimit::max(max_json))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(Conventions)
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
