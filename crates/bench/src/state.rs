//! The populated world (users with tokens, rooms with members), saved once and reused by runs.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchUser {
    pub user_id: String,
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchRoom {
    pub room_id: String,
    /// Indexes into `users`.
    pub members: Vec<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct World {
    pub server: String,
    pub users: Vec<BenchUser>,
    pub rooms: Vec<BenchRoom>,
    /// A user joined to many rooms, for the initial-sync scenario.
    #[serde(default)]
    pub heavy_user: Option<(BenchUser, usize)>,
}

impl World {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading state file {}", path.display()))?;
        serde_json::from_str(&text).context("parsing state file")
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(self)?)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}
