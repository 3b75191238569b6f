//! Chatwoot's source.
//!
//! Following changes costs two requests a poll: the agents (their presence, and the
//! platform's clock in `Date`), then every conversation changed since the previous
//! window, of any status, in one unpaginated answer (`updated_within`, whose seconds are
//! counted on the platform's clock from one `Date` to the next, plus an overlap). Paging
//! the conversation list is avoided: it is by offset over a live ordering, so an item can
//! move between pages while they are read. Every few polls, and at the start, the live
//! conversations (open, pending, snoozed) are listed the same way, unpaginated; every
//! `roster_interval`, the inboxes and the teams with their members.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::time::Instant;

use super::records::{parse_agent, parse_conversation, parse_inbox, ConversationError, Inbox};
use super::{ChatwootConfig, NAME};
use crate::budget::RequestBudget;
use crate::config::{self, Polling};
use crate::model::{Observations, RosterAgent, Timings};
use crate::self_metrics::SelfMetrics;
use crate::source::client::{ApiClient, Answer, Hints};
use crate::source::{from_the_future, latest_believable, CursorError, Source, SourceError};

/// `updated_within` for "every conversation": ten years.
const EVERYTHING: u64 = 10 * 365 * 86_400;
/// How far back the first window looks, in seconds.
const FIRST_WINDOW: u64 = 86_400;
/// The statuses of a conversation that is not over.
const LIVE_STATUSES: [&str; 3] = ["open", "pending", "snoozed"];

pub struct ChatwootSource {
    client: ApiClient,
    config: ChatwootConfig,
    polling: Polling,
    inboxes: HashMap<u64, Inbox>,
    /// Team names of each agent (by agent id).
    teams_of: HashMap<String, Vec<String>>,
    directory_read_at: Option<Instant>,
    /// When the last window was read.
    window_read: Option<WindowMark>,
    started: bool,
    polls: u64,
}

/// When a window was read: by the platform's clock (its `Date`), and by ours (lost at a
/// restart).
#[derive(Debug, Clone, Copy)]
struct WindowMark {
    platform: Option<DateTime<Utc>>,
    local: Option<Instant>,
}

/// What Chatwoot's refusals say: a missing token and a wrong one have different bodies.
fn explain(status: u16, body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let message = v.get("error").and_then(Value::as_str).map(str::to_string).or_else(|| {
        v.get("errors").and_then(Value::as_array).and_then(|e| e.first()).and_then(Value::as_str).map(str::to_string)
    })?;
    Some(match (status, message.as_str()) {
        (401, "Invalid Access Token") => {
            format!("; Chatwoot says \"Invalid Access Token\": check {} (a user's access token, from its profile settings)", config::token_keys(super::NAME))
        }
        (401, m) if m.contains("sign in") => {
            "; no token reached Chatwoot: check chatwoot.token, and that no proxy strips the api_access_token header".to_string()
        }
        (401, "You are not authorized to access this account") => {
            "; the token's user is not a member of chatwoot.account_id".to_string()
        }
        (404, _) => "; check chatwoot.account_id and chatwoot.base_url (the installation's root)".to_string(),
        (401 | 403, m) => format!("; Chatwoot says {m:?}: check {}", config::token_keys(super::NAME)),
        (_, m) => format!("; Chatwoot says {m:?}"),
    })
}

impl ChatwootSource {
    pub fn new(config: ChatwootConfig, polling: &Polling, metrics: SelfMetrics) -> Self {
        let hints = Hints {
            unauthorized: format!("; check {}", config::token_keys(super::NAME)),
            not_found: "; check chatwoot.account_id and chatwoot.base_url".to_string(),
            explain: Some(explain),
        };
        ChatwootSource {
            client: ApiClient::new(NAME, polling, metrics, hints),
            config,
            polling: polling.clone(),
            inboxes: HashMap::new(),
            teams_of: HashMap::new(),
            directory_read_at: None,
            window_read: None,
            started: false,
            polls: 0,
        }
    }

    async fn get(&self, endpoint: &'static str, path: &str, query: &[(&str, String)]) -> Result<Answer, SourceError> {
        let request = self
            .client
            .http()
            .get(format!("{}/{path}", self.config.account_url()))
            .header("api_access_token", self.config.token.expose())
            .query(query);
        self.client.fetch(endpoint, request).await
    }

    /// A JSON list: bare (`[…]`) or inside an envelope (`{"payload": […]}`).
    fn list(&self, endpoint: &'static str, answer: &Answer, path: &[&str]) -> Result<Vec<Value>, SourceError> {
        Ok(self.client.decode_list(endpoint, &answer.body, path)?.items)
    }

    /// Conversations of `status` changed within the last `seconds`, in one answer.
    async fn conversations(&self, status: &str, seconds: u64) -> Result<(Vec<Value>, Option<DateTime<Utc>>), SourceError> {
        let answer = self
            .get(
                "conversations",
                "conversations",
                &[
                    ("status", status.to_string()),
                    ("updated_within", seconds.to_string()),
                    ("sort_by", "created_at_asc".to_string()),
                ],
            )
            .await?;
        let items = self.list("conversations", &answer, &["data", "payload"])?;
        Ok((items, answer.date))
    }

    async fn read_inboxes(&mut self) -> Result<Vec<String>, SourceError> {
        let answer = self.get("inboxes", "inboxes", &[]).await?;
        let mut invalid = Vec::new();
        let mut inboxes = HashMap::new();
        for v in self.list("inboxes", &answer, &["payload"])? {
            match parse_inbox(&v) {
                Ok((id, inbox)) => {
                    inboxes.insert(id, inbox);
                }
                Err(why) => invalid.push(why),
            }
        }
        self.inboxes = inboxes;
        Ok(invalid)
    }

    /// The teams each agent belongs to.
    async fn read_teams(&mut self) -> Result<(), SourceError> {
        let answer = self.get("teams", "teams", &[]).await?;
        let mut teams_of: HashMap<String, Vec<String>> = HashMap::new();
        for team in self.list("teams", &answer, &[])? {
            let (Some(id), Some(name)) = (team.get("id").and_then(Value::as_u64), team.get("name").and_then(Value::as_str))
            else {
                continue;
            };
            let answer = self.get("team_members", &format!("teams/{id}/team_members"), &[]).await?;
            for member in self.list("team_members", &answer, &[])? {
                if let Ok((agent, _)) = parse_agent(&member) {
                    teams_of.entry(agent.id).or_default().push(name.trim().to_string());
                }
            }
        }
        self.teams_of = teams_of;
        Ok(())
    }

    async fn roster(&self) -> Result<(Vec<RosterAgent>, Option<DateTime<Utc>>, Vec<String>), SourceError> {
        let answer = self.get("agents", "agents", &[]).await?;
        let mut roster = Vec::new();
        let mut invalid = Vec::new();
        for v in self.list("agents", &answer, &[])? {
            match parse_agent(&v) {
                Ok((agent, presence)) => {
                    let groups = self.teams_of.get(&agent.id).cloned().unwrap_or_default();
                    roster.push(RosterAgent { agent, apps: Vec::new(), groups, presence });
                }
                Err(why) => invalid.push(why),
            }
        }
        Ok((roster, answer.date, invalid))
    }

    /// Adds the chats among `items` to `obs`, reading the inboxes again once if one is
    /// unknown; returns why each unreadable one was skipped, and the newest change seen.
    async fn read(
        &mut self,
        items: &[Value],
        platform_now: Option<DateTime<Utc>>,
        obs: &mut Observations,
        newest: &mut Option<DateTime<Utc>>,
    ) -> Result<Vec<String>, SourceError> {
        let mut invalid = Vec::new();
        // A conversation stamped past the platform's clock is skipped: it would move the
        // start past every change to come.
        let latest = latest_believable(platform_now).unwrap_or(DateTime::<Utc>::MAX_UTC);
        let mut reread = false;
        for item in items {
            let mut parsed = parse_conversation(item, |id| self.inboxes.get(&id).cloned());
            if matches!(parsed, Err(ConversationError::UnknownInbox(_))) && !reread {
                reread = true;
                invalid.extend(self.read_inboxes().await?);
                parsed = parse_conversation(item, |id| self.inboxes.get(&id).cloned());
            }
            match parsed {
                Ok(Some(chat)) if chat.last_update > latest => {
                    invalid.extend(from_the_future(&format!("conversation {}", chat.id.0), chat.last_update, platform_now));
                }
                Ok(Some(chat)) => {
                    *newest = (*newest).max(Some(chat.last_update));
                    obs.observe(chat);
                }
                Ok(None) => {}
                Err(ConversationError::Invalid(why)) => invalid.push(why),
                Err(ConversationError::UnknownInbox(id)) => invalid.push(format!("conversation in unknown inbox {id}")),
            }
        }
        Ok(invalid)
    }

    async fn poll_inner(&mut self) -> Result<Observations, SourceError> {
        let mut obs = Observations::default();
        let mut invalid = Vec::new();
        let directory_due =
            self.directory_read_at.is_none_or(|t| t.elapsed() >= self.polling.roster_interval) || self.inboxes.is_empty();
        if directory_due {
            invalid.extend(self.read_inboxes().await?);
            // Team membership only shapes area 02: a failure keeps the previous one.
            if let Err(e) = self.read_teams().await {
                tracing::warn!(source = NAME, reason = e.reason(), error = %e, "cannot read the teams; keeping the previous membership");
            }
            self.directory_read_at = Some(Instant::now());
        }
        let (roster, now, invalid_agents) = self.roster().await?;
        let now_read_at = Instant::now();
        invalid.extend(invalid_agents);
        obs.roster = Some(roster);
        obs.platform_time = now;

        let mut newest = None;
        let reconcile = !self.started || self.polls.is_multiple_of(u64::from(self.polling.reconcile_every));
        if reconcile {
            for status in LIVE_STATUSES {
                let (items, date) = self.conversations(status, EVERYTHING).await?;
                invalid.extend(self.read(&items, date.or(now), &mut obs, &mut newest).await?);
            }
            // Listed before the window is read: anything live the tracker holds and the
            // lists lack had ended by then.
            obs.open_set_complete_at = now.or(Some(DateTime::<Utc>::MAX_UTC));
        }
        let overlap = self.config.overlap.as_secs();
        let within = match self.window_read {
            // The first window reaches a day back: the newest change in it is the start,
            // in the clock that stamps conversations, and conversations that ended lately
            // are recorded as history.
            None => FIRST_WINDOW,
            // The platform's own clock from one window to this one.
            Some(WindowMark { platform: Some(previous), .. }) if now.is_some() => {
                let now = now.unwrap_or(previous);
                let since_now = now_read_at.elapsed().as_secs() + 1;
                ((now - previous).num_seconds().max(0) as u64).saturating_add(since_now)
            }
            // No `Date`: our own clock, within this process.
            Some(WindowMark { local: Some(at), .. }) => at.elapsed().as_secs() + 1,
            // No reference at all since a restart.
            Some(_) => EVERYTHING,
        }
        .saturating_add(overlap)
        .min(EVERYTHING);
        let previous = self.window_read.and_then(|m| m.platform);
        let mut within = within;
        let mut window_date = None;
        for attempt in 1.. {
            let (items, date) = self.conversations("all", within).await?;
            window_date = date;
            invalid.extend(self.read(&items, date.or(now), &mut obs, &mut newest).await?);
            // `updated_within` counts back from the platform's now when it answered. If
            // its clock moved on more than ours did since `Date` was read (a slow answer,
            // a clock that jumped), the window began after the previous one: ask again,
            // from the answer's own `Date`. A later answer about a conversation wins.
            let (Some(previous), Some(answered_at)) = (previous, date) else { break };
            let began = answered_at - chrono::Duration::seconds(within.min(EVERYTHING) as i64);
            let margin = chrono::Duration::seconds((overlap / 2) as i64);
            if began <= previous - margin || attempt == 3 {
                break;
            }
            within = ((answered_at - previous).num_seconds().max(0) as u64).saturating_add(overlap + 1);
        }
        self.window_read = Some(WindowMark { platform: window_date.or(now), local: Some(Instant::now()) });
        if !self.started {
            // The start is the platform's now, in the clock that stamps conversations:
            // the newest change seen, or `Date` when nothing changed lately.
            obs.history_until = newest.or(now);
        }
        self.client.reject_records(&invalid);
        self.started = true;
        self.polls += 1;
        Ok(obs)
    }
}

#[async_trait::async_trait]
impl Source for ChatwootSource {
    fn name(&self) -> &'static str {
        NAME
    }

    fn timings(&self) -> Timings {
        // Its contract leaves out the wait and duration histograms (docs/metrics.md).
        Timings::NONE
    }

    fn budget(&self) -> Arc<RequestBudget> {
        self.client.budget()
    }

    fn account(&self) -> String {
        format!(
            "{} (token sha256 {}…)",
            self.config.account_url(),
            crate::source::credential_digest(&self.config.token)
        )
    }

    fn save_state(&self) -> Value {
        serde_json::json!({ "window_read": self.window_read.and_then(|m| m.platform), "started": self.started })
    }

    fn restore_state(&mut self, state: Value) -> Result<(), CursorError> {
        #[derive(serde::Deserialize)]
        struct Saved {
            window_read: Option<DateTime<Utc>>,
            started: bool,
        }
        let saved: Saved = serde_json::from_value(state).map_err(|cause| CursorError { platform: NAME, cause })?;
        self.window_read = saved.started.then_some(WindowMark { platform: saved.window_read, local: None });
        self.started = saved.started;
        self.polls = 0;
        self.directory_read_at = None;
        Ok(())
    }

    async fn poll(&mut self) -> Result<Observations, SourceError> {
        let saved = (self.window_read, self.polls);
        let result = self.poll_inner().await;
        if result.is_err() {
            // The next poll asks again from the same window.
            (self.window_read, self.polls) = saved;
        }
        result
    }
}

