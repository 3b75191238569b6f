//! The world model: a seeded, deterministic contact centre that the platform facades
//! expose. Time only moves when `advance_to` is called, so tests drive it without sleeping.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Timelike, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Simulation step: everything that happens inside one step happens at its end.
pub const STEP_SECONDS: i64 = 5;

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
}

impl std::str::FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "normal" => Ok(Scenario::Normal),
            "peak" => Ok(Scenario::Peak),
            other => Err(format!("unknown scenario '{other}' (expected normal or peak)")),
        }
    }
}

/// Where a conversation stands on the platform (Movidesk's `baseStatus` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BaseStatus {
    New,
    InAttendance,
    Stopped,
    Canceled,
    Resolved,
    Closed,
}

impl BaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BaseStatus::New => "New",
            BaseStatus::InAttendance => "InAttendance",
            BaseStatus::Stopped => "Stopped",
            BaseStatus::Canceled => "Canceled",
            BaseStatus::Resolved => "Resolved",
            BaseStatus::Closed => "Closed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Stream {
    pub app: &'static str,
    pub group: &'static str,
    pub origin: u16,
    pub per_hour: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Agent {
    pub id: String,
    pub name: String,
    pub email: String,
    pub groups: Vec<String>,
    pub capacity: usize,
    /// Working hours, local time (UTC-3), [start, end).
    pub shift: (u32, u32),
    pub active: bool,
    /// Online in the peak scenario's peak window.
    pub stays_in_peak: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ticket {
    pub id: u64,
    pub origin: u16,
    pub app: String,
    pub group: String,
    pub status: BaseStatus,
    pub owner: Option<usize>,
    pub resolved_in_first_call: bool,
    pub waiting_time: Option<i64>,
    pub talk_time: Option<i64>,
    pub created: DateTime<Utc>,
    pub last_update: DateTime<Utc>,
    pub resolved_in: Option<DateTime<Utc>>,
    pub closed_in: Option<DateTime<Utc>>,
    pub canceled_in: Option<DateTime<Utc>>,
    pub deleted: bool,
    /// Gone from the API without a trace.
    pub purged: bool,
    pub is_chat: bool,
    /// Scheduled changes, private to the model.
    #[serde(skip)]
    pub abandon_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub talk_seconds: i64,
    #[serde(skip)]
    pub next_change_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub delete_at: Option<DateTime<Utc>>,
}

/// Counted transitions, exactly as the metric contract defines them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TruthEvents {
    /// (app, group, origin, agent)
    pub answered: BTreeMap<(String, String, u16, String), u64>,
    /// (app, group, origin, agent, resolved_first_contact)
    pub finished: BTreeMap<(String, String, u16, String, bool), u64>,
    pub abandoned: BTreeMap<(String, String, u16), u64>,
    pub waits: BTreeMap<(String, String, u16), Vec<f64>>,
    pub durations: BTreeMap<(String, String, u16), Vec<f64>>,
}

pub struct World {
    rng: ChaCha8Rng,
    pub scenario: Scenario,
    pub start: DateTime<Utc>,
    pub now: DateTime<Utc>,
    pub streams: Vec<Stream>,
    pub agents: Vec<Agent>,
    /// Ticket ids are dense from 1: `tickets[id - 1]`.
    pub tickets: Vec<Ticket>,
    /// Ids of chats waiting or in attendance.
    open: Vec<u64>,
    /// Ids of closed chats with a later change scheduled.
    pending_changes: Vec<u64>,
    pub events: TruthEvents,
    /// Scale applied to arrival rates (1.0 = the built-in contact centre).
    pub load: f64,
}

fn streams() -> Vec<Stream> {
    vec![
        Stream { app: "Portal do Cliente", group: "Suporte", origin: 5, per_hour: 30.0 },
        Stream { app: "Portal do Cliente", group: "Financeiro", origin: 5, per_hour: 10.0 },
        Stream { app: "Portal do Cliente", group: "Suporte", origin: 6, per_hour: 3.0 },
        Stream { app: "Loja Online", group: "Vendas", origin: 5, per_hour: 14.0 },
        Stream { app: "Loja Online", group: "Vendas", origin: 18, per_hour: 12.0 },
        Stream { app: "WhatsApp Atendimento", group: "Suporte", origin: 23, per_hour: 18.0 },
        Stream { app: "WhatsApp Atendimento", group: "Financeiro", origin: 23, per_hour: 6.0 },
        Stream { app: "Loja Online", group: "Vendas", origin: 22, per_hour: 4.0 },
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
        .map(|(i, (name, groups, capacity, shift, stays))| Agent {
            id: format!("ag{:03}", i + 1),
            name: name.to_string(),
            email: format!("agent{}@example.com", i + 1),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            capacity: *capacity,
            shift: *shift,
            active: true,
            stays_in_peak: *stays,
        })
        .collect();
    list.push(Agent {
        id: "ag099".into(),
        name: "Lucas Antigo".into(),
        email: "former@example.com".into(),
        groups: vec!["Suporte".into()],
        capacity: 3,
        shift: (8, 17),
        active: false,
        stays_in_peak: false,
    });
    list
}

/// Movidesk's customers are mostly in Brazil: the day's shape follows UTC-3.
fn local_hour(t: DateTime<Utc>) -> u32 {
    (t - Duration::hours(3)).hour()
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
    pub fn new(seed: u64, scenario: Scenario, start: DateTime<Utc>) -> Self {
        // Whole milliseconds keep timestamps exact through every text format on the way.
        let start = DateTime::from_timestamp_millis(start.timestamp_millis()).expect("valid time");
        World {
            rng: ChaCha8Rng::seed_from_u64(seed),
            scenario,
            start,
            now: start,
            streams: streams(),
            agents: agents(),
            tickets: Vec::new(),
            open: Vec::new(),
            pending_changes: Vec::new(),
            events: TruthEvents::default(),
            load: 1.0,
        }
    }

    pub fn ticket(&self, id: u64) -> Option<&Ticket> {
        self.tickets.get((id as usize).checked_sub(1)?)
    }

    pub fn open_chats(&self) -> impl Iterator<Item = &Ticket> {
        self.open.iter().filter_map(|id| self.ticket(*id))
    }

    /// Removes an open conversation from the platform altogether: no further change
    /// happens to it and the API no longer lists it.
    pub fn purge(&mut self, id: u64) {
        if let Some(t) = self.tickets.get_mut((id as usize).wrapping_sub(1)) {
            t.purged = true;
            t.next_change_at = None;
            t.abandon_at = None;
            t.delete_at = None;
        }
        self.close(id);
    }

    fn minutes_since_start(&self) -> i64 {
        (self.now - self.start).num_minutes()
    }

    fn in_peak(&self) -> bool {
        self.scenario == Scenario::Peak && (30..90).contains(&self.minutes_since_start())
    }

    /// Whether an agent is online now. Movidesk's API does not expose this; it only
    /// decides who can take chats.
    pub fn agent_online(&self, index: usize) -> bool {
        let agent = &self.agents[index];
        if !agent.active {
            return false;
        }
        match self.scenario {
            Scenario::Peak => !self.in_peak() || agent.stays_in_peak,
            Scenario::Normal => {
                let hour = local_hour(self.now);
                let (from, to) = agent.shift;
                let on_shift = hour >= from && hour < to;
                // Two agents log off early in the afternoon peak, as in the product's example.
                let leaves_early = matches!(agent.name.as_str(), "Bruno Lima" | "Hugo Martins") && hour >= 15;
                on_shift && !leaves_early
            }
        }
    }

    fn arrival_multiplier(&self) -> f64 {
        self.load
            * match self.scenario {
                Scenario::Normal => daily_profile(local_hour(self.now)),
                Scenario::Peak if self.in_peak() => 4.0,
                Scenario::Peak => 1.0,
            }
    }

    /// Runs the model up to `until` in fixed steps.
    pub fn advance_to(&mut self, until: DateTime<Utc>) {
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

    fn step(&mut self) {
        let now = self.now;
        // Arrivals.
        let multiplier = self.arrival_multiplier();
        for s in 0..self.streams.len() {
            let lambda = self.streams[s].per_hour * multiplier * STEP_SECONDS as f64 / 3600.0;
            for _ in 0..self.poisson(lambda) {
                self.arrive(s);
            }
        }
        // E-mail tickets share the list with chats, and must be ignored by the exporter.
        if self.rng.random::<f64>() < 8.0 * STEP_SECONDS as f64 / 3600.0 {
            self.email_ticket();
        }
        // Scheduled changes of open chats: endings, abandonments, deletions.
        let open = self.open.clone();
        for id in open {
            let idx = id as usize - 1;
            let t = &self.tickets[idx];
            if t.status == BaseStatus::New {
                if t.delete_at.is_some_and(|d| d <= now) {
                    self.tickets[idx].deleted = true;
                    self.tickets[idx].last_update = now;
                    self.close(id);
                } else if t.abandon_at.is_some_and(|a| a <= now) {
                    self.abandon(id);
                }
            } else if t.status == BaseStatus::InAttendance && t.next_change_at.is_some_and(|e| e <= now) {
                self.finish(id);
            }
        }
        // Later changes of closed tickets (a pending ticket resolved, a resolved one
        // closed): they change lastUpdate and must not count again.
        let pending = std::mem::take(&mut self.pending_changes);
        for id in pending {
            let t = &mut self.tickets[id as usize - 1];
            if t.next_change_at.is_none_or(|at| at > now) {
                self.pending_changes.push(id);
                continue;
            }
            if t.status == BaseStatus::Stopped {
                t.status = BaseStatus::Resolved;
                t.resolved_in = Some(now);
                t.next_change_at = Some(now + Duration::hours(2));
                self.pending_changes.push(id);
            } else {
                t.status = BaseStatus::Closed;
                t.closed_in = Some(now);
                t.next_change_at = None;
            }
            t.last_update = now;
        }
        self.assign();
    }

    fn arrive(&mut self, stream: usize) {
        let s = self.streams[stream].clone();
        let id = self.tickets.len() as u64 + 1;
        let patience = 30.0 + self.exp_sample(240.0);
        let delete_at = (self.rng.random::<f64>() < 0.01).then(|| self.now + Duration::seconds(20));
        self.tickets.push(Ticket {
            id,
            origin: s.origin,
            app: s.app.to_string(),
            group: s.group.to_string(),
            status: BaseStatus::New,
            owner: None,
            resolved_in_first_call: false,
            waiting_time: None,
            talk_time: None,
            created: self.now,
            last_update: self.now,
            resolved_in: None,
            closed_in: None,
            canceled_in: None,
            deleted: false,
            purged: false,
            is_chat: true,
            abandon_at: Some(self.now + Duration::seconds(patience as i64)),
            talk_seconds: 0,
            next_change_at: None,
            delete_at,
        });
        self.open.push(id);
    }

    fn email_ticket(&mut self) {
        let id = self.tickets.len() as u64 + 1;
        self.tickets.push(Ticket {
            id,
            origin: 3,
            app: String::new(),
            group: String::new(),
            status: BaseStatus::Resolved,
            owner: Some(0),
            resolved_in_first_call: true,
            waiting_time: None,
            talk_time: None,
            created: self.now,
            last_update: self.now,
            resolved_in: Some(self.now),
            closed_in: None,
            canceled_in: None,
            deleted: false,
            purged: false,
            is_chat: false,
            abandon_at: None,
            talk_seconds: 0,
            next_change_at: None,
            delete_at: None,
        });
    }

    fn exp_sample(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.rng.random::<f64>()).ln()
    }

    fn close(&mut self, id: u64) {
        self.open.retain(|x| *x != id);
    }

    fn key(t: &Ticket) -> (String, String, u16) {
        (t.app.clone(), t.group.clone(), t.origin)
    }

    fn abandon(&mut self, id: u64) {
        let now = self.now;
        let t = &mut self.tickets[id as usize - 1];
        t.status = BaseStatus::Canceled;
        t.canceled_in = Some(now);
        t.last_update = now;
        *self.events.abandoned.entry(Self::key(t)).or_default() += 1;
        self.close(id);
    }

    fn finish(&mut self, id: u64) {
        let now = self.now;
        let roll = self.rng.random::<f64>();
        let later = 3600 + (self.exp_sample(3.0 * 3600.0) as i64);
        let t = &mut self.tickets[id as usize - 1];
        let agent = self.agents[t.owner.expect("attended chats have an owner")].name.clone();
        let key = Self::key(t);
        t.last_update = now;
        if roll < 0.02 {
            // The agent cancels it: answered, never finished.
            t.status = BaseStatus::Canceled;
            t.canceled_in = Some(now);
        } else {
            let resolved_first = roll < 0.78;
            t.status = if resolved_first { BaseStatus::Resolved } else { BaseStatus::Stopped };
            t.resolved_in_first_call = resolved_first;
            t.talk_time = Some(t.talk_seconds);
            if resolved_first {
                t.resolved_in = Some(now);
            }
            t.next_change_at = Some(now + Duration::seconds(later));
            self.pending_changes.push(id);
            *self.events.finished.entry((key.0.clone(), key.1.clone(), key.2, agent, resolved_first)).or_default() += 1;
            self.events.durations.entry(key).or_default().push(t.talk_seconds as f64);
        }
        self.close(id);
    }

    fn load_of(&self, agent: usize) -> usize {
        self.open_chats().filter(|t| t.status == BaseStatus::InAttendance && t.owner == Some(agent)).count()
    }

    /// First come, first served within each group; the least busy agent takes the chat.
    fn assign(&mut self) {
        let waiting: Vec<u64> =
            self.open.iter().copied().filter(|id| self.tickets[*id as usize - 1].status == BaseStatus::New).collect();
        for id in waiting {
            let group = self.tickets[id as usize - 1].group.clone();
            let candidate = (0..self.agents.len())
                .filter(|a| self.agent_online(*a) && self.agents[*a].groups.contains(&group))
                .map(|a| (self.load_of(a), a))
                .filter(|(load, a)| *load < self.agents[*a].capacity)
                .min();
            let Some((_, agent)) = candidate else { continue };
            let talk = 60.0 + self.exp_sample(420.0);
            let now = self.now;
            let t = &mut self.tickets[id as usize - 1];
            t.status = BaseStatus::InAttendance;
            t.owner = Some(agent);
            let wait = (now - t.created).num_seconds();
            t.waiting_time = Some(wait);
            t.last_update = now;
            t.talk_seconds = talk as i64;
            t.next_change_at = Some(now + Duration::seconds(t.talk_seconds));
            t.abandon_at = None;
            t.delete_at = None;
            let key = Self::key(t);
            let name = self.agents[agent].name.clone();
            *self.events.answered.entry((key.0.clone(), key.1.clone(), key.2, name)).or_default() += 1;
            self.events.waits.entry(key).or_default().push(wait as f64);
        }
    }
}
