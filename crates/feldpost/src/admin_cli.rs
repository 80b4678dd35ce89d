//! `feldpost admin …`: user, enrollment and registration-token administration straight on the
//! data directory, for the operator at the server machine. It works whether or not the server
//! is running (SQLite's WAL mode lets both use the database) and writes no room events.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use feldpost_service::admin::OfflineAdmin;
use feldpost_service::config::Config;
use feldpost_service::enrollment::{
    Actor, NewEnrollment, NewToken, enrollment_link, qr_terminal, token_state,
};
use feldpost_storage::{RegistrationTokenRecord, UserListQuery};

#[derive(Args, Debug)]
pub struct AdminArgs {
    /// TOML configuration file (the server's: the server name and data directory must match).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Where the database lives.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// The server name (the part after ':' in user ids).
    #[arg(long, global = true)]
    pub server_name: Option<String>,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Create, list, deactivate users; reset passwords; grant or revoke admin rights.
    #[command(subcommand)]
    User(UserCommand),
    /// Enrollments: single-use registration links for one username, shown as a QR code.
    #[command(subcommand)]
    Enroll(EnrollCommand),
    /// Registration tokens that anyone holding them can register with.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Args, Debug, Default)]
pub struct PasswordArgs {
    /// The password (visible in the process list; prefer --password-stdin).
    #[arg(long, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user. Without a password option a random password is generated and printed.
    Create {
        /// Localpart or full user id.
        name: String,
        /// Make the user a server admin.
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        displayname: Option<String>,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Set a new password.
    ResetPassword {
        name: String,
        /// Keep the user's devices signed in.
        #[arg(long)]
        keep_devices: bool,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Deactivate an account: its sessions end at once; the server leaves its rooms.
    Deactivate { name: String },
    /// Grant (`true`) or revoke (`false`) server admin rights.
    SetAdmin {
        name: String,
        #[arg(action = clap::ArgAction::Set)]
        admin: bool,
    },
    /// List users.
    List {
        /// Only users whose id or display name contains this.
        #[arg(long)]
        search: Option<String>,
        /// Include deactivated users.
        #[arg(long)]
        deactivated: bool,
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum EnrollCommand {
    /// Create an enrollment and print its link and QR code.
    Create {
        /// The username (localpart) the new member will register.
        name: String,
        #[arg(long)]
        displayname: Option<String>,
        /// Lifetime in minutes (default: the configured enrollment lifetime, 15).
        #[arg(long)]
        minutes: Option<u64>,
        /// The server's public URL for the link (default: public_baseurl, else the listen address).
        #[arg(long)]
        base_url: Option<String>,
        /// Print no QR code (only the link and the token).
        #[arg(long)]
        no_qr: bool,
    },
    /// List enrollments (only usable ones unless --all).
    List {
        #[arg(long)]
        all: bool,
    },
    /// Revoke an enrollment by its id.
    Revoke { id: i64 },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a registration token.
    Create {
        /// The token text (default: random).
        #[arg(long)]
        token: Option<String>,
        /// Length of a random token.
        #[arg(long)]
        length: Option<usize>,
        /// How many registrations it allows (default: unlimited).
        #[arg(long)]
        uses: Option<i64>,
        /// Hours until it expires (default: never).
        #[arg(long)]
        expires_in_hours: Option<u64>,
    },
    /// List registration tokens.
    List,
    /// Delete a registration token.
    Delete { token: String },
}

fn load_config(args: &AdminArgs) -> anyhow::Result<Config> {
    let mut config = crate::config::load(args.config.as_deref())?;
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    }
    if let Some(n) = &args.server_name {
        config.server_name = n.clone();
    }
    Ok(config)
}

fn read_password(p: &PasswordArgs) -> anyhow::Result<Option<String>> {
    if let Some(pw) = &p.password {
        return Ok(Some(pw.clone()));
    }
    if p.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        let pw = line.trim_end_matches(['\r', '\n']).to_owned();
        if pw.is_empty() {
            bail!("empty password on standard input");
        }
        return Ok(Some(pw));
    }
    Ok(None)
}

/// `YYYY-MM-DD HH:MM UTC` for milliseconds since the epoch.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (the days-from-civil algorithm, run backwards).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn base_url(config: &Config, explicit: Option<&str>) -> String {
    if let Some(b) = explicit {
        return b.trim_end_matches('/').to_owned();
    }
    if let Some(b) = &config.public_baseurl {
        return b.trim_end_matches('/').to_owned();
    }
    if config.listen.ip().is_unspecified() {
        eprintln!(
            "note: the server listens on all addresses; set public_baseurl (or pass --base-url) so that the link names an address phones can reach"
        );
    }
    format!("http://{}", config.listen)
}

fn print_enrollment(server_name: &str, t: &RegistrationTokenRecord) {
    let user = format!(
        "@{}:{server_name}",
        t.bound_localpart.as_deref().unwrap_or_default()
    );
    let expiry = t.expiry_time.map(utc).unwrap_or_else(|| "never".into());
    println!(
        "{:>5}  {:<40} {:<10} expires {}  {}",
        t.id,
        user,
        token_state(t, now_ms()).as_str(),
        expiry,
        t.displayname.as_deref().unwrap_or("")
    );
}

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    let admin = OfflineAdmin::open(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let err = |e: feldpost_service::Error| anyhow::anyhow!("{}", e.message);
    let server_name = admin.server_name.to_string();
    match args.command {
        AdminCommand::User(cmd) => match cmd {
            UserCommand::Create {
                name,
                admin: is_admin,
                displayname,
                password,
            } => {
                let (pw, generated) = match read_password(&password)? {
                    Some(p) => (p, false),
                    None => (feldpost_service::accounts::random_token(18), true),
                };
                let id = admin
                    .create_user(&name, &pw, is_admin, displayname.as_deref())
                    .await
                    .map_err(err)?;
                println!(
                    "created {id}{}",
                    if is_admin { " (server admin)" } else { "" }
                );
                if generated {
                    println!("password: {pw}");
                }
            }
            UserCommand::ResetPassword {
                name,
                keep_devices,
                password,
            } => {
                let (pw, generated) = match read_password(&password)? {
                    Some(p) => (p, false),
                    None => (feldpost_service::accounts::random_token(18), true),
                };
                let id = admin
                    .reset_password(&name, &pw, !keep_devices)
                    .await
                    .map_err(err)?;
                println!("password of {id} set");
                if generated {
                    println!("password: {pw}");
                }
            }
            UserCommand::Deactivate { name } => {
                let id = admin.deactivate(&name).await.map_err(err)?;
                println!("deactivated {id}; a running server leaves its rooms within a minute");
            }
            UserCommand::SetAdmin {
                name,
                admin: is_admin,
            } => {
                let id = admin.set_admin(&name, is_admin).await.map_err(err)?;
                println!(
                    "{id} is {}a server admin",
                    if is_admin { "now " } else { "no longer " }
                );
            }
            UserCommand::List {
                search,
                deactivated,
                limit,
            } => {
                let (users, total) = admin
                    .list_users(UserListQuery {
                        name: search,
                        include_deactivated: deactivated,
                        limit: limit.min(100_000),
                        ..UserListQuery::default()
                    })
                    .await
                    .map_err(err)?;
                println!("{:<40} {:<6} {:<12} display name", "user", "admin", "state");
                for e in &users {
                    let u = &e.user;
                    println!(
                        "{:<40} {:<6} {:<12} {}",
                        u.user_id,
                        if u.is_admin { "yes" } else { "no" },
                        if u.deactivated {
                            "deactivated"
                        } else {
                            "active"
                        },
                        u.displayname.as_deref().unwrap_or("")
                    );
                }
                println!("{} of {total} users", users.len());
            }
        },
        AdminCommand::Enroll(cmd) => match cmd {
            EnrollCommand::Create {
                name,
                displayname,
                minutes,
                base_url: explicit,
                no_qr,
            } => {
                let exists = admin.user_exists(&name).await.map_err(err)?;
                let t = admin
                    .tokens
                    .create_enrollment(
                        &Actor::Cli,
                        NewEnrollment {
                            username: name,
                            displayname,
                            lifetime_minutes: minutes,
                        },
                        exists,
                    )
                    .await
                    .map_err(err)?;
                let link = enrollment_link(&base_url(&config, explicit.as_deref()), &t.token);
                println!(
                    "enrollment {} for @{}:{server_name}, valid until {}",
                    t.id,
                    t.bound_localpart.as_deref().unwrap_or_default(),
                    t.expiry_time.map(utc).unwrap_or_else(|| "never".into())
                );
                println!("link:  {link}");
                println!("token: {}", t.token);
                if !no_qr {
                    println!("{}", qr_terminal(&link).map_err(err)?);
                }
            }
            EnrollCommand::List { all } => {
                let list = admin.tokens.enrollments(all).await.map_err(err)?;
                for t in &list {
                    print_enrollment(&server_name, t);
                }
                println!("{} enrollments", list.len());
            }
            EnrollCommand::Revoke { id } => {
                admin
                    .tokens
                    .revoke_enrollment(&Actor::Cli, id)
                    .await
                    .map_err(err)?;
                println!("enrollment {id} revoked");
            }
        },
        AdminCommand::Token(cmd) => match cmd {
            TokenCommand::Create {
                token,
                length,
                uses,
                expires_in_hours,
            } => {
                let expiry_time = expires_in_hours.map(|h| {
                    now_ms().saturating_add(
                        i64::try_from(h.saturating_mul(3_600_000)).unwrap_or(i64::MAX),
                    )
                });
                let t = admin
                    .tokens
                    .create(
                        &Actor::Cli,
                        NewToken {
                            token,
                            length,
                            uses_allowed: uses,
                            expiry_time,
                        },
                    )
                    .await
                    .map_err(err)?;
                println!("{}", t.token);
            }
            TokenCommand::List => {
                println!(
                    "{:<66} {:>7} {:>7} {:>9}  expires",
                    "token", "allowed", "pending", "completed"
                );
                for t in admin.tokens.list(None).await.map_err(err)? {
                    println!(
                        "{:<66} {:>7} {:>7} {:>9}  {}",
                        t.token,
                        t.uses_allowed
                            .map(|u| u.to_string())
                            .unwrap_or_else(|| "any".into()),
                        t.pending,
                        t.completed,
                        t.expiry_time.map(utc).unwrap_or_else(|| "never".into())
                    );
                }
            }
            TokenCommand::Delete { token } => {
                admin
                    .tokens
                    .delete(&Actor::Cli, &token)
                    .await
                    .map_err(err)?;
                println!("deleted");
            }
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn utc_formats_civil_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_700_000_000_000), "2023-11-14 22:13 UTC");
    }
}
