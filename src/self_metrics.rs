//! The exporter's own health metrics, kept in a `prometheus` registry with the process
//! collector. Sources record into it as they talk to their platform.

use prometheus::{Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct SelfMetrics {
    pub registry: Registry,
    pub source_up: GaugeVec,
    pub last_success: GaugeVec,
    pub poll_duration: HistogramVec,
    pub api_requests: IntCounterVec,
    pub api_failures: IntCounterVec,
    pub budget_per_minute: GaugeVec,
    pub budget_used: GaugeVec,
    pub budget_remaining: GaugeVec,
    pub budget_wait: prometheus::CounterVec,
    pub budget_waiting: GaugeVec,
    pub open_chats_tracked: Gauge,
    pub state_save_failures: prometheus::IntCounter,
    pub state_last_save: Gauge,
    pub platform_clock_jumps: IntCounterVec,
    pub route_budget: GaugeVec,
    pub source_lag: GaugeVec,
}

impl SelfMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let build_info = GaugeVec::new(
            Opts::new(
                "chat_exporter_build_info",
                "A metric with a constant '1' value labelled by version, revision and rustversion of chat_exporter.",
            ),
            &["version", "revision", "rustversion"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                option_env!("CHAT_EXPORTER_REVISION").unwrap_or("unknown"),
                option_env!("CHAT_EXPORTER_RUSTC_VERSION").unwrap_or("unknown"),
            ])
            .set(1.0);
        let source_up = GaugeVec::new(
            Opts::new("chat_exporter_source_up", "1 if the last poll of the source succeeded, 0 otherwise."),
            &["source"],
        )
        .expect("valid metric");
        let last_success = GaugeVec::new(
            Opts::new(
                "chat_exporter_source_last_success_timestamp_seconds",
                "Unix time of the last successful poll of the source.",
            ),
            &["source"],
        )
        .expect("valid metric");
        let poll_duration = HistogramVec::new(
            HistogramOpts::new(
                "chat_exporter_poll_duration_seconds",
                "Wall time of each poll of the source, waits for request budget included.",
            )
            .buckets(vec![0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0]),
            &["source"],
        )
        .expect("valid metric");
        let api_requests = IntCounterVec::new(
            Opts::new(
                "chat_exporter_api_requests_total",
                "Requests sent to the platform's API, by endpoint and HTTP status code (none when no answer came).",
            ),
            &["source", "endpoint", "code"],
        )
        .expect("valid metric");
        let api_failures = IntCounterVec::new(
            Opts::new(
                "chat_exporter_api_request_failures_total",
                "Failed requests to the platform and records rejected from its answers, by reason.",
            ),
            &["source", "reason"],
        )
        .expect("valid metric");
        let budget_per_minute = GaugeVec::new(
            Opts::new(
                "chat_exporter_api_budget_requests_per_minute",
                "Configured budget of requests per minute to the platform.",
            ),
            &["source"],
        )
        .expect("valid metric");
        let budget_used = GaugeVec::new(
            Opts::new(
                "chat_exporter_api_budget_used",
                "Requests sent to the platform in the budget's window (the last 61 seconds).",
            ),
            &["source"],
        )
        .expect("valid metric");
        let budget_remaining = GaugeVec::new(
            Opts::new(
                "chat_exporter_api_budget_remaining",
                "Requests the budget still allows in the current 60-second window.",
            ),
            &["source"],
        )
        .expect("valid metric");
        let budget_wait = prometheus::CounterVec::new(
            Opts::new(
                "chat_exporter_api_budget_wait_seconds_total",
                "Time spent waiting for request budget before calling the platform.",
            ),
            &["source"],
        )
        .expect("valid metric");
        let budget_waiting = GaugeVec::new(
            Opts::new(
                "chat_exporter_api_budget_waiting_seconds",
                "How long the request in progress has waited for request budget (pacing, a Retry-After, a route's rate-limit reset, backoff); 0 when none waits.",
            ),
            &["source"],
        )
        .expect("valid metric");
        let open_chats_tracked =
            Gauge::new("chat_exporter_open_conversations_tracked", "Open conversations held in memory by the tracker.")
                .expect("valid metric");
        let state_save_failures = prometheus::IntCounter::new(
            "chat_exporter_state_save_failures_total",
            "Failed writes of the state file; the exporter goes on and tries again after the next poll.",
        )
        .expect("valid metric");
        let state_last_save = Gauge::new(
            "chat_exporter_state_last_save_timestamp_seconds",
            "Unix time of the last successful write of the state file (at start, of the file resumed from; 0 before any); the chat metrics served are the values saved then.",
        )
        .expect("valid metric");
        let platform_clock_jumps = IntCounterVec::new(
            Opts::new(
                "chat_exporter_platform_clock_jumps_total",
                "Times the platform's clock (the Date of its answers) jumped more than 6 hours from the time expected, and was not believed until it came back or kept to its new time for 15 minutes.",
            ),
            &["source"],
        )
        .expect("valid metric");
        let route_budget = GaugeVec::new(
            Opts::new(
                "chat_exporter_api_route_budget_requests_per_minute",
                "Requests a minute the exporter allows itself on each route, where the platform limits routes on their own (Rocket.Chat): the limit the platform advertises (X-RateLimit-Limit), or the configured one where that is lower.",
            ),
            &["source", "endpoint"],
        )
        .expect("valid metric");
        let source_lag = GaugeVec::new(
            Opts::new(
                "chat_exporter_source_lag_seconds",
                "How far the chat metrics served are behind the platform: the time since the start of the last poll whose values are served, or since the oldest change seen and not yet counted (a Rocket.Chat room waiting for its transfer history) if that is older.",
            ),
            &["source"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(build_info) as Box<dyn prometheus::core::Collector>,
            Box::new(source_up.clone()),
            Box::new(last_success.clone()),
            Box::new(poll_duration.clone()),
            Box::new(api_requests.clone()),
            Box::new(api_failures.clone()),
            Box::new(budget_per_minute.clone()),
            Box::new(budget_used.clone()),
            Box::new(budget_remaining.clone()),
            Box::new(budget_wait.clone()),
            Box::new(budget_waiting.clone()),
            Box::new(open_chats_tracked.clone()),
            Box::new(state_save_failures.clone()),
            Box::new(state_last_save.clone()),
            Box::new(platform_clock_jumps.clone()),
            Box::new(route_budget.clone()),
            Box::new(source_lag.clone()),
        ] {
            registry.register(collector).expect("metric names are unique");
        }
        registry
            .register(Box::new(chat_exporter_web::unauthorized_requests_total().clone()))
            .expect("registered once per registry");
        #[cfg(target_os = "linux")]
        registry.register(Box::new(ProcessMetrics::new())).expect("process collector registers once");
        SelfMetrics {
            registry,
            source_up,
            last_success,
            poll_duration,
            api_requests,
            api_failures,
            budget_per_minute,
            budget_used,
            budget_remaining,
            budget_wait,
            budget_waiting,
            open_chats_tracked,
            state_save_failures,
            state_last_save,
            platform_clock_jumps,
            route_budget,
            source_lag,
        }
    }

    /// Requests sent to the source's platform so far, answered or not.
    pub fn requests_sent(&self, source: &str) -> u64 {
        use prometheus::core::Collector as _;
        let families = self.api_requests.collect();
        let of_source =
            |m: &&prometheus::proto::Metric| m.get_label().iter().any(|l| l.name() == "source" && l.value() == source);
        let metrics = families.iter().flat_map(|f| f.get_metric().iter().filter(of_source));
        metrics.map(|m| m.get_counter().get_value() as u64).sum()
    }

    /// Creates the per-source series at their starting values.
    pub fn register_source(&self, source: &str, requests_per_minute: u32) {
        self.source_up.with_label_values(&[source]).set(0.0);
        self.budget_per_minute.with_label_values(&[source]).set(requests_per_minute as f64);
        self.budget_used.with_label_values(&[source]).set(0.0);
        self.budget_remaining.with_label_values(&[source]).set(requests_per_minute as f64);
        self.budget_wait.with_label_values(&[source]);
        self.budget_waiting.with_label_values(&[source]).set(0.0);
        self.poll_duration.with_label_values(&[source]);
        self.platform_clock_jumps.with_label_values(&[source]);
        self.source_lag.with_label_values(&[source]).set(0.0);
        // Every reason at 0 before the first failure, so that `rate()` sees the first one.
        for reason in crate::source::error::Reason::ALL {
            self.api_failures.with_label_values(&[source, reason.label()]);
        }
    }
}

/// The standard `process_*` metrics of `prometheus`' collector, with
/// `process_cpu_seconds_total` told to the clock tick (1/100 s on Linux). That collector
/// divides the ticks by the ticks a second as integers: an exporter using half a second
/// of CPU a minute reads 0 for its first second, then steps a whole second at a time,
/// and `rate()` of it (the health board's CPU panel) reads 0 most of the time.
#[cfg(target_os = "linux")]
struct ProcessMetrics {
    standard: prometheus::process_collector::ProcessCollector,
}

#[cfg(target_os = "linux")]
impl ProcessMetrics {
    const CPU_SECONDS: &'static str = "process_cpu_seconds_total";

    fn new() -> Self {
        ProcessMetrics { standard: prometheus::process_collector::ProcessCollector::for_self() }
    }

    /// User and system CPU time of this process so far, in seconds, to the clock tick.
    fn cpu_seconds() -> Option<f64> {
        let stat = procfs::process::Process::myself().and_then(|p| p.stat()).ok()?;
        Some((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
    }
}

#[cfg(target_os = "linux")]
impl prometheus::core::Collector for ProcessMetrics {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.standard.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let mut families = self.standard.collect();
        let cpu = families.iter_mut().find(|f| f.name() == Self::CPU_SECONDS);
        if let (Some(cpu), Some(seconds)) = (cpu, Self::cpu_seconds()) {
            for metric in cpu.mut_metric() {
                let mut counter = prometheus::proto::Counter::default();
                counter.set_value(seconds);
                metric.set_counter(counter);
            }
        }
        families
    }
}

impl Default for SelfMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn cpu_ticks() -> u64 {
        let stat = procfs::process::Process::myself().and_then(|p| p.stat()).unwrap();
        stat.utime + stat.stime
    }

    /// `process_cpu_seconds_total` is the CPU time to the clock tick, not in whole seconds.
    #[test]
    fn process_cpu_seconds_are_told_to_the_clock_tick() {
        let per_second = procfs::ticks_per_second();
        // Spend CPU until the total is a fraction into a second (whole seconds read the
        // same either way), with room left before the next whole second.
        let mut spin = 0u64;
        while !(1..per_second / 2).contains(&(cpu_ticks() % per_second)) {
            spin = std::hint::black_box(spin.wrapping_mul(31).wrapping_add(7));
        }
        let before = cpu_ticks() as f64 / per_second as f64;
        let families = SelfMetrics::new().registry.gather();
        let after = cpu_ticks() as f64 / per_second as f64;
        let cpu = families.iter().find(|f| f.name() == "process_cpu_seconds_total").expect("exported");
        let exported = cpu.get_metric()[0].get_counter().get_value();
        assert!(before <= exported && exported <= after, "{before} <= {exported} <= {after}");
        let others = ["process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds"];
        for name in others {
            assert!(families.iter().any(|f| f.name() == name), "{name} is still exported");
        }
    }
}
