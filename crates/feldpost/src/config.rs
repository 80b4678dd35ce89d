//! Loading the configuration: the TOML file (if any), then command-line overrides.

use std::path::Path;

use anyhow::Context;
use feldpost_service::config::Config;

pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading config {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing config {}", p.display()))
        }
        None => Ok(Config::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let text = include_str!("../../../feldpost.example.toml");
        let c: Config = toml::from_str(text).expect("example config parses");
        assert_eq!(c.server_name, "example.org");
        assert!(!c.registration.open);
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Config>("nonsense = 1").is_err());
    }
}
