//! The route table and the layers every request passes through.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use feldpost_service::ErrorKind;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{Any, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::AppState;
use crate::error::{ApiError, json_response};
use crate::{admin, client, console, enrollment_page};

async fn unrecognized() -> ApiError {
    ApiError::new(ErrorKind::Unrecognized, "Unrecognized request")
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    json_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        &serde_json::json!({"errcode": "M_UNKNOWN", "error": "Internal server error"}),
    )
}

/// Routes that exist but not for this method answer 405 `M_UNRECOGNIZED`.
async fn method_not_allowed(resp: Response) -> Response {
    // A handler's own 405 (a JSON error body) is kept; only the router's bare one is replaced.
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED
        && !resp.headers().contains_key(header::CONTENT_TYPE)
    {
        let mut r = json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"errcode": "M_UNRECOGNIZED", "error": "Method not allowed"}),
        );
        if let Some(allow) = resp.headers().get(header::ALLOW) {
            r.headers_mut().insert(header::ALLOW, allow.clone());
        }
        return r;
    }
    resp
}

/// The main listener: the client API and the public enrollment pages, and the admin API and
/// console unless `[admin] listen` gives them a listener of their own.
pub fn router(state: AppState) -> Router {
    let mut routes = Router::new()
        .merge(client::routes(&state))
        .merge(crate::push::routes())
        .merge(enrollment_page::routes());
    if state.services.config.admin.listen.is_none() {
        routes = routes.merge(admin::routes()).merge(console::routes());
    }
    with_layers(routes, state)
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
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            header::HeaderName::from_static("x-requested-with"),
        ]);
    routes
        .fallback(unrecognized)
        .layer(DefaultBodyLimit::max(max_json))
        .layer(axum::middleware::map_response(method_not_allowed))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(cors)
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
