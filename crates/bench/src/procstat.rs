//! CPU and memory of a local process, sampled from /proc: the server's (when its pid is given)
//! and the load generator's own, so that a reported limit can be told apart from our overhead.

use std::time::{Duration, Instant};

/// Linux reports CPU time in clock ticks of 1/100 s on every common configuration.
const TICKS_PER_SEC: f64 = 100.0;

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Usage {
    pub cpu_percent_avg: f64,
    pub rss_max_mib: f64,
    pub rss_end_mib: f64,
}

fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may itself contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn rss_mib(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Samples a process every second in the background until stopped.
pub struct Sampler {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Usage>,
}

impl Sampler {
    /// `pid` is a number or `self`.
    pub fn start(pid: String) -> Self {
        let (stop, mut rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let t0 = cpu_ticks(&pid).unwrap_or(0);
            let mut usage = Usage::default();
            loop {
                if let Some(r) = rss_mib(&pid) {
                    usage.rss_max_mib = usage.rss_max_mib.max(r);
                    usage.rss_end_mib = r;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = rx.changed() => break,
                }
            }
            let secs = start.elapsed().as_secs_f64().max(0.001);
            let ticks = cpu_ticks(&pid).unwrap_or(t0).saturating_sub(t0);
            usage.cpu_percent_avg = ticks as f64 / TICKS_PER_SEC / secs * 100.0;
            usage
        });
        Self { stop, task }
    }

    pub async fn finish(self) -> Usage {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}
