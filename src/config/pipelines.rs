//! `[pipelines.NAME]`: integration pipelines, each of a `kind` whose handler owns the
//! pipeline's settings (`handlers::pull::config`, `handlers::csv_import`). This file only
//! tells them apart and hands each its checks.

use super::problems::Problems;
use super::schedule::PipelineSchedule;
use crate::handlers::http::config::EndpointConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// A pipeline, tagged by its `kind`; other kinds (csv_import, relay) add variants.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PipelineConfig {
    /// Pull a paginated REST collection incrementally into a local sink.
    HttpPull(crate::handlers::pull::config::HttpPullConfig),
    /// CSV file → validated, batched `http` jobs (`handlers::csv_import`).
    CsvImport(crate::handlers::csv_import::CsvImportPipeline),
}

impl PipelineConfig {
    /// The job kind that runs this pipeline.
    pub fn job_kind(&self) -> &'static str {
        match self {
            PipelineConfig::HttpPull(_) => "http_pull",
            PipelineConfig::CsvImport(_) => "csv_import",
        }
    }

    /// When it runs by itself, if it does.
    pub fn schedule(&self) -> Option<PipelineSchedule> {
        match self {
            PipelineConfig::HttpPull(pull) => pull.schedule(),
            PipelineConfig::CsvImport(_) => None,
        }
    }

    /// The queue its jobs go to.
    pub fn queue(&self) -> &str {
        match self {
            PipelineConfig::HttpPull(pull) => {
                pull.queue.as_deref().unwrap_or(crate::job::DEFAULT_QUEUE)
            }
            PipelineConfig::CsvImport(_) => crate::job::DEFAULT_QUEUE,
        }
    }
}

impl PipelineConfig {
    /// Checks the pipeline `name` (`[pipelines.NAME]`) against the endpoints it may name
    /// and the queue's database (which a sink must not be).
    pub fn validate(
        &self,
        name: &str,
        endpoints: &BTreeMap<String, EndpointConfig>,
        database: &Path,
        problems: &mut Problems,
    ) {
        let key = format!("pipelines.{name}");
        if name.trim().is_empty() || name.contains(':') {
            problems.push(&key, "a pipeline name must not be empty or contain ':'");
        }
        match self {
            PipelineConfig::HttpPull(pull) => {
                pull.validate(&key, name, endpoints, database, problems)
            }
            PipelineConfig::CsvImport(csv) => csv.validate(&key, endpoints, problems),
        }
    }
}
