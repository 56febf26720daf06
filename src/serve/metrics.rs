//! `GET /metrics`: counters in Prometheus' text format (version 0.0.4).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Server;

/// Counters since the server started.
#[derive(Debug, Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub generations: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    /// Σ time to first token (µs) and how many were measured.
    pub ttft_us_sum: AtomicU64,
    pub ttft_count: AtomicU64,
    pub errors: AtomicU64,
}

/// The exposition text.
pub fn render(srv: &Server) -> String {
    let m = &srv.metrics;
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut out = String::new();
    let mut line = |name: &str, kind: &str, help: &str, v: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    };
    line(
        "mlxfs_requests_total",
        "counter",
        "HTTP requests received.",
        g(&m.requests) as f64,
    );
    line(
        "mlxfs_generations_total",
        "counter",
        "Generations finished.",
        g(&m.generations) as f64,
    );
    line(
        "mlxfs_prompt_tokens_total",
        "counter",
        "Prompt tokens processed.",
        g(&m.prompt_tokens) as f64,
    );
    line(
        "mlxfs_completion_tokens_total",
        "counter",
        "Tokens generated.",
        g(&m.completion_tokens) as f64,
    );
    line(
        "mlxfs_time_to_first_token_seconds_sum",
        "counter",
        "Sum of the time from request to first token.",
        g(&m.ttft_us_sum) as f64 / 1e6,
    );
    line(
        "mlxfs_time_to_first_token_seconds_count",
        "counter",
        "Requests whose time to first token was measured.",
        g(&m.ttft_count) as f64,
    );
    line(
        "mlxfs_errors_total",
        "counter",
        "Requests answered with an error.",
        g(&m.errors) as f64,
    );
    line(
        "mlxfs_worker_starts_total",
        "counter",
        "Model workers started.",
        g(&srv.pool.starts) as f64,
    );
    line(
        "mlxfs_worker_restarts_total",
        "counter",
        "Workers started again after one died.",
        g(&srv.pool.restarts) as f64,
    );
    line(
        "mlxfs_queue_depth",
        "gauge",
        "Jobs queued or running.",
        srv.queue_depth() as f64,
    );
    line(
        "mlxfs_loaded_models",
        "gauge",
        "Models with a running worker.",
        srv.loaded_ids().len() as f64,
    );
    out
}
