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

    pub fn into_vec(self) -> Vec<Sample> {
        self.0
            .into_iter()
            .map(|((name, labels), value)| Sample { name, labels: labels.into_iter().collect(), value })
            .collect()
    }
}
