//! The long polls of the `--http2` sync scenario, straight on hyper's HTTP/2 client connection.
//!
//! A profile of the generator during a large room's fan-out showed a quarter of its time in the
//! general-purpose client's layers (URL parsing, its connection pool, request building) around
//! the same HTTP/2 connection. Here a connection is one handshake whose sender the clients that
//! share it clone, and a request is built from a path and a token; the generator's overhead is
//! reported beside the server's, and less of it leaves more of the shared cores to the server.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use feldpost_gather::Gathered;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2::{Builder, SendRequest};
use hyper::{Request, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use tokio::net::TcpStream;

/// One HTTP/2 connection to the server (prior knowledge, cleartext), opened on first use and
/// again after it closed.
pub struct Connection {
    /// `http://host:port`, the prefix of every request's URI.
    base: String,
    /// `host:port`, to connect to.
    authority: String,
    /// The open connection's sender; cloned per request without waiting.
    sender: Mutex<Option<SendRequest<Empty<Bytes>>>>,
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
        Ok(Self {
            base: base.to_owned(),
            authority: authority.to_owned(),
            sender: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        })
    }

    fn open_sender(&self) -> Option<SendRequest<Empty<Bytes>>> {
        self.sender
            .lock()
            .as_ref()
            .filter(|s| !s.is_closed())
            .cloned()
    }

    async fn sender(&self) -> Result<SendRequest<Empty<Bytes>>> {
        if let Some(s) = self.open_sender() {
            return Ok(s);
        }
        let _one = self.connecting.lock().await;
        if let Some(s) = self.open_sender() {
            return Ok(s);
        }
        let stream = TcpStream::connect(&self.authority)
            .await
            .with_context(|| format!("connecting to {}", self.authority))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(Gathered::always(stream)))
            .await
            .context("HTTP/2 handshake")?;
        tokio::spawn(async move {
            // Ends when the server closes the connection; the next request opens a new one.
            let _ = conn.await;
        });
        *self.sender.lock() = Some(sender.clone());
        Ok(sender)
    }

    /// `GET base + path_and_query` with the access token; the status and the whole body, or
    /// `TimedOut` after `timeout`.
    pub async fn get(
        &self,
        path_and_query: &str,
        token: &str,
        timeout: Duration,
    ) -> Result<(u16, Bytes)> {
        let exchange = async {
            let mut sender = self.sender().await?;
            sender.ready().await.context("connection not ready")?;
            let req = Request::get(format!("{}{path_and_query}", self.base))
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Empty::<Bytes>::new())?;
            let resp = sender.send_request(req).await?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(TimedOut(timeout).into()),
        }
    }
}
