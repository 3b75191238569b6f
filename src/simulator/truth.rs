//! Ground truth: the exact value of every chat metric, computed from the world model
//! with its own bookkeeping (not the exporter's), for tests to compare against.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::world::{BaseStatus, World};
use crate::sources::movidesk::origin_label;
use crate::tracker::{DURATION_BUCKETS, WAIT_BUCKETS};

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
    pub tickets: u64,
    pub samples: Vec<Sample>,
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn push(samples: &mut Vec<Sample>, name: &str, pairs: &[(&str, &str)], value: f64) {
    samples.push(Sample { name: name.to_string(), labels: labels(pairs), value });
}

fn histogram(
    samples: &mut Vec<Sample>,
    name: &str,
    app: &str,
    group: &str,
    origin: &str,
    bounds: &[f64],
    values: &[f64],
) {
    for bound in bounds {
        let n = values.iter().filter(|v| **v <= *bound).count();
        push(
            samples,
            &format!("{name}_bucket"),
            &[("app", app), ("group", group), ("origin", origin), ("le", &bound.to_string())],
            n as f64,
        );
    }
    let base = [("app", app), ("group", group), ("origin", origin)];
    let mut inf = base.to_vec();
    inf.push(("le", "+Inf"));
    push(samples, &format!("{name}_bucket"), &inf, values.len() as f64);
    push(samples, &format!("{name}_sum"), &base, values.iter().sum());
    push(samples, &format!("{name}_count"), &base, values.len() as f64);
}

pub fn truth(world: &World) -> Truth {
    let mut s = Vec::new();
    let e = &world.events;
    for ((app, group, origin, agent), n) in &e.answered {
        let o = origin_label(*origin);
        push(
            &mut s,
            "chat_conversations_answered_total",
            &[("app", app), ("group", group), ("origin", &o), ("agent", agent)],
            *n as f64,
        );
    }
    for ((app, group, origin, agent, first), n) in &e.finished {
        let o = origin_label(*origin);
        let fc = if *first { "resolved" } else { "unresolved" };
        push(
            &mut s,
            "chat_conversations_finished_total",
            &[("app", app), ("group", group), ("origin", &o), ("agent", agent), ("first_contact", fc)],
            *n as f64,
        );
    }
    for ((app, group, origin), n) in &e.abandoned {
        let o = origin_label(*origin);
        push(
            &mut s,
            "chat_conversations_abandoned_total",
            &[("app", app), ("group", group), ("origin", &o)],
            *n as f64,
        );
    }
    for ((app, group, origin), values) in &e.waits {
        histogram(&mut s, "chat_conversation_wait_seconds", app, group, &origin_label(*origin), WAIT_BUCKETS, values);
    }
    for ((app, group, origin), values) in &e.durations {
        histogram(
            &mut s,
            "chat_conversation_duration_seconds",
            app,
            group,
            &origin_label(*origin),
            DURATION_BUCKETS,
            values,
        );
    }

    let mut waiting: BTreeMap<(String, String, u16), (u64, i64)> = BTreeMap::new();
    let mut active: BTreeMap<(String, String, u16, String), u64> = BTreeMap::new();
    let mut attending_agents = BTreeSet::new();
    for t in world.open_chats() {
        let key = (t.app.clone(), t.group.clone(), t.origin);
        match t.status {
            BaseStatus::New => {
                let entry = waiting.entry(key).or_insert((0, i64::MAX));
                entry.0 += 1;
                entry.1 = entry.1.min(t.created.timestamp_millis());
            }
            BaseStatus::InAttendance => {
                let agent = t.owner.expect("attended chats have an owner");
                attending_agents.insert(agent);
                *active.entry((key.0, key.1, key.2, world.agents[agent].name.clone())).or_default() += 1;
            }
            _ => {}
        }
    }
    for ((app, group, origin), (n, oldest)) in &waiting {
        let o = origin_label(*origin);
        push(&mut s, "chat_conversations_waiting", &[("app", app), ("group", group), ("origin", &o)], *n as f64);
        push(
            &mut s,
            "chat_conversations_waiting_oldest_timestamp_seconds",
            &[("app", app), ("group", group), ("origin", &o)],
            *oldest as f64 / 1000.0,
        );
    }
    for ((app, group, origin, agent), n) in &active {
        let o = origin_label(*origin);
        push(
            &mut s,
            "chat_conversations_active",
            &[("app", app), ("group", group), ("origin", &o), ("agent", agent)],
            *n as f64,
        );
    }
    // Movidesk tells the roster and who has chats in attendance; nothing about presence.
    let mut per_group: BTreeMap<(String, &str), u64> = BTreeMap::new();
    for (i, agent) in world.agents.iter().enumerate().filter(|(_, a)| a.active) {
        let attending = attending_agents.contains(&i);
        for group in &agent.groups {
            for status in ["attending", "not_attending"] {
                let current = (status == "attending") == attending;
                push(
                    &mut s,
                    "chat_agent_status",
                    &[("app", ""), ("group", group), ("agent", &agent.name), ("status", status)],
                    if current { 1.0 } else { 0.0 },
                );
                *per_group.entry((group.clone(), status)).or_default() += u64::from(current);
            }
        }
    }
    for ((group, status), n) in &per_group {
        push(&mut s, "chat_agents", &[("app", ""), ("group", group), ("status", status)], *n as f64);
    }
    Truth { now: world.now.to_rfc3339(), tickets: world.tickets.len() as u64, samples: s }
}
