//! The `initial-sync` scenario: a user in R rooms does a full initial sync, repeatedly.

use std::time::Instant;

use anyhow::{Result, bail};
use serde::Serialize;

use crate::client::enc;
use crate::report::{Percentiles, histogram, summarise};
use crate::state::BenchUser;

#[derive(Serialize)]
pub struct InitialSyncResult {
    pub scenario: &'static str,
    pub server: String,
    pub rooms: usize,
    pub repeats: usize,
    pub response_bytes: usize,
    pub latency_ms: Percentiles,
}

/// What a typical client asks for on first start: ten events per room, lazy-loaded members. Each
/// repeat excludes a different event type that never occurs, so that a server's response cache
/// cannot answer a repeat without doing the work.
fn filter(repeat: usize) -> String {
    format!(
        r#"{{"room":{{"timeline":{{"limit":10,"not_types":["org.feldpost.bench.repeat.{repeat}"]}},"state":{{"lazy_load_members":true}}}}}}"#
    )
}

pub async fn run(
    server: &str,
    user: &BenchUser,
    rooms: usize,
    repeats: usize,
) -> Result<InitialSyncResult> {
    let http = reqwest::Client::new();
    let mut hist = histogram();
    let mut bytes = 0;
    for repeat in 0..repeats.max(1) {
        let t = Instant::now();
        let resp = http
            .get(format!(
                "{server}/_matrix/client/v3/sync?filter={}",
                enc(&filter(repeat))
            ))
            .bearer_auth(&user.token)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await?;
        if status != 200 {
            bail!("initial sync failed with HTTP {status}");
        }
        let _ = hist.record(t.elapsed().as_micros().max(1) as u64);
        bytes = body.len();
    }
    Ok(InitialSyncResult {
        scenario: "initial-sync",
        server: server.to_owned(),
        rooms,
        repeats: repeats.max(1),
        response_bytes: bytes,
        latency_ms: summarise(&hist),
    })
}
