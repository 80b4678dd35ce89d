//! The Feldpost server as a library: configuration loading and the application that binds a
//! listener and serves until shut down. `main.rs` is a thin CLI over this; integration tests use
//! it directly to start servers on port 0.

pub mod cli;
pub mod config;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use feldpost_api::AppState;
use feldpost_service::Services;
use feldpost_service::config::Config;
use tokio::net::TcpListener;

/// A bound, not yet serving, server.
pub struct Application {
    listener: TcpListener,
    services: Arc<Services>,
    shutdown_tx: tokio::sync::watch::Sender<bool>,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let services = Services::open(config).map_err(|e| anyhow::anyhow!("{e}"))?;
        let (shutdown_tx, _) = tokio::sync::watch::channel(false);
        Ok(Self {
            listener,
            services,
            shutdown_tx,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn services(&self) -> Arc<Services> {
        self.services.clone()
    }

    /// A handle that stops the server gracefully.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            tx: self.shutdown_tx.clone(),
            services: self.services.clone(),
        }
    }

    /// Serves until the shutdown handle fires; in-flight requests finish, parked syncs answer.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let state = AppState {
            services: self.services.clone(),
            shutdown: self.shutdown_tx.subscribe(),
        };
        let app = feldpost_api::router(state);
        let background = self.services.spawn_background();
        let mut stop = self.shutdown_tx.subscribe();
        let served = axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|v| *v).await;
        })
        .await;
        background.abort();
        served.context("serving")
    }
}

#[derive(Clone)]
pub struct ShutdownHandle {
    tx: tokio::sync::watch::Sender<bool>,
    services: Arc<Services>,
}

impl ShutdownHandle {
    pub fn shutdown(&self) {
        let _ = self.tx.send(true);
        self.services.notifier.wake_all();
    }
}
