//! What a job asks the `http` kind to send: the payload's request ([`RequestSpec`],
//! its multipart parts), how it becomes a reqwest request with its body, query and
//! credentials, and the idempotency key derived from the job.

#[allow(unused_imports)]
use super::*;

/// A job's request (`{"endpoint": "usage", "path": "/usage", "json": {...}}`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// The `[endpoints.NAME]` to use: its base URL, auth, limits and status rules.
    pub endpoint: String,
    /// A full URL instead of `path`; it must have the endpoint's scheme, host and port
    /// (e.g. the next page from a `Link` header), so credentials never go elsewhere.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub query: BTreeMap<String, Value>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub json: Option<Value>,
    /// A file under the data directory (spool/ or output/), streamed as the body.
    #[serde(default)]
    pub body_file: Option<PathBuf>,
    /// With `body_file`: send only `body_len` bytes from `body_offset` (default: from 0,
    /// to the end). Many bodies can then share one file (a csv_import's batches).
    #[serde(default)]
    pub body_offset: Option<u64>,
    #[serde(default)]
    pub body_len: Option<u64>,
    /// The body's content type (with `body_file`; default application/octet-stream).
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub multipart: Option<Vec<PartSpec>>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// A job made by a watched folder carries its spooled input as `file` (with `name`,
    /// `sha256` and `size`): with no other body, that file is the body.
    #[serde(default)]
    pub file: Option<PathBuf>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    /// Fields of a successful JSON answer to keep in the attempt's detail under
    /// `recorded` (a top-level key, or a JSON pointer such as `/data/id`), e.g. the
    /// `uploadId` of a 202 (`jobctl show`).
    #[serde(default)]
    pub record: Vec<String>,
    /// A job enqueued with the completion when every `record` field was in the answer;
    /// its payload gets them as `recorded` (e.g. a status poll for the upload's id).
    #[serde(default)]
    pub follow_up: Option<NewJob>,
}

/// One part of a multipart body: a file, a JSON value or text.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartSpec {
    pub name: String,
    #[serde(default)]
    pub file: Option<PathBuf>,
    #[serde(default)]
    pub json: Option<Value>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub filename: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
}

impl RequestSpec {
    pub fn parse(payload: &Value) -> Result<RequestSpec, PayloadError> {
        let mut spec = RequestSpec::deserialize(payload)
            .map_err(|e| PayloadError::whole(format!("http payload: {e}")))?;
        if spec.json.is_none() && spec.body_file.is_none() && spec.multipart.is_none() {
            spec.body_file = spec.file.clone();
        }
        Ok(spec)
    }

    pub(super) fn method(&self) -> Result<Method, PayloadError> {
        let text = self
            .method
            .as_deref()
            .unwrap_or("POST")
            .to_ascii_uppercase();
        Method::from_bytes(text.as_bytes()).map_err(|_| {
            PayloadError::new(
                "method",
                format!("http payload: method '{text}' is not valid"),
            )
        })
    }

    /// Checks everything that does not need the network, the files or the secrets.
    pub(super) fn check<'c>(&self, config: &'c Config) -> Result<&'c EndpointConfig, PayloadError> {
        let endpoint = config.endpoints.get(&self.endpoint).ok_or_else(|| {
            let known: Vec<&str> = config.endpoints.keys().map(String::as_str).collect();
            let message = format!(
                "endpoint '{}' is not declared in the config (declared: {})",
                self.endpoint,
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            );
            PayloadError::new("endpoint", message)
        })?;
        self.method()?;
        if endpoint.base_url_is_secret() {
            // The URL is a secret: a payload must not hold it, and it is not known here
            // (jobctl has no secrets), so the path is checked on a stand-in.
            if self.url.is_some() {
                return Err(PayloadError::new(
                    "url",
                    format!(
                        "http payload: url is refused for endpoint '{}', whose base URL is a secret (base_url_env/base_url_file); give path",
                        self.endpoint
                    ),
                ));
            }
            self.url_on(endpoint, SECRET_BASE_STAND_IN)?;
        } else {
            self.url_on(endpoint, &endpoint.base_url)?;
        }
        let bodies = [
            self.json.is_some(),
            self.body_file.is_some(),
            self.multipart.is_some(),
        ];
        if bodies.iter().filter(|b| **b).count() > 1 {
            return Err(PayloadError::whole(
                "http payload: give at most one of json, body_file and multipart",
            ));
        }
        if (self.body_offset.is_some() || self.body_len.is_some()) && self.body_file.is_none() {
            return Err(PayloadError::new(
                "body_file",
                "http payload: body_offset and body_len go with body_file",
            ));
        }
        for part in self.multipart.iter().flatten() {
            let sources = [
                part.file.is_some(),
                part.json.is_some(),
                part.text.is_some(),
            ];
            if sources.iter().filter(|b| **b).count() != 1 {
                return Err(PayloadError::new(
                    "multipart",
                    format!(
                        "http payload: multipart part '{}' needs exactly one of file, json and text",
                        part.name
                    ),
                ));
            }
        }
        let data_dir = &config.daemon.data_dir;
        for (field, path) in [("body_file", &self.body_file), ("file", &self.file)] {
            if let Some(path) = path {
                let shown = format!("http payload: {field}");
                crate::paths::check(config, data_dir, &shown, path)
                    .map_err(|e| e.for_field(field))?;
            }
        }
        for part in self.multipart.iter().flatten() {
            if let Some(path) = &part.file {
                let field = format!("http payload: multipart part '{}': file", part.name);
                crate::paths::check(config, data_dir, &field, path)
                    .map_err(|e| e.for_field("multipart"))?;
            }
        }
        if self.record.iter().any(|name| name.is_empty()) {
            return Err(PayloadError::new(
                "record",
                "http payload: record: a field name is empty",
            ));
        }
        if let Some(next) = &self.follow_up {
            if self.record.is_empty() {
                return Err(PayloadError::new(
                    "follow_up",
                    "http payload: follow_up needs record (the fields it gets)",
                ));
            }
            next.validate().map_err(|e| {
                PayloadError::new("follow_up", format!("http payload: follow_up: {e}"))
            })?;
        }
        for (name, value) in &self.headers {
            let refused = |message: String| PayloadError::new("headers", message);
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| refused(format!("http payload: '{name}' is not a header name")))?;
            HeaderValue::from_str(value).map_err(|_| {
                refused(format!("http payload: header {name} has an invalid value"))
            })?;
        }
        Ok(endpoint)
    }

    /// The request URL: `base` (the endpoint's base URL) + path + query, or the payload's
    /// own same-origin URL.
    pub(super) fn url_on(
        &self,
        endpoint: &EndpointConfig,
        base_url: &str,
    ) -> Result<Url, PayloadError> {
        let base = Url::parse(base_url)
            .map_err(|e| PayloadError::new("endpoint", format!("base_url: {e}")))?;
        let mut url = match (&self.url, &self.path) {
            (Some(_), Some(_)) => {
                return Err(PayloadError::whole(
                    "http payload: give url or path, not both",
                ))
            }
            (Some(text), None) => {
                let url = Url::parse(text).map_err(|e| {
                    PayloadError::new("url", format!("http payload: url '{text}': {e}"))
                })?;
                if url.origin() != base.origin() {
                    return Err(PayloadError::new(
                        "url",
                        format!(
                            "http payload: url must be on the endpoint's origin {}",
                            base.origin().ascii_serialization()
                        ),
                    ));
                }
                url
            }
            (None, path) => {
                let mut text = base_url.trim_end_matches('/').to_string();
                if let Some(path) = path.as_deref().filter(|p| !p.is_empty()) {
                    text.push('/');
                    text.push_str(path.trim_start_matches('/'));
                }
                Url::parse(&text)
                    .map_err(|e| PayloadError::new("path", format!("http payload: path: {e}")))?
            }
        };
        if !self.query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (key, value) in &self.query {
                match value {
                    Value::String(s) => pairs.append_pair(key, s),
                    Value::Array(items) => {
                        for item in items {
                            pairs.append_pair(key, &plain(item));
                        }
                        &mut pairs
                    }
                    other => pairs.append_pair(key, &plain(other)),
                };
            }
        }
        if !endpoint.allows_http_to(&url) {
            return Err(PayloadError::new(
                "url",
                "http payload: http:// to a non-loopback host is refused (require_https)",
            ));
        }
        Ok(url)
    }
}

/// What a secret base URL is replaced by when a payload is checked without it.
pub(super) const SECRET_BASE_STAND_IN: &str = "https://secret-base-url.invalid";

pub(super) fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The idempotency key of a job: the payload's own, else the job's unique_key, else
/// SHA-256 of kind and payload (the same job always sends the same key).
pub fn idempotency_key(job: &Job, spec: &RequestSpec) -> String {
    if let Some(key) = spec.idempotency_key.as_ref().or(job.unique_key.as_ref()) {
        return key.clone();
    }
    let mut hash = Sha256::new();
    hash.update(job.kind.as_bytes());
    hash.update(b"\n");
    hash.update(job.payload.to_string().as_bytes());
    format!("{:x}", hash.finalize())
}

/// The header that carries the idempotency key on a request with `method`, if any: only
/// methods that change state (the endpoint's `idempotency_methods`) carry one.
pub fn idempotency_header<'e>(endpoint: &'e EndpointConfig, method: &Method) -> Option<&'e str> {
    let sends = !endpoint.idempotency_header.is_empty()
        && endpoint
            .idempotency_methods
            .iter()
            .any(|m| m == method.as_str());
    sends.then_some(endpoint.idempotency_header.as_str())
}

/// How `value` looks in a query string (form-urlencoded).
pub(super) fn query_encoded(value: &str) -> String {
    let mut url = Url::parse("http://localhost/").expect("a valid URL");
    url.query_pairs_mut().append_pair("k", value);
    url.query()
        .unwrap_or("")
        .trim_start_matches("k=")
        .to_string()
}

pub(super) fn basic_credentials(username: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
}

pub(super) fn build_request(
    state: &EndpointState,
    spec: &RequestSpec,
    method: &Method,
    url: &Url,
    key: &str,
    auth: Option<(HeaderName, HeaderValue)>,
    ctx: &JobContext,
) -> Result<RequestBuilder, HandlerError> {
    let unreadable = |path: &Path, e: std::io::Error| {
        HandlerError::permanent(format!("body_file {}: {e}", path.display()))
    };
    let mut request = state
        .client
        .request(method.clone(), url.clone())
        .timeout(remaining(&state.config, ctx));
    for (name, value) in state.config.headers.iter().chain(&spec.headers) {
        request = request.header(name.as_str(), value.as_str());
    }
    if let Some(header) = idempotency_header(&state.config, method) {
        request = request.header(header, key);
    }
    if let Some((name, value)) = auth {
        request = request.header(name, value);
    }
    if let Some(body) = &spec.json {
        request = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body).map_err(|e| HandlerError::permanent(e.to_string()))?);
    } else if let Some(path) = &spec.body_file {
        let path = data_path(ctx, "http payload: body_file", path)?;
        let file = std::fs::File::open(&path).map_err(|e| unreadable(&path, e))?;
        let length = file.metadata().map(|m| m.len()).ok();
        let content_type = spec
            .content_type
            .as_deref()
            .unwrap_or("application/octet-stream");
        let body = match (spec.body_offset, spec.body_len) {
            (None, None) => match length {
                Some(length) => reqwest::blocking::Body::sized(file, length),
                None => reqwest::blocking::Body::new(file),
            },
            (offset, len) => {
                let (offset, len) = body_range(&path, length, offset, len)?;
                use std::io::{Seek, SeekFrom};
                let mut file = file;
                file.seek(SeekFrom::Start(offset))
                    .map_err(|e| unreadable(&path, e))?;
                reqwest::blocking::Body::sized(file.take(len), len)
            }
        };
        request = request
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
    } else if let Some(parts) = &spec.multipart {
        let mut form = reqwest::blocking::multipart::Form::new();
        for part in parts {
            form = form.part(part.name.clone(), build_part(part, ctx)?);
        }
        request = request.multipart(form);
    }
    Ok(request)
}

/// The (offset, length) of a body range, checked against the file's size: a file
/// shorter than the range was truncated or replaced, and sending part of a body would
/// be worse than not sending it.
pub(super) fn body_range(
    path: &Path,
    size: Option<u64>,
    offset: Option<u64>,
    len: Option<u64>,
) -> Result<(u64, u64), HandlerError> {
    let size = size.ok_or_else(|| {
        HandlerError::permanent(format!("body_file {}: its size is unknown", path.display()))
    })?;
    let offset = offset.unwrap_or(0);
    let len = len.unwrap_or(size.saturating_sub(offset));
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok((offset, len)),
        _ => Err(HandlerError::permanent(format!(
            "body_file {}: bytes {offset}..{} are past its end ({size} bytes)",
            path.display(),
            offset.saturating_add(len)
        ))),
    }
}

pub(super) fn build_part(
    part: &PartSpec,
    ctx: &JobContext,
) -> Result<reqwest::blocking::multipart::Part, HandlerError> {
    use reqwest::blocking::multipart::Part;
    let failed =
        |text: String| HandlerError::permanent(format!("multipart part '{}': {text}", part.name));
    let (built, default_type) = if let Some(file) = &part.file {
        let path = data_path(ctx, "http payload: multipart file", file)?;
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let handle =
            std::fs::File::open(&path).map_err(|e| failed(format!("{}: {e}", path.display())))?;
        let length = handle
            .metadata()
            .map_err(|e| HandlerError::permanent(e.to_string()))?
            .len();
        let mut built = Part::reader_with_length(handle, length);
        if let Some(name) = part.filename.clone().or(file_name) {
            built = built.file_name(name);
        }
        (built, "application/octet-stream")
    } else if let Some(value) = &part.json {
        (
            Part::bytes(
                serde_json::to_vec(value).map_err(|e| HandlerError::permanent(e.to_string()))?,
            ),
            "application/json",
        )
    } else {
        (
            Part::text(part.text.clone().unwrap_or_default()),
            "text/plain; charset=utf-8",
        )
    };
    let built = match (&part.filename, &part.file) {
        (Some(name), None) => built.file_name(name.clone()),
        _ => built,
    };
    built
        .mime_str(part.content_type.as_deref().unwrap_or(default_type))
        .map_err(|e| failed(format!("content_type: {e}")))
}

/// Resolves a payload's file path, refusing anything outside the allowed folders
/// ([`crate::paths`]): a job may send what the daemon spooled or produced, or what sits
/// in a declared folder, not any file the daemon can read.
pub fn data_path(ctx: &JobContext, field: &str, path: &Path) -> Result<PathBuf, PayloadError> {
    crate::paths::check(&ctx.config, &ctx.data_dir, field, path)
}
