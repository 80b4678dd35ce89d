//! The long polls of the `--http2` sync scenario, straight on an HTTP/2 client connection.
//!
//! Profiles of the generator during a large room's fan-out showed first a quarter of its time in
//! the general-purpose client's layers (URL parsing, its connection pool, request building) and
//! then, with hyper's HTTP/2 client connection, about a sixth in that client's dispatch between
//! the caller and the connection (a channel, a task that forwards each request, a body pipe).
//! Here a request goes from the caller to the HTTP/2 stream state directly: the connection is one
//! handshake whose request handle the clients that share it clone, and a request is built from a
//! prepared authority, a path and a prepared `Authorization` header. The generator's overhead is
//! reported beside the server's, and less of it leaves more of the shared cores to the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::{Bytes, BytesMut};
use feldpost_gather::Gathered;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Uri};
use parking_lot::Mutex;
use tokio::net::TcpStream;

/// Receive windows as the general client sets them: a sync answer never waits for a window
/// update, and neither does a connection with a hundred of them in flight.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// One HTTP/2 connection to the server (prior knowledge, cleartext), opened on first use and
/// again after it closed.
pub struct Connection {
    /// `host:port`, to connect to, and the authority of every request's URI (parsed once).
    authority: Authority,
    /// The open connection's request handle, cloned per request without waiting, and whether
    /// the connection has ended since.
    sender: Mutex<Option<(h2::client::SendRequest<Bytes>, Arc<AtomicBool>)>>,
    /// Held while connecting, so that the clients of a closed connection open one new one.
    connecting: tokio::sync::Mutex<()>,
}

/// A request that got no answer in time.
#[derive(Debug)]
pub struct TimedOut(pub Duration);

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no response within {:?}", self.0)
    }
}

impl std::error::Error for TimedOut {}

impl Connection {
    pub fn new(base: &str) -> Result<Self> {
        let base = base.trim_end_matches('/');
        let Some(authority) = base.strip_prefix("http://") else {
            bail!(
                "--http2 speaks cleartext HTTP/2 (prior knowledge): the server URL must start with http://"
            );
        };
        if authority.is_empty() || authority.contains('/') {
            bail!("server URL {base} has no host:port");
        }
        let authority = Authority::try_from(authority)
            .with_context(|| format!("server URL {base} has no valid host:port"))?;
        Ok(Self {
            authority,
            sender: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        })
    }

    fn open_sender(&self) -> Option<h2::client::SendRequest<Bytes>> {
        self.sender
            .lock()
            .as_ref()
            .filter(|(_, ended)| !ended.load(Ordering::Acquire))
            .map(|(s, _)| s.clone())
    }

    async fn sender(&self) -> Result<h2::client::SendRequest<Bytes>> {
        if let Some(s) = self.open_sender() {
            return Ok(s);
        }
        let _one = self.connecting.lock().await;
        if let Some(s) = self.open_sender() {
            return Ok(s);
        }
        let stream = TcpStream::connect(self.authority.as_str())
            .await
            .with_context(|| format!("connecting to {}", self.authority))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = h2::client::Builder::new()
            .enable_push(false)
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake::<_, Bytes>(Gathered::always(stream))
            .await
            .context("HTTP/2 handshake")?;
        let ended = Arc::new(AtomicBool::new(false));
        let flag = ended.clone();
        tokio::spawn(async move {
            // Ends when the server closes the connection; the next request opens a new one.
            let _ = conn.await;
            flag.store(true, Ordering::Release);
        });
        *self.sender.lock() = Some((sender.clone(), ended));
        Ok(sender)
    }

    /// `GET path_and_query` with the `Authorization` header `bearer`; the status and the whole
    /// body, or `TimedOut` after `timeout`.
    pub async fn get(
        &self,
        path_and_query: String,
        bearer: &HeaderValue,
        timeout: Duration,
    ) -> Result<(u16, Bytes)> {
        let exchange = async {
            let sender = self.sender().await?;
            let mut uri = http::uri::Parts::default();
            uri.scheme = Some(Scheme::HTTP);
            uri.authority = Some(self.authority.clone());
            uri.path_and_query = Some(PathAndQuery::try_from(path_and_query)?);
            let mut req = Request::new(());
            *req.uri_mut() = Uri::from_parts(uri)?;
            req.headers_mut()
                .insert(header::AUTHORIZATION, bearer.clone());
            let answer = async {
                let mut sender = sender.ready().await?;
                let (response, _) = sender.send_request(req, true)?;
                let resp = response.await?;
                let status = resp.status().as_u16();
                let mut body = resp.into_body();
                // A sync answer is usually one DATA frame: kept as it came, without a copy.
                let mut first: Option<Bytes> = None;
                let mut more: Option<BytesMut> = None;
                while let Some(chunk) = body.data().await {
                    let chunk = chunk?;
                    let _ = body.flow_control().release_capacity(chunk.len());
                    match (&mut first, &mut more) {
                        (None, _) => first = Some(chunk),
                        (Some(f), None) => {
                            let mut m = BytesMut::with_capacity(f.len() + chunk.len());
                            m.extend_from_slice(f);
                            m.extend_from_slice(&chunk);
                            more = Some(m);
                        }
                        (Some(_), Some(m)) => m.extend_from_slice(&chunk),
                    }
                }
                let body = match (first, more) {
                    (_, Some(m)) => m.freeze(),
                    (Some(f), None) => f,
                    (None, None) => Bytes::new(),
                };
                Ok::<_, h2::Error>((status, body))
            };
            answer.await.context("HTTP/2 request")
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(TimedOut(timeout).into()),
        }
    }
}
