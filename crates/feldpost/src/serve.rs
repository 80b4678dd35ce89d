//! The HTTP listeners: HTTP/1.1 and HTTP/2 (prior knowledge, h2c) on one port, a listen backlog
//! that survives thousands of clients connecting at once, many streams per HTTP/2 connection,
//! and a graceful stop in which parked syncs answer before the connections close.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use feldpost_gather::Gathered;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpSocket};
use tower::{Service, ServiceExt};

/// Pending connections the kernel may queue (capped by `net.core.somaxconn`).
const BACKLOG: u32 = 65_535;
/// Streams one HTTP/2 connection may have open: a load generator or a proxy multiplexes many
/// long-polling syncs over one connection.
const MAX_STREAMS_PER_CONNECTION: u32 = 4_096;
/// How long a stop waits for in-flight requests before closing connections anyway.
const DRAIN: Duration = Duration::from_secs(30);

/// Binds `addr` with a large backlog. Also raises the open-file limit to the hard limit, since
/// every connection is a file.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::debug!(error = %e, "could not raise the open-file limit");
    }
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Serves `app` (the router, or the main listener's `App`) on `listener` until `stop` turns
/// true.
pub async fn serve<S>(
    listener: TcpListener,
    app: S,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .keep_alive_interval(Duration::from_secs(60));
    let graceful = GracefulShutdown::new();
    // A future with no output, so that no watch guard is held across the accept loop's awaits.
    let stopped = async move {
        let _ = stop.wait_for(|v| *v).await;
    };
    tokio::pin!(stopped);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of files or a connection reset before accept: keep serving the others.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut stopped => break,
        };
        let _ = stream.set_nodelay(true);
        let svc = app
            .clone()
            .map_request(move |req: hyper::Request<Incoming>| {
                let mut req = req.map(Body::new);
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            });
        let conn = builder.serve_connection_with_upgrades(
            TokioIo::new(Gathered::detect(stream)),
            TowerToHyperService::new(svc),
        );
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain period; closing them");
    }
    Ok(())
}
