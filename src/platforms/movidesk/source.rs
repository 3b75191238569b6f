//! Movidesk's source.
//!
//! Each poll asks for the tickets changed since the newest `lastUpdate` seen, less an
//! overlap window (so late writes on the platform are not missed), paged by id. Every
//! few polls it also lists every open chat (a reconciliation that drops conversations
//! deleted or gone without a trace) and, less often, the agent roster. Cursors are the
//! platform's own timestamps, so the exporter's clock never matters.
//!
//! After the first poll, the listing is read one page per poll beside the window: at 10
//! requests a minute, listing 4,000 open chats (40 pages) at once would hold the queue
//! gauge still for four minutes.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use std::collections::HashSet;
use serde_json::Value;

use super::records::{id_string, parse_datetime, parse_id, parse_person, parse_ticket};
use super::{MovideskConfig, NAME};
use crate::budget::RequestBudget;
use crate::config::{self, Polling};
use crate::model::{ChatId, ChatObservation, Observations, RosterAgent, Timings};
use crate::self_metrics::SelfMetrics;
use crate::source::client::{ApiClient, Hints, List, PageGuard};
use crate::source::{from_the_future, latest_believable, CursorError, Source, SourceError};

/// Pages of the open chats' listing read by each poll after the first, beside its window.
/// One: at Movidesk's 10 requests a minute and a poll every 15 s, a poll has room for
/// its window and one more request, and the roster's pages when due.
const LISTING_PAGES_PER_POLL: usize = 1;

const TICKET_FIELDS: &str = "id,origin,baseStatus,isDeleted,chatGroup,chatWidget,resolvedInFirstCall,\
chatWaitingTime,chatTalkTime,createdDate,lastUpdate";

pub struct MovideskSource {
    client: ApiClient,
    config: MovideskConfig,
    polling: Polling,
    /// Newest `lastUpdate` seen, in the platform's clock.
    cursor: Option<DateTime<Utc>>,
    started: bool,
    polls: u64,
    /// When the roster was last read, in the platform's clock (`Date`), so that its
    /// schedule follows the platform's time as the rest of the source does.
    roster_fetched_at: Option<DateTime<Utc>>,
    /// The listing of the open chats was due on the last poll, which read the roster
    /// instead: this one reads its page.
    listing_skipped: bool,
    /// Whether a failing roster was logged since it last worked.
    roster_failure_logged: bool,
    /// The platform's clock (`Date` header) at the last answer.
    server_time: Option<DateTime<Utc>>,
    /// An incremental window still being paged: a failed poll keeps the pages it got,
    /// and the next one carries on from there instead of starting over.
    pending: Option<PendingWindow>,
    /// A listing of the open chats under way, paged over several polls.
    listing: Option<OpenListing>,
}

struct OpenListing {
    /// Where the next page starts.
    after_id: Option<u64>,
    /// The cursor when the listing started: an open chat unchanged since, that the
    /// listing does not show live, is gone.
    since: Option<DateTime<Utc>>,
    /// Chats listed live so far (their pages were observed in the poll that read them).
    live: HashSet<ChatId>,
}

/// A ticket as read from its page: a chat, not a chat (`None`), or why it is unreadable.
type ReadTicket = Result<Option<ChatObservation>, String>;

struct PendingWindow {
    filter: String,
    after_id: Option<u64>,
    /// Platform time when the window's first page was asked for: every change after it
    /// falls in the next window, however long the paging takes.
    started_at: Option<DateTime<Utc>>,
    /// Its tickets, read as each page arrives: a page's JSON is dropped once read, so a
    /// listing of every open chat holds chats, not documents.
    tickets: Vec<ReadTicket>,
    /// Its pages bring records not seen before, within a bound, or paging fails.
    guard: PageGuard,
}

impl MovideskSource {
    pub fn new(config: MovideskConfig, polling: &Polling, metrics: SelfMetrics) -> Self {
        let hints = Hints {
            unauthorized: format!("; check {}", config::token_keys(super::NAME)),
            not_found: "; movidesk.base_url must end in /public/v1".to_string(),
            explain: None,
        };
        MovideskSource {
            client: ApiClient::new(NAME, polling, metrics, hints),
            config,
            polling: polling.clone(),
            cursor: None,
            started: false,
            polls: 0,
            roster_fetched_at: None,
            listing_skipped: false,
            roster_failure_logged: false,
            server_time: None,
            pending: None,
            listing: None,
        }
    }

    fn origin_filter(&self) -> String {
        let terms: Vec<String> = self.config.chat_origins.iter().map(|o| format!("origin eq {o}")).collect();
        format!("({})", terms.join(" or "))
    }

    /// One GET of a list. The token travels in the query string: the client never
    /// formats the URL with its query.
    async fn get(&mut self, endpoint: &'static str, query: &[(&str, String)]) -> Result<List, SourceError> {
        let url = format!("{}/{endpoint}", self.config.base_url);
        let mut params: Vec<(&str, &str)> = vec![("token", self.config.token.expose())];
        params.extend(query.iter().map(|(k, v)| (*k, v.as_str())));
        let request = self.client.http().get(&url).query(&params);
        let answer = self.client.fetch(endpoint, request).await?;
        self.server_time = answer.date;
        self.client.decode_list(endpoint, &answer.body, &[])
    }

    /// Every ticket matching `filter`, and the platform's time when the first page was read.
    async fn tickets(&mut self, filter: &str) -> Result<(Vec<ReadTicket>, Option<DateTime<Utc>>), SourceError> {
        let mut window =
            PendingWindow { filter: filter.to_string(), after_id: None, started_at: None, tickets: Vec::new(), guard: PageGuard::default() };
        self.page_through(&mut window).await?;
        Ok((window.tickets, window.started_at))
    }

    /// Pages through `window` from where it stands, by id, so that a ticket changing
    /// while we page is neither skipped nor repeated because of shifting offsets. On
    /// failure the window keeps what it got.
    async fn page_through(&mut self, window: &mut PendingWindow) -> Result<(), SourceError> {
        self.page_through_at_most(window, usize::MAX).await.map(|_| ())
    }

    /// Reads at most `pages` pages of `window`; `true` when it has no more.
    async fn page_through_at_most(&mut self, window: &mut PendingWindow, pages: usize) -> Result<bool, SourceError> {
        for _ in 0..pages {
            let page_filter = match window.after_id {
                Some(id) => format!("{} and id gt {id}", window.filter),
                None => window.filter.clone(),
            };
            let page = self
                .get(
                    "tickets",
                    &[
                        ("$select", TICKET_FIELDS.to_string()),
                        ("$expand", "owner".to_string()),
                        ("$filter", page_filter),
                        ("$orderby", "id asc".to_string()),
                        ("$top", self.config.page_size.to_string()),
                    ],
                )
                .await?;
            if window.started_at.is_none() {
                window.started_at = self.server_time;
            }
            let full = page.len >= self.config.page_size as usize;
            let ids: Vec<u64> = page.items.iter().filter_map(|t| t.get("id").and_then(parse_id)).collect();
            window.tickets.extend(page.items.iter().map(|t| parse_ticket(t, &self.config.chat_origins)));
            if !full {
                return Ok(true);
            }
            // Paged by id: the next page starts past the highest id seen. A full page
            // that brings none higher (a server ignoring `id gt`) would be asked for again
            // forever; the window's own guard also bounds its pages.
            let max_id = ids.iter().copied().max();
            let beyond: Vec<String> =
                ids.iter().filter(|id| window.after_id.is_none_or(|prev| **id > prev)).map(u64::to_string).collect();
            window.guard.more_after(&self.client, "tickets", beyond)?;
            window.after_id = window.after_id.max(max_id);
        }
        Ok(false)
    }

    /// The platform's newest `lastUpdate`: where counting starts on the first poll. A
    /// ticket stamped past the platform's clock is not believed: the newest one before
    /// that bound is asked for instead.
    async fn newest_update(&mut self) -> Result<Option<DateTime<Utc>>, SourceError> {
        let mut filter = None;
        for _ in 0..2 {
            let mut query = vec![
                ("$select", "id,lastUpdate".to_string()),
                ("$orderby", "lastUpdate desc".to_string()),
                ("$top", "1".to_string()),
            ];
            query.extend(filter.clone().map(|f| ("$filter", f)));
            let page = self.get("tickets", &query).await?;
            let stamps: Vec<DateTime<Utc>> =
                page.items.iter().filter_map(|t| t.get("lastUpdate").and_then(Value::as_str).and_then(parse_datetime)).collect();
            let latest = latest_believable(self.server_time).unwrap_or(DateTime::<Utc>::MAX_UTC);
            match stamps.iter().filter(|t| **t <= latest).max() {
                Some(newest) => return Ok(Some(*newest)),
                None if page.len == 0 => return Ok(None),
                // Starting from the epoch would count 90 days of history as new.
                None if stamps.is_empty() => break,
                None => {
                    self.client.reject_records(&[format!("the newest ticket is stamped {}, past the platform's clock", stamps[0])]);
                    filter = Some(format!("lastUpdate le {}", latest.format("%Y-%m-%dT%H:%M:%SZ")));
                }
            }
        }
        Err(self.client.fail(SourceError::Decode {
            endpoint: "tickets",
            detail: "the newest ticket has no readable lastUpdate before the platform's clock".to_string(),
        }))
    }

    async fn roster(&mut self) -> Result<(Vec<RosterAgent>, Vec<String>), SourceError> {
        let mut people = Vec::new();
        let page_size = self.config.page_size as usize;
        let mut skip = 0;
        let mut guard = PageGuard::default();
        loop {
            let page = self
                .get(
                    "persons",
                    &[
                        ("$select", "id,businessName,profileType,isActive,teams".to_string()),
                        ("$filter", "isActive eq true and (profileType eq 1 or profileType eq 3)".to_string()),
                        ("$orderby", "id asc".to_string()),
                        ("$top", page_size.to_string()),
                        ("$skip", skip.to_string()),
                    ],
                )
                .await?;
            skip += page.len;
            let ids: Vec<String> = page.items.iter().filter_map(|p| p.get("id").and_then(id_string)).collect();
            people.extend(page.items);
            if page.len < page_size {
                break;
            }
            guard.more_after(&self.client, "persons", ids)?;
        }
        let mut roster = Vec::new();
        let mut invalid = Vec::new();
        for p in people {
            match parse_person(&p) {
                Ok(Some(agent)) => roster.push(agent),
                Ok(None) => {}
                Err(why) => invalid.push(why),
            }
        }
        Ok((roster, invalid))
    }

    /// Adds the chats among `tickets` to `obs`, and the live ones' ids to `live`; returns
    /// why each unreadable one was skipped.
    fn read_tickets(
        &mut self,
        tickets: Vec<ReadTicket>,
        obs: &mut Observations,
        mut live: Option<&mut HashSet<ChatId>>,
    ) -> Vec<String> {
        let mut invalid = Vec::new();
        for ticket in tickets {
            match ticket {
                Ok(Some(chat)) => {
                    if let Some(why) = from_the_future(&format!("ticket {}", chat.id.0), chat.last_update, self.server_time) {
                        invalid.push(why);
                        continue;
                    }
                    if self.cursor.is_none_or(|c| chat.last_update > c) {
                        self.cursor = Some(chat.last_update);
                    }
                    if let Some(live) = live.as_deref_mut().filter(|_| chat.phase.is_live()) {
                        live.insert(chat.id.clone());
                    }
                    obs.observe(chat);
                }
                Ok(None) => {}
                Err(why) => invalid.push(why),
            }
        }
        invalid
    }

    async fn poll_inner(&mut self) -> Result<Observations, SourceError> {
        let mut obs = Observations::default();
        let now = self.server_time.unwrap_or_else(Utc::now);
        let roster_interval = chrono::Duration::from_std(self.polling.roster_interval).unwrap_or(chrono::Duration::MAX);
        // Either way: a platform clock set back by the interval must not hold the roster.
        let roster_due = self.roster_fetched_at.is_none_or(|t| (now - t).abs() >= roster_interval);
        // A poll that reads the roster reads no page of the listing: at 10 requests a
        // minute, its window, a listing page and the roster's pages would take longer
        // than the poll interval, and the queue would go stale. Never twice in a row, so
        // that a roster read on every poll cannot hold the listing back for good.
        let listing_wanted = self.listing.is_some()
            || self.listing_skipped
            || self.polls.is_multiple_of(u64::from(self.polling.reconcile_every));
        let skip_listing = roster_due && !self.listing_skipped;
        let listing_due = listing_wanted && !skip_listing;
        self.listing_skipped = self.started && listing_wanted && skip_listing;
        // Pages a failed poll already read are older than anything read now: they are
        // observed first, so that what is read now wins.
        let mut window = self.pending.take();
        let resumed = window.as_ref().map_or(0, |w| w.tickets.len());
        let mut open = Vec::new();
        let open_filter = format!("(baseStatus eq 'New' or baseStatus eq 'InAttendance') and {}", self.origin_filter());
        // The pages of a listing spread over polls read by this poll; the listing moves
        // on only when the poll succeeds.
        let mut listing_pages = None;
        if !self.started {
            // The exporter starts at the platform's newest change, read before the open
            // chats are listed: those are the baseline, listed whole, and what changes
            // after that change, in the same clock, is counted.
            let newest = self.newest_update().await?.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
            obs.history_until = Some(newest);
            let (listed, _) = self.tickets(&open_filter).await?;
            open = listed;
            obs.open_set_complete_at = self.cursor.or(obs.history_until);
        } else if listing_due {
            let after_id = self.listing.as_ref().and_then(|l| l.after_id);
            let mut pages = PendingWindow { filter: open_filter, after_id, started_at: None, tickets: Vec::new(), guard: PageGuard::default() };
            let done = self.page_through_at_most(&mut pages, LISTING_PAGES_PER_POLL).await?;
            open = std::mem::take(&mut pages.tickets);
            listing_pages = Some((pages.after_id, done, self.cursor));
        }
        let cursor_before = self.cursor.or(obs.history_until);
        let mut window = match window.take() {
            Some(mut w) => {
                w.guard.resume();
                w
            }
            None => {
                let since = cursor_before.unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
                    - chrono::Duration::from_std(self.config.overlap).unwrap_or_default();
                let filter =
                    format!("lastUpdate ge {} and {}", since.format("%Y-%m-%dT%H:%M:%SZ"), self.origin_filter());
                PendingWindow { filter, after_id: None, started_at: None, tickets: Vec::new(), guard: PageGuard::default() }
            }
        };
        if let Err(e) = self.page_through(&mut window).await {
            // A window whose paging made no progress starts over: carrying its pages on
            // would grow them at every poll.
            if !matches!(e, SourceError::NoProgress { .. }) {
                self.pending = Some(window);
            }
            return Err(e);
        }
        let window_started = window.started_at;
        let mut invalid = Vec::new();
        if roster_due {
            // Agents are read on their own schedule: a failing /persons (counted by
            // reason like any request) keeps the previous roster and is retried after
            // roster_interval, without holding up the chats.
            self.roster_fetched_at = Some(now);
            let read = self.roster().await;
            // In the platform's clock as its answer told it (the first poll starts
            // without one).
            self.roster_fetched_at = self.server_time.or(self.roster_fetched_at);
            match read {
                Ok((roster, invalid_people)) => {
                    obs.roster = Some(roster);
                    invalid = invalid_people;
                    self.roster_failure_logged = false;
                }
                Err(e) => {
                    if !std::mem::replace(&mut self.roster_failure_logged, true) {
                        tracing::warn!(source = NAME, reason = e.reason(), error = %e, "cannot read the agent roster; keeping the previous one");
                    }
                }
            }
        }
        if let Some(h) = obs.history_until {
            self.cursor = Some(self.cursor.map_or(h, |c| c.max(h)));
        }
        let cursor_before_tickets = self.cursor;
        let new_pages = window.tickets.split_off(resumed);
        invalid.extend(self.read_tickets(window.tickets, &mut obs, None));
        if let Some((after_id, done, cursor_at_start)) = listing_pages {
            let mut listing = self.listing.take().unwrap_or_else(|| OpenListing {
                after_id: None,
                since: cursor_at_start,
                live: HashSet::new(),
            });
            invalid.extend(self.read_tickets(open, &mut obs, Some(&mut listing.live)));
            listing.after_id = after_id;
            if done {
                obs.open_set_complete_at = listing.since;
                obs.listed_live = listing.live.into_iter().collect();
            } else {
                self.listing = Some(listing);
            }
        } else {
            invalid.extend(self.read_tickets(open, &mut obs, None));
        }
        invalid.extend(self.read_tickets(new_pages, &mut obs, None));
        self.client.reject_records(&invalid);
        // `read_tickets` moved the cursor to the newest change seen. A ticket that
        // changed while the window was being paged may sit behind the page already read,
        // so the cursor goes no further than the platform's time when the window opened
        // (`Date`); and no further than the newest change seen, so a `Date` from a clock
        // ahead of the one writing `lastUpdate` cannot skip changes.
        if let (Some(started), Some(newest)) = (window_started, self.cursor) {
            let bounded = newest.min(started);
            self.cursor = Some(cursor_before_tickets.map_or(bounded, |c| c.max(bounded)));
        }
        obs.platform_time = self.server_time;
        self.started = true;
        self.polls += 1;
        Ok(obs)
    }
}

#[async_trait::async_trait]
impl Source for MovideskSource {
    fn name(&self) -> &'static str {
        NAME
    }

    fn timings(&self) -> Timings {
        // A ticket carries its chat's waiting and talk times (`chatWaitingTime`, `chatTalkTime`).
        Timings::BOTH
    }

    fn budget(&self) -> Arc<RequestBudget> {
        self.client.budget()
    }

    /// Every Movidesk customer shares the same URL; the token tells accounts apart. Only
    /// a short digest of it is kept, which cannot be turned back into the token.
    fn account(&self) -> String {
        format!("{} (token sha256 {}…)", self.config.base_url, crate::source::credential_digest(&self.config.token))
    }

    fn save_state(&self) -> serde_json::Value {
        serde_json::json!({ "cursor": self.cursor, "started": self.started })
    }

    fn restore_state(&mut self, state: serde_json::Value) -> Result<(), CursorError> {
        #[derive(serde::Deserialize)]
        struct Saved {
            cursor: Option<DateTime<Utc>>,
            started: bool,
        }
        let saved: Saved = serde_json::from_value(state).map_err(|cause| CursorError { platform: NAME, cause })?;
        self.cursor = saved.cursor;
        self.started = saved.started;
        // The first poll after a restart reconciles the open chats and reads the roster.
        self.polls = 0;
        self.listing = None;
        self.listing_skipped = false;
        self.roster_fetched_at = None;
        Ok(())
    }

    async fn poll(&mut self) -> Result<Observations, SourceError> {
        let (saved_cursor, saved_roster_at) = (self.cursor, self.roster_fetched_at);
        let result = self.poll_inner().await;
        if result.is_err() {
            // What a failed poll learnt is not applied: the next one asks again from the
            // same cursor (carrying on with a half-paged window) and reads the roster again.
            self.cursor = saved_cursor;
            self.roster_fetched_at = saved_roster_at;
        }
        result
    }
}
