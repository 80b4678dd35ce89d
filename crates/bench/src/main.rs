//! `feldpost-bench`: a load generator for Matrix homeservers. It speaks only the standard
//! Client-Server API, so the same scenarios run against Feldpost or any other homeserver.

mod client;
mod h2;
mod populate;
mod procstat;
mod report;
mod scenario_initial;
mod scenario_send;
mod scenario_sync;
mod state;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::client::Registration;

/// The generator shares the cores with the server it measures: every response it parses and
/// every request it builds allocate, and the system allocator cost it about a tenth of its time.
#[global_allocator]
static GLOBAL: feldpost_memory::MiMalloc = feldpost_memory::MiMalloc;

#[derive(Parser)]
#[command(
    name = "feldpost-bench",
    version,
    about = "Load generator for Matrix homeservers",
    long_about = "Load generator for Matrix homeservers. Populate a world of users and rooms once \
                  (saved to a state file), then run scenarios against it: `sync` (many long-polling \
                  clients, messages at a fixed rate, delivery latency), `send` (closed-loop send \
                  throughput) and `initial-sync` (a user in many rooms). Results are printed as JSON."
)]
struct Cli {
    /// Base URL of the homeserver. `populate` defaults to http://127.0.0.1:8008; the scenarios
    /// default to the server the state file was populated on (give it to reach the same data
    /// elsewhere, e.g. a copy of the server on another port).
    #[arg(long, global = true)]
    server: Option<String>,
    /// State file holding the populated users and rooms.
    #[arg(long, default_value = "bench-state.json", global = true)]
    state: PathBuf,
    /// Write the JSON result here as well as to stdout.
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    /// Pid of a local server process to sample RSS and CPU of.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create users and rooms (direct chats, groups of 5–50, a few rooms of 500–2,000).
    Populate {
        #[arg(long)]
        users: usize,
        /// open | token:<TOKEN> | shared-secret:<SECRET>
        #[arg(long, default_value = "open")]
        registration: Registration,
        #[arg(long, default_value = "bench-password-1")]
        password: String,
        #[arg(long, default_value = "bench")]
        prefix: String,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Long-polling clients receive messages sent at a total rate; measures delivery latency.
    Sync {
        #[arg(long)]
        clients: usize,
        /// Messages per second, in total.
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
        /// Seconds of sending.
        #[arg(long, default_value_t = 30)]
        duration: u64,
        /// Seconds over which clients start.
        #[arg(long, default_value_t = 10)]
        ramp: u64,
        /// Multiplex clients over HTTP/2 connections (cleartext, prior knowledge: the server URL
        /// starts with http://) instead of one HTTP/1.1 connection each.
        #[arg(long)]
        http2: bool,
        /// Clients per HTTP/2 connection.
        #[arg(long, default_value_t = 100)]
        streams_per_connection: usize,
        /// Spread HTTP/1.1 connections over 127.0.0.1 … 127.0.0.N.
        #[arg(long, default_value_t = 8)]
        source_addrs: u8,
        #[arg(long, default_value_t = 30_000)]
        long_poll_ms: u64,
        /// Send only into rooms with at least this many members (e.g. 500 to measure the
        /// fan-out of the large rooms on its own).
        #[arg(long, default_value_t = 0)]
        min_members: usize,
        /// Seed of the choice of rooms and senders: runs with the same seed send the same
        /// sequence (a room of 2,000 members or none), so builds compare fairly.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write a latency-over-time plot (SVG) here.
        #[arg(long)]
        plot: Option<PathBuf>,
    },
    /// K senders in a closed loop; messages per second.
    Send {
        #[arg(long, default_value_t = 10)]
        senders: usize,
        #[arg(long, default_value_t = 20)]
        duration: u64,
    },
    /// Initial sync of a user in R rooms (created on first use).
    InitialSync {
        #[arg(long, default_value_t = 300)]
        rooms: usize,
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        #[arg(long, default_value = "open")]
        registration: Registration,
    },
}

fn emit(out: &Option<PathBuf>, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    println!("{text}");
    if let Some(p) = out {
        std::fs::write(p, &text)?;
    }
    Ok(())
}

fn main() -> Result<()> {
    // As the server's (see `feldpost_memory`): the generator's bursts are the same bursts.
    feldpost_memory::tune();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> Result<()> {
    let cli = Cli::parse();
    let server = cli
        .server
        .as_deref()
        .map(|s| s.trim_end_matches('/').to_owned());
    // The state file's users live on the server it was populated on, unless told otherwise.
    let load_world = |path: &std::path::Path| -> Result<state::World> {
        let mut world = state::World::load(path)?;
        if let Some(s) = &server {
            world.server = s.clone();
        }
        Ok(world)
    };
    match cli.command {
        Command::Populate {
            users,
            registration,
            password,
            prefix,
            concurrency,
            seed,
        } => {
            let args = populate::PopulateArgs {
                server: server
                    .clone()
                    .unwrap_or_else(|| "http://127.0.0.1:8008".to_owned()),
                users,
                registration,
                password,
                prefix,
                concurrency,
                seed,
            };
            let world = populate::populate(args, &cli.state).await?;
            let members: usize = world.rooms.iter().map(|r| r.members.len()).sum();
            emit(
                &cli.out,
                &serde_json::json!({"users": world.users.len(), "rooms": world.rooms.len(), "memberships": members}),
            )?;
        }
        Command::Sync {
            clients,
            rate,
            duration,
            ramp,
            http2,
            streams_per_connection,
            source_addrs,
            long_poll_ms,
            min_members,
            seed,
            plot,
        } => {
            let world = load_world(&cli.state)?;
            let args = scenario_sync::SyncArgs {
                clients,
                rate,
                duration: Duration::from_secs(duration),
                ramp: Duration::from_secs(ramp),
                http2,
                streams_per_connection,
                source_addrs,
                long_poll_ms,
                min_members,
                seed,
                server_pid: cli.server_pid,
            };
            let result = scenario_sync::run(&world, args).await?;
            if let Some(p) = plot {
                std::fs::write(p, scenario_sync::plot(&result))?;
            }
            emit(&cli.out, &result)?;
        }
        Command::Send { senders, duration } => {
            let world = load_world(&cli.state)?;
            let result = scenario_send::run(
                &world,
                senders,
                Duration::from_secs(duration),
                cli.server_pid,
            )
            .await?;
            emit(&cli.out, &result)?;
        }
        Command::InitialSync {
            rooms,
            repeats,
            registration,
        } => {
            let mut world = load_world(&cli.state)?;
            let user = populate::ensure_heavy_user(
                &mut world,
                rooms,
                &registration,
                "bench-password-1",
                16,
                &cli.state,
            )
            .await?;
            let result = scenario_initial::run(&world.server, &user, rooms, repeats).await?;
            emit(&cli.out, &result)?;
        }
    }
    Ok(())
}
