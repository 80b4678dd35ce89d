//! The `sync` scenario: N clients each hold a long-poll /sync while senders post at a total
//! rate; delivery latency is measured from the start of the send request to the moment the event
//! arrives in each recipient's sync response.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::client::{self, Transport};
use crate::h2;
use crate::procstat::{Sampler, Usage};
use crate::report::{Errors, Percentiles, SecondPoint, histogram, summarise, svg_plot};
use crate::state::World;

pub struct SyncArgs {
    pub clients: usize,
    pub rate: f64,
    pub duration: Duration,
    pub ramp: Duration,
    pub http2: bool,
    pub streams_per_connection: usize,
    pub source_addrs: u8,
    pub long_poll_ms: u64,
    pub min_members: usize,
    pub seed: u64,
    pub server_pid: Option<u32>,
}

#[derive(Serialize)]
pub struct SyncResult {
    pub scenario: &'static str,
    pub server: String,
    pub clients: usize,
    /// Clients whose initial sync had returned when sending started.
    pub ready_before_sending: usize,
    pub transport: String,
    pub rate_per_sec: f64,
    pub duration_secs: f64,
    /// Seed of the room and sender choice.
    pub seed: u64,
    pub sent: u64,
    /// Messages sent into rooms of 500 members or more: each is a burst of deliveries, and
    /// their number (random, fixed by the seed) shapes the tail.
    pub large_room_messages: u64,
    pub expected_deliveries: u64,
    pub delivered: u64,
    pub missing: u64,
    /// Incremental sync responses received while sending (from its start to the end of the
    /// grace period): each delivery costs one, and every further response per delivery (e.g. a
    /// second one carrying only changed unread counts) is work the server could have saved.
    pub sync_responses: u64,
    pub errors: Errors,
    pub delivery_latency_ms: Percentiles,
    pub send_latency_ms: Percentiles,
    pub initial_sync_ms: Percentiles,
    pub server_usage: Option<Usage>,
    pub bench_usage: Usage,
    pub per_second: Vec<SecondPoint>,
}

struct Shared {
    /// id → (send start, remaining deliveries)
    pending: Mutex<HashMap<u64, (Instant, u32)>>,
    delivery: Mutex<Histogram<u64>>,
    send: Mutex<Histogram<u64>>,
    initial: Mutex<Histogram<u64>>,
    per_second: Mutex<Vec<Histogram<u64>>>,
    errors: Mutex<Errors>,
    delivered: AtomicU64,
    /// Incremental sync responses since sending started.
    responses: AtomicU64,
    /// Set when sending starts (read on every response; cheaper than the lock below).
    sending: AtomicBool,
    ready: AtomicUsize,
    sending_started: Mutex<Option<Instant>>,
}

impl Shared {
    fn record_delivery(&self, id: u64) {
        let now = Instant::now();
        let start = {
            let mut p = self.pending.lock();
            match p.get_mut(&id) {
                Some((start, left)) => {
                    let s = *start;
                    *left = left.saturating_sub(1);
                    if *left == 0 {
                        p.remove(&id);
                    }
                    s
                }
                None => return,
            }
        };
        let us = now.duration_since(start).as_micros().max(1) as u64;
        let _ = self.delivery.lock().record(us);
        self.delivered.fetch_add(1, Ordering::Relaxed);
        if let Some(t0) = *self.sending_started.lock() {
            let sec = now.duration_since(t0).as_secs() as usize;
            let mut ps = self.per_second.lock();
            while ps.len() <= sec {
                ps.push(histogram());
            }
            let _ = ps[sec].record(us);
        }
    }
}

/// How long past its long-poll timeout a sync may take before it counts as `sync:timeout`.
const SYNC_GRACE: Duration = Duration::from_secs(60);

/// One HTTP/1.1 connection per client, spread over 127.0.0.x so the source ports of one address
/// do not run out.
fn http1_client(args: &SyncArgs, i: usize) -> Result<reqwest::Client> {
    let n = args.source_addrs.max(1);
    let addr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % n as usize) as u8));
    // The pool can open a second connection when a request follows the previous response
    // before the first connection is back in the pool; dropping idle ones soon keeps the
    // client at one connection, as the scenario promises.
    Ok(reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(1)
        .pool_idle_timeout(Duration::from_secs(1))
        .local_address(addr)
        .build()?)
}

pub async fn run(world: &World, args: SyncArgs) -> Result<SyncResult> {
    if args.clients > world.users.len() {
        bail!(
            "{} clients asked for but the world has {} users",
            args.clients,
            world.users.len()
        );
    }
    let base = Arc::new(world.server.clone());
    let shared = Arc::new(Shared {
        pending: Mutex::default(),
        delivery: Mutex::new(histogram()),
        send: Mutex::new(histogram()),
        initial: Mutex::new(histogram()),
        per_second: Mutex::default(),
        errors: Mutex::default(),
        delivered: AtomicU64::new(0),
        responses: AtomicU64::new(0),
        sending: AtomicBool::new(false),
        ready: AtomicUsize::new(0),
        sending_started: Mutex::new(None),
    });
    let server_sampler = args.server_pid.map(|p| Sampler::start(p.to_string()));
    let bench_sampler = Sampler::start("self".into());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    // Clients.
    let mut conns: Vec<Arc<h2::Connection>> = Vec::new();
    // Filters are uploaded once per client, over a pool of their own in the HTTP/2 scenario.
    let filter_pool = reqwest::Client::new();
    let per_conn = args.streams_per_connection.max(1);
    let pb = ProgressBar::new(args.clients as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_message("syncing");
    let mut tasks = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let (http, filter_http) = if args.http2 {
            if i % per_conn == 0 {
                conns.push(Arc::new(h2::Connection::new(base.as_str())?));
            }
            let conn = conns
                .last()
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("no connection"))?;
            (Transport::H2(conn), filter_pool.clone())
        } else {
            let c = http1_client(&args, i)?;
            (Transport::Http(c.clone()), c)
        };
        let token = client::AccessToken::new(&world.users[i].token)?;
        let user_id = world.users[i].user_id.clone();
        let (base, shared, mut stop, pb) =
            (base.clone(), shared.clone(), stop_rx.clone(), pb.clone());
        let delay = args.ramp.mul_f64(i as f64 / args.clients.max(1) as f64);
        let long_poll = args.long_poll_ms;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut since: Option<String> = None;
            // The live filter is uploaded once, and its id named in every long poll, as real
            // clients do; the initial sync names its filter inline.
            let mut live_filter: Option<String> = None;
            loop {
                if *stop.borrow() {
                    return;
                }
                if since.is_some() && live_filter.is_none() {
                    match client::create_filter(
                        &filter_http,
                        &base,
                        &token.text,
                        &user_id,
                        client::LIVE_FILTER,
                    )
                    .await
                    {
                        Ok(id) => live_filter = Some(id),
                        Err(_) => {
                            shared.errors.lock().add("filter");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    }
                }
                let t = Instant::now();
                let timeout = if since.is_some() { long_poll } else { 0 };
                let filter = live_filter.as_deref().unwrap_or(client::INITIAL_FILTER);
                let res = tokio::select! {
                    r = client::sync(
                        &http, &base, &token, filter, since.as_deref(), timeout, SYNC_GRACE,
                    ) => r,
                    _ = stop.changed() => return,
                };
                match res {
                    Ok((200, Some(next), ids, _)) => {
                        if since.is_none() {
                            let _ = shared
                                .initial
                                .lock()
                                .record(t.elapsed().as_micros().max(1) as u64);
                            shared.ready.fetch_add(1, Ordering::Relaxed);
                            pb.inc(1);
                        }
                        if since.is_some() && shared.sending.load(Ordering::Relaxed) {
                            shared.responses.fetch_add(1, Ordering::Relaxed);
                        }
                        for id in ids {
                            shared.record_delivery(id);
                        }
                        since = Some(next);
                    }
                    Ok((status, _, _, _)) => {
                        shared.errors.lock().add(format!("sync:{status}"));
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(e) => {
                        let timed_out = e
                            .downcast_ref::<reqwest::Error>()
                            .is_some_and(reqwest::Error::is_timeout)
                            || e.downcast_ref::<h2::TimedOut>().is_some();
                        let kind = if timed_out { "sync:timeout" } else { "sync:io" };
                        shared.errors.lock().add(kind);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }));
    }

    // Wait for the ramp: every client has done its initial sync (bounded).
    let deadline = Instant::now() + args.ramp + Duration::from_secs(120);
    while shared.ready.load(Ordering::Relaxed) < args.clients && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pb.finish();
    let ready_before_sending = shared.ready.load(Ordering::Relaxed);
    if ready_before_sending < args.clients {
        eprintln!(
            "only {ready_before_sending} of {} clients finished their initial sync; sending anyway",
            args.clients
        );
    }
    // Parked syncs need a moment to be issued after their initial sync returned.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Senders.
    let active = args.clients;
    let rooms: Vec<(String, Vec<usize>, u32)> = world
        .rooms
        .iter()
        .filter(|r| r.members.len() >= args.min_members)
        .map(|r| {
            (
                r.room_id.clone(),
                r.members.clone(),
                r.members.iter().filter(|m| **m < active).count() as u32,
            )
        })
        .filter(|r| r.2 > 0)
        .collect();
    if rooms.is_empty() {
        bail!(
            "no room with at least {} members has an active member",
            args.min_members
        );
    }
    // Idle connections are dropped before a server's usual 30 s idle limit closes them.
    let sender_http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(Duration::from_secs(20))
        .build()?;
    // A line, not only a bar: logs and scripts (a profiler to start) see the phase change.
    eprintln!(
        "sending: {} msg/s for {} s to {} rooms",
        args.rate,
        args.duration.as_secs(),
        rooms.len()
    );
    let started = Instant::now();
    *shared.sending_started.lock() = Some(started);
    shared.sending.store(true, Ordering::Relaxed);
    let next_id = Arc::new(AtomicU64::new(rand::random::<u32>() as u64 * 1_000_000));
    let sent = Arc::new(AtomicU64::new(0));
    let mut large_room_messages = 0u64;
    let expected = Arc::new(AtomicU64::new(0));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate.max(0.001)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let send_pb = ProgressBar::new(args.duration.as_secs());
    send_pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len}s")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    send_pb.set_message("sending");
    let mut sends = tokio::task::JoinSet::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    while started.elapsed() < args.duration {
        tick.tick().await;
        send_pb.set_position(started.elapsed().as_secs());
        let (room_id, members, active_members) = rooms[rng.gen_range(0..rooms.len())].clone();
        let sender = members[rng.gen_range(0..members.len())];
        if members.len() >= 500 {
            large_room_messages += 1;
        }
        let token = world.users[sender].token.clone();
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        shared
            .pending
            .lock()
            .insert(id, (Instant::now(), active_members));
        let (http, base, shared, sent, expected) = (
            sender_http.clone(),
            base.clone(),
            shared.clone(),
            sent.clone(),
            expected.clone(),
        );
        sends.spawn(async move {
            let t = Instant::now();
            match client::send(&http, &base, &token, &room_id, &format!("b{id}"), id).await {
                Ok(200) => {
                    let _ = shared
                        .send
                        .lock()
                        .record(t.elapsed().as_micros().max(1) as u64);
                    sent.fetch_add(1, Ordering::Relaxed);
                    expected.fetch_add(active_members as u64, Ordering::Relaxed);
                }
                Ok(status) => {
                    shared.pending.lock().remove(&id);
                    shared.errors.lock().add(format!("send:{status}"));
                }
                Err(_) => {
                    shared.pending.lock().remove(&id);
                    shared.errors.lock().add("send:io");
                }
            }
        });
        while sends.try_join_next().is_some() {}
    }
    send_pb.finish();
    while sends.join_next().await.is_some() {}
    // Let the last deliveries arrive (bounded).
    let grace = Instant::now() + Duration::from_secs(10);
    while shared.delivered.load(Ordering::Relaxed) < expected.load(Ordering::Relaxed)
        && Instant::now() < grace
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let duration = started.elapsed();
    let _ = stop_tx.send(true);
    for t in tasks {
        t.abort();
    }
    let server_usage = match server_sampler {
        Some(s) => Some(s.finish().await),
        None => None,
    };
    let bench_usage = bench_sampler.finish().await;
    let per_second = shared
        .per_second
        .lock()
        .iter()
        .enumerate()
        .map(|(t, h)| SecondPoint {
            t: t as u64,
            count: h.len(),
            p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
            p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
        })
        .collect();
    let delivered = shared.delivered.load(Ordering::Relaxed);
    let expected = expected.load(Ordering::Relaxed);
    let result = SyncResult {
        scenario: "sync",
        server: world.server.clone(),
        clients: args.clients,
        ready_before_sending,
        transport: if args.http2 {
            format!("http2, {per_conn} clients per connection")
        } else {
            "http1.1, one connection per client".into()
        },
        rate_per_sec: args.rate,
        seed: args.seed,
        duration_secs: duration.as_secs_f64(),
        sent: sent.load(Ordering::Relaxed),
        large_room_messages,
        expected_deliveries: expected,
        delivered,
        missing: expected.saturating_sub(delivered),
        sync_responses: shared.responses.load(Ordering::Relaxed),
        errors: shared.errors.lock().clone(),
        delivery_latency_ms: summarise(&shared.delivery.lock()),
        send_latency_ms: summarise(&shared.send.lock()),
        initial_sync_ms: summarise(&shared.initial.lock()),
        server_usage,
        bench_usage,
        per_second,
    };
    Ok(result)
}

pub fn plot(r: &SyncResult) -> String {
    svg_plot(
        &format!(
            "{} clients, {} msg/s: delivery latency per second",
            r.clients, r.rate_per_sec
        ),
        &r.per_second,
    )
}
