//! Encodes a snapshot of the metrics once per poll; scrapes are served these bytes.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use prometheus::Encoder as _;

use crate::model::ChatLabels;
use crate::self_metrics::SelfMetrics;
use crate::tracker::export::{AgentStatus, ChatCounters, ChatGauges, Histogram, DURATION_BUCKETS, WAIT_BUCKETS};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One encoded exposition: the chat metrics, encoded once per poll and shared with every
/// exposition until the next (never copied: at a large contact centre they are most of
/// the bytes), then the exporter's own metrics, and the whole gzipped.
#[derive(Debug, Clone)]
pub struct Exposition {
    pub chats: Bytes,
    pub own: Bytes,
    pub gzip: Bytes,
}

impl Exposition {
    /// The chat metrics as encoded, followed by the exporter's own metrics as they are now.
    pub fn new(chats: Bytes, self_metrics: &SelfMetrics) -> Self {
        let mut own = Vec::with_capacity(16 * 1024);
        prometheus::TextEncoder::new()
            .encode(&self_metrics.registry.gather(), &mut own)
            .expect("text encoding of gathered metrics");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&chats).and_then(|()| encoder.write_all(&own)).expect("writing to memory");
        let gzip = encoder.finish().expect("writing to memory");
        Exposition { chats, own: Bytes::from(own), gzip: Bytes::from(gzip) }
    }

    pub fn empty() -> Self {
        Exposition { chats: Bytes::new(), own: Bytes::new(), gzip: Bytes::new() }
    }

    /// The plain text, as a body of its two parts (with their total as Content-Length).
    pub fn plain(&self) -> PlainBody {
        PlainBody { parts: [Some(self.chats.clone()), Some(self.own.clone())] }
    }
}

/// A response body of the exposition's parts in order, sent without joining them.
pub struct PlainBody {
    parts: [Option<Bytes>; 2],
}

impl hyper::body::Body for PlainBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let next = self.parts.iter_mut().find_map(|part| part.take().filter(|b| !b.is_empty()));
        std::task::Poll::Ready(next.map(|b| Ok(hyper::body::Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.parts.iter().flatten().all(Bytes::is_empty)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.parts.iter().flatten().map(|b| b.len() as u64).sum())
    }
}

/// The latest exposition, swapped whole after each poll.
#[derive(Clone)]
pub struct SharedExposition(Arc<RwLock<Arc<Exposition>>>);

impl SharedExposition {
    pub fn new() -> Self {
        SharedExposition(Arc::new(RwLock::new(Arc::new(Exposition::empty()))))
    }
    pub fn get(&self) -> Arc<Exposition> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub fn set(&self, exposition: Exposition) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(exposition);
    }
}

impl Default for SharedExposition {
    fn default() -> Self {
        Self::new()
    }
}

const AS_OF: &str = "Values are as of the exporter's last poll of the platform.";

/// The chat metrics' text.
pub fn encode_chats(counters: &ChatCounters, gauges: &ChatGauges) -> String {
    let mut out = String::with_capacity(64 * 1024);
    encode_chat_metrics(&mut out, counters, gauges);
    // Kept until the next poll: no doubling slack held with it.
    out.shrink_to_fit();
    out
}

pub fn encode_chat_metrics(out: &mut String, counters: &ChatCounters, gauges: &ChatGauges) {
    family(
        out,
        "chat_conversations_answered_total",
        "counter",
        "Conversations that left the queue with an agent.",
        counters.answered.iter().map(|((l, agent), v)| (chat_labels(l, &[("agent", agent)]), *v as f64)),
    );
    family(
        out,
        "chat_conversations_finished_total",
        "counter",
        "Attended conversations that ended, by whether they were resolved at the first contact.",
        counters
            .finished
            .iter()
            .map(|((l, agent, fc), v)| (chat_labels(l, &[("agent", agent), ("first_contact", fc.label())]), *v as f64)),
    );
    family(
        out,
        "chat_conversations_abandoned_total",
        "counter",
        "Conversations that ended without ever having had an agent.",
        counters.abandoned.iter().map(|(l, v)| (chat_labels(l, &[]), *v as f64)),
    );
    histogram_family(
        out,
        "chat_conversation_wait_seconds",
        "Queue wait of answered conversations, observed once per conversation.",
        WAIT_BUCKETS,
        &counters.wait,
    );
    histogram_family(
        out,
        "chat_conversation_duration_seconds",
        "Duration of finished conversations, observed once per conversation.",
        DURATION_BUCKETS,
        &counters.duration,
    );
    family(
        out,
        "chat_conversations_waiting",
        "gauge",
        "Conversations waiting for an agent.",
        gauges.waiting.iter().map(|(l, v)| (chat_labels(l, &[]), *v as f64)),
    );
    family(
        out,
        "chat_conversations_waiting_oldest_timestamp_seconds",
        "gauge",
        "Unix time at which the longest-waiting conversation started waiting.",
        gauges.waiting_oldest.iter().map(|(l, t)| (chat_labels(l, &[]), t.timestamp_millis() as f64 / 1000.0)),
    );
    family(
        out,
        "chat_conversations_active",
        "gauge",
        "Conversations in attendance.",
        gauges.active.iter().map(|((l, agent), v)| (chat_labels(l, &[("agent", agent)]), *v as f64)),
    );
    family(
        out,
        "chat_agent_status",
        "gauge",
        "Agent status: presence where the platform tells it, otherwise whether the agent attends a conversation; 1 for the current status, 0 for the others.",
        gauges.agent_status.iter().flat_map(|((app, group, agent), current)| {
            current.kind().iter().map(move |status| {
                (
                    labels(&[("app", app), ("group", group), ("agent", agent), ("status", status.label())]),
                    if status == current { 1.0 } else { 0.0 },
                )
            })
        }),
    );
    let mut agent_counts: std::collections::BTreeMap<(&str, &str, AgentStatus), u64> = Default::default();
    for ((app, group, _), status) in &gauges.agent_status {
        for s in status.kind() {
            *agent_counts.entry((app.as_str(), group.as_str(), *s)).or_default() += u64::from(s == status);
        }
    }
    // A team seen within the retention whose agents left stays, at 0.
    for ((app, group), with_presence) in &gauges.teams {
        let kind = if *with_presence { &AgentStatus::WITH_PRESENCE[..] } else { &AgentStatus::WITHOUT_PRESENCE[..] };
        for s in kind {
            agent_counts.entry((app.as_str(), group.as_str(), *s)).or_default();
        }
    }
    family(
        out,
        "chat_agents",
        "gauge",
        "Agents in each status.",
        agent_counts
            .iter()
            .map(|((app, group, s), v)| (labels(&[("app", app), ("group", group), ("status", s.label())]), *v as f64)),
    );
}

fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: impl Iterator<Item = (String, f64)>) {
    let mut samples = samples.peekable();
    if samples.peek().is_none() {
        return;
    }
    let _ = writeln!(out, "# HELP {name} {help} {AS_OF}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

fn histogram_family(
    out: &mut String,
    name: &str,
    help: &str,
    bounds: &[f64],
    histograms: &std::collections::BTreeMap<ChatLabels, Histogram>,
) {
    if histograms.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {name} {help} {AS_OF}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (l, h) in histograms {
        let base = chat_labels(l, &[]);
        for (bound, count) in bounds.iter().map(|b| b.to_string()).chain(["+Inf".to_string()]).zip(h.cumulative()) {
            let _ = writeln!(out, "{name}_bucket{{{base},le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_sum{{{base}}} {}", h.sum);
        let _ = writeln!(out, "{name}_count{{{base}}} {}", h.count);
    }
}

fn chat_labels(l: &ChatLabels, extra: &[(&str, &str)]) -> String {
    let mut pairs = vec![("app", l.app.as_str()), ("group", l.group.as_str()), ("origin", l.origin.as_str())];
    pairs.extend_from_slice(extra);
    labels(&pairs)
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;
    use hyper::body::Body as _;

    use super::*;

    /// The plain body is the chat text then the exporter's own, byte for byte, with its
    /// exact length announced (the Content-Length); the gzipped copy holds the same text.
    #[tokio::test]
    async fn the_plain_body_is_both_parts_in_order_with_their_exact_length() {
        let metrics = SelfMetrics::new();
        let chats = Bytes::from_static(b"# TYPE chat_conversations_waiting gauge\nchat_conversations_waiting 3\n");
        let exposition = Exposition::new(chats.clone(), &metrics);
        assert!(!exposition.own.is_empty());
        let whole = [&chats[..], &exposition.own[..]].concat();
        let body = exposition.plain();
        assert_eq!(body.size_hint().exact(), Some(whole.len() as u64));
        assert_eq!(body.collect().await.unwrap().to_bytes(), whole);
        let mut unzipped = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&exposition.gzip[..]), &mut unzipped).unwrap();
        assert_eq!(unzipped, whole);
        let empty = Exposition::empty().plain();
        assert!(empty.is_end_stream());
        assert_eq!(empty.collect().await.unwrap().to_bytes(), Bytes::new());
    }
}
