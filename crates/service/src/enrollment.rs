//! Registration tokens (`m.login.registration_token`) and enrollments: tokens bound to one
//! username, single use and short-lived, that an operator hands to a new member as a QR code.
//! Tokens are looked up by their SHA-256 and then compared in constant time; every change is
//! written to the admin audit trail.

use std::sync::Arc;

pub use feldpost_storage::{ClaimedToken, RegistrationTokenRecord, RegistrationTokenUpdate};
use feldpost_storage::{NewAuditEntry, NewRegistrationToken, Reservation, Store};
use rand::Rng;
use ruma::{OwnedServerName, OwnedUserId};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::accounts::{hash_token, valid_localpart};
use crate::rooms::append::now_ms;
use crate::{Error, ErrorKind, Result};

/// The spec's limit for registration tokens.
pub const MAX_TOKEN_LENGTH: usize = 64;
/// Length of generated plain tokens when the operator names none.
pub const DEFAULT_TOKEN_LENGTH: usize = 16;
/// Enrollment tokens are longer: they travel only inside a link or QR code.
const ENROLLMENT_TOKEN_LENGTH: usize = 32;
/// Longest lifetime an enrollment may be given: a week.
pub const MAX_ENROLLMENT_MINUTES: u64 = 7 * 24 * 60;
const MAX_DISPLAYNAME_CHARS: usize = 256;
/// How long a registration that passed the token stage holds its reservation (the lifetime of a
/// user-interactive-auth session).
const RESERVATION_MS: i64 = 15 * 60 * 1000;
/// Characters of the spec's opaque-identifier grammar; generated tokens use all of them.
const TOKEN_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-";
const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Who performed an administrative action, for the audit trail.
#[derive(Debug, Clone)]
pub enum Actor {
    User(OwnedUserId),
    /// `feldpost admin …` on the server machine.
    Cli,
    /// The server itself (shared-secret registration, background upkeep).
    Server,
}

impl Actor {
    pub fn as_audit(&self) -> String {
        match self {
            Actor::User(u) => u.to_string(),
            Actor::Cli => "cli".into(),
            Actor::Server => "server".into(),
        }
    }
}

/// Appends one row to the admin audit trail.
pub(crate) async fn audit(
    store: &dyn Store,
    actor: &Actor,
    action: &str,
    target: Option<&str>,
    details: Value,
) -> Result<()> {
    store
        .append_admin_audit(NewAuditEntry {
            ts_ms: now_ms(),
            actor: actor.as_audit(),
            action: action.into(),
            target: target.map(str::to_owned),
            details: details.to_string(),
        })
        .await?;
    Ok(())
}

/// Where a token stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    Valid,
    /// Every allowed use has completed (an enrollment after its registration).
    Used,
    /// The remaining uses are held by registrations in progress.
    Exhausted,
    Expired,
    Revoked,
}

impl TokenState {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Valid => "valid",
            TokenState::Used => "used",
            TokenState::Exhausted => "pending",
            TokenState::Expired => "expired",
            TokenState::Revoked => "revoked",
        }
    }
}

/// The state of a token at `now_ms`.
pub fn token_state(t: &RegistrationTokenRecord, now_ms: i64) -> TokenState {
    if t.revoked_ms.is_some() {
        return TokenState::Revoked;
    }
    if let Some(u) = t.uses_allowed {
        if t.completed >= u {
            return TokenState::Used;
        }
        if t.completed + t.pending >= u {
            return TokenState::Exhausted;
        }
    }
    if t.expiry_time.is_some_and(|e| e <= now_ms) {
        return TokenState::Expired;
    }
    TokenState::Valid
}

/// What an operator asks for when creating a plain token.
#[derive(Debug, Clone, Default)]
pub struct NewToken {
    pub token: Option<String>,
    pub length: Option<usize>,
    pub uses_allowed: Option<i64>,
    pub expiry_time: Option<i64>,
}

/// What an operator asks for when enrolling a new member.
#[derive(Debug, Clone, Default)]
pub struct NewEnrollment {
    /// The localpart (or full user id on this server) the new member will get.
    pub username: String,
    pub displayname: Option<String>,
    /// Defaults to the configured lifetime.
    pub lifetime_minutes: Option<u64>,
}

pub struct RegistrationTokens {
    store: Arc<dyn Store>,
    server_name: OwnedServerName,
    enrollment_minutes: u64,
}

fn random_from(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| char::from(alphabet[rng.gen_range(0..alphabet.len())]))
        .collect()
}

/// Whether `token` is a well-formed registration token (the spec's opaque identifier grammar,
/// at most 64 characters).
pub fn valid_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_TOKEN_LENGTH
        && token.bytes().all(|b| TOKEN_ALPHABET.contains(&b))
}

fn invalid_token() -> Error {
    Error::forbidden("Invalid registration token")
}

/// The link a QR code carries: the public enrollment page of this token.
pub fn enrollment_link(base_url: &str, token: &str) -> String {
    format!(
        "{}/_feldpost/enroll/{token}",
        base_url.trim_end_matches('/')
    )
}

/// The link as an SVG QR code (medium error correction: readable from a screen at an angle).
pub fn qr_svg(data: &str) -> Result<String> {
    let code = qrcode::QrCode::with_error_correction_level(data.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| Error::invalid_param(format!("cannot encode QR code: {e}")))?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .build())
}

/// The link as a QR code for a terminal, two modules per character cell. Dark modules are drawn
/// as blanks so that the code reads correctly on the usual dark terminal background.
pub fn qr_terminal(data: &str) -> Result<String> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::with_error_correction_level(data.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| Error::invalid_param(format!("cannot encode QR code: {e}")))?;
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

impl RegistrationTokens {
    pub fn new(
        store: Arc<dyn Store>,
        server_name: OwnedServerName,
        enrollment_minutes: u64,
    ) -> Self {
        Self {
            store,
            server_name,
            enrollment_minutes: enrollment_minutes.clamp(1, MAX_ENROLLMENT_MINUTES),
        }
    }

    /// Finds a token by its text, comparing in constant time after the lookup by hash.
    pub async fn find(&self, token: &str) -> Result<Option<RegistrationTokenRecord>> {
        if token.is_empty() || token.len() > MAX_TOKEN_LENGTH {
            return Ok(None);
        }
        let rec = self
            .store
            .registration_token(&hash_token(token), now_ms())
            .await?;
        Ok(rec.filter(|r| bool::from(r.token.as_bytes().ct_eq(token.as_bytes()))))
    }

    /// `GET /register/m.login.registration_token/validity`: whether the token could be used now.
    pub async fn is_valid(&self, token: &str) -> Result<bool> {
        Ok(self
            .find(token)
            .await?
            .is_some_and(|t| token_state(&t, now_ms()) == TokenState::Valid))
    }

    // ---- plain tokens (the Synapse-compatible admin API) ----

    pub async fn list(&self, valid: Option<bool>) -> Result<Vec<RegistrationTokenRecord>> {
        let now = now_ms();
        let mut all = self.store.registration_tokens(false, now).await?;
        all.extend(self.store.registration_tokens(true, now).await?);
        all.sort_by_key(|t| std::cmp::Reverse(t.id));
        if let Some(v) = valid {
            all.retain(|t| (token_state(t, now) == TokenState::Valid) == v);
        }
        Ok(all)
    }

    pub async fn get(&self, token: &str) -> Result<RegistrationTokenRecord> {
        self.find(token)
            .await?
            .ok_or_else(|| Error::not_found("No such registration token"))
    }

    pub async fn create(&self, actor: &Actor, new: NewToken) -> Result<RegistrationTokenRecord> {
        let token = match new.token {
            Some(t) => {
                if !valid_token(&t) {
                    return Err(Error::invalid_param(
                        "token must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '~' and '-'",
                    ));
                }
                t
            }
            None => {
                let len = new.length.unwrap_or(DEFAULT_TOKEN_LENGTH);
                if !(1..=MAX_TOKEN_LENGTH).contains(&len) {
                    return Err(Error::invalid_param("length must be between 1 and 64"));
                }
                random_from(TOKEN_ALPHABET, len)
            }
        };
        check_uses(new.uses_allowed)?;
        check_expiry(new.expiry_time)?;
        let id = self
            .store
            .create_registration_token(NewRegistrationToken {
                token_hash: hash_token(&token),
                token: token.clone(),
                uses_allowed: new.uses_allowed,
                expiry_time: new.expiry_time,
                bound_localpart: None,
                displayname: None,
                created_by: actor.as_audit(),
                created_ms: now_ms(),
            })
            .await
            .map_err(|e| match e {
                feldpost_storage::StorageError::Conflict(_) => {
                    Error::invalid_param("Token already exists")
                }
                other => other.into(),
            })?;
        audit(
            &*self.store,
            actor,
            "registration_token.create",
            Some(&format!("token:{id}")),
            json!({"uses_allowed": new.uses_allowed, "expiry_time": new.expiry_time}),
        )
        .await?;
        self.by_id(id).await
    }

    pub async fn update(
        &self,
        actor: &Actor,
        token: &str,
        update: RegistrationTokenUpdate,
    ) -> Result<RegistrationTokenRecord> {
        let rec = self.get(token).await?;
        if let Some(u) = update.uses_allowed {
            check_uses(u)?;
        }
        if let Some(e) = update.expiry_time {
            check_expiry(e)?;
        }
        self.store
            .update_registration_token(&hash_token(token), update.clone())
            .await?;
        audit(
            &*self.store,
            actor,
            "registration_token.update",
            Some(&format!("token:{}", rec.id)),
            json!({"uses_allowed": update.uses_allowed, "expiry_time": update.expiry_time}),
        )
        .await?;
        self.by_id(rec.id).await
    }

    pub async fn delete(&self, actor: &Actor, token: &str) -> Result<()> {
        let rec = self.get(token).await?;
        self.store
            .delete_registration_token(&hash_token(&rec.token))
            .await?;
        audit(
            &*self.store,
            actor,
            "registration_token.delete",
            Some(&format!("token:{}", rec.id)),
            json!({"bound_localpart": rec.bound_localpart}),
        )
        .await
    }

    async fn by_id(&self, id: i64) -> Result<RegistrationTokenRecord> {
        self.store
            .registration_token_by_id(id, now_ms())
            .await?
            .ok_or_else(|| Error::not_found("No such registration token"))
    }

    // ---- enrollments ----

    /// Creates an enrollment: a token only `username` can register with, once, before it lapses.
    pub async fn create_enrollment(
        &self,
        actor: &Actor,
        new: NewEnrollment,
        user_exists: bool,
    ) -> Result<RegistrationTokenRecord> {
        let localpart = self.localpart(&new.username)?;
        if user_exists {
            return Err(Error::new(
                ErrorKind::UserInUse,
                "A user with this name already exists",
            ));
        }
        let minutes = new.lifetime_minutes.unwrap_or(self.enrollment_minutes);
        if !(1..=MAX_ENROLLMENT_MINUTES).contains(&minutes) {
            return Err(Error::invalid_param(format!(
                "lifetime must be between 1 and {MAX_ENROLLMENT_MINUTES} minutes"
            )));
        }
        let displayname = match new.displayname.map(|d| d.trim().to_owned()) {
            Some(d) if d.is_empty() => None,
            Some(d) if d.chars().count() > MAX_DISPLAYNAME_CHARS => {
                return Err(Error::invalid_param("display name is too long"));
            }
            Some(d) if d.chars().any(char::is_control) => {
                return Err(Error::invalid_param(
                    "display name may not contain control characters",
                ));
            }
            other => other,
        };
        let token = random_from(ALPHANUMERIC, ENROLLMENT_TOKEN_LENGTH);
        let expiry = now_ms().saturating_add(i64::try_from(minutes * 60_000).unwrap_or(i64::MAX));
        let id = self
            .store
            .create_registration_token(NewRegistrationToken {
                token_hash: hash_token(&token),
                token,
                uses_allowed: Some(1),
                expiry_time: Some(expiry),
                bound_localpart: Some(localpart.clone()),
                displayname: displayname.clone(),
                created_by: actor.as_audit(),
                created_ms: now_ms(),
            })
            .await?;
        audit(
            &*self.store,
            actor,
            "enrollment.create",
            Some(&format!("@{localpart}:{}", self.server_name)),
            json!({"enrollment": id, "expiry_time": expiry, "displayname": displayname}),
        )
        .await?;
        self.by_id(id).await
    }

    /// Enrollments, newest first; only those still usable unless `all`.
    pub async fn enrollments(&self, all: bool) -> Result<Vec<RegistrationTokenRecord>> {
        let now = now_ms();
        let mut list = self.store.registration_tokens(true, now).await?;
        if !all {
            list.retain(|t| {
                matches!(
                    token_state(t, now),
                    TokenState::Valid | TokenState::Exhausted
                )
            });
        }
        Ok(list)
    }

    pub async fn enrollment(&self, id: i64) -> Result<RegistrationTokenRecord> {
        match self.store.registration_token_by_id(id, now_ms()).await? {
            Some(t) if t.bound_localpart.is_some() => Ok(t),
            _ => Err(Error::not_found("No such enrollment")),
        }
    }

    /// Revokes an enrollment so that its link no longer works.
    pub async fn revoke_enrollment(&self, actor: &Actor, id: i64) -> Result<()> {
        let e = self.enrollment(id).await?;
        if !self.store.revoke_registration_token(id, now_ms()).await? {
            return Err(Error::new(
                ErrorKind::InvalidParam,
                "The enrollment is already revoked",
            ));
        }
        let target = e
            .bound_localpart
            .as_deref()
            .map(|l| format!("@{l}:{}", self.server_name));
        audit(
            &*self.store,
            actor,
            "enrollment.revoke",
            target.as_deref(),
            json!({"enrollment": id}),
        )
        .await
    }

    fn localpart(&self, name: &str) -> Result<String> {
        let local = match name.strip_prefix('@') {
            Some(rest) => {
                let (local, server) = rest
                    .split_once(':')
                    .ok_or_else(|| Error::new(ErrorKind::InvalidUsername, "Invalid user id"))?;
                if server != self.server_name.as_str() {
                    return Err(Error::new(
                        ErrorKind::InvalidUsername,
                        "User id is not on this server",
                    ));
                }
                local
            }
            None => name,
        };
        if !valid_localpart(local) || local.len() + self.server_name.as_str().len() + 2 > 255 {
            return Err(Error::new(
                ErrorKind::InvalidUsername,
                "User ID may only contain a-z, 0-9, '.', '_', '=', '-', '/' and '+'",
            ));
        }
        Ok(local.to_owned())
    }

    // ---- the registration stage ----

    /// Completes the `m.login.registration_token` stage for a registration session: checks that
    /// the token is usable and, for an enrollment, that `username` is the one it was made for,
    /// and reserves one use for the session.
    pub async fn reserve(&self, session: &str, token: &str, username: Option<&str>) -> Result<()> {
        let rec = self.find(token).await?.ok_or_else(invalid_token)?;
        if let Some(bound) = &rec.bound_localpart
            && username != Some(bound.as_str())
        {
            return Err(Error::forbidden(
                "This registration token is for another username",
            ));
        }
        let now = now_ms();
        match self
            .store
            .reserve_registration_token(&hash_token(token), session, now, now + RESERVATION_MS)
            .await?
        {
            Reservation::Reserved { .. } => Ok(()),
            Reservation::Invalid => Err(invalid_token()),
        }
    }

    /// Whether the session holds a reservation (passed the token stage).
    pub async fn reserved(&self, session: &str) -> Result<bool> {
        Ok(self
            .store
            .reserved_token(session, now_ms())
            .await?
            .is_some())
    }

    /// Takes the session's reservation as the registration of `localpart` completes. `None`
    /// when the session never passed the token stage; an error when its token was revoked or
    /// expired meanwhile, or is bound to another username.
    pub async fn claim(&self, session: &str, localpart: &str) -> Result<Option<ClaimedToken>> {
        let now = now_ms();
        if self.store.reserved_token(session, now).await?.is_none() {
            return Ok(None);
        }
        let claim = self
            .store
            .claim_registration_token(session, now)
            .await?
            .ok_or_else(invalid_token)?;
        if let Some(bound) = &claim.bound_localpart
            && bound != localpart
        {
            self.store.unclaim_registration_token(&claim).await?;
            return Err(Error::forbidden(
                "This registration token is for another username",
            ));
        }
        Ok(Some(claim))
    }

    /// Gives a claimed use back after the registration failed.
    pub async fn unclaim(&self, claim: &ClaimedToken) -> Result<()> {
        Ok(self.store.unclaim_registration_token(claim).await?)
    }

    /// Records who registered with a claimed token.
    pub async fn finish(&self, claim: &ClaimedToken, user_id: &OwnedUserId) -> Result<()> {
        self.store
            .record_registration_token_use(claim.token_id, user_id.as_str(), now_ms())
            .await?;
        let action = if claim.bound_localpart.is_some() {
            "enrollment.use"
        } else {
            "registration_token.use"
        };
        audit(
            &*self.store,
            &Actor::User(user_id.clone()),
            action,
            Some(user_id.as_str()),
            json!({"token": claim.token_id}),
        )
        .await
    }
}

fn check_uses(u: Option<i64>) -> Result<()> {
    if u.is_some_and(|u| u < 0) {
        return Err(Error::invalid_param(
            "uses_allowed must be a non-negative integer or null",
        ));
    }
    Ok(())
}

fn check_expiry(e: Option<i64>) -> Result<()> {
    if e.is_some_and(|e| e < now_ms()) {
        return Err(Error::invalid_param("expiry_time must not be in the past"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(uses: Option<i64>, pending: i64, completed: i64) -> RegistrationTokenRecord {
        RegistrationTokenRecord {
            id: 1,
            token: "t".into(),
            uses_allowed: uses,
            pending,
            completed,
            expiry_time: None,
            bound_localpart: None,
            displayname: None,
            created_by: "cli".into(),
            created_ms: 0,
            revoked_ms: None,
            used_by: vec![],
        }
    }

    #[test]
    fn token_states() {
        assert_eq!(token_state(&rec(None, 5, 5), 0), TokenState::Valid);
        assert_eq!(token_state(&rec(Some(1), 0, 1), 0), TokenState::Used);
        assert_eq!(token_state(&rec(Some(1), 1, 0), 0), TokenState::Exhausted);
        assert_eq!(token_state(&rec(Some(0), 0, 0), 0), TokenState::Used);
        let mut r = rec(None, 0, 0);
        r.expiry_time = Some(10);
        assert_eq!(token_state(&r, 10), TokenState::Expired);
        assert_eq!(token_state(&r, 9), TokenState::Valid);
        r.revoked_ms = Some(1);
        assert_eq!(token_state(&r, 0), TokenState::Revoked);
    }

    #[test]
    fn token_grammar() {
        assert!(valid_token("fBVFdqVE"));
        assert!(valid_token("a.b_c~d-e"));
        assert!(!valid_token(""));
        assert!(!valid_token("with space"));
        assert!(!valid_token(&"a".repeat(65)));
        assert!(valid_token(&random_from(TOKEN_ALPHABET, 64)));
    }

    #[test]
    fn qr_codes_render() {
        let svg = qr_svg("https://matrix.example.org/_feldpost/enroll/abc").unwrap();
        assert!(svg.starts_with("<?xml") && svg.contains("<svg"));
        let term = qr_terminal("x").unwrap();
        assert!(term.lines().count() > 5);
    }
}
