//! What the exporter must report for Movidesk, from the world, by the contract in
//! docs/metrics.md: its own label table and buckets, never the source's.

use std::collections::{BTreeMap, BTreeSet};

use crate::simulator::world::{EventKind, Outcome, State};
use crate::simulator::{Channel, Sample, Samples, World};

const WAIT_BUCKETS: &[f64] = &[5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0, 900.0, 1800.0, 3600.0];
const DURATION_BUCKETS: &[f64] = &[30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0, 7200.0];
const WAIT: &str = "chat_conversation_wait_seconds";
const DURATION: &str = "chat_conversation_duration_seconds";

/// Movidesk's tickets carry the wait and the talk time: both histograms, for every chat
/// label set, from the start.
pub const HISTOGRAMS: &[(&str, &[f64])] = &[(WAIT, WAIT_BUCKETS), (DURATION, DURATION_BUCKETS)];

/// The `origin` label of each channel; e-mail is not a chat.
fn origin(channel: Channel) -> Option<&'static str> {
    match channel {
        Channel::Web => Some("chat"),
        Channel::WebOffline => Some("chat_offline"),
        Channel::WhatsApp => Some("whatsapp"),
        Channel::WhatsAppBusiness => Some("whatsapp_business"),
        Channel::Messenger => Some("messenger"),
        Channel::Email => None,
    }
}

pub fn truth(world: &World) -> Vec<Sample> {
    let mut s = Samples::default();
    let agent_name = |i: Option<usize>| i.map(|i| world.agents[i].name.clone()).unwrap_or_default();
    let mut waits: BTreeMap<(String, String, &str), Vec<f64>> = BTreeMap::new();
    let mut durations: BTreeMap<(String, String, &str), Vec<f64>> = BTreeMap::new();
    for e in &world.events {
        let Some(o) = origin(e.channel) else { continue };
        let agent = agent_name(e.agent);
        match &e.kind {
            EventKind::Answered { wait_seconds } => {
                s.add(
                    "chat_conversations_answered_total",
                    &[("app", &e.app), ("group", &e.group), ("origin", o), ("agent", &agent)],
                    1.0,
                );
                waits.entry((e.app.clone(), e.group.clone(), o)).or_default().push(*wait_seconds as f64);
            }
            EventKind::Ended { outcome, talk_seconds, ends_before, answered, .. } => match outcome {
                Outcome::Resolved | Outcome::FollowUp if *answered => {
                    let first = *outcome == Outcome::Resolved && *ends_before == 0;
                    s.add(
                        "chat_conversations_finished_total",
                        &[
                            ("app", &e.app),
                            ("group", &e.group),
                            ("origin", o),
                            ("agent", &agent),
                            ("first_contact", if first { "resolved" } else { "unresolved" }),
                        ],
                        1.0,
                    );
                    if let Some(talk) = talk_seconds {
                        durations.entry((e.app.clone(), e.group.clone(), o)).or_default().push(*talk as f64);
                    }
                }
                Outcome::Abandoned if !*answered => {
                    s.add("chat_conversations_abandoned_total", &[("app", &e.app), ("group", &e.group), ("origin", o)], 1.0)
                }
                _ => {}
            },
        }
    }
    for ((app, group, o), values) in &waits {
        s.histogram(WAIT, &[("app", app), ("group", group), ("origin", o)], WAIT_BUCKETS, values);
    }
    for ((app, group, o), values) in &durations {
        s.histogram(DURATION, &[("app", app), ("group", group), ("origin", o)], DURATION_BUCKETS, values);
    }

    let mut attending_agents = BTreeSet::new();
    for c in world.open_conversations() {
        let Some(o) = origin(c.channel) else { continue };
        let labels = [("app", c.app.as_str()), ("group", c.group.as_str()), ("origin", o)];
        match c.state {
            State::Bot | State::Waiting => {
                s.add("chat_conversations_waiting", &labels, 1.0);
                s.min(
                    "chat_conversations_waiting_oldest_timestamp_seconds",
                    &labels,
                    c.created.timestamp_millis() as f64 / 1000.0,
                );
            }
            State::Attending | State::Held => {
                let agent = c.agent.expect("attended conversations have an agent");
                attending_agents.insert(agent);
                let name = agent_name(Some(agent));
                s.add("chat_conversations_active", &[labels[0], labels[1], labels[2], ("agent", &name)], 1.0);
            }
            State::Closed => {}
        }
    }
    // Movidesk tells the roster and who has chats in attendance; nothing about presence.
    for (i, agent) in world.agents.iter().enumerate().filter(|(_, a)| a.active) {
        let attending = attending_agents.contains(&i);
        for group in &agent.groups {
            for status in ["attending", "not_attending"] {
                let current = (status == "attending") == attending;
                let value = if current { 1.0 } else { 0.0 };
                s.set(
                    "chat_agent_status",
                    &[("app", ""), ("group", group), ("agent", &agent.name), ("status", status)],
                    value,
                );
                s.add("chat_agents", &[("app", ""), ("group", group), ("status", status)], value);
            }
        }
    }
    s.into_vec()
}
