//! Push rules: each user's ruleset, kept as account data `m.push_rules` (`{"global": …}`), and
//! the operations of the `/pushrules` endpoints. Only user-defined rules and the state of the
//! server-default rules (enabled, actions) are taken from storage; the default rules themselves
//! always come from the spec's current set, so that new defaults reach existing users.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use ruma::push::{
    Action, AnyPushRuleRef, ConditionalPushRule, FlattenedJson, InsertPushRuleError,
    NewConditionalPushRule, NewPatternedPushRule, NewPushRule, NewSimplePushRule,
    PredefinedOverrideRuleId, PushCondition, PushConditionRoomCtx, RemovePushRuleError, RuleKind,
    Ruleset,
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
    /// The quiet-hours schedules the evaluator reads with each user's rules (see
    /// `Evaluator::schedule`).
    pub(super) schedules: super::evaluate::ScheduleCache,
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

/// Whether the event was sent by the user the context is for: it never notifies them.
fn own_event(event: &FlattenedJson, ctx: &PushConditionRoomCtx) -> bool {
    event.get_str("sender") == Some(ctx.user_id.as_str())
}

/// What `Ruleset::get_actions` gives, on an event flattened once for all recipients (ruma's
/// method flattens it again on every call).
pub(super) async fn actions_for(
    rules: &Ruleset,
    event: &FlattenedJson,
    ctx: &PushConditionRoomCtx,
) -> Vec<Action> {
    if own_event(event, ctx) {
        return vec![];
    }
    for rule in rules {
        if rule.applies(event, ctx).await {
            return rule.actions().to_vec();
        }
    }
    vec![]
}

/// The server-default override rules that name their user, built for one user.
fn user_rule(rule_id: &str, user: &UserId) -> Option<ConditionalPushRule> {
    if rule_id == PredefinedOverrideRuleId::InviteForMe.as_str() {
        Some(ConditionalPushRule::invite_for_me(user))
    } else if rule_id == PredefinedOverrideRuleId::IsUserMention.as_str() {
        Some(ConditionalPushRule::is_user_mention(user))
    } else {
        None
    }
}

/// Whether a condition's verdict on an event is the same for every recipient (other than the
/// sender): it reads only the event and the room, not the user's id or display name.
fn same_for_everyone(c: &PushCondition) -> bool {
    matches!(
        c,
        PushCondition::EventMatch(_)
            | PushCondition::RoomMemberCount(_)
            | PushCondition::SenderNotificationPermission(_)
            | PushCondition::EventPropertyIs(_)
            | PushCondition::EventPropertyContains(_)
    )
}

/// The server-default ruleset, built once. Users without rules of their own evaluate it with
/// the few rules that name the user built for them: building the whole ruleset per recipient
/// cost more than evaluating it, and keeping one per user would take gigabytes.
pub(super) struct DefaultRules {
    template: Ruleset,
    /// Per rule, in evaluation order: whether its verdict on an event is the same for every
    /// recipient, so that it is worked out once per event (see [`EventDefaults`]).
    shared: Vec<bool>,
    /// Whether a default rule may read the recipient's display name.
    reads_display_name: bool,
    /// Whether every rule is either the same for every recipient or one that names the
    /// recipient: then all recipients the event does not name get the same actions.
    alike_unless_named: bool,
}

/// The user the shared defaults are built for; names no real user.
const TEMPLATE_USER: &str = "@template:invalid";

/// Whether a condition can only hold when the event's JSON holds `user`'s id verbatim: an exact
/// match of a property, or an array holding it.
fn needs_user_in_event(c: &PushCondition, user: &UserId) -> bool {
    match c {
        PushCondition::EventMatch(m) => m.pattern == user.as_str(),
        PushCondition::EventPropertyContains(m) => {
            m.value == ruma::push::ScalarJsonValue::String(user.as_str().to_owned())
        }
        _ => false,
    }
}

/// Whether an event can not name `user` in a way a default rule sees: its JSON text (lowercased
/// in ASCII, as globs match without case) does not hold the id. An id with glob characters, with
/// characters JSON escapes, or beyond ASCII, could be named without showing verbatim and is
/// never excluded.
pub(super) fn unnamed(event_text_lowercase: &str, user: &UserId) -> bool {
    let id = user.as_str();
    if !id.is_ascii() || id.contains(['*', '?', '"', '\\']) {
        return false;
    }
    if id.bytes().any(|b| b.is_ascii_uppercase()) {
        !event_text_lowercase.contains(&id.to_ascii_lowercase())
    } else {
        !event_text_lowercase.contains(id)
    }
}

impl DefaultRules {
    /// The shared defaults; `None` if they depend on the user in more ways than [`user_rule`]
    /// covers, and then each user's defaults have to be built.
    pub(super) fn shared() -> Option<&'static Self> {
        static SHARED: OnceLock<Option<DefaultRules>> = OnceLock::new();
        SHARED.get_or_init(Self::build).as_ref()
    }

    fn build() -> Option<Self> {
        let template = Ruleset::server_default(<&UserId>::try_from(TEMPLATE_USER).ok()?);
        // Time conditions are resolved per user and moment; the defaults must have none.
        if super::quiet_hours::resolve_time_conditions(&template, 0).is_some() {
            return None;
        }
        let instantiate = |user: &UserId| {
            let mut own = template.clone();
            own.override_ = own
                .override_
                .iter()
                .map(|r| user_rule(&r.rule_id, user).unwrap_or_else(|| r.clone()))
                .collect();
            own
        };
        // Checked, not assumed: a default rule that named the user but was not rebuilt per
        // user would be evaluated with the template's user.
        let users =
            ["@a:localhost", "@some.one_else:example.org"].map(|u| <&UserId>::try_from(u).ok());
        for user in users {
            let user = user?;
            let expected = serde_json::to_value(Ruleset::server_default(user)).ok()?;
            if serde_json::to_value(instantiate(user)).ok()? != expected {
                return None;
            }
        }
        // The rules that name the user apply only to a user the event names (see `unnamed`).
        for user in users {
            let user = user?;
            for rule in &template.override_ {
                if let Some(own) = user_rule(&rule.rule_id, user)
                    && !own.conditions.iter().any(|c| needs_user_in_event(c, user))
                {
                    return None;
                }
            }
        }
        let conditions = |rule: AnyPushRuleRef<'_>| match rule {
            AnyPushRuleRef::Override(r) | AnyPushRuleRef::Underride(r) => {
                Some(r.conditions.clone())
            }
            _ => None,
        };
        let sample = users[0]?;
        let shared: Vec<bool> = (&template)
            .into_iter()
            .map(|rule| {
                let names_user = matches!(rule, AnyPushRuleRef::Override(r)
                    if user_rule(&r.rule_id, sample).is_some());
                !names_user && conditions(rule).is_some_and(|c| c.iter().all(same_for_everyone))
            })
            .collect();
        // Content, room and sender rules read no display name either; others might.
        let reads_display_name = (&instantiate(sample))
            .into_iter()
            .filter_map(conditions)
            .any(|c| !c.iter().all(same_for_everyone));
        let alike_unless_named = (&template).into_iter().zip(&shared).all(|(rule, shared)| {
            *shared
                || matches!(rule, AnyPushRuleRef::Override(r)
                    if user_rule(&r.rule_id, sample).is_some())
        });
        Some(Self {
            template,
            shared,
            reads_display_name,
            alike_unless_named,
        })
    }

    /// The defaults for the recipients of one event.
    pub(super) fn for_event(&'static self) -> EventDefaults {
        EventDefaults {
            rules: self,
            verdicts: vec![None; self.shared.len()],
        }
    }
}

/// The server defaults applied to one event: the verdicts of the rules that are the same for
/// every recipient are worked out for the first and reused for the others.
pub(super) struct EventDefaults {
    rules: &'static DefaultRules,
    verdicts: Vec<Option<bool>>,
}

impl EventDefaults {
    /// Whether the evaluation needs the recipient's display name in the context.
    pub(super) fn reads_display_name(&self) -> bool {
        self.rules.reads_display_name
    }

    /// Whether every recipient the event does not name ([`unnamed`]) gets the same actions.
    pub(super) fn alike_unless_named(&self) -> bool {
        self.rules.alike_unless_named
    }

    /// What `Ruleset::get_actions` gives with `ctx.user_id`'s default ruleset. Every call for
    /// one `EventDefaults` must pass the same event and a context that differs only in the user.
    /// `named` is false only for a recipient the event does not name ([`unnamed`]): the rules
    /// that name the recipient are then skipped, as they cannot apply.
    pub(super) async fn actions(
        &mut self,
        event: &FlattenedJson,
        ctx: &PushConditionRoomCtx,
        named: bool,
    ) -> Vec<Action> {
        if own_event(event, ctx) {
            return vec![];
        }
        let rules = self.rules;
        for (i, rule) in (&rules.template).into_iter().enumerate() {
            let applies = if rules.shared.get(i) == Some(&true) {
                match self.verdicts[i] {
                    Some(v) => v,
                    None => {
                        let v = rule.applies(event, ctx).await;
                        self.verdicts[i] = Some(v);
                        v
                    }
                }
            } else if let AnyPushRuleRef::Override(r) = rule
                && let Some(own) = user_rule(&r.rule_id, &ctx.user_id)
            {
                if named && AnyPushRuleRef::Override(&own).applies(event, ctx).await {
                    return own.actions;
                }
                false
            } else {
                rule.applies(event, ctx).await
            };
            if applies {
                return rule.actions().to_vec();
            }
        }
        vec![]
    }
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
            schedules: Mutex::default(),
        }
    }

    /// The user's complete ruleset (defaults merged in).
    pub async fn ruleset(&self, user: &UserId) -> Result<Arc<Ruleset>> {
        Ok(match self.own_rules(user).await? {
            Some(r) => r,
            None => Arc::new(merge_with_defaults(user, None)),
        })
    }

    /// Reads the rules of the users not known yet in one database hop, so that evaluating an
    /// event for a room of 2,000 members after a start does not read them one by one.
    pub(super) async fn prefetch(&self, users: &[&UserId]) -> Result<()> {
        let unknown: Vec<&UserId> = {
            let cache = self.cache.lock();
            let defaults = self.defaults_only.lock();
            users
                .iter()
                .copied()
                .filter(|u| !cache.contains_key(*u) && !defaults.contains(*u))
                .collect()
        };
        if unknown.is_empty() {
            return Ok(());
        }
        let stored: HashMap<String, Value> = self
            .account_data
            .global_of(&unknown, PUSH_RULES_TYPE)
            .await?
            .into_iter()
            .collect();
        for user in unknown {
            let rules = stored
                .get(user.as_str())
                .and_then(|c| c.get("global").cloned())
                .and_then(|g| serde_json::from_value::<Ruleset>(g).ok());
            match rules {
                // A save racing with this read put its rules in the cache: they win.
                Some(r) => {
                    let merged = Arc::new(merge_with_defaults(user, Some(r)));
                    let mut cache = self.cache.lock();
                    if cache.len() >= RULES_CACHE_LIMIT {
                        cache.clear();
                    }
                    cache.entry(user.to_owned()).or_insert(merged);
                }
                None => {
                    if self.cache.lock().contains_key(user) {
                        continue;
                    }
                    let mut known = self.defaults_only.lock();
                    if known.len() >= DEFAULTS_ONLY_LIMIT {
                        known.clear();
                    }
                    known.insert(user.to_owned());
                }
            }
        }
        Ok(())
    }

    /// The user's ruleset if they have rules of their own, `None` for the server defaults
    /// (which [`DefaultRules`] evaluates without building them per user).
    pub(super) async fn own_rules(&self, user: &UserId) -> Result<Option<Arc<Ruleset>>> {
        if let Some(r) = self.cache.lock().get(user) {
            return Ok(Some(r.clone()));
        }
        if self.defaults_only.lock().contains(user) {
            return Ok(None);
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
                return Ok(Some(r.clone()));
            }
            return Ok(None);
        }
        let merged = Arc::new(merge_with_defaults(user, stored));
        let mut cache = self.cache.lock();
        // Bounded: a cleared cache only costs one account data read per user.
        if cache.len() >= RULES_CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(user.to_owned(), merged.clone());
        Ok(Some(merged))
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

    /// Events that exercise every kind of default rule, as (event, members, display name).
    fn sample_events(user: &UserId) -> Vec<(Value, u64, &'static str)> {
        let msg = |content: Value| {
            json!({"type": "m.room.message", "sender": "@s:localhost", "room_id": "!r:localhost",
                   "event_id": "$e", "origin_server_ts": 1, "content": content})
        };
        vec![
            (msg(json!({"msgtype": "m.text", "body": "hello"})), 10, "A"),
            (msg(json!({"msgtype": "m.text", "body": "hello"})), 2, "A"),
            (
                msg(json!({"msgtype": "m.notice", "body": "hello"})),
                10,
                "A",
            ),
            (
                msg(json!({"msgtype": "m.text", "body": "hi Alice!"})),
                10,
                "Alice",
            ),
            (
                msg(json!({"msgtype": "m.text", "body": "@room look"})),
                10,
                "A",
            ),
            (
                msg(json!({"msgtype": "m.text", "body": "x",
                           "m.mentions": {"user_ids": [user.as_str()]}})),
                10,
                "A",
            ),
            (
                msg(json!({"msgtype": "m.text", "body": "x",
                           "m.mentions": {"user_ids": ["@other:localhost"]}})),
                10,
                "A",
            ),
            (
                msg(json!({"msgtype": "m.text", "body": "x", "m.mentions": {"room": true}})),
                10,
                "A",
            ),
            (
                json!({"type": "m.room.member", "sender": "@s:localhost", "room_id": "!r:localhost",
                       "state_key": user.as_str(), "content": {"membership": "invite"}}),
                10,
                "A",
            ),
            (
                json!({"type": "m.room.member", "sender": "@s:localhost", "room_id": "!r:localhost",
                       "state_key": "@other:localhost", "content": {"membership": "invite"}}),
                10,
                "A",
            ),
            (
                json!({"type": "m.room.encrypted", "sender": "@s:localhost",
                       "room_id": "!r:localhost", "content": {}}),
                2,
                "A",
            ),
            (
                json!({"type": "m.reaction", "sender": "@s:localhost", "room_id": "!r:localhost",
                       "content": {}}),
                10,
                "A",
            ),
            (
                json!({"type": "m.room.tombstone", "sender": "@s:localhost", "state_key": "",
                       "room_id": "!r:localhost", "content": {"body": "gone"}}),
                10,
                "A",
            ),
            (msg(json!({"msgtype": "m.text", "body": "mine"})), 10, "A"),
        ]
    }

    /// A room whose default power levels let the sender (its creator) mention the room.
    fn ctx(user: &UserId, members: u64, name: &str) -> PushConditionRoomCtx {
        use ruma::events::room::power_levels::{
            RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource,
        };
        let version = ruma::RoomVersionId::V11.rules().unwrap();
        let levels = RoomPowerLevels::new(
            RoomPowerLevelsSource::from(None::<RoomPowerLevelsEventContent>),
            &version.authorization,
            vec!["@s:localhost".try_into().unwrap()],
        );
        PushConditionRoomCtx::new(
            "!r:localhost".try_into().unwrap(),
            ruma::UInt::new(members).unwrap(),
            user.to_owned(),
            name.to_owned(),
        )
        .with_power_levels(levels.into())
    }

    #[tokio::test]
    async fn shared_defaults_act_like_each_users_defaults() {
        let defaults = DefaultRules::shared().expect("the defaults name the user only as known");
        assert!(!defaults.reads_display_name);
        assert!(defaults.alike_unless_named);
        let users = ["@alice:localhost", "@s:localhost", "@bob:elsewhere.example"];
        let mut events = vec![];
        for user in users {
            events.extend(sample_events(<&UserId>::try_from(user).unwrap()));
        }
        let (mut seen_highlight, mut seen_notify) = (false, false);
        for (event, members, name) in events {
            let raw: ruma::serde::Raw<Value> = ruma::serde::Raw::new(&event).unwrap();
            let flat = FlattenedJson::from_raw(&raw);
            let text = serde_json::to_string(&event).unwrap().to_ascii_lowercase();
            // One event for several recipients, as the evaluator does it.
            let mut for_event = defaults.for_event();
            for user in users {
                let user = <&UserId>::try_from(user).unwrap();
                let own = Ruleset::server_default(user);
                let ctx = ctx(user, members, name);
                let expected = serde_json::to_string(own.get_actions(&raw, &ctx).await).unwrap();
                let actions = for_event.actions(&flat, &ctx, true).await;
                if unnamed(&text, user) {
                    // The shortcut for a recipient the event does not name agrees.
                    let shortcut = for_event.actions(&flat, &ctx, false).await;
                    assert_eq!(
                        serde_json::to_string(&shortcut).unwrap(),
                        serde_json::to_string(&actions).unwrap(),
                        "{user} {event}"
                    );
                }
                seen_highlight |= actions.iter().any(Action::is_highlight);
                seen_notify |= actions.iter().any(Action::should_notify);
                let got = serde_json::to_string(&actions).unwrap();
                assert_eq!(got, expected, "{user} {event}");
                let got = serde_json::to_string(&actions_for(&own, &flat, &ctx).await).unwrap();
                assert_eq!(got, expected, "{user} {event}");
            }
        }
        // The samples reach the rules that matter, not only the silent ones.
        assert!(seen_highlight && seen_notify);
    }

    #[test]
    fn an_event_names_a_user_by_the_id_in_any_case() {
        let user = <&UserId>::try_from("@alice:localhost").unwrap();
        assert!(unnamed(r#"{"body":"hello"}"#, user));
        assert!(!unnamed(r#"{"state_key":"@alice:localhost"}"#, user));
        let upper = <&UserId>::try_from("@Alice:localhost").unwrap();
        assert!(!unnamed(
            &r#"{"state_key":"@ALICE:localhost"}"#.to_ascii_lowercase(),
            upper
        ));
        // Ids that could match more than themselves are always treated as named.
        let glob = <&UserId>::try_from("@a*:localhost").unwrap();
        assert!(!unnamed("{}", glob));
        let quoted = <&UserId>::try_from(r#"@a"b:localhost"#).unwrap();
        assert!(!unnamed(r#"{"state_key":"@a\"b:localhost"}"#, quoted));
    }

    #[tokio::test]
    async fn actions_for_acts_like_get_actions() {
        let user = <&UserId>::try_from("@alice:localhost").unwrap();
        let mut rules = Ruleset::server_default(user);
        rules
            .insert(
                NewPushRule::Content(NewPatternedPushRule::new(
                    "mine".into(),
                    "mine".into(),
                    vec![Action::Notify],
                )),
                None,
                None,
            )
            .unwrap();
        rules
            .set_enabled(RuleKind::Override, ".m.rule.suppress_notices", false)
            .unwrap();
        for (event, members, name) in sample_events(user) {
            let raw: ruma::serde::Raw<Value> = ruma::serde::Raw::new(&event).unwrap();
            let flat = FlattenedJson::from_raw(&raw);
            let ctx = ctx(user, members, name);
            let expected = serde_json::to_string(rules.get_actions(&raw, &ctx).await).unwrap();
            let got = serde_json::to_string(&actions_for(&rules, &flat, &ctx).await).unwrap();
            assert_eq!(got, expected, "{event}");
        }
    }
}
