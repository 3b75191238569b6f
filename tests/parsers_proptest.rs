//! Property tests of every parser that reads outside input: the platforms' records, dates,
//! `Retry-After`, the rate-limit headers, durations in the config, the simulator's OData
//! and the shared list decoder. None may panic, whatever it is given; where a value can be
//! written and read back, it reads back the same. Case counts are modest: suite time.

use std::collections::HashMap;
use std::time::Duration;

use chat_exporter::budget::MAX_RETRY_AFTER;
use chat_exporter::platforms::chatwoot::records as chatwoot;
use chat_exporter::platforms::movidesk::{odata, records as movidesk};
use chat_exporter::platforms::rocketchat::{records as rocketchat, source::route_limit};
use chat_exporter::self_metrics::SelfMetrics;
use chat_exporter::source::client::{parse_retry_after, ApiClient, Hints};
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use serde_json::{json, Value};

fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
}

/// Any JSON value, a few levels deep, with the numbers and strings that break parsers.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        // Quarters: exact in binary, so they read back the same without serde_json's
        // float_roundtrip feature.
        any::<i32>().prop_map(|n| json!(f64::from(n) / 4.0)),
        ".{0,12}".prop_map(Value::String),
        Just(json!("2026-11-02T10:00:00.1234567")),
        Just(json!("9999-12-31T23:59:59Z")),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::hash_map(".{0,8}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A record with the fields each platform reads, each holding anything.
fn record_with(fields: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop::collection::vec(any_json(), fields.len())
        .prop_map(move |values| Value::Object(fields.iter().map(|f| f.to_string()).zip(values).collect()))
}

const MOVIDESK_TICKET: &[&str] = &[
    "id",
    "origin",
    "baseStatus",
    "isDeleted",
    "chatGroup",
    "chatWidget",
    "resolvedInFirstCall",
    "chatWaitingTime",
    "chatTalkTime",
    "createdDate",
    "lastUpdate",
    "owner",
];
const MOVIDESK_PERSON: &[&str] = &["id", "businessName", "profileType", "isActive", "teams"];
const CHATWOOT_CONVERSATION: &[&str] = &[
    "id",
    "inbox_id",
    "status",
    "updated_at",
    "created_at",
    "timestamp",
    "first_reply_created_at",
    "waiting_since",
    "meta",
    "team_id",
    "assignee_id",
];
const ROCKETCHAT_ROOM: &[&str] = &[
    "_id",
    "t",
    "open",
    "onHold",
    "servedBy",
    "departmentId",
    "source",
    "ts",
    "_updatedAt",
    "closedAt",
    "closer",
    "responseBy",
    "queuedAt",
    "waitingResponse",
    "metrics",
    "lm",
];

proptest! {
    #![proptest_config(config())]

    #[test]
    fn movidesk_records_never_panic(t in prop_oneof![any_json(), record_with(MOVIDESK_TICKET)], p in record_with(MOVIDESK_PERSON)) {
        let _ = movidesk::parse_ticket(&t, &[5, 6, 18, 20, 22, 23, 25]);
        let _ = movidesk::parse_person(&p);
        let _ = movidesk::parse_person(&t);
    }

    #[test]
    fn chatwoot_records_never_panic(c in prop_oneof![any_json(), record_with(CHATWOOT_CONVERSATION)]) {
        let inbox = |_| Some(chatwoot::Inbox { name: "i".into(), origin: Some("web_widget".into()) });
        let _ = chatwoot::parse_conversation(&c, inbox);
        let _ = chatwoot::parse_agent(&c);
        let _ = chatwoot::parse_inbox(&c);
    }

    #[test]
    fn rocketchat_records_never_panic(r in prop_oneof![any_json(), record_with(ROCKETCHAT_ROOM)], h in prop::collection::vec(any_json(), 0..4)) {
        let departments = HashMap::from([("d".to_string(), "Vendas".to_string())]);
        let _ = rocketchat::parse_room(&r, &departments);
        let _ = rocketchat::parse_agent(&r);
        let _ = rocketchat::parse_history(&h, &departments);
        let _ = rocketchat::date(Some(&r));
    }

    #[test]
    fn movidesk_dates_never_panic_and_round_trip(s in ".{0,40}", secs in 0i64..253_402_300_799, nanos in 0u32..1_000_000_000) {
        let _ = movidesk::parse_datetime(&s);
        // Movidesk writes UTC without a zone, with up to 7 fractional digits.
        let at = DateTime::<Utc>::from_timestamp(secs, nanos / 100 * 100).unwrap();
        prop_assert_eq!(movidesk::parse_datetime(&at.format("%Y-%m-%dT%H:%M:%S%.f").to_string()), Some(at));
        prop_assert_eq!(movidesk::parse_datetime(&at.to_rfc3339()), Some(at));
    }

    #[test]
    fn retry_after_never_panics_and_is_capped(s in ".{0,40}", secs in any::<u64>(), date in prop::option::of(0i64..253_402_300_799)) {
        let date = date.and_then(|d| DateTime::<Utc>::from_timestamp(d, 0));
        if let Some(wait) = parse_retry_after(&s, date) {
            prop_assert!(wait <= MAX_RETRY_AFTER);
        }
        prop_assert_eq!(parse_retry_after(&secs.to_string(), date), Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER)));
        if let Some(now) = date {
            let later = now + chrono::Duration::seconds((secs % 7200) as i64);
            let http_date = later.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
            prop_assert_eq!(parse_retry_after(&http_date, Some(now)), Some(Duration::from_secs(secs % 7200).min(MAX_RETRY_AFTER)));
        }
    }

    #[test]
    fn rate_limit_headers_never_panic(remaining in ".{0,24}", reset in ".{0,24}", n in any::<i64>(), r in any::<i64>()) {
        let date = DateTime::<Utc>::from_timestamp(1_790_000_000, 0);
        for (remaining, reset) in [(remaining, reset), (n.to_string(), r.to_string())] {
            let mut headers = reqwest::header::HeaderMap::new();
            if let (Ok(a), Ok(b)) = (remaining.parse(), reset.parse()) {
                headers.insert("x-ratelimit-remaining", a);
                headers.insert("x-ratelimit-reset", b);
            }
            let _ = route_limit(&headers, date);
        }
    }

    #[test]
    fn config_durations_never_panic_and_round_trip(s in ".{0,30}", secs in 0u64..100 * 365 * 86_400) {
        #[derive(serde::Deserialize)]
        struct Key {
            #[serde(deserialize_with = "chat_exporter::config::duration::required")]
            value: Duration,
        }
        let _ = serde_json::from_value::<Key>(json!({ "value": s }));
        let written = humantime::format_duration(Duration::from_secs(secs)).to_string();
        let read = serde_json::from_value::<Key>(json!({ "value": written })).map(|k| k.value).ok();
        prop_assert_eq!(read, Some(Duration::from_secs(secs)));
    }

    #[test]
    fn odata_never_panics(s in ".{0,60}", words in prop::collection::vec(prop_oneof![
        Just("id"), Just("lastUpdate"), Just("baseStatus"), Just("eq"), Just("gt"), Just("le"), Just("and"), Just("or"),
        Just("("), Just(")"), Just("'New'"), Just("2026-11-02T10:00:00Z"), Just("42"), Just("asc"), Just("desc"), Just(","),
    ], 0..12)) {
        let _ = odata::parse_filter(&s);
        let _ = odata::parse_orderby(&s);
        let sentence = words.join(" ");
        let _ = odata::parse_filter(&sentence);
        let _ = odata::parse_orderby(&sentence);
    }

    #[test]
    fn list_answers_never_panic_and_round_trip(bytes in prop::collection::vec(any::<u8>(), 0..200), items in prop::collection::vec(any_json(), 0..6)) {
        let polling = chat_exporter::platforms::ALL[0].polling_defaults();
        let client = ApiClient::new("proptest", &polling, SelfMetrics::new(), Hints::default());
        let _ = client.decode_list("list", &bytes, &[]);
        let _ = client.decode_list("list", &bytes, &["data", "payload"]);
        let body = serde_json::to_vec(&json!({ "data": { "payload": items.clone() }, "total": items.len() })).unwrap();
        let list = client.decode_list("list", &body, &["data", "payload"]).unwrap();
        prop_assert_eq!(list.len, items.len());
        prop_assert_eq!(&list.items, &items);
        prop_assert_eq!(list.envelope.get("total"), Some(&json!(items.len())));
    }
}
