//! The `send` scenario: K senders in a closed loop (each sends its next message when the last
//! was acknowledged) for a fixed time; throughput and acknowledgement latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use parking_lot::Mutex;
use serde::Serialize;

use crate::client;
use crate::procstat::{Sampler, Usage};
use crate::report::{Errors, Percentiles, histogram, summarise};
use crate::state::World;

#[derive(Serialize)]
pub struct SendResult {
    pub scenario: &'static str,
    pub server: String,
    pub senders: usize,
    pub duration_secs: f64,
    pub sent: u64,
    pub messages_per_sec: f64,
    pub errors: Errors,
    pub latency_ms: Percentiles,
    pub server_usage: Option<Usage>,
    pub bench_usage: Usage,
}

pub async fn run(
    world: &World,
    senders: usize,
    duration: Duration,
    server_pid: Option<u32>,
) -> Result<SendResult> {
    // Each sender uses a room it is a member of, preferring distinct rooms.
    let mut plan = Vec::new();
    for room in world.rooms.iter().filter(|r| r.members.len() >= 2) {
        if plan.len() == senders {
            break;
        }
        plan.push((
            world.users[room.members[0]].token.clone(),
            room.room_id.clone(),
        ));
    }
    if plan.is_empty() {
        bail!("the world has no rooms to send into");
    }
    while plan.len() < senders {
        let again = plan[plan.len() % plan.len().max(1)].clone();
        plan.push(again);
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(senders)
        .build()?;
    let hist = Arc::new(Mutex::new(histogram()));
    let errors = Arc::new(Mutex::new(Errors::default()));
    let server_sampler = server_pid.map(|p| Sampler::start(p.to_string()));
    let bench_sampler = Sampler::start("self".into());
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (i, (token, room)) in plan.into_iter().enumerate() {
        let (http, base, hist, errors) = (
            http.clone(),
            world.server.clone(),
            hist.clone(),
            errors.clone(),
        );
        set.spawn(async move {
            let mut n = 0u64;
            let nonce: u32 = rand::random();
            while started.elapsed() < duration {
                let t = Instant::now();
                match client::send(&http, &base, &token, &room, &format!("s{nonce}-{i}-{n}"), n)
                    .await
                {
                    Ok(200) => {
                        let _ = hist.lock().record(t.elapsed().as_micros().max(1) as u64);
                    }
                    Ok(status) => errors.lock().add(format!("send:{status}")),
                    Err(_) => errors.lock().add("send:io"),
                }
                n += 1;
            }
        });
    }
    while set.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    let latency = summarise(&hist.lock());
    let errors = errors.lock().clone();
    let server_usage = match server_sampler {
        Some(s) => Some(s.finish().await),
        None => None,
    };
    Ok(SendResult {
        scenario: "send",
        server: world.server.clone(),
        senders,
        duration_secs: elapsed,
        sent: latency.count,
        messages_per_sec: latency.count as f64 / elapsed,
        errors,
        latency_ms: latency,
        server_usage,
        bench_usage: bench_sampler.finish().await,
    })
}
