//! Creating the world: users, then rooms drawn from a size distribution (direct chats, groups of
//! 5–50, a few rooms of 500–2,000), then memberships. Idempotent per state file: an existing file
//! is reused, so a slow population is paid once.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::client::{self, Registration};
use crate::state::{BenchRoom, BenchUser, World};

pub struct PopulateArgs {
    pub server: String,
    pub users: usize,
    pub registration: Registration,
    pub password: String,
    pub prefix: String,
    pub concurrency: usize,
    pub seed: u64,
}

fn bar(len: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(what.to_owned());
    pb
}

/// Room sizes for `n` users: about one direct chat per user, a group per ten users, and one
/// large room per ten thousand users (at least one, at most ten).
pub fn room_sizes(n: usize, rng: &mut impl Rng) -> Vec<usize> {
    let mut sizes = Vec::new();
    if n < 2 {
        return sizes;
    }
    sizes.extend(std::iter::repeat_n(2, n / 2));
    for _ in 0..(n / 10).max(1) {
        sizes.push(rng.gen_range(5..=50).min(n));
    }
    if n >= 500 {
        for _ in 0..(n / 10_000).clamp(1, 10) {
            sizes.push(rng.gen_range(500..=2000).min(n));
        }
    }
    sizes
}

pub async fn populate(args: PopulateArgs, state: &Path) -> Result<World> {
    if state.exists() {
        let world = World::load(state)?;
        if world.server == args.server && world.users.len() >= args.users {
            eprintln!(
                "reusing {} ({} users, {} rooms)",
                state.display(),
                world.users.len(),
                world.rooms.len()
            );
            return Ok(world);
        }
        bail!(
            "{} exists for another server or fewer users; remove it to populate anew",
            state.display()
        );
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let base = Arc::new(args.server.clone());
    let started = Instant::now();

    let pb = bar(args.users, "users");
    let results: Vec<Result<BenchUser>> = futures::stream::iter(0..args.users)
        .map(|i| {
            let (http, base, mode, pw, name) = (
                http.clone(),
                base.clone(),
                args.registration.clone(),
                args.password.clone(),
                format!("{}{i}", args.prefix),
            );
            let pb = pb.clone();
            async move {
                let (user_id, token, _) = client::register(&http, &base, &mode, &name, &pw).await?;
                pb.inc(1);
                Ok(BenchUser { user_id, token })
            }
        })
        .buffered(args.concurrency)
        .collect()
        .await;
    pb.finish();
    let users = results.into_iter().collect::<Result<Vec<_>>>()?;

    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let sizes = room_sizes(users.len(), &mut rng);
    // Direct chats pair users in a shuffled order; other rooms draw members at random.
    let mut order: Vec<usize> = (0..users.len()).collect();
    order.shuffle(&mut rng);
    let mut plans: Vec<Vec<usize>> = Vec::with_capacity(sizes.len());
    let mut pair = order.chunks(2);
    for size in sizes {
        if size == 2 {
            if let Some(p) = pair.next().filter(|p| p.len() == 2) {
                plans.push(p.to_vec());
            }
        } else {
            let mut m: Vec<usize> =
                rand::seq::index::sample(&mut rng, users.len(), size).into_vec();
            m.sort_unstable();
            plans.push(m);
        }
    }

    let pb = bar(plans.len(), "rooms");
    let users = Arc::new(users);
    let rooms: Vec<Result<BenchRoom>> = futures::stream::iter(plans.into_iter().enumerate())
        .map(|(i, members)| {
            let (http, base, users, pb) = (http.clone(), base.clone(), users.clone(), pb.clone());
            async move {
                let creator = &users[members[0]];
                let room_id =
                    client::create_room(&http, &base, &creator.token, &format!("bench room {i}"))
                        .await?;
                for &m in &members[1..] {
                    client::join(&http, &base, &users[m].token, &room_id).await?;
                }
                pb.inc(1);
                Ok(BenchRoom { room_id, members })
            }
        })
        .buffered(args.concurrency)
        .collect()
        .await;
    pb.finish();
    let rooms = rooms.into_iter().collect::<Result<Vec<_>>>()?;
    let world = World {
        server: args.server,
        users: Arc::try_unwrap(users).unwrap_or_else(|a| (*a).clone()),
        rooms,
        heavy_user: None,
    };
    world.save(state)?;
    let members: usize = world.rooms.iter().map(|r| r.members.len()).sum();
    eprintln!(
        "populated {} users, {} rooms, {} memberships in {:.1}s",
        world.users.len(),
        world.rooms.len(),
        members,
        started.elapsed().as_secs_f64()
    );
    Ok(world)
}

/// Ensures a user who is a member of `rooms` rooms exists in the world.
pub async fn ensure_heavy_user(
    world: &mut World,
    rooms: usize,
    mode: &Registration,
    password: &str,
    concurrency: usize,
    state: &Path,
) -> Result<BenchUser> {
    if let Some((u, n)) = &world.heavy_user
        && *n >= rooms
    {
        return Ok(u.clone());
    }
    let http = reqwest::Client::new();
    let name = format!("benchheavy{}", rand::random::<u32>());
    let (user_id, token, _) = client::register(&http, &world.server, mode, &name, password).await?;
    let pb = bar(rooms, "heavy rooms");
    let base = world.server.clone();
    let results: Vec<Result<()>> = futures::stream::iter(0..rooms)
        .map(|i| {
            let (http, base, token, pb) = (http.clone(), base.clone(), token.clone(), pb.clone());
            async move {
                let room = client::create_room(&http, &base, &token, &format!("heavy {i}")).await?;
                for j in 0..3u64 {
                    client::send(&http, &base, &token, &room, &format!("h{i}-{j}"), j).await?;
                }
                pb.inc(1);
                Ok(())
            }
        })
        .buffered(concurrency)
        .collect()
        .await;
    pb.finish();
    results.into_iter().collect::<Result<Vec<_>>>()?;
    let user = BenchUser { user_id, token };
    world.heavy_user = Some((user.clone(), rooms));
    world.save(state)?;
    Ok(user)
}
