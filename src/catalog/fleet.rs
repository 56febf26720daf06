//! The whole catalog at once: every model's record (`list --json`'s data) and its health
//! entry (`health --json`'s data), each model described once. The CLI's `list` and `health`
//! build the same data on their own; a live mount renders this (`.mlxfs/catalog.json`).

use serde::{Deserialize, Serialize};

use super::record::{Described, ListData, ModelRecord, describe};
use super::runtime_cache::{self, RuntimeCache};
use super::verdict::HealthStatus;
use super::{Locations, ModelRef, Source, resolve};
use crate::par::par_map_io;

/// One model of `health --json` (mlx-knife's keys; `managed` for workspaces only).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HealthEntry {
    pub name: String,
    pub status: HealthStatus,
    /// mlx-knife's message when healthy, the reason otherwise.
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub managed: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub warnings: Vec<String>,
    /// With `--verbose`: the model's runtime cache (a verdict of its own). Never read back
    /// from a mount (which answers `health` without `--verbose` only).
    #[serde(skip_serializing_if = "Option::is_none", skip_deserializing)]
    pub runtime_cache: Option<RuntimeCache>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub total: usize,
    pub healthy_count: usize,
    pub unhealthy_count: usize,
}

/// The `data` of `health --json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HealthData {
    pub healthy: Vec<HealthEntry>,
    pub unhealthy: Vec<HealthEntry>,
    pub summary: Summary,
}

/// A model's health entry from its description.
pub fn health_entry(m: &ModelRef, d: &Described, verbose: bool) -> HealthEntry {
    let name = match m.source {
        Source::Workspace => m.short_name.clone(),
        Source::Cache => m.spec(),
    };
    let managed = (m.source == Source::Workspace).then(|| {
        d.sentinel
            .as_ref()
            .and_then(|s| s.sentinel())
            .is_some_and(|s| s.managed())
    });
    HealthEntry {
        name,
        status: d.health.status(),
        reason: d.health.message().to_string(),
        managed,
        warnings: d.record.warnings.clone(),
        runtime_cache: verbose.then(|| runtime_cache::inspect(&m.isolated_cache())),
    }
}

/// Entries (in the order given) split into healthy and unhealthy, with the summary.
pub fn health_data(entries: Vec<HealthEntry>) -> HealthData {
    let (healthy, unhealthy): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .partition(|e| e.status == HealthStatus::Healthy);
    let summary = Summary {
        total: healthy.len() + unhealthy.len(),
        healthy_count: healthy.len(),
        unhealthy_count: unhealthy.len(),
    };
    HealthData {
        healthy,
        unhealthy,
        summary,
    }
}

/// `list` (no pattern) and `health` (no model, not verbose) of the whole catalog.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fleet {
    pub list: ListData,
    pub health: HealthData,
}

/// Describe every model once: the records in `list`'s order (by name), the health entries
/// in `health`'s (workspaces in search order, then the hub cache).
pub fn fleet(loc: &Locations) -> Fleet {
    let listed = resolve::list_in_scan_order(None, loc);
    let both: Vec<(ModelRecord, HealthEntry)> = par_map_io(&listed, |l| {
        let d = describe(&l.model);
        let entry = health_entry(&l.model, &d, false);
        let mut r = d.record;
        r.display_name = l.display_name.clone();
        (r, entry)
    });
    let mut records = Vec::with_capacity(both.len());
    let mut entries = Vec::with_capacity(both.len());
    for ((r, e), l) in both.into_iter().zip(&listed) {
        records.push((l.model.name.clone(), r));
        entries.push(e);
    }
    // `resolve::list`'s sort: stable, by the model's name.
    records.sort_by(|a, b| a.0.cmp(&b.0));
    let models: Vec<ModelRecord> = records.into_iter().map(|(_, r)| r).collect();
    Fleet {
        list: ListData {
            count: models.len(),
            models,
            system: None,
        },
        health: health_data(entries),
    }
}
