//! `GET /metrics`: counters in Prometheus' text format (version 0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Server;

/// Upper bounds (seconds) of the time-to-first-token histogram.
pub const TTFT_BUCKETS: [f64; 9] = [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

impl Metrics {
    /// Count one time to first token.
    pub fn observe_ttft(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        self.ttft_us_sum
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.ttft_count.fetch_add(1, Ordering::Relaxed);
        let i = TTFT_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(TTFT_BUCKETS.len());
        self.ttft_buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Count one finished generation of `model` (a catalog id: the label set stays as small
    /// as the catalog).
    pub fn note_model(&self, model: &str, prompt: u64, completion: u64) {
        let mut m = self.per_model.lock().unwrap_or_else(|e| e.into_inner());
        let c = m.entry(model.to_string()).or_default();
        c.generations += 1;
        c.prompt_tokens += prompt;
        c.completion_tokens += completion;
    }

    /// Count one answered request by its HTTP status code (an error too when it is one).
    pub fn note_status(&self, code: u16) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if code >= 400 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let mut m = self.responses.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(code).or_default() += 1;
    }
}

/// One model's counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct ModelCounts {
    pub generations: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// A label value as the text format writes it: `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Counters since the server started.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests answered ([`Metrics::note_status`]): always the sum of `responses`.
    pub requests: AtomicU64,
    pub generations: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    /// Σ time to first token (µs) and how many were measured.
    pub ttft_us_sum: AtomicU64,
    pub ttft_count: AtomicU64,
    /// Time to first token per bucket of [`TTFT_BUCKETS`] (not cumulative; the exposition
    /// adds them up), the last one +Inf.
    pub ttft_buckets: [AtomicU64; TTFT_BUCKETS.len() + 1],
    /// Responses of status 400 or more, and streams that ended with an error event (their
    /// status was 200), each counted once.
    pub errors: AtomicU64,
    /// Finished generations and tokens per served model id.
    pub per_model: Mutex<BTreeMap<String, ModelCounts>>,
    /// Responses per HTTP status code.
    pub responses: Mutex<BTreeMap<u16, u64>>,
}

/// A series' `# HELP` and `# TYPE` lines.
fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The exposition text.
pub fn render(srv: &Server) -> String {
    let m = &srv.metrics;
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut out = String::new();
    let series: [(&str, &str, &str, f64); 9] = [
        (
            "mlxfs_requests_total",
            "counter",
            "HTTP requests answered (the sum of mlxfs_responses_total).",
            g(&m.requests) as f64,
        ),
        (
            "mlxfs_generations_total",
            "counter",
            "Generations finished.",
            g(&m.generations) as f64,
        ),
        (
            "mlxfs_prompt_tokens_total",
            "counter",
            "Prompt tokens processed.",
            g(&m.prompt_tokens) as f64,
        ),
        (
            "mlxfs_completion_tokens_total",
            "counter",
            "Tokens generated.",
            g(&m.completion_tokens) as f64,
        ),
        (
            "mlxfs_errors_total",
            "counter",
            "Requests answered with an error: responses of status 400 or more, and streams that ended with an error event.",
            g(&m.errors) as f64,
        ),
        (
            "mlxfs_worker_starts_total",
            "counter",
            "Model workers started.",
            g(&srv.pool.starts) as f64,
        ),
        (
            "mlxfs_worker_restarts_total",
            "counter",
            "Workers started again after one died.",
            g(&srv.pool.restarts) as f64,
        ),
        (
            "mlxfs_queue_depth",
            "gauge",
            "Jobs queued or running.",
            srv.queue_depth() as f64,
        ),
        (
            "mlxfs_loaded_models",
            "gauge",
            "Models with a running worker.",
            srv.loaded_ids().len() as f64,
        ),
    ];
    for (name, kind, help, v) in series {
        head(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    }
    let name = "mlxfs_time_to_first_token_seconds";
    head(
        &mut out,
        name,
        "histogram",
        "Time from a generation request to its first token.",
    );
    let mut cum = 0u64;
    for (i, b) in TTFT_BUCKETS.iter().enumerate() {
        cum += g(&m.ttft_buckets[i]);
        let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
    }
    cum += g(&m.ttft_buckets[TTFT_BUCKETS.len()]);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cum}");
    let _ = writeln!(out, "{name}_sum {}", g(&m.ttft_us_sum) as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {}", g(&m.ttft_count));

    let name = "mlxfs_responses_total";
    head(&mut out, name, "counter", "HTTP responses by status code.");
    let responses = m
        .responses
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for (code, n) in responses {
        let _ = writeln!(out, "{name}{{code=\"{code}\"}} {n}");
    }
    let per_model = m
        .per_model
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    type Pick = fn(&ModelCounts) -> u64;
    let model_series: [(&str, &str, Pick); 3] = [
        (
            "mlxfs_model_generations_total",
            "Generations finished, per model.",
            |c| c.generations,
        ),
        (
            "mlxfs_model_prompt_tokens_total",
            "Prompt tokens processed, per model.",
            |c| c.prompt_tokens,
        ),
        (
            "mlxfs_model_completion_tokens_total",
            "Tokens generated, per model.",
            |c| c.completion_tokens,
        ),
    ];
    for (name, help, pick) in model_series {
        head(&mut out, name, "counter", help);
        for (model, c) in &per_model {
            let _ = writeln!(out, "{name}{{model=\"{}\"}} {}", label(model), pick(c));
        }
    }
    let name = "mlxfs_model_loaded";
    head(
        &mut out,
        name,
        "gauge",
        "1 for each model with a running worker.",
    );
    for model in srv.loaded_ids() {
        let _ = writeln!(out, "{name}{{model=\"{}\"}} 1", label(&model));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn label_values_are_escaped() {
        assert_eq!(super::label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
