//! Ground truth: the exact value of every chat metric, which each platform's facade
//! computes from the world by its contract and with its own label tables (never the
//! exporter's), for tests to compare against. This module holds only the bookkeeping
//! they share.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Truth {
    /// Simulated time, RFC 3339.
    pub now: String,
    /// Conversations created so far, chats or not.
    pub conversations: u64,
    pub samples: Vec<Sample>,
}

/// Samples under construction; adding to a series adds up.
#[derive(Debug, Default)]
pub struct Samples(BTreeMap<(String, Vec<(String, String)>), f64>);

impl Samples {
    fn key(name: &str, labels: &[(&str, &str)]) -> (String, Vec<(String, String)>) {
        let mut pairs: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        pairs.sort();
        (name.to_string(), pairs)
    }

    /// Adds `value` to the series (creating it).
    pub fn add(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        *self.0.entry(Self::key(name, labels)).or_default() += value;
    }

    /// Sets the series to `value`.
    pub fn set(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.insert(Self::key(name, labels), value);
    }

    /// Keeps the smallest value of the series.
    pub fn min(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let entry = self.0.entry(Self::key(name, labels)).or_insert(value);
        *entry = entry.min(value);
    }

    /// A histogram of `values`, with cumulative buckets at `bounds`, then +Inf, sum and count.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], bounds: &[f64], values: &[f64]) {
        for bound in bounds {
            let le = bound.to_string();
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.add(&format!("{name}_bucket"), &with_le, values.iter().filter(|v| **v <= *bound).count() as f64);
        }
        let mut inf = labels.to_vec();
        inf.push(("le", "+Inf"));
        self.add(&format!("{name}_bucket"), &inf, values.len() as f64);
        self.add(&format!("{name}_sum"), labels, values.iter().sum());
        self.add(&format!("{name}_count"), labels, values.len() as f64);
    }

    /// Area 02 on a platform that tells presence: each active agent's status among the
    /// four neutral words, in each of its groups (`""` without one), from the platform's
    /// own word for it (`presence`) and the name the platform shows (`name`).
    pub fn presence_agents(
        &mut self,
        world: &super::world::World,
        presence: impl Fn(usize) -> &'static str,
        name: impl Fn(&super::world::Agent) -> &str,
    ) {
        for (i, agent) in world.agents.iter().enumerate().filter(|(_, a)| a.active) {
            let current = presence(i);
            let groups: Vec<&str> =
                if agent.groups.is_empty() { vec![""] } else { agent.groups.iter().map(String::as_str).collect() };
            for group in groups {
                for status in ["available", "busy", "away", "offline"] {
                    let value = if status == current { 1.0 } else { 0.0 };
                    self.set(
                        "chat_agent_status",
                        &[("app", ""), ("group", group), ("agent", name(agent)), ("status", status)],
                        value,
                    );
                    self.add("chat_agents", &[("app", ""), ("group", group), ("status", status)], value);
                }
            }
        }
    }

    pub fn into_vec(self) -> Vec<Sample> {
        self.0
            .into_iter()
            .map(|((name, labels), value)| Sample { name, labels: labels.into_iter().collect(), value })
            .collect()
    }
}

/// The series the contract keeps at 0 (docs/metrics.md, "Series that stay"), derived
/// from the samples and the contract's `histograms`: for every (app, group, origin) of
/// any chat series, the queue and the abandonments at 0, and each histogram empty; for
/// every agent with such a label set (counted, in attendance, or on the roster under
/// its app, or any app, and its group), the answered, finished and in-attendance series
/// at 0. Ground truth within the retention: the exact-truth tests run shorter than it.
pub fn with_zero_series(samples: Vec<Sample>, histograms: &[(&str, &[f64])]) -> Vec<Sample> {
    type Chat = (String, String, String);
    let label = |s: &Sample, k: &str| s.labels.get(k).cloned().unwrap_or_default();
    let mut chats: std::collections::BTreeSet<Chat> = Default::default();
    let mut pairs: std::collections::BTreeSet<(Chat, String)> = Default::default();
    let mut roster: Vec<(String, String, String)> = Vec::new();
    for s in &samples {
        if s.name == "chat_agent_status" {
            roster.push((label(s, "app"), label(s, "group"), label(s, "agent")));
            continue;
        }
        if !s.labels.contains_key("origin") {
            continue;
        }
        let chat = (label(s, "app"), label(s, "group"), label(s, "origin"));
        if matches!(
            s.name.as_str(),
            "chat_conversations_answered_total" | "chat_conversations_finished_total" | "chat_conversations_active"
        ) {
            pairs.insert((chat.clone(), label(s, "agent")));
        }
        chats.insert(chat);
    }
    for (app, group, agent) in roster {
        for chat in &chats {
            if chat.1 == group && (app.is_empty() || chat.0 == app) {
                pairs.insert((chat.clone(), agent.clone()));
            }
        }
    }
    let mut out = Samples(
        samples
            .into_iter()
            .map(|s| {
                let labels: Vec<(&str, &str)> = s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                (Samples::key(&s.name, &labels), s.value)
            })
            .collect(),
    );
    for (app, group, origin) in &chats {
        let labels = [("app", app.as_str()), ("group", group.as_str()), ("origin", origin.as_str())];
        out.add("chat_conversations_waiting", &labels, 0.0);
        out.add("chat_conversations_abandoned_total", &labels, 0.0);
        for (family, bounds) in histograms {
            let bounds = bounds.iter().map(f64::to_string).chain(["+Inf".to_string()]);
            for le in bounds {
                let mut with = labels.to_vec();
                with.push(("le", &le));
                out.add(&format!("{family}_bucket"), &with, 0.0);
            }
            out.add(&format!("{family}_sum"), &labels, 0.0);
            out.add(&format!("{family}_count"), &labels, 0.0);
        }
    }
    for ((app, group, origin), agent) in &pairs {
        let labels =
            [("app", app.as_str()), ("group", group.as_str()), ("origin", origin.as_str()), ("agent", agent.as_str())];
        out.add("chat_conversations_answered_total", &labels, 0.0);
        out.add("chat_conversations_active", &labels, 0.0);
        for first_contact in ["resolved", "unresolved"] {
            let mut with = labels.to_vec();
            with.push(("first_contact", first_contact));
            out.add("chat_conversations_finished_total", &with, 0.0);
        }
    }
    out.into_vec()
}
