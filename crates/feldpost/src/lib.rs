//! The Feldpost server as a library: configuration loading and the application that binds a
//! listener and serves until shut down. `main.rs` is a thin CLI over this; integration tests use
//! it directly to start servers on port 0.

pub mod admin_cli;
pub mod cli;
pub mod config;
pub mod serve;

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
    /// The admin API and console, when `[admin] listen` moves them off the main listener.
    admin_listener: Option<TcpListener>,
    services: Arc<Services>,
    shutdown_tx: tokio::sync::watch::Sender<bool>,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listener = serve::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let admin_listener = match config.admin.listen {
            Some(addr) => Some(
                serve::bind(addr)
                    .await
                    .with_context(|| format!("binding the admin listener {addr}"))?,
            ),
            None => None,
        };
        let services = Services::open(config).map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Ok(addr) = listener.local_addr() {
            services.admin.set_main_addr(addr);
        }
        // The notices account exists before anyone could register its name.
        if let Err(e) = services.server_notices.ensure_account().await {
            tracing::error!(error = %e.message, "server notices are unavailable");
        }
        // Push recognises its own gateway and distributor under the address it listens on, and
        // its quiet-hours account exists before anyone could register the name.
        if let Ok(addr) = listener.local_addr() {
            services.push.register_listener(addr);
        }
        if let Err(e) = services.push.bot.ensure_account().await {
            tracing::error!(error = %e.message, "the quiet-hours service account is unavailable");
        }
        let (shutdown_tx, _) = tokio::sync::watch::channel(false);
        Ok(Self {
            listener,
            admin_listener,
            services,
            shutdown_tx,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The admin listener's address, when there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    pub fn services(&self) -> Arc<Services> {
        self.services.clone()
    }

    /// A handle that stops the server gracefully.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            tx: self.shutdown_tx.clone(),
        }
    }

    /// Serves until the shutdown handle fires; in-flight requests finish, parked syncs answer.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let state = AppState {
            services: self.services.clone(),
            shutdown: self.shutdown_tx.subscribe(),
        };
        let app = feldpost_api::router(state.clone());
        let background = self.services.spawn_background();
        let upkeep = spawn_admin_upkeep(self.services.clone());
        let main = serve::serve(self.listener, app, self.shutdown_tx.subscribe());
        let admin = async {
            let Some(listener) = self.admin_listener else {
                return Ok(());
            };
            serve::serve(
                listener,
                feldpost_api::admin_router(state),
                self.shutdown_tx.subscribe(),
            )
            .await
        };
        let (served, admin_served) = tokio::join!(main, admin);
        background.abort();
        upkeep.abort();
        // The last second of last-seen data.
        if let Err(e) = self.services.accounts.flush_seen().await {
            tracing::debug!(error = %e, "could not record device activity");
        }
        served.context("serving")?;
        admin_served.context("serving the admin listener")
    }
}

/// Leaves the rooms of accounts deactivated where rooms could not be left (by `feldpost admin`,
/// which writes no room events), at start and then every minute.
fn spawn_admin_upkeep(services: Arc<Services>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tick.tick().await;
            match services.admin.leave_rooms_of_deactivated().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(memberships = n, "deactivated accounts left their rooms"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not leave rooms of deactivated accounts")
                }
            }
        }
    })
}

#[derive(Clone)]
pub struct ShutdownHandle {
    tx: tokio::sync::watch::Sender<bool>,
}

impl ShutdownHandle {
    pub fn shutdown(&self) {
        // Parked syncs select on this channel and answer at once.
        let _ = self.tx.send(true);
    }
}
