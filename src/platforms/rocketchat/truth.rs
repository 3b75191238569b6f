//! What the exporter must report for Rocket.Chat, from the world, by the contract
//! (shared/platforms/rocketchat.md): its own label tables, never the source's.

use crate::simulator::world::{EventKind, Presence, State};
use crate::simulator::{Channel, Sample, Samples, World};

/// (`origin`, `app`) of each channel as the facade shows it: `source.type`, and
/// `source.alias` where it names one. E-mail rooms never count.
fn labels(channel: Channel, app: &str) -> Option<(&'static str, String)> {
    match channel {
        Channel::Web | Channel::WebOffline => Some(("widget", app.to_string())),
        Channel::WhatsApp | Channel::Messenger => Some(("app", app.to_string())),
        Channel::WhatsAppBusiness => Some(("sms", app.to_string())),
        Channel::Email => None,
    }
}

/// The neutral presence of the facade's (status, statusLivechat) pairs.
fn presence(p: Presence) -> &'static str {
    match p {
        Presence::Available => "available",
        Presence::Busy => "busy",
        Presence::Away => "away",
        Presence::Offline => "offline",
    }
}

pub fn truth(world: &World) -> Vec<Sample> {
    let mut s = Samples::default();
    let username = |i: Option<usize>| i.map(|i| world.agents[i].username.clone()).unwrap_or_default();
    for e in &world.events {
        let Some((origin, app)) = labels(e.channel, &e.app) else { continue };
        let agent = username(e.agent);
        let base = [("app", app.as_str()), ("group", e.group.as_str()), ("origin", origin)];
        match &e.kind {
            // The first time a room is served, with that agent and department.
            EventKind::Answered { .. } => {
                s.add("chat_conversations_answered_total", &[base[0], base[1], base[2], ("agent", &agent)], 1.0)
            }
            // A served room's close, resolved at the first contact when never transferred
            // (before the exporter started or after).
            EventKind::Ended { answered: true, transfers, .. } => {
                let first_contact = if *transfers == 0 { "resolved" } else { "unresolved" };
                s.add(
                    "chat_conversations_finished_total",
                    &[base[0], base[1], base[2], ("agent", &agent), ("first_contact", first_contact)],
                    1.0,
                );
            }
            // A close without service.
            EventKind::Ended { answered: false, .. } => s.add("chat_conversations_abandoned_total", &base, 1.0),
        }
    }
    for c in world.open_conversations() {
        let Some((origin, app)) = labels(c.channel, &c.app) else { continue };
        let base = [("app", app.as_str()), ("group", c.group.as_str()), ("origin", origin)];
        match c.state {
            // Queued inquiries; pre-queued (`ready`) ones are not waiting.
            State::Waiting => {
                s.add("chat_conversations_waiting", &base, 1.0);
                let since = c.queued_at.unwrap_or(c.created);
                s.min("chat_conversations_waiting_oldest_timestamp_seconds", &base, since.timestamp_millis() as f64 / 1000.0);
            }
            // Open served rooms, on hold included.
            State::Attending | State::Held => {
                let agent = username(c.agent);
                s.add("chat_conversations_active", &[base[0], base[1], base[2], ("agent", &agent)], 1.0);
            }
            State::Bot | State::Closed => {}
        }
    }
    s.presence_agents(world, |i| presence(world.presence(i)), |agent| &agent.username);
    s.into_vec()
}
