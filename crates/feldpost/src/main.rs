//! `feldpost`: the homeserver binary.

use clap::Parser;
use feldpost::cli::{Cli, Command};
use feldpost::{Application, config};
use feldpost_service::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Thousands of short-lived allocations per sync response, across many threads: mimalloc,
/// set up for bursts of answers (see `feldpost_memory`).
#[global_allocator]
static GLOBAL: feldpost_memory::MiMalloc = feldpost_memory::MiMalloc;

fn main() -> anyhow::Result<()> {
    feldpost_memory::tune();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let mut config = config::load(args.config.as_deref())?;
            args.apply(&mut config);
            init_logging(&config.log.format, &config.log.level);
            if config.registration.open {
                tracing::warn!(
                    "open registration is ON: anyone who can reach this server can create an account"
                );
            }
            let config_path = args.config.clone();
            let app = Application::build(config).await?;
            tracing::info!(addr = %app.local_addr()?, server_name = %app.services().server_name, "Feldpost listening");
            if let Some(addr) = app.admin_addr() {
                tracing::info!(addr = %addr, "admin API and console listening");
            }
            first_admin_hint(&app, config_path.as_deref()).await;
            let handle = app.shutdown_handle();
            tokio::spawn(async move {
                wait_for_signal().await;
                tracing::info!("shutting down: finishing in-flight requests");
                handle.shutdown();
            });
            app.run_until_stopped().await?;
            tracing::info!("stopped");
        }
        Command::Admin(args) => {
            init_logging(&LogFormat::Pretty, "warn");
            if let Err(e) = feldpost::admin_cli::run(args).await {
                eprintln!("error: {e:#}");
                std::process::exit(1);
            }
        }
    }
    Ok(())
}

/// A server without any admin says once, at start, how to create the first one.
async fn first_admin_hint(app: &Application, config: Option<&std::path::Path>) {
    let services = app.services();
    if services.admin.has_admin().await.unwrap_or(true) {
        return;
    }
    let mut cmd = String::from("feldpost admin");
    if let Some(c) = config {
        cmd.push_str(&format!(" --config {}", c.display()));
    }
    cmd.push_str(&format!(
        " --data-dir {} user create NAME --admin --password-stdin",
        services.config.data_dir.display()
    ));
    tracing::warn!(command = %cmd, "this server has no admin yet; create the first one with this command");
}

fn init_logging(format: &LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
