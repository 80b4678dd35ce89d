//! The server's ed25519 signing key: generated on first start, kept in the data directory, used to
//! sign every PDU this server creates.

use std::path::Path;

use base64::Engine;
use ruma::signatures::Ed25519KeyPair;

use crate::{Error, Result};

pub struct SigningKey {
    pub pair: Ed25519KeyPair,
    /// `ed25519:<version>`
    pub key_id: String,
}

impl SigningKey {
    /// Loads the key from `path`, or creates it there (readable by the owner only).
    pub fn load_or_generate(path: &Path) -> Result<Self> {
        let der = if path.exists() {
            std::fs::read(path).map_err(|e| Error::internal(format!("reading signing key: {e}")))?
        } else {
            let der = Ed25519KeyPair::generate();
            write_private(path, &der)?;
            tracing::info!(path = %path.display(), "generated a new signing key");
            der.to_vec()
        };
        // The version is derived from the public key so that a replaced key gets a new id.
        let probe = Ed25519KeyPair::from_der(&der, "0".into())
            .map_err(|e| Error::internal(format!("signing key unreadable: {e}")))?;
        let version: String = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(probe.public_key())
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(6)
            .collect();
        let pair = Ed25519KeyPair::from_der(&der, version.clone())
            .map_err(|e| Error::internal(format!("signing key unreadable: {e}")))?;
        Ok(Self {
            pair,
            key_id: format!("ed25519:{version}"),
        })
    }

    pub fn public_key_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(self.pair.public_key())
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| Error::internal(format!("writing signing key: {e}")))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::internal(format!("writing signing key: {e}")))
}
