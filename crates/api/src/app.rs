//! The main listener's service. `GET /_matrix/client/v3/sync` is most of what a homeserver
//! answers: every client holds one long poll at a time and sends the next the moment the last
//! one answers, so at 80,000 clients a message into a room of 2,000 members means 2,000 answers
//! and 2,000 new requests within a fraction of a second. Those go straight to their handler;
//! everything else goes through the router and its layers. The difference is only the work
//! skipped: no route lookup, no boxed service per layer, no request span. What a client sees is
//! the same, since the handler's extractors run as they would under the router, and the response
//! gets the same conventions (CORS, `Date`) and the same answer to a panic.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::http::Method;
use axum::response::Response;
use futures::FutureExt;
use tower::Service;

use crate::AppState;
use crate::conventions;
use crate::router::panic_response;

/// The path answered without the router.
const SYNC: &str = "/_matrix/client/v3/sync";

/// The router, with `/sync` taken out in front of it (see the module's documentation).
#[derive(Clone)]
pub struct App {
    router: Router,
    state: AppState,
}

impl App {
    pub(crate) fn new(router: Router, state: AppState) -> Self {
        Self { router, state }
    }
}

type Answer = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<B> Service<http::Request<B>> for App
where
    B: HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready, and so is a handler.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let req: Request = req.map(Body::new);
        if req.method() == Method::GET && req.uri().path() == SYNC {
            let answer = AssertUnwindSafe(crate::client::sync::answer(req, self.state.clone()))
                .catch_unwind();
            return Box::pin(async move {
                let resp = answer.await.unwrap_or_else(panic_response);
                conventions::finish::<Infallible>(Ok(resp))
            });
        }
        Box::pin(self.router.call(req))
    }
}
