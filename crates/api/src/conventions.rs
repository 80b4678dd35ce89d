//! What every response shares, in one layer without a boxed future per request: `OPTIONS`
//! answered without routing, the CORS headers, the date, and the Matrix error for a method a
//! route lacks.

use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use futures::future::{Either, Map, Ready, ready};
use tower::{Layer, Service};

use crate::error::json_response;
use crate::{cors, http_date};

#[derive(Clone, Copy)]
pub struct Conventions;

impl<S> Layer<S> for Conventions {
    type Service = WithConventions<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WithConventions(inner)
    }
}

#[derive(Clone)]
pub struct WithConventions<S>(S);

type Finish<E> = fn(Result<Response, E>) -> Result<Response, E>;

impl<S> Service<Request> for WithConventions<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response, S::Error>>, Map<S::Future, Finish<S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if req.method() == Method::OPTIONS {
            // A browser's preflight or a client's discovery: the headers alone.
            return Either::Left(ready(finish(Ok(StatusCode::NO_CONTENT.into_response()))));
        }
        Either::Right(self.0.call(req).map(finish as Finish<S::Error>))
    }
}

pub(crate) fn finish<E>(resp: Result<Response, E>) -> Result<Response, E> {
    resp.map(|resp| {
        let mut resp = method_not_allowed(resp);
        let headers = resp.headers_mut();
        cors::add_headers(headers);
        headers.insert(header::DATE, http_date::now());
        resp
    })
}

/// Routes that exist but not for this method answer 405 `M_UNRECOGNIZED`.
fn method_not_allowed(resp: Response) -> Response {
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
