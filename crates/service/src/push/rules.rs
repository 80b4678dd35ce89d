//! Push rules: each user's ruleset, kept as account data `m.push_rules` (`{"global": …}`), and
//! the operations of the `/pushrules` endpoints. Only user-defined rules and the state of the
//! server-default rules (enabled, actions) are taken from storage; the default rules themselves
//! always come from the spec's current set, so that new defaults reach existing users.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use ruma::push::{
    Action, AnyPushRuleRef, ConditionalPushRule, InsertPushRuleError, NewConditionalPushRule,
    NewPatternedPushRule, NewPushRule, NewSimplePushRule, PushCondition, RemovePushRuleError,
    RuleKind, Ruleset,
};
use ruma::{OwnedRoomId, OwnedUserId, UserId};
use serde_json::{Value, json};

use crate::account_data::AccountData;
use crate::{Error, ErrorKind, Result};

/// The account data type that holds the rules.
pub const PUSH_RULES_TYPE: &str = "m.push_rules";

/// Users whose merged rulesets are kept in memory at most.
const RULES_CACHE_LIMIT: usize = 20_000;
/// Users remembered as having no rules of their own at most.
const DEFAULTS_ONLY_LIMIT: usize = 1_000_000;

pub struct PushRules {
    account_data: Arc<AccountData>,
    cache: Mutex<HashMap<OwnedUserId, Arc<Ruleset>>>,
    /// Users known to have no stored rules. Their default rulesets (tens of kilobytes each) are
    /// built when needed instead of kept: 80,000 of them would take gigabytes.
    defaults_only: Mutex<std::collections::HashSet<OwnedUserId>>,
    /// Rule changes are read-modify-write of one account data object.
    write_lock: tokio::sync::Mutex<()>,
}

/// Parses the `{scope}` path segment: only `global` exists.
fn check_scope(scope: &str) -> Result<()> {
    if scope != "global" {
        return Err(Error::invalid_param(format!(
            "Unknown push rule scope {scope:?}; only global exists"
        )));
    }
    Ok(())
}

/// Parses the `{kind}` path segment.
pub fn parse_kind(kind: &str) -> Result<RuleKind> {
    match kind {
        "override" => Ok(RuleKind::Override),
        "underride" => Ok(RuleKind::Underride),
        "sender" => Ok(RuleKind::Sender),
        "room" => Ok(RuleKind::Room),
        "content" => Ok(RuleKind::Content),
        other => Err(Error::invalid_param(format!(
            "Unknown push rule kind {other:?}"
        ))),
    }
}

fn rule_not_found() -> Error {
    Error::not_found("The push rule was not found")
}

/// A rule as the API shows it.
fn rule_json(rule: AnyPushRuleRef<'_>) -> Value {
    let v = match rule {
        AnyPushRuleRef::Override(r) | AnyPushRuleRef::Underride(r) => serde_json::to_value(r),
        AnyPushRuleRef::Content(r) => serde_json::to_value(r),
        AnyPushRuleRef::Room(r) => serde_json::to_value(r),
        AnyPushRuleRef::Sender(r) => serde_json::to_value(r),
        _ => Ok(json!({})),
    };
    v.unwrap_or_else(|_| json!({}))
}

/// Merges what was stored with the current server-default rules: user rules keep their order
/// and sit where the spec puts them (after the master rule for override, first otherwise);
/// default rules keep the enabled flag and actions the user gave them.
fn merge_with_defaults(user: &UserId, stored: Option<Ruleset>) -> Ruleset {
    let mut out = Ruleset::server_default(user);
    let Some(stored) = stored else {
        return out;
    };
    fn carry_state(target: &mut ConditionalPushRule, from: &ConditionalPushRule) {
        target.enabled = from.enabled;
        target.actions = from.actions.clone();
    }
    let mut overrides: Vec<ConditionalPushRule> = out.override_.iter().cloned().collect();
    for rule in overrides.iter_mut() {
        if let Some(s) = stored.override_.get(rule.rule_id.as_str()) {
            carry_state(rule, s);
        }
    }
    let user_override: Vec<ConditionalPushRule> = stored
        .override_
        .iter()
        .filter(|r| !r.default)
        .cloned()
        .collect();
    let (master, rest) = overrides.split_at(overrides.len().min(1));
    out.override_ = master
        .iter()
        .cloned()
        .chain(user_override)
        .chain(rest.iter().cloned())
        .collect();

    let mut underride: Vec<ConditionalPushRule> = out.underride.iter().cloned().collect();
    for rule in underride.iter_mut() {
        if let Some(s) = stored.underride.get(rule.rule_id.as_str()) {
            carry_state(rule, s);
        }
    }
    out.underride = stored
        .underride
        .iter()
        .filter(|r| !r.default)
        .cloned()
        .chain(underride)
        .collect();

    let mut content: Vec<_> = out.content.iter().cloned().collect();
    for rule in content.iter_mut() {
        if let Some(s) = stored.content.get(rule.rule_id.as_str()) {
            rule.enabled = s.enabled;
            rule.actions = s.actions.clone();
        }
    }
    out.content = stored
        .content
        .iter()
        .filter(|r| !r.default)
        .cloned()
        .chain(content)
        .collect();
    out.room = stored.room.iter().filter(|r| !r.default).cloned().collect();
    out.sender = stored
        .sender
        .iter()
        .filter(|r| !r.default)
        .cloned()
        .collect();
    out
}

fn insert_error(e: InsertPushRuleError) -> Error {
    match e {
        InsertPushRuleError::ServerDefaultRuleId => {
            Error::invalid_param("Rule ids starting with a dot are reserved for server rules")
        }
        InsertPushRuleError::InvalidRuleId => {
            Error::invalid_param("Rule ids may not contain slashes or backslashes")
        }
        InsertPushRuleError::RelativeToServerDefaultRule => {
            Error::invalid_param("A rule cannot be placed relative to a server-default rule")
        }
        InsertPushRuleError::UnknownRuleId => {
            Error::not_found("The rule given in before or after does not exist")
        }
        InsertPushRuleError::BeforeHigherThanAfter => {
            Error::invalid_param("before must name a rule below the one named by after")
        }
        other => Error::invalid_param(format!("Invalid push rule: {other}")),
    }
}

impl PushRules {
    pub fn new(account_data: Arc<AccountData>) -> Self {
        Self {
            account_data,
            cache: Mutex::default(),
            defaults_only: Mutex::default(),
            write_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The user's complete ruleset (defaults merged in).
    pub async fn ruleset(&self, user: &UserId) -> Result<Arc<Ruleset>> {
        if let Some(r) = self.cache.lock().get(user) {
            return Ok(r.clone());
        }
        if self.defaults_only.lock().contains(user) {
            return Ok(Arc::new(merge_with_defaults(user, None)));
        }
        let stored = match self.account_data.get(user, None, PUSH_RULES_TYPE).await {
            Ok(content) => content
                .get("global")
                .cloned()
                .and_then(|g| serde_json::from_value::<Ruleset>(g).ok()),
            Err(e) if e.kind == ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if stored.is_none() {
            let mut known = self.defaults_only.lock();
            if known.len() >= DEFAULTS_ONLY_LIMIT {
                known.clear();
            }
            known.insert(user.to_owned());
            drop(known);
            // A save racing with this read put its rules in the cache after our read: they win.
            if let Some(r) = self.cache.lock().get(user) {
                self.defaults_only.lock().remove(user);
                return Ok(r.clone());
            }
            return Ok(Arc::new(merge_with_defaults(user, None)));
        }
        let merged = Arc::new(merge_with_defaults(user, stored));
        let mut cache = self.cache.lock();
        // Bounded: a cleared cache only costs one account data read per user.
        if cache.len() >= RULES_CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(user.to_owned(), merged.clone());
        Ok(merged)
    }

    /// The `m.push_rules` account data content for a user who never changed a rule.
    pub fn default_content(user: &UserId) -> Value {
        json!({"global": Ruleset::server_default(user)})
    }

    async fn save(&self, user: &UserId, rules: Ruleset) -> Result<()> {
        let content = json!({ "global": rules });
        self.account_data
            .write(user, None, PUSH_RULES_TYPE, &content)
            .await?;
        self.defaults_only.lock().remove(user);
        self.cache.lock().insert(user.to_owned(), Arc::new(rules));
        Ok(())
    }

    /// `GET /pushrules/global/{kind}/{ruleId}`.
    pub async fn get_rule(
        &self,
        user: &UserId,
        scope: &str,
        kind: &str,
        rule_id: &str,
    ) -> Result<Value> {
        check_scope(scope)?;
        let kind = parse_kind(kind)?;
        let rules = self.ruleset(user).await?;
        rules
            .get(kind, rule_id)
            .map(rule_json)
            .ok_or_else(rule_not_found)
    }

    /// `PUT /pushrules/global/{kind}/{ruleId}`: creates or updates a user rule.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_rule(
        &self,
        user: &UserId,
        scope: &str,
        kind: &str,
        rule_id: &str,
        before: Option<&str>,
        after: Option<&str>,
        body: &Value,
    ) -> Result<()> {
        check_scope(scope)?;
        let kind = parse_kind(kind)?;
        if rule_id.is_empty() {
            return Err(Error::invalid_param("The rule id must not be empty"));
        }
        let actions: Vec<Action> = match body.get("actions") {
            Some(a) => serde_json::from_value(a.clone())
                .map_err(|e| Error::bad_json(format!("Invalid actions: {e}")))?,
            None => return Err(Error::missing_param("actions is required")),
        };
        let conditions = || -> Result<Vec<PushCondition>> {
            match body.get("conditions") {
                None | Some(Value::Null) => Ok(vec![]),
                Some(c) => serde_json::from_value(c.clone())
                    .map_err(|e| Error::bad_json(format!("Invalid conditions: {e}"))),
            }
        };
        let new = match kind {
            RuleKind::Override => NewPushRule::Override(NewConditionalPushRule::new(
                rule_id.to_owned(),
                conditions()?,
                actions,
            )),
            RuleKind::Underride => NewPushRule::Underride(NewConditionalPushRule::new(
                rule_id.to_owned(),
                conditions()?,
                actions,
            )),
            RuleKind::Content => {
                let pattern = body
                    .get("pattern")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Error::missing_param("Content rules need a pattern"))?;
                NewPushRule::Content(NewPatternedPushRule::new(
                    rule_id.to_owned(),
                    pattern.to_owned(),
                    actions,
                ))
            }
            RuleKind::Room => {
                let room = OwnedRoomId::try_from(rule_id)
                    .map_err(|_| Error::invalid_param("Room rules need a room id as rule id"))?;
                NewPushRule::Room(NewSimplePushRule::new(room, actions))
            }
            RuleKind::Sender => {
                let sender = OwnedUserId::try_from(rule_id)
                    .map_err(|_| Error::invalid_param("Sender rules need a user id as rule id"))?;
                NewPushRule::Sender(NewSimplePushRule::new(sender, actions))
            }
            _ => return Err(Error::invalid_param("Unknown push rule kind")),
        };
        let _guard = self.write_lock.lock().await;
        let mut rules = (*self.ruleset(user).await?).clone();
        let existing = rules.get(kind.clone(), rule_id).map(|r| r.enabled());
        if existing.is_some() && (before.is_some() || after.is_some()) {
            // Moving an existing rule: take it out first, so that the positions before/after
            // refer to are those of the remaining rules.
            if rule_id.starts_with('.') {
                return Err(insert_error(InsertPushRuleError::ServerDefaultRuleId));
            }
            rules.remove(kind.clone(), rule_id).map_err(|e| match e {
                RemovePushRuleError::ServerDefault => {
                    insert_error(InsertPushRuleError::ServerDefaultRuleId)
                }
                _ => rule_not_found(),
            })?;
            if before == Some(rule_id) || after == Some(rule_id) {
                return Err(Error::invalid_param(
                    "A rule cannot be placed relative to itself",
                ));
            }
        }
        rules.insert(new, after, before).map_err(insert_error)?;
        if let Some(enabled) = existing {
            // An update keeps the rule's enabled state.
            let _ = rules.set_enabled(kind, rule_id, enabled);
        }
        self.save(user, rules).await
    }

    /// `DELETE /pushrules/global/{kind}/{ruleId}`.
    pub async fn delete_rule(
        &self,
        user: &UserId,
        scope: &str,
        kind: &str,
        rule_id: &str,
    ) -> Result<()> {
        check_scope(scope)?;
        let kind = parse_kind(kind)?;
        let _guard = self.write_lock.lock().await;
        let mut rules = (*self.ruleset(user).await?).clone();
        rules.remove(kind, rule_id).map_err(|e| match e {
            RemovePushRuleError::ServerDefault => {
                Error::invalid_param("Server-default rules cannot be deleted")
            }
            _ => rule_not_found(),
        })?;
        self.save(user, rules).await
    }

    /// `GET …/enabled`.
    pub async fn enabled(
        &self,
        user: &UserId,
        scope: &str,
        kind: &str,
        rule_id: &str,
    ) -> Result<bool> {
        check_scope(scope)?;
        let kind = parse_kind(kind)?;
        let rules = self.ruleset(user).await?;
        rules
            .get(kind, rule_id)
            .map(|r| r.enabled())
            .ok_or_else(rule_not_found)
    }

    /// `PUT …/enabled`.
    pub async fn set_enabled(
        &self,
        user: &UserId,
        scope: &str,
        kind: &str,
        rule_id: &str,
        enabled: bool,
    ) -> Result<()> {
        check_scope(scope)?;
        let kind = parse_kind(kind)?;
        let _guard = self.write_lock.lock().await;
        let mut rules = (*self.ruleset(user).await?).clone();
        rules
            .set_enabled(kind, rule_id, enabled)
            .map_err(|_| rule_not_found())?;
        self.save(user, rules).await
    }

    /// `GET …/actions`.
    pub async fn actions(
        &self,
        user: &UserId,
        scope: &str,
        kind: &str,
        rule_id: &str,
    ) -> Result<Vec<Action>> {
        check_scope(scope)?;
        let kind = parse_kind(kind)?;
        let rules = self.ruleset(user).await?;
        rules
            .get(kind, rule_id)
            .map(|r| r.actions().to_vec())
            .ok_or_else(rule_not_found)
    }

    /// `PUT …/actions`.
    pub async fn set_actions(
        &self,
        user: &UserId,
        scope: &str,
        kind: &str,
        rule_id: &str,
        actions: &Value,
    ) -> Result<()> {
        check_scope(scope)?;
        let kind = parse_kind(kind)?;
        let actions: Vec<Action> = serde_json::from_value(actions.clone())
            .map_err(|e| Error::bad_json(format!("Invalid actions: {e}")))?;
        let _guard = self.write_lock.lock().await;
        let mut rules = (*self.ruleset(user).await?).clone();
        rules
            .set_actions(kind, rule_id, actions)
            .map_err(|_| rule_not_found())?;
        self.save(user, rules).await
    }

    /// Checks a scope for the endpoints that list rules.
    pub fn check_scope(scope: &str) -> Result<()> {
        check_scope(scope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_user_rules_and_default_state() {
        let user: OwnedUserId = "@a:localhost".try_into().unwrap();
        let mut stored = Ruleset::server_default(&user);
        stored
            .insert(
                NewPushRule::Override(NewConditionalPushRule::new(
                    "mine".into(),
                    vec![],
                    vec![Action::Notify],
                )),
                None,
                None,
            )
            .unwrap();
        stored
            .set_enabled(RuleKind::Override, ".m.rule.master", true)
            .unwrap();
        let merged = merge_with_defaults(&user, Some(stored));
        let ids: Vec<&str> = merged
            .override_
            .iter()
            .map(|r| r.rule_id.as_str())
            .collect();
        assert_eq!(ids[0], ".m.rule.master");
        assert_eq!(ids[1], "mine");
        assert!(merged.override_[0].enabled);
        assert!(
            merged
                .underride
                .iter()
                .any(|r| r.rule_id == ".org.matrix.msc3930.rule.poll_start")
        );
    }
}
