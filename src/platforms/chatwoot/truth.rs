//! What the exporter must report for Chatwoot, from the world, by the contract
//! (shared/platforms/chatwoot.md): its own label tables, never the source's.

use crate::simulator::world::{EventKind, Outcome, Presence, State};
use crate::simulator::{Channel, Sample, Samples, World};

/// The `origin` label of each channel as Chatwoot shows it (its inbox class, as a short
/// word); e-mail is not a chat.
fn origin(channel: Channel) -> Option<&'static str> {
    match channel {
        Channel::Web | Channel::WebOffline => Some("web_widget"),
        // Channel::Whatsapp, and Channel::TwilioSms with medium whatsapp.
        Channel::WhatsApp | Channel::WhatsAppBusiness => Some("whatsapp"),
        Channel::Messenger => Some("facebook"),
        Channel::Email => None,
    }
}

fn presence(p: Presence) -> &'static str {
    match p {
        Presence::Available => "available",
        // Chatwoot has no "away"; the facade shows it as busy.
        Presence::Busy | Presence::Away => "busy",
        Presence::Offline => "offline",
    }
}

pub fn truth(world: &World) -> Vec<Sample> {
    let mut s = Samples::default();
    let name = |i: Option<usize>| i.map(|i| world.agents[i].name.clone()).unwrap_or_default();
    for e in &world.events {
        let Some(o) = origin(e.channel) else { continue };
        let agent = name(e.agent);
        let labels = [("app", e.app.as_str()), ("group", e.group.as_str()), ("origin", o)];
        match &e.kind {
            // The first reply of a person.
            EventKind::Answered { .. } => {
                s.add("chat_conversations_answered_total", &[labels[0], labels[1], labels[2], ("agent", &agent)], 1.0)
            }
            // Every resolution; deleted conversations vanish and leave no event.
            // Resolved at the first contact when never resolved before, as far as the API
            // can tell: a conversation live when the exporter started shows no earlier end.
            EventKind::Ended { answered: true, ends_before, .. } => {
                let first_contact =
                    if world.ends_known(e.conversation, *ends_before) == 0 { "resolved" } else { "unresolved" };
                s.add(
                    "chat_conversations_finished_total",
                    &[labels[0], labels[1], labels[2], ("agent", &agent), ("first_contact", first_contact)],
                    1.0,
                );
            }
            EventKind::Ended { answered: false, outcome, .. } => {
                debug_assert_eq!(*outcome, Outcome::Abandoned);
                s.add("chat_conversations_abandoned_total", &labels, 1.0);
            }
        }
    }
    for c in world.open_conversations() {
        let Some(o) = origin(c.channel) else { continue };
        let labels = [("app", c.app.as_str()), ("group", c.group.as_str()), ("origin", o)];
        match c.state {
            // Open and not replied to.
            State::Waiting => {
                s.add("chat_conversations_waiting", &labels, 1.0);
                s.min(
                    "chat_conversations_waiting_oldest_timestamp_seconds",
                    &labels,
                    c.created.timestamp() as f64,
                );
            }
            // Open, replied, assigned. Pending (bot) and snoozed count in neither gauge.
            State::Attending => {
                let agent = name(c.agent);
                s.add("chat_conversations_active", &[labels[0], labels[1], labels[2], ("agent", &agent)], 1.0);
            }
            State::Bot | State::Held | State::Closed => {}
        }
    }
    s.presence_agents(world, |i| presence(world.presence(i)), |agent| &agent.name);
    s.into_vec()
}
