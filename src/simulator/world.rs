//! The world model: a seeded, deterministic contact centre of conversations, agents,
//! teams and channels, in no platform's words. Platform facades show it through their own
//! APIs. Time only moves when `advance_to` is called, so tests drive it without sleeping.
//!
//! What a platform's API cannot show is switched off in its [`Features`]: a world with
//! reopenings is only served to a platform that has them.

use chrono::{DateTime, Duration, Timelike, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The simulated contact centre's local time, in hours from UTC (São Paulo).
pub const UTC_OFFSET_HOURS: i64 = -3;

/// Simulation step: everything that happens inside one step happens at its end.
pub const STEP_SECONDS: i64 = 5;

/// Changes to a conversation the exporter must see one at a time come at least this long
/// after the previous one (an answer, then a transfer; an end, then a reopening): what
/// happens between two polls leaves no trace on some platforms, and the ground truth
/// would otherwise count what no API can tell.
pub const MIN_GAP_MINUTES: i64 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// A working day: quiet night, morning and afternoon peaks, two agents leaving early
    /// during the afternoon peak.
    #[default]
    Normal,
    /// Flat load, then from minute 30 to minute 90 four times the arrivals while half of
    /// each group's agents go offline; afterwards back to normal and the queue drains.
    Peak,
    /// A queue spike that pages within 15 minutes of wall time at speed 1, through the
    /// shipped rules: flat load for 7 minutes (the history the rules' one-hour median
    /// compares with), then from minute 7 to 47 half of each group's agents offline, a
    /// burst of arrivals in the first minute (120 times the rate: the 5-minute average
    /// passes the floor at once, before the median catches up) and ten times the rate
    /// after it; afterwards back to normal and the queue drains.
    Spike,
}

impl std::str::FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "normal" => Ok(Scenario::Normal),
            "peak" => Ok(Scenario::Peak),
            "spike" => Ok(Scenario::Spike),
            other => Err(format!("unknown scenario '{other}' (expected normal, peak or spike)")),
        }
    }
}

/// What happens in the world beyond arriving, waiting, being attended and ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Features {
    /// Conversations of some channels start with a bot, which hands most to a person.
    pub bot: bool,
    /// Agents put conversations on hold (snooze) and take them back.
    pub hold: bool,
    /// Customers write again after the end: the conversation opens again.
    pub reopen: bool,
    /// Agents hand conversations to another agent, sometimes of another team.
    pub transfer: bool,
    /// A few waiting conversations are deleted, and the platform shows them as deleted.
    pub soft_delete: bool,
}

/// The channel a conversation came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// The website's chat widget.
    Web,
    /// The website's form when no one is online.
    WebOffline,
    WhatsApp,
    /// WhatsApp through the platform's own business number.
    WhatsAppBusiness,
    Messenger,
    /// Not a chat: the platforms list e-mail with chats, and it must never count.
    Email,
}

#[derive(Debug, Clone)]
pub struct Stream {
    pub app: &'static str,
    pub group: &'static str,
    pub channel: Channel,
    pub per_hour: f64,
    /// Starts with a bot where the world has bots.
    pub bot: bool,
}

/// An agent's presence at a moment, in the world's own words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// Logged in and taking conversations.
    Available,
    /// Logged in, not taking new conversations.
    Busy,
    /// Logged in, away from the keyboard.
    Away,
    Offline,
}

#[derive(Debug, Clone, Serialize)]
pub struct Agent {
    pub id: String,
    pub name: String,
    /// Login name (what some platforms label agents by).
    pub username: String,
    pub email: String,
    pub groups: Vec<String>,
    pub capacity: usize,
    /// Working hours, local time, [start, end).
    pub shift: (u32, u32),
    pub active: bool,
    /// Online in the peak scenario's peak window.
    pub stays_in_peak: bool,
}

/// Where a conversation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// With a bot, before any person.
    Bot,
    /// In the queue.
    Waiting,
    /// An agent attends it.
    Attending,
    /// Attended, on hold.
    Held,
    Closed,
}

/// How a conversation's latest end came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Attended and solved.
    Resolved,
    /// Attended and left for a later solution (a follow-up changes it later).
    FollowUp,
    /// Attended, then cancelled by the agent.
    Cancelled,
    /// Ended without an agent: the customer left the queue, or the bot closed it.
    Abandoned,
    /// Deleted while waiting.
    Deleted,
}

/// What happened to a conversation after its end, for platforms whose status shows it
/// (a pending ticket resolved, a resolved one archived).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Right after the end.
    Ended,
    /// A follow-up solved it later.
    SolvedLater,
    /// Archived.
    Archived,
}

#[derive(Debug, Clone, Serialize)]
pub struct Transfer {
    pub at: DateTime<Utc>,
    pub from_agent: usize,
    pub to_agent: usize,
    pub from_group: String,
    pub to_group: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Conversation {
    /// Dense from 1: `conversations[id - 1]`.
    pub id: u64,
    pub stream: usize,
    pub app: String,
    pub channel: Channel,
    pub group: String,
    pub state: State,
    pub agent: Option<usize>,
    pub created: DateTime<Utc>,
    /// When it entered the queue (after the bot, or at a reopening).
    pub queued_at: Option<DateTime<Utc>>,
    /// When an agent first took it.
    pub answered_at: Option<DateTime<Utc>>,
    /// Seconds in the queue before the first agent.
    pub wait_seconds: Option<i64>,
    /// Seconds from the agent taking it to its end, set at the end.
    pub talk_time: Option<i64>,
    pub last_update: DateTime<Utc>,
    /// Ends so far, reopenings included.
    pub ends: u32,
    pub outcome: Option<Outcome>,
    pub ended_at: Option<DateTime<Utc>>,
    pub stage: Stage,
    pub stage_at: Option<DateTime<Utc>>,
    /// Ended at the first contact: its first end, and solved.
    pub resolved_first_contact: bool,
    pub transfers: Vec<Transfer>,
    pub held_since: Option<DateTime<Utc>>,
    /// Gone from the API without a trace.
    pub purged: bool,
    /// Scheduled changes, private to the model.
    #[serde(skip)]
    timers: Timers,
}

#[derive(Debug, Clone, Default)]
struct Timers {
    bot_until: Option<DateTime<Utc>>,
    abandon_at: Option<DateTime<Utc>>,
    delete_at: Option<DateTime<Utc>>,
    /// The end of the attendance.
    end_at: Option<DateTime<Utc>>,
    hold_at: Option<DateTime<Utc>>,
    hold_until: Option<DateTime<Utc>>,
    transfer_at: Option<DateTime<Utc>>,
    reopen_at: Option<DateTime<Utc>>,
    stage_change_at: Option<DateTime<Utc>>,
    /// Planned attendance, in seconds.
    talk_seconds: i64,
}

impl Conversation {
    /// A conversation of `stream` arriving at `at`, waiting, with nothing happened yet.
    fn arriving(id: u64, stream: usize, s: &Stream, at: DateTime<Utc>) -> Conversation {
        Conversation {
            id,
            stream,
            app: s.app.to_string(),
            channel: s.channel,
            group: s.group.to_string(),
            state: State::Waiting,
            agent: None,
            created: at,
            queued_at: None,
            answered_at: None,
            wait_seconds: None,
            talk_time: None,
            last_update: at,
            ends: 0,
            outcome: None,
            ended_at: None,
            stage: Stage::Ended,
            stage_at: None,
            resolved_first_contact: false,
            transfers: Vec::new(),
            held_since: None,
            purged: false,
            timers: Timers::default(),
        }
    }

    pub fn is_chat(&self) -> bool {
        self.channel != Channel::Email
    }
    pub fn deleted(&self) -> bool {
        self.outcome == Some(Outcome::Deleted)
    }
    pub fn is_open(&self) -> bool {
        self.state != State::Closed
    }
}

/// A transition, recorded as it happens, for the ground truth.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub at: DateTime<Utc>,
    pub conversation: u64,
    pub app: String,
    pub group: String,
    pub channel: Channel,
    pub agent: Option<usize>,
    pub kind: EventKind,
}

#[derive(Debug, Clone, Serialize)]
pub enum EventKind {
    /// The first agent took it.
    Answered { wait_seconds: i64 },
    /// It ended.
    Ended {
        outcome: Outcome,
        /// Attended time, for attended ends.
        talk_seconds: Option<i64>,
        /// Ends before this one (0 for the first end).
        ends_before: u32,
        /// Transfers before this end.
        transfers: usize,
        answered: bool,
    },
}

pub struct World {
    rng: ChaCha8Rng,
    pub scenario: Scenario,
    pub features: Features,
    pub start: DateTime<Utc>,
    pub now: DateTime<Utc>,
    /// Local time of the contact centre, in hours from UTC (its day's shape).
    pub utc_offset_hours: i64,
    pub streams: Vec<Stream>,
    pub agents: Vec<Agent>,
    pub conversations: Vec<Conversation>,
    /// Ids of conversations not closed.
    open: Vec<u64>,
    /// Ids of closed conversations with a later change scheduled.
    pending_changes: Vec<u64>,
    /// Transitions since the exporter under test started (see `reset_events`).
    pub events: Vec<Event>,
    /// Each conversation that existed when the exporter started: its ends then, and
    /// whether it was live.
    at_start: std::collections::HashMap<u64, (u32, bool)>,
    /// Scale applied to arrival rates (1.0 = the built-in contact centre).
    pub load: f64,
    /// Nothing happens on its own (no arrivals, no timers): time only moves, and changes
    /// come from [`World::answer_waiting`] and [`World::finish_attending`]. For
    /// measurements at a chosen size, where what changes must be exactly what is asked.
    pub scripted: bool,
}

fn streams() -> Vec<Stream> {
    let s = |app, group, channel, per_hour, bot| Stream { app, group, channel, per_hour, bot };
    vec![
        s("Portal do Cliente", "Suporte", Channel::Web, 30.0, true),
        s("Portal do Cliente", "Financeiro", Channel::Web, 10.0, false),
        s("Portal do Cliente", "Suporte", Channel::WebOffline, 3.0, false),
        s("Loja Online", "Vendas", Channel::Web, 14.0, false),
        s("Loja Online", "Vendas", Channel::WhatsApp, 12.0, true),
        s("WhatsApp Atendimento", "Suporte", Channel::WhatsAppBusiness, 18.0, false),
        s("WhatsApp Atendimento", "Financeiro", Channel::WhatsAppBusiness, 6.0, false),
        s("Loja Online", "Vendas", Channel::Messenger, 4.0, false),
        s("Central de E-mail", "Suporte", Channel::Email, 8.0, false),
    ]
}

fn agents() -> Vec<Agent> {
    // (name, groups, capacity, shift in local hours, stays online in the peak scenario)
    type Spec<'a> = (&'a str, &'a [&'a str], usize, (u32, u32), bool);
    let specs: &[Spec] = &[
        ("Ana Souza", &["Suporte"], 3, (7, 16), true),
        ("Bruno Lima", &["Suporte"], 3, (8, 17), false),
        ("Carla Dias", &["Suporte", "Financeiro"], 2, (8, 17), true),
        ("Diego Alves", &["Suporte"], 3, (12, 21), false),
        ("Elisa Rocha", &["Financeiro"], 3, (8, 17), true),
        ("Fábio Nunes", &["Financeiro"], 2, (12, 21), false),
        ("Gabriela Reis", &["Vendas"], 3, (8, 17), true),
        ("Hugo Martins", &["Vendas"], 3, (10, 19), false),
        ("Isabel Costa", &["Vendas", "Suporte"], 2, (13, 22), true),
        ("João Pereira", &["Suporte"], 3, (0, 8), true),
        ("Karina Melo", &["Vendas", "Financeiro"], 2, (0, 8), false),
    ];
    let mut list: Vec<Agent> = specs
        .iter()
        .enumerate()
        .map(|(i, (name, groups, capacity, shift, stays))| agent(i + 1, name, groups, *capacity, *shift, true, *stays))
        .collect();
    list.push(agent(99, "Lucas Antigo", &["Suporte"], 3, (8, 17), false, false));
    list
}

fn agent(
    n: usize,
    name: &str,
    groups: &[&str],
    capacity: usize,
    shift: (u32, u32),
    active: bool,
    stays: bool,
) -> Agent {
    let username: String = name
        .to_lowercase()
        .chars()
        .map(|c| match c {
            'á' | 'ã' | 'â' => 'a',
            'é' | 'ê' => 'e',
            'í' => 'i',
            'ó' | 'õ' => 'o',
            'ú' => 'u',
            'ç' => 'c',
            ' ' => '.',
            c => c,
        })
        .collect();
    Agent {
        id: format!("ag{n:03}"),
        name: name.to_string(),
        username,
        email: format!("agent{n}@example.com"),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        capacity,
        shift,
        active,
        stays_in_peak: stays,
    }
}

fn daily_profile(hour: u32) -> f64 {
    match hour {
        0..=5 => 0.2,
        6..=7 => 0.5,
        8 => 0.9,
        9..=11 => 1.4,
        12..=13 => 1.0,
        14..=16 => 1.5,
        17..=18 => 1.0,
        19..=21 => 0.6,
        _ => 0.3,
    }
}

impl World {
    pub fn new(seed: u64, scenario: Scenario, start: DateTime<Utc>, features: Features) -> Self {
        // Whole milliseconds keep timestamps exact through every text format on the way.
        let start = DateTime::from_timestamp_millis(start.timestamp_millis()).expect("valid time");
        World {
            rng: ChaCha8Rng::seed_from_u64(seed),
            scenario,
            features,
            start,
            now: start,
            // Most of these platforms' customers in this project are in Brazil.
            utc_offset_hours: UTC_OFFSET_HOURS,
            streams: streams(),
            agents: agents(),
            conversations: Vec::new(),
            open: Vec::new(),
            pending_changes: Vec::new(),
            events: Vec::new(),
            at_start: Default::default(),
            load: 1.0,
            scripted: false,
        }
    }

    pub fn conversation(&self, id: u64) -> Option<&Conversation> {
        self.conversations.get((id as usize).checked_sub(1)?)
    }

    fn conv(&mut self, id: u64) -> &mut Conversation {
        &mut self.conversations[id as usize - 1]
    }

    /// Conversations not closed (purged ones excluded).
    pub fn open_conversations(&self) -> impl Iterator<Item = &Conversation> {
        self.open.iter().filter_map(|id| self.conversation(*id)).filter(|c| !c.purged)
    }

    /// The exporter under test starts now: ground truth counts from here.
    pub fn reset_events(&mut self) {
        self.events.clear();
        self.at_start =
            self.conversations.iter().filter(|c| !c.purged).map(|c| (c.id, (c.ends, c.is_open()))).collect();
    }

    /// Ends before `ends_before` that an exporter started at `reset_events` can know of:
    /// those after its start, and one for a conversation over at its start (it was
    /// resolved before). A conversation live at the start shows no trace of earlier ends.
    pub fn ends_known(&self, conversation: u64, ends_before: u32) -> u32 {
        match self.at_start.get(&conversation) {
            Some((ends, true)) => ends_before - ends,
            Some((ends, false)) => ends_before - ends + 1,
            None => ends_before,
        }
    }

    /// Removes an open conversation from the platform altogether: no further change
    /// happens to it and the API no longer lists it.
    pub fn purge(&mut self, id: u64) {
        if let Some(c) = self.conversations.get_mut((id as usize).wrapping_sub(1)) {
            c.purged = true;
            c.timers = Timers::default();
        }
        self.open.retain(|x| *x != id);
        self.pending_changes.retain(|x| *x != id);
    }

    fn local_hour(&self) -> u32 {
        (self.now + Duration::hours(self.utc_offset_hours)).hour()
    }

    fn minutes_since_start(&self) -> i64 {
        (self.now - self.start).num_minutes()
    }

    fn in_peak(&self) -> bool {
        match self.scenario {
            Scenario::Peak => (30..90).contains(&self.minutes_since_start()),
            Scenario::Spike => (7..47).contains(&self.minutes_since_start()),
            Scenario::Normal => false,
        }
    }

    /// An agent's presence now. Only available agents take conversations.
    pub fn presence(&self, index: usize) -> Presence {
        let agent = &self.agents[index];
        if !agent.active {
            return Presence::Offline;
        }
        match self.scenario {
            Scenario::Peak | Scenario::Spike if self.in_peak() && !agent.stays_in_peak => Presence::Offline,
            Scenario::Peak | Scenario::Spike => Presence::Available,
            Scenario::Normal => {
                let hour = self.local_hour();
                let (from, to) = agent.shift;
                let on_shift = hour >= from && hour < to;
                // Two agents log off early in the afternoon peak, as in the product's example.
                let leaves_early = matches!(agent.name.as_str(), "Bruno Lima" | "Hugo Martins") && hour >= 15;
                if !on_shift || leaves_early {
                    return Presence::Offline;
                }
                // A break three hours into the shift, and a busy spell two hours later.
                let minute = (self.now + Duration::hours(self.utc_offset_hours)).minute();
                let into_shift = (hour + 24 - from) % 24;
                match (into_shift, minute) {
                    (3, 0..=14) => Presence::Away,
                    (5, 30..=39) => Presence::Busy,
                    _ => Presence::Available,
                }
            }
        }
    }

    fn arrival_multiplier(&self) -> f64 {
        self.load
            * match self.scenario {
                Scenario::Normal => daily_profile(self.local_hour()),
                Scenario::Peak if self.in_peak() => 4.0,
                Scenario::Spike if self.minutes_since_start() == 7 => 120.0,
                Scenario::Spike if self.in_peak() => 10.0,
                Scenario::Peak | Scenario::Spike => 1.0,
            }
    }

    /// Runs the model up to `until` in fixed steps.
    pub fn advance_to(&mut self, until: DateTime<Utc>) {
        if self.scripted {
            self.now = self.now.max(until);
            return;
        }
        while self.now + Duration::seconds(STEP_SECONDS) <= until {
            self.now += Duration::seconds(STEP_SECONDS);
            self.step();
        }
    }

    fn poisson(&mut self, lambda: f64) -> u32 {
        let limit = (-lambda).exp();
        let mut k = 0;
        let mut p = 1.0;
        loop {
            p *= self.rng.random::<f64>();
            if p <= limit {
                return k;
            }
            k += 1;
        }
    }

    fn exp_sample(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.rng.random::<f64>()).ln()
    }

    fn due(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        at.is_some_and(|t| t <= now)
    }

    fn step(&mut self) {
        let now = self.now;
        let multiplier = self.arrival_multiplier();
        for s in 0..self.streams.len() {
            let email = self.streams[s].channel == Channel::Email;
            // E-mail comes at its own pace, day and night.
            let scale = if email { 1.0 } else { multiplier };
            let lambda = self.streams[s].per_hour * scale * STEP_SECONDS as f64 / 3600.0;
            for _ in 0..self.poisson(lambda) {
                self.arrive(s);
            }
        }
        for id in self.open.clone() {
            let (state, t) = {
                let c = self.conv(id);
                (c.state, c.timers.clone())
            };
            match state {
                State::Bot if Self::due(t.bot_until, now) => {
                    if self.rng.random::<f64>() < 0.8 {
                        self.enqueue(id);
                    } else {
                        self.end(id, Outcome::Abandoned);
                    }
                }
                State::Waiting if Self::due(t.delete_at, now) => self.end(id, Outcome::Deleted),
                State::Waiting if Self::due(t.abandon_at, now) => self.end(id, Outcome::Abandoned),
                State::Attending if Self::due(t.end_at, now) => self.finish(id),
                State::Attending if Self::due(t.transfer_at, now) => self.transfer(id),
                State::Attending if Self::due(t.hold_at, now) => {
                    let c = self.conv(id);
                    c.state = State::Held;
                    c.held_since = Some(now);
                    c.timers.hold_at = None;
                    c.last_update = now;
                }
                State::Held if Self::due(t.hold_until, now) => {
                    let c = self.conv(id);
                    c.state = State::Attending;
                    c.held_since = None;
                    c.timers.hold_until = None;
                    c.last_update = now;
                }
                _ => {}
            }
        }
        // Later changes of ended conversations: a follow-up solving it, archiving, or the
        // customer writing again.
        for id in std::mem::take(&mut self.pending_changes) {
            let t = self.conv(id).timers.clone();
            if Self::due(t.reopen_at, now) {
                self.reopen(id);
            } else if Self::due(t.stage_change_at, now) {
                let c = self.conv(id);
                c.stage = match c.stage {
                    Stage::Ended if c.outcome == Some(Outcome::FollowUp) => Stage::SolvedLater,
                    _ => Stage::Archived,
                };
                c.stage_at = Some(now);
                c.timers.stage_change_at = (c.stage == Stage::SolvedLater).then(|| now + Duration::hours(2));
                c.last_update = now;
                if c.timers.stage_change_at.is_some() {
                    self.pending_changes.push(id);
                }
            } else {
                self.pending_changes.push(id);
            }
        }
        self.assign();
    }

    fn arrive(&mut self, stream: usize) {
        let s = self.streams[stream].clone();
        let id = self.conversations.len() as u64 + 1;
        let now = self.now;
        let with_bot = self.features.bot && s.bot;
        self.conversations.push(Conversation::arriving(id, stream, &s, now));
        self.open.push(id);
        if s.channel == Channel::Email {
            // E-mail is answered by the first agent of the list and closed a while later.
            let end_at = now + Duration::minutes(10);
            let c = self.conv(id);
            c.state = State::Attending;
            c.agent = Some(0);
            c.answered_at = Some(now);
            c.timers.end_at = Some(end_at);
        } else if with_bot {
            let bot_seconds = 60 + self.rng.random_range(0..120);
            let c = self.conv(id);
            c.state = State::Bot;
            c.timers.bot_until = Some(now + Duration::seconds(bot_seconds));
        } else {
            self.enqueue(id);
        }
    }

    fn enqueue(&mut self, id: u64) {
        let now = self.now;
        let patience = 30.0 + self.exp_sample(240.0);
        let delete = self.features.soft_delete && self.rng.random::<f64>() < 0.01;
        let c = self.conv(id);
        c.state = State::Waiting;
        c.queued_at = Some(now);
        c.last_update = now;
        c.timers.bot_until = None;
        c.timers.abandon_at = Some(now + Duration::seconds(patience as i64));
        c.timers.delete_at = delete.then(|| now + Duration::seconds(20));
    }

    fn event(&mut self, id: u64, kind: EventKind) {
        let c = &self.conversations[id as usize - 1];
        if !c.is_chat() {
            return;
        }
        let event = Event {
            at: self.now,
            conversation: id,
            app: c.app.clone(),
            group: c.group.clone(),
            channel: c.channel,
            agent: c.agent,
            kind,
        };
        self.events.push(event);
    }

    /// Ends the conversation as it stands.
    fn end(&mut self, id: u64, outcome: Outcome) {
        let now = self.now;
        let c = self.conv(id);
        let answered = c.answered_at.is_some();
        let ends_before = c.ends;
        let transfers = c.transfers.len();
        let talk = c.talk_time;
        c.state = State::Closed;
        c.outcome = Some(outcome);
        c.ended_at = Some(now);
        c.ends += 1;
        c.stage = Stage::Ended;
        c.stage_at = None;
        c.held_since = None;
        c.last_update = now;
        c.timers = Timers { talk_seconds: c.timers.talk_seconds, ..Timers::default() };
        self.open.retain(|x| *x != id);
        if outcome != Outcome::Deleted {
            self.event(id, EventKind::Ended { outcome, talk_seconds: talk, ends_before, transfers, answered });
        }
    }

    fn finish(&mut self, id: u64) {
        let now = self.now;
        let roll = self.rng.random::<f64>();
        let later = 3600 + (self.exp_sample(3.0 * 3600.0) as i64);
        let reopens = self.features.reopen && self.rng.random::<f64>() < 0.15;
        let reopen_after = MIN_GAP_MINUTES * 60 + self.rng.random_range(0..3000);
        let is_chat = self.conv(id).is_chat();
        let outcome = if !is_chat || roll >= 0.02 {
            if !is_chat || roll < 0.78 {
                Outcome::Resolved
            } else {
                Outcome::FollowUp
            }
        } else {
            Outcome::Cancelled
        };
        {
            let c = self.conv(id);
            let since = c.answered_at.unwrap_or(c.created);
            c.talk_time = Some(c.timers.talk_seconds.min((now - since).num_seconds().max(0)));
            c.resolved_first_contact = outcome == Outcome::Resolved && c.ends == 0;
        }
        self.end(id, outcome);
        let c = self.conv(id);
        if reopens && is_chat && outcome != Outcome::Cancelled {
            c.timers.reopen_at = Some(now + Duration::seconds(reopen_after));
        } else if outcome != Outcome::Cancelled {
            c.timers.stage_change_at = Some(now + Duration::seconds(later));
        }
        if c.timers.reopen_at.is_some() || c.timers.stage_change_at.is_some() {
            self.pending_changes.push(id);
        }
    }

    /// The customer writes again: back to the agent who had it, for long enough that the
    /// reopening is seen before the next end.
    fn reopen(&mut self, id: u64) {
        let now = self.now;
        let talk = MIN_GAP_MINUTES * 60 + self.exp_sample(300.0) as i64;
        let c = self.conv(id);
        c.state = State::Attending;
        c.outcome = None;
        c.ended_at = None;
        c.talk_time = None;
        c.stage = Stage::Ended;
        c.last_update = now;
        c.timers = Timers { talk_seconds: talk, end_at: Some(now + Duration::seconds(talk)), ..Timers::default() };
        self.open.push(id);
    }

    /// Hands an attended conversation to another available agent, of its group or of
    /// another one (the conversation then moves to that agent's first group).
    fn transfer(&mut self, id: u64) {
        let now = self.now;
        self.conv(id).timers.transfer_at = None;
        let from = self.conv(id).agent.expect("attended conversations have an agent");
        let group = self.conv(id).group.clone();
        let prefer_other = self.rng.random_bool(0.5);
        let candidates = |other_group: bool| -> Vec<usize> {
            (0..self.agents.len())
                .filter(|a| *a != from && self.presence(*a) == Presence::Available)
                .filter(|a| self.agents[*a].groups.contains(&group) != other_group)
                .filter(|a| self.load_of(*a) < self.agents[*a].capacity)
                .collect()
        };
        let (other_group, list) = match candidates(prefer_other) {
            list if !list.is_empty() => (prefer_other, list),
            _ => (!prefer_other, candidates(!prefer_other)),
        };
        if list.is_empty() {
            return;
        }
        let to = list[self.rng.random_range(0..list.len())];
        let to_group = if other_group { self.agents[to].groups[0].clone() } else { group.clone() };
        let c = self.conv(id);
        c.transfers.push(Transfer {
            at: now,
            from_agent: from,
            to_agent: to,
            from_group: group,
            to_group: to_group.clone(),
        });
        c.agent = Some(to);
        c.group = to_group;
        c.last_update = now;
    }

    fn load_of(&self, agent: usize) -> usize {
        self.open_conversations()
            .filter(|c| c.is_chat() && matches!(c.state, State::Attending | State::Held) && c.agent == Some(agent))
            .count()
    }

    /// First come, first served within each group; the least busy available agent takes
    /// the conversation.
    fn assign(&mut self) {
        let waiting: Vec<u64> =
            self.open.iter().copied().filter(|id| self.conv_ref(*id).state == State::Waiting).collect();
        for id in waiting {
            let group = self.conv_ref(id).group.clone();
            let candidate = (0..self.agents.len())
                .filter(|a| self.presence(*a) == Presence::Available && self.agents[*a].groups.contains(&group))
                .map(|a| (self.load_of(a), a))
                .filter(|(load, a)| *load < self.agents[*a].capacity)
                .min();
            let Some((_, agent)) = candidate else { continue };
            let now = self.now;
            let talk = (60.0 + self.exp_sample(420.0)) as i64;
            // A transferred conversation goes on long enough for each agent to be seen.
            let transfer = self.features.transfer && self.rng.random::<f64>() < 0.12;
            let talk = if transfer { talk + 2 * MIN_GAP_MINUTES * 60 } else { talk };
            let hold = self.features.hold && self.rng.random::<f64>() < 0.15;
            let hold_minutes = 5 + self.rng.random_range(0..10);
            let c = self.conv(id);
            c.state = State::Attending;
            c.agent = Some(agent);
            let wait = (now - c.queued_at.unwrap_or(c.created)).num_seconds();
            c.wait_seconds = Some(wait);
            c.answered_at = Some(now);
            c.last_update = now;
            let mut end_at = now + Duration::seconds(talk);
            if hold {
                // On hold a third of the way in; the attendance lasts the hold longer.
                let hold_at = now + Duration::seconds(talk / 3);
                c.timers.hold_at = Some(hold_at);
                c.timers.hold_until = Some(hold_at + Duration::minutes(hold_minutes));
                end_at += Duration::minutes(hold_minutes);
            }
            c.timers.talk_seconds = (end_at - now).num_seconds();
            c.timers.end_at = Some(end_at);
            c.timers.transfer_at = transfer.then(|| now + Duration::minutes(MIN_GAP_MINUTES));
            c.timers.abandon_at = None;
            c.timers.delete_at = None;
            self.event(id, EventKind::Answered { wait_seconds: wait });
        }
    }

    /// A contact centre of a chosen size, scripted from now on: `agents` agents spread over
    /// the built-in groups, and `open` chats spread over the built-in chat streams, of
    /// which `waiting` in the queue and the others attended. Their last changes are spread
    /// over the two hours before now, ten minutes before now at the latest.
    pub fn populate(&mut self, agents: usize, open: usize, waiting: usize) {
        assert!(agents > 0 && waiting <= open, "at least one agent, and no more waiting than open");
        self.scripted = true;
        let groups: Vec<&'static str> = {
            let mut g: Vec<&'static str> = self.streams.iter().map(|s| s.group).collect();
            g.sort_unstable();
            g.dedup();
            g
        };
        self.agents = (0..agents)
            .map(|i| {
                let name = format!("Agent {:04}", i + 1);
                agent(i + 1, &name, &[groups[i % groups.len()]], usize::MAX, (0, 24), true, true)
            })
            .collect();
        let chat_streams: Vec<usize> =
            (0..self.streams.len()).filter(|s| self.streams[*s].channel != Channel::Email).collect();
        let mut next_agent: std::collections::HashMap<&str, usize> = Default::default();
        for n in 0..open {
            let stream = chat_streams[n % chat_streams.len()];
            let s = self.streams[stream].clone();
            let created = self.now - Duration::seconds(600 + self.rng.random_range(0..6600));
            let id = self.conversations.len() as u64 + 1;
            let (state, agent, answered_at, wait, last_update) = if n < waiting {
                (State::Waiting, None, None, None, created)
            } else {
                // The group's agents in turn: group g's agents are g, g + groups, ...
                let g = groups.iter().position(|g| *g == s.group).expect("a built-in group");
                let turn = next_agent.entry(s.group).or_default();
                let agent = (g + *turn * groups.len()) % agents.max(1);
                *turn += 1;
                let wait = self.rng.random_range(5..300);
                let answered = (created + Duration::seconds(wait)).min(self.now - Duration::seconds(600));
                (State::Attending, Some(agent), Some(answered), Some((answered - created).num_seconds()), answered)
            };
            self.conversations.push(Conversation {
                state,
                agent,
                queued_at: Some(created),
                answered_at,
                wait_seconds: wait,
                last_update,
                ..Conversation::arriving(id, stream, &s, created)
            });
            self.open.push(id);
        }
    }

    /// Scripted: the first `n` chats in the queue are taken by an agent of their group,
    /// now. Returns how many were.
    pub fn answer_waiting(&mut self, n: usize) -> usize {
        let waiting: Vec<u64> =
            self.open.iter().copied().filter(|id| self.conv_ref(*id).state == State::Waiting).take(n).collect();
        let now = self.now;
        for (turn, id) in waiting.iter().enumerate() {
            let group = self.conv_ref(*id).group.clone();
            let members: Vec<usize> =
                (0..self.agents.len()).filter(|a| self.agents[*a].groups.contains(&group)).collect();
            let agent = members.get(turn % members.len().max(1)).copied();
            let c = self.conv(*id);
            let wait = (now - c.queued_at.unwrap_or(c.created)).num_seconds();
            c.state = State::Attending;
            c.agent = agent;
            c.answered_at = Some(now);
            c.wait_seconds = Some(wait);
            c.last_update = now;
            self.event(*id, EventKind::Answered { wait_seconds: wait });
        }
        waiting.len()
    }

    /// Scripted: the first `n` chats in attendance end, solved, now. Returns how many did.
    pub fn finish_attending(&mut self, n: usize) -> usize {
        let attending: Vec<u64> =
            self.open.iter().copied().filter(|id| self.conv_ref(*id).state == State::Attending).take(n).collect();
        let now = self.now;
        for id in &attending {
            let c = self.conv(*id);
            c.talk_time = Some((now - c.answered_at.unwrap_or(c.created)).num_seconds().max(0));
            c.resolved_first_contact = c.ends == 0;
            self.end(*id, Outcome::Resolved);
        }
        attending.len()
    }

    fn conv_ref(&self, id: u64) -> &Conversation {
        &self.conversations[id as usize - 1]
    }
}
