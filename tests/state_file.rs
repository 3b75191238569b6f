//! The state file gives back every value it can hold: extreme counts, sums at the edges of
//! `f64`, many label sets, label strings no one would choose, and the dates at the edges
//! of what a platform writes. What is saved and loaded equals what was saved, bit for bit.

use chrono::{DateTime, Utc};

use chat_exporter::model::{AgentRef, ChatId, ChatLabels, FirstContact, Presence, RosterAgent};
use chat_exporter::state::{StateFile, StateStore, STATE_VERSION};
use chat_exporter::tracker::export::{Histogram, DURATION_BUCKETS, WAIT_BUCKETS};
use chat_exporter::tracker::saved::TrackerState;
use chat_exporter::tracker::{OpenChat, Tracker};

const ODD_STRINGS: &[&str] = &[
    "",
    " ",
    "\"quoted\"",
    "back\\slash\\",
    "new\nline\r\n",
    "tab\there",
    "\u{0}nul",
    "\u{7f}\u{1b}[31mred",
    "é à ç ñ ü",
    "🎉 emoji 👩‍💻",
    "\u{2028}line separator\u{2029}",
    "\u{feff}bom",
    "{{ template }}",
    "le=\"+Inf\",x=\"y\"",
    "NaN",
    "null",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 outside the BMP",
];

fn date(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

/// Sums a histogram may hold: from the smallest subnormal to the largest finite value,
/// and the 17-digit sums that repeated additions make.
const SUMS: &[f64] = &[
    0.0,
    5e-324,
    f64::MIN_POSITIVE,
    0.1 + 0.2,
    32473.100000000002,
    1234567.9000000004,
    2_592_000.0,
    9_007_199_254_740_994.0,
    1.7976931348623157e308,
];

fn odd_state() -> TrackerState {
    let mut labels: Vec<ChatLabels> = Vec::new();
    for (i, s) in ODD_STRINGS.iter().enumerate() {
        for (j, t) in ODD_STRINGS.iter().enumerate() {
            labels.push(ChatLabels { app: s.to_string(), group: t.to_string(), origin: format!("o{}", (i + j) % 5) });
        }
    }
    for n in 0..3000 {
        labels.push(ChatLabels { app: format!("app {n}"), group: format!("group {}", n % 97), origin: "chat".into() });
    }
    let histogram = |bounds: &[f64], n: usize| {
        let mut counts = vec![0u64; bounds.len() + 1];
        let count = match n % 3 {
            0 => u64::MAX,
            1 => 0,
            _ => 12_345,
        };
        let bucket = n % counts.len();
        counts[bucket] = count;
        Histogram { counts, sum: SUMS[n % SUMS.len()], count }
    };
    let edges = [
        "0001-01-01T00:00:00Z",
        "1970-01-01T00:00:00Z",
        "2026-11-27T10:30:44.123456789Z",
        "9999-12-31T23:59:59.999999999Z",
    ];
    let agent = |s: &str| AgentRef { id: format!("id {s}"), name: s.to_string() };
    TrackerState {
        records: (0..5000u32)
            .map(|n| {
                let bits = [0u8, 1, 2, 3, 9, 11, 25, 27][n as usize % 8];
                let ends = [0, 1, u32::MAX][n as usize % 3];
                let last = [
                    None,
                    Some(i64::from(n) * 1_000_003),
                    Some(date(edges[0]).timestamp_millis()),
                    Some(date(edges[3]).timestamp_millis()),
                ][n as usize % 4];
                (ChatId(format!("{}{n}", ODD_STRINGS[n as usize % ODD_STRINGS.len()])), bits, ends, last)
            })
            .collect(),
        open: ODD_STRINGS
            .iter()
            .enumerate()
            .map(|(n, s)| {
                let chat = OpenChat {
                    labels: labels[n].clone(),
                    agent: (n % 2 == 0).then(|| agent(s)),
                    attending: n % 3 == 0,
                    waiting_since: (n % 4 != 0).then(|| date(edges[n % edges.len()])),
                    last_update: date(edges[(n + 1) % edges.len()]),
                };
                (ChatId(format!("open {s}")), chat)
            })
            .collect(),
        roster: Some(
            ODD_STRINGS
                .iter()
                .enumerate()
                .map(|(n, s)| RosterAgent {
                    agent: agent(s),
                    apps: ODD_STRINGS[..n].iter().map(|a| a.to_string()).collect(),
                    groups: vec![s.to_string(); n % 3],
                    presence: [None, Some(Presence::Available), Some(Presence::Offline)][n % 3],
                })
                .collect(),
        ),
        history_until: Some(date(edges[0])),
        pruned_before: Some(date(edges[3])),
        answered: labels
            .iter()
            .enumerate()
            .map(|(n, l)| (l.clone(), ODD_STRINGS[n % 17].to_string(), u64::MAX - n as u64))
            .collect(),
        finished: labels
            .iter()
            .enumerate()
            .map(|(n, l)| {
                (l.clone(), String::new(), [FirstContact::Resolved, FirstContact::Unresolved][n % 2], n as u64 + 1)
            })
            .collect(),
        abandoned: labels.iter().map(|l| (l.clone(), u64::MAX)).collect(),
        wait: labels.iter().enumerate().map(|(n, l)| (l.clone(), histogram(WAIT_BUCKETS, n))).collect(),
        duration: labels.iter().enumerate().map(|(n, l)| (l.clone(), histogram(DURATION_BUCKETS, n + 1))).collect(),
        seen_chats: labels.iter().enumerate().map(|(n, l)| (l.clone(), date(edges[n % edges.len()]))).collect(),
        seen_attendances: labels
            .iter()
            .enumerate()
            .map(|(n, l)| (l.clone(), ODD_STRINGS[n % 17].to_string(), date(edges[(n + 2) % edges.len()])))
            .collect(),
        seen_teams: ODD_STRINGS
            .iter()
            .enumerate()
            .map(|(n, s)| {
                (s.to_string(), ODD_STRINGS[(n + 1) % 17].to_string(), n % 2 == 0, date(edges[n % edges.len()]))
            })
            .collect(),
        platform_now: Some(date(edges[2])),
    }
}

fn sum_bits(state: &TrackerState) -> Vec<u64> {
    state.wait.iter().chain(&state.duration).map(|(_, h)| h.sum.to_bits()).collect()
}

#[test]
fn extreme_values_are_saved_and_loaded_exactly() {
    // As the tracker holds it (records and open chats sorted, counters keyed).
    let original = Tracker::from_state(odd_state()).expect("a consistent state").to_state();
    let account = ODD_STRINGS.concat();
    let file = StateFile {
        version: STATE_VERSION,
        source: "movidesk".into(),
        account: account.clone(),
        saved_at: date("2026-11-27T10:30:44.123456789Z"),
        source_state: serde_json::json!({
            "cursor": "9999-12-31T23:59:59.9999999",
            "big": u64::MAX,
            "small": i64::MIN,
            "sums": SUMS,
            "odd": ODD_STRINGS,
        }),
        tracker: original.clone(),
        changes: Vec::new(),
    };
    let dir = tempfile::tempdir().unwrap();
    let mut store = StateStore::new(dir.path().join("state.json"));
    store.save(&file).unwrap();
    let loaded = store.load("movidesk", &account).expect("loads").expect("is there");
    assert!(loaded == file, "the state file changed values on the way");
    assert_eq!(sum_bits(&loaded.tracker), sum_bits(&original), "every sum bit for bit");
    assert_eq!(loaded.source_state["sums"], file.source_state["sums"]);
    // And the tracker resumed from it saves the same again.
    assert!(Tracker::from_state(loaded.tracker).unwrap().to_state() == original);
}

/// Histograms whose bucket counts add up past `u64` are a broken file, refused with a
/// reason (and the file set aside), not a panic.
#[test]
fn counts_that_overflow_are_refused_not_a_panic() {
    let mut state = odd_state();
    let h = &mut state.wait[0].1;
    h.counts = vec![0; WAIT_BUCKETS.len() + 1];
    h.counts[0] = u64::MAX;
    h.counts[1] = 2;
    h.count = 1;
    assert!(Tracker::from_state(state).is_err());
}
