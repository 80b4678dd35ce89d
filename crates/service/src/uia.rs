//! User-interactive authentication: sessions, flows and the stages this server offers
//! (`m.login.dummy` for open registration, `m.login.password` for sensitive account actions).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::accounts::random_id;

const SESSION_TTL: Duration = Duration::from_secs(15 * 60);
const MAX_SESSIONS: usize = 100_000;

struct UiaSession {
    completed: Vec<String>,
    created: Instant,
    /// What the session was started for, so a session cannot be replayed for another action.
    purpose: String,
}

#[derive(Default)]
pub struct Uia {
    sessions: Mutex<HashMap<String, UiaSession>>,
}

/// The 401 body that tells the client what to do next.
#[derive(Debug, Clone)]
pub struct UiaChallenge {
    pub body: Value,
}

impl Uia {
    /// Starts a session (or continues one) and returns the challenge for the flows.
    pub fn challenge(
        &self,
        session: Option<&str>,
        purpose: &str,
        flows: &[&[&str]],
        error: Option<(&str, &str)>,
    ) -> UiaChallenge {
        let mut sessions = self.sessions.lock();
        sessions.retain(|_, s| s.created.elapsed() < SESSION_TTL);
        let id = match session {
            Some(s) if sessions.get(s).is_some_and(|x| x.purpose == purpose) => s.to_owned(),
            _ => {
                let id = random_id(24);
                if sessions.len() < MAX_SESSIONS {
                    sessions.insert(
                        id.clone(),
                        UiaSession {
                            completed: vec![],
                            created: Instant::now(),
                            purpose: purpose.into(),
                        },
                    );
                }
                id
            }
        };
        let completed = sessions
            .get(&id)
            .map(|s| s.completed.clone())
            .unwrap_or_default();
        let flows: Vec<Value> = flows.iter().map(|f| json!({"stages": f})).collect();
        let mut body = json!({"flows": flows, "params": {}, "session": id, "completed": completed});
        if let Some((code, msg)) = error {
            body["errcode"] = json!(code);
            body["error"] = json!(msg);
        }
        UiaChallenge { body }
    }

    /// Records a completed stage; returns whether some flow is now complete.
    pub fn complete_stage(
        &self,
        session: &str,
        purpose: &str,
        stage: &str,
        flows: &[&[&str]],
    ) -> bool {
        let mut sessions = self.sessions.lock();
        let s = sessions
            .entry(session.to_owned())
            .or_insert_with(|| UiaSession {
                completed: vec![],
                created: Instant::now(),
                purpose: purpose.into(),
            });
        if s.purpose != purpose {
            return false;
        }
        if !s.completed.iter().any(|c| c == stage) {
            s.completed.push(stage.to_owned());
        }
        let done = flows
            .iter()
            .any(|f| f.iter().all(|st| s.completed.iter().any(|c| c == st)));
        if done {
            sessions.remove(session);
        }
        done
    }
}
