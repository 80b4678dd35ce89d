//! Errors as Matrix error responses: `{"errcode": "M_…", "error": "…"}` with the spec's status.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use feldpost_service::{Error, ErrorKind};
use serde_json::{Value, json};

/// What a handler returns on failure.
#[derive(Debug)]
pub enum ApiError {
    Matrix(Error),
    /// A user-interactive-auth challenge (401 with flows).
    Uia(Value),
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::Matrix(e)
    }
}

impl ApiError {
    pub fn new(kind: ErrorKind, msg: impl Into<String>) -> Self {
        ApiError::Matrix(Error::new(kind, msg))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Uia(body) => json_response(StatusCode::UNAUTHORIZED, &body),
            ApiError::Matrix(e) => {
                let status =
                    StatusCode::from_u16(e.kind.status()).unwrap_or(StatusCode::BAD_REQUEST);
                let mut body = json!({"errcode": e.kind.errcode(), "error": e.message});
                match e.kind {
                    ErrorKind::LimitExceeded { retry_after_ms } => {
                        body["retry_after_ms"] = json!(retry_after_ms);
                        let secs = retry_after_ms.div_ceil(1000).to_string();
                        let mut r = json_response(status, &body);
                        if let Ok(v) = header::HeaderValue::from_str(&secs) {
                            r.headers_mut().insert(header::RETRY_AFTER, v);
                        }
                        return r;
                    }
                    ErrorKind::UnknownToken { soft_logout } => {
                        body["soft_logout"] = json!(soft_logout);
                    }
                    ErrorKind::Internal => {
                        tracing::error!(error = %e.message, "internal error");
                    }
                    _ => {}
                }
                json_response(status, &body)
            }
        }
    }
}
