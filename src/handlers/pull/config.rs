//! `[pipelines.NAME]` with `kind = "http_pull"`: which collection to pull, how it pages,
//! where the items go and when it runs; its defaults and its checks.

use crate::config::durations;
use crate::config::problems::Problems;
use crate::config::schedule::{parse_cron, PipelineSchedule, MIN_PIPELINE_EVERY};
use crate::handlers::http::config::EndpointConfig;
use crate::store::sink;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `http_pull`: items per page unless a pipeline says otherwise (Shopify's maximum).
pub const DEFAULT_PULL_LIMIT: u32 = 250;
/// `http_pull`: the largest page size a pipeline may ask for.
pub const MAX_PULL_LIMIT: u32 = 250;
/// `http_pull`: how far before the last run's start an incremental run asks from, so an
/// update racing the previous run (or a clock a little off) is not missed.
pub const DEFAULT_PULL_OVERLAP: Duration = Duration::from_secs(60);
/// `http_pull`: the header reporting use of the other side's leaky bucket ("32/40").
pub const DEFAULT_CALL_LIMIT_HEADER: &str = "X-Shopify-Shop-Api-Call-Limit";

/// How an API hands out its next page.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Pagination {
    /// `Link: <URL>; rel="next"` (Shopify): the next URL is used exactly as given, and
    /// filters go on the first request only.
    #[default]
    LinkHeader,
    /// A cursor in the body (`cursor_field`) sent back as `cursor_param`.
    Cursor,
    /// Numbered pages (`page_param`), until a page comes back short.
    Page,
}

/// Where pulled items go: a SQLite file (one table per pipeline) or NDJSON lines.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    #[serde(default)]
    pub sqlite: Option<PathBuf>,
    #[serde(default)]
    pub ndjson: Option<PathBuf>,
}

/// `[pipelines.NAME]` with `kind = "http_pull"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpPullConfig {
    /// The `[endpoints.NAME]` to call: base URL, auth, rate limit, timeouts.
    pub endpoint: String,
    /// The collection, e.g. `/admin/api/2024-10/customers.json`.
    pub path: String,
    /// The response's array of items, e.g. `customers`.
    pub items_key: String,
    #[serde(default = "default_id_field")]
    pub id_field: String,
    #[serde(default = "default_updated_field")]
    pub updated_field: String,
    /// Items per page (at most 250).
    #[serde(default = "default_pull_limit")]
    pub limit: u32,
    #[serde(default)]
    pub pagination: Pagination,
    #[serde(default = "default_limit_param")]
    pub limit_param: String,
    /// The incremental filter's parameter; empty makes every run a full one.
    #[serde(default = "default_updated_min_param")]
    pub updated_min_param: String,
    /// `cursor` pagination: the body field holding the next cursor (dotted path).
    #[serde(default)]
    pub cursor_field: Option<String>,
    #[serde(default = "default_cursor_param")]
    pub cursor_param: String,
    #[serde(default = "default_page_param")]
    pub page_param: String,
    /// Subtracted from the last run's start when asking for changes.
    #[serde(
        default = "default_pull_overlap",
        deserialize_with = "durations::duration"
    )]
    pub overlap: Duration,
    /// More parameters (e.g. `status = "any"` for orders), on the first request only
    /// with `link_header` pagination, on every request otherwise.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    pub sink: SinkConfig,
    /// The sink table (default: the pipeline's name with `-` as `_`).
    #[serde(default)]
    pub table: Option<String>,
    /// Extracted columns: column name = dotted field path (`city = "default_address.city"`).
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// Run every period (`1h`), aligned to the Unix epoch.
    #[serde(default, deserialize_with = "durations::optional_duration")]
    pub every: Option<Duration>,
    /// Run on a cron schedule (`0 * * * *`, UTC).
    #[serde(default)]
    pub cron: Option<String>,
    /// The queue the pipeline's jobs go to (default `default`).
    #[serde(default)]
    pub queue: Option<String>,
    /// The "used/size" header of the other side's leaky bucket; empty ignores it.
    #[serde(default = "default_call_limit_header")]
    pub call_limit_header: String,
}

fn default_id_field() -> String {
    "id".into()
}
fn default_updated_field() -> String {
    "updated_at".into()
}
fn default_pull_limit() -> u32 {
    DEFAULT_PULL_LIMIT
}
fn default_limit_param() -> String {
    "limit".into()
}
fn default_updated_min_param() -> String {
    "updated_at_min".into()
}
fn default_cursor_param() -> String {
    "cursor".into()
}
fn default_page_param() -> String {
    "page".into()
}
fn default_pull_overlap() -> Duration {
    DEFAULT_PULL_OVERLAP
}
fn default_call_limit_header() -> String {
    DEFAULT_CALL_LIMIT_HEADER.into()
}

impl HttpPullConfig {
    /// The sink table's name for the pipeline `name`.
    pub fn table_name(&self, name: &str) -> String {
        self.table.clone().unwrap_or_else(|| {
            name.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect()
        })
    }

    pub fn schedule(&self) -> Option<PipelineSchedule> {
        match (&self.every, &self.cron) {
            (Some(every), _) => Some(PipelineSchedule::Every(*every)),
            (None, Some(cron)) => Some(PipelineSchedule::Cron(cron.clone())),
            (None, None) => None,
        }
    }

    /// Checks `[pipelines.NAME]` (`key`), recording every problem: the endpoint must be
    /// declared, and the sink must not be the queue's `database`.
    pub fn validate(
        &self,
        key: &str,
        name: &str,
        endpoints: &BTreeMap<String, EndpointConfig>,
        database: &Path,
        problems: &mut Problems,
    ) {
        if !endpoints.contains_key(&self.endpoint) {
            problems.push(
                format!("{key}.endpoint"),
                format!("'{}' is not an [endpoints.NAME] entry", self.endpoint),
            );
        }
        for (field, value) in [
            ("path", &self.path),
            ("items_key", &self.items_key),
            ("id_field", &self.id_field),
            ("updated_field", &self.updated_field),
            ("limit_param", &self.limit_param),
        ] {
            if value.trim().is_empty() {
                problems.push(format!("{key}.{field}"), "must not be empty");
            }
        }
        if !(1..=MAX_PULL_LIMIT).contains(&self.limit) {
            problems.push(
                format!("{key}.limit"),
                format!("{} is not between 1 and {MAX_PULL_LIMIT}", self.limit),
            );
        }
        if self.pagination == Pagination::Cursor
            && self
                .cursor_field
                .as_deref()
                .is_none_or(|f| f.trim().is_empty())
        {
            problems.push(
                format!("{key}.cursor_field"),
                "cursor pagination needs the body field holding the next cursor",
            );
        }
        match (&self.sink.sqlite, &self.sink.ndjson) {
            (Some(_), Some(_)) => {
                problems.push(format!("{key}.sink"), "give sqlite or ndjson, not both")
            }
            (None, None) => problems.push(
                format!("{key}.sink"),
                "give sqlite = \"PATH\" or ndjson = \"PATH\"",
            ),
            (Some(path), None) if path == database => problems.push(
                format!("{key}.sink.sqlite"),
                format!("must not be the queue database ({})", path.display()),
            ),
            _ => {}
        }
        let table = self.table_name(name);
        if !sink::is_identifier(&table) {
            problems.push(
                format!("{key}.table"),
                format!("'{table}' is not a table name (letters, digits and _)"),
            );
        }
        for (column, path) in &self.columns {
            if !sink::is_identifier(column)
                || sink::FIXED_COLUMNS.contains(&column.to_ascii_lowercase().as_str())
            {
                problems.push(
                    format!("{key}.columns.{column}"),
                    format!(
                        "not a usable column name (letters, digits and _; not {})",
                        sink::FIXED_COLUMNS.join(", ")
                    ),
                );
            }
            if path.trim().is_empty() {
                problems.push(
                    format!("{key}.columns.{column}"),
                    "the field path must not be empty",
                );
            }
        }
        if self.every.is_some() && self.cron.is_some() {
            problems.push(key, "give every or cron, not both");
        }
        if self.every.is_some_and(|e| e < MIN_PIPELINE_EVERY) {
            problems.push(format!("{key}.every"), "must be at least 1s");
        }
        if let Some(cron) = &self.cron {
            if let Err(e) = parse_cron(cron) {
                problems.push(format!("{key}.cron"), e);
            }
        }
        if let Some(queue) = &self.queue {
            problems.check_name(&format!("{key}.queue"), queue);
        }
        if !self.call_limit_header.is_empty()
            && reqwest::header::HeaderName::from_bytes(self.call_limit_header.as_bytes()).is_err()
        {
            problems.push(
                format!("{key}.call_limit_header"),
                format!("'{}' is not a header name", self.call_limit_header),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, PipelineConfig};

    #[test]
    fn the_shopify_example_is_valid() {
        std::env::set_var("SHOPIFY_ACCESS_TOKEN", "example-token");
        let text = include_str!("../../../config/examples/shopify.toml");
        let config = Config::from_toml(text, "shopify.toml").unwrap();
        config.check_secrets().unwrap();
        assert_eq!(config.pipelines.len(), 3);
        let PipelineConfig::HttpPull(customers) = &config.pipelines["shopify-customers"] else {
            panic!("an http_pull pipeline")
        };
        assert_eq!(customers.items_key, "customers");
        assert_eq!(customers.limit, 250);
        assert_eq!(customers.overlap, DEFAULT_PULL_OVERLAP);
        assert_eq!(customers.pagination, Pagination::LinkHeader);
        assert_eq!(customers.columns["city"], "default_address.city");
        assert_eq!(
            config.pipelines["shopify-customers"].schedule(),
            Some(PipelineSchedule::Every(Duration::from_secs(3600)))
        );
        let PipelineConfig::HttpPull(orders) = &config.pipelines["shopify-orders"] else {
            panic!("an http_pull pipeline")
        };
        assert_eq!(orders.query["status"], "any");
        assert!(matches!(
            config.pipelines["shopify-orders"].schedule(),
            Some(PipelineSchedule::Cron(_))
        ));
        assert_eq!(orders.table_name("shopify-orders"), "orders");
        assert_eq!(config.policy_for("http_pull").max_attempts, 20);
    }

    #[test]
    fn bad_pipelines_name_their_key() {
        let base = "[endpoints.shop]\nbase_url = \"https://x\"\n[pipelines.p]\nkind = \"http_pull\"\nendpoint = \"shop\"\npath = \"/c.json\"\nitems_key = \"c\"\n";
        let cases = [
            (
                "sink = { sqlite = \"s.db\" }\nlimit = 251",
                "pipelines.p.limit: 251 is not between 1 and 250",
            ),
            ("", "missing field `sink`"),
            ("sink = {}", "pipelines.p.sink: give sqlite"),
            ("sink = { sqlite = \"a\", ndjson = \"b\" }", "not both"),
            (
                "sink = { sqlite = \"s.db\" }\nevery = \"1h\"\ncron = \"0 * * * *\"",
                "pipelines.p: give every or cron",
            ),
            (
                "sink = { sqlite = \"s.db\" }\ncron = \"sometimes\"",
                "pipelines.p.cron:",
            ),
            (
                "sink = { sqlite = \"s.db\" }\ncolumns = { raw = \"x\" }",
                "pipelines.p.columns.raw",
            ),
            (
                "sink = { sqlite = \"s.db\" }\ntable = \"a-b\"",
                "pipelines.p.table",
            ),
            (
                "sink = { sqlite = \"s.db\" }\npagination = \"cursor\"",
                "pipelines.p.cursor_field",
            ),
            (
                "sink = { sqlite = \"s.db\" }\nbogus = 1",
                "unknown field `bogus`",
            ),
        ];
        for (extra, expected) in cases {
            let message = Config::from_toml(&format!("{base}{extra}\n"), "t")
                .unwrap_err()
                .to_string();
            assert!(message.contains(expected), "{extra:?} gave {message}");
        }
        let message = Config::from_toml(
            &base
                .replace("endpoint = \"shop\"", "endpoint = \"nope\"")
                .replace("items_key", "sink = { sqlite = \"s.db\" }\nitems_key"),
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(
            message.contains("pipelines.p.endpoint: 'nope'"),
            "{message}"
        );
        let message = Config::from_toml("[pipelines.p]\nkind = \"teleport\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(message.contains("teleport"), "{message}");
        // The default table is the pipeline's name made an identifier.
        let config =
            Config::from_toml(&format!("{base}sink = {{ sqlite = \"s.db\" }}\n"), "t").unwrap();
        let PipelineConfig::HttpPull(p) = &config.pipelines["p"] else {
            panic!("an http_pull pipeline")
        };
        assert_eq!(p.table_name("shopify-customers"), "shopify_customers");
    }

    #[test]
    fn every_problem_of_a_pull_pipeline_is_reported() {
        let pull: HttpPullConfig = toml::from_str(
            "endpoint = \"nope\"\npath = \"\"\nitems_key = \"c\"\nlimit = 0\nsink = {}\nevery = \"1h\"\ncron = \"x\"\n",
        )
        .unwrap();
        let mut problems = Problems::new();
        pull.validate(
            "pipelines.p",
            "p",
            &BTreeMap::new(),
            Path::new("q.db"),
            &mut problems,
        );
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "pipelines.p.endpoint",
                "pipelines.p.path",
                "pipelines.p.limit",
                "pipelines.p.sink",
                "pipelines.p",
                "pipelines.p.cron",
            ],
            "{problems}"
        );
    }
}
