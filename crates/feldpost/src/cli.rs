//! The command line: `feldpost serve` and its flags, and `feldpost admin …` (see `admin_cli`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "feldpost",
    version,
    about = "Feldpost: a Matrix homeserver for organisations with a security mandate"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the homeserver.
    Serve(ServeArgs),
    /// Administer users, enrollments and registration tokens on the data directory.
    Admin(crate::admin_cli::AdminArgs),
}

#[derive(clap::Args, Debug, Default)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The server name (the part after ':' in user ids).
    #[arg(long)]
    pub server_name: Option<String>,
    /// Address and port to listen on.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Where the database, media and signing key live.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Allow registration without a token.
    #[arg(long)]
    pub open_registration: bool,
}

impl ServeArgs {
    /// Applies the flags over a loaded configuration.
    pub fn apply(&self, config: &mut feldpost_service::config::Config) {
        if let Some(n) = &self.server_name {
            config.server_name = n.clone();
        }
        if let Some(l) = self.listen {
            config.listen = l;
        }
        if let Some(d) = &self.data_dir {
            config.data_dir = d.clone();
        }
        if self.open_registration {
            config.registration.open = true;
        }
    }
}
