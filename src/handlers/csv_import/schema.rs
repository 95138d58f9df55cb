//! A pipeline's column schema: which headers must be there, how each value is checked
//! and which typed JSON value it becomes. Compiled once per job from the config.

use super::template::{self, Rows};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use regex::Regex;
use serde::Deserialize;
use serde_json::{Number, Value};

/// One column as declared (`[[pipelines.NAME.columns]]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ColumnConfig {
    /// The header in the CSV (or, without a header row, the column's name by position).
    pub name: String,
    /// The header must be present and the value not empty (unless `default` fills it).
    #[serde(default)]
    pub required: bool,
    #[serde(default, rename = "type")]
    pub kind: ColumnType,
    /// The most characters (not bytes) the value may have.
    #[serde(default)]
    pub max_len: Option<usize>,
    /// A regular expression the whole value must match.
    #[serde(default)]
    pub pattern: Option<String>,
    /// The field name in the output (default: `name`).
    #[serde(default)]
    pub rename: Option<String>,
    /// Used when the value is empty or the column is absent; converted like a value.
    #[serde(default)]
    pub default: Option<Value>,
    /// The allowed values of an `enum` column.
    #[serde(default)]
    pub values: Vec<String>,
    /// The input format of a `date` or `datetime` column (chrono strftime syntax).
    #[serde(default)]
    pub format: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    #[default]
    String,
    Integer,
    Decimal,
    Boolean,
    Date,
    Datetime,
    Email,
    Enum,
}

/// What to do with a header the schema does not declare.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ExtraColumns {
    #[default]
    Ignore,
    Refuse,
}

/// A column ready to convert values.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub target: String,
    pub required: bool,
    kind: ColumnType,
    max_len: Option<usize>,
    pattern: Option<Regex>,
    default: Option<Value>,
    /// `default` as JSON text, copied into every row that needs it.
    default_json: Option<Vec<u8>>,
    values: Vec<String>,
    format: Option<String>,
}

/// Why a cell's value is refused, as the errors file's `reason` column states it ("is
/// not an integer"): the row report adds the column and the value. Only ever a message
/// for that report, so it holds one; its own type keeps it from passing for any other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CellError(String);

impl From<&str> for CellError {
    fn from(reason: &str) -> CellError {
        CellError(reason.to_string())
    }
}

impl CellError {
    /// The sentence, for the row report.
    pub fn into_reason(self) -> String {
        self.0
    }
}

/// One failing value of a row (or the row itself, when `column` is empty).
#[derive(Debug, Clone, PartialEq)]
pub struct RowError {
    pub column: String,
    pub value: String,
    pub reason: String,
}

impl Column {
    /// Compiles a declared column; errors name the key under `key`.
    pub fn compile(key: &str, c: &ColumnConfig) -> Result<Column, String> {
        if c.name.trim().is_empty() {
            return Err(format!("{key}.name: must not be empty"));
        }
        let pattern = c
            .pattern
            .as_deref()
            .map(|p| {
                // Anchored, so `pattern = "[0-9]+"` means the whole value is digits.
                Regex::new(&format!("^(?:{p})$"))
                    .map_err(|e| format!("{key}.pattern: not a valid regex: {e}"))
            })
            .transpose()?;
        if c.kind == ColumnType::Enum && c.values.is_empty() {
            return Err(format!(
                "{key}.values: an enum column needs its allowed values"
            ));
        }
        if c.kind != ColumnType::Enum && !c.values.is_empty() {
            return Err(format!("{key}.values: only for type = \"enum\""));
        }
        if c.format.is_some() && !matches!(c.kind, ColumnType::Date | ColumnType::Datetime) {
            return Err(format!("{key}.format: only for date and datetime columns"));
        }
        let mut column = Column {
            name: c.name.trim().to_string(),
            target: c
                .rename
                .clone()
                .unwrap_or_else(|| c.name.trim().to_string()),
            required: c.required,
            kind: c.kind,
            max_len: c.max_len,
            pattern,
            default: None,
            default_json: None,
            values: c.values.clone(),
            format: c.format.clone(),
        };
        if let Some(default) = &c.default {
            let text = match default {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let value = column
                .check(&text)
                .map(Typed::into_value)
                .map_err(|reason| format!("{key}.default: '{text}' {reason}"))?;
            column.default_json = Some(serde_json::to_vec(&value).map_err(|e| e.to_string())?);
            column.default = Some(value);
        }
        Ok(column)
    }

    /// The typed value of a cell (an empty optional cell without a default is JSON
    /// null). The bytes [`Column::write`] renders are this value serialised.
    pub fn value(&self, text: &str) -> Result<Value, CellError> {
        if text.is_empty() {
            return match &self.default {
                Some(value) => Ok(value.clone()),
                None if self.required => Err("required value is empty".into()),
                None => Ok(Value::Null),
            };
        }
        self.check(text).map(Typed::into_value)
    }

    /// Checks a cell and appends its typed JSON to `out` (on error `out` may hold part
    /// of it; the caller takes the row back).
    pub fn write(&self, text: &str, out: &mut Vec<u8>) -> Result<(), CellError> {
        if text.is_empty() {
            return match &self.default_json {
                Some(json) => {
                    out.extend_from_slice(json);
                    Ok(())
                }
                None if self.required => Err("required value is empty".into()),
                None => {
                    out.extend_from_slice(b"null");
                    Ok(())
                }
            };
        }
        self.check(text).map(|typed| typed.write(out))
    }

    /// The value when the column is absent from the file.
    pub fn absent(&self) -> Option<Value> {
        self.default.clone()
    }

    /// [`Column::absent`] as JSON text.
    pub fn absent_json(&self) -> Option<&[u8]> {
        self.default_json.as_deref()
    }

    /// Checks a non-empty cell and says what it is; no text is copied for the common
    /// types, so a valid row costs its checks and one rendering.
    fn check<'t>(&self, text: &'t str) -> Result<Typed<'t>, CellError> {
        if let Some(max) = self.max_len {
            // Counting chars is the slow part of a string column; bytes bound them.
            if text.len() > max && text.chars().count() > max {
                return Err(CellError(format!("longer than max_len {max}")));
            }
        }
        if let Some(pattern) = &self.pattern {
            if !pattern.is_match(text) {
                return Err(CellError(format!(
                    "does not match pattern {}",
                    pattern.as_str()
                )));
            }
        }
        match self.kind {
            ColumnType::String => Ok(Typed::Str(text)),
            ColumnType::Integer => text
                .parse::<i64>()
                .map(Typed::Int)
                .map_err(|_| "is not an integer".into()),
            ColumnType::Decimal => decimal(text),
            ColumnType::Boolean => match text.to_ascii_lowercase().as_str() {
                "true" | "t" | "yes" | "y" | "1" => Ok(Typed::Bool(true)),
                "false" | "f" | "no" | "n" | "0" => Ok(Typed::Bool(false)),
                _ => Err("is not a boolean (true/false, yes/no, 1/0)".into()),
            },
            ColumnType::Date => self.date(text),
            ColumnType::Datetime => self.datetime(text),
            ColumnType::Email => {
                if is_email(text) {
                    Ok(Typed::Str(text))
                } else {
                    Err("is not an email address".into())
                }
            }
            ColumnType::Enum => {
                if self.values.iter().any(|v| v == text) {
                    Ok(Typed::Str(text))
                } else {
                    Err(CellError(format!(
                        "is not one of: {}",
                        self.values.join(", ")
                    )))
                }
            }
        }
    }

    /// A date as `YYYY-MM-DD`, read with `format` or as `YYYY-MM-DD` / `YYYY/MM/DD`.
    fn date<'t>(&self, text: &'t str) -> Result<Typed<'t>, CellError> {
        if let Some(f) = &self.format {
            return NaiveDate::parse_from_str(text, f)
                .map(Typed::Date)
                .map_err(|_| CellError(format!("is not a date ({f})")));
        }
        // By hand: chrono re-parses its format string on every call, which was a quarter
        // of the time of a file with a date and a datetime column.
        match split_date(text) {
            Some((d, "")) => Ok(Typed::Date(d)),
            _ => Err("is not a date (YYYY-MM-DD or YYYY/MM/DD)".into()),
        }
    }

    /// A datetime as ISO 8601: RFC 3339 keeps its offset; a local time stays local
    /// (`YYYY-MM-DDTHH:MM:SS`), since the file does not say which zone it meant.
    fn datetime<'t>(&self, text: &'t str) -> Result<Typed<'t>, CellError> {
        if let Some(f) = &self.format {
            return NaiveDateTime::parse_from_str(text, f)
                .map(|d| Typed::Owned(d.format("%Y-%m-%dT%H:%M:%S").to_string()))
                .map_err(|_| CellError(format!("is not a datetime ({f})")));
        }
        if let Some((date, rest)) = split_date(text) {
            if let Some(rest) = rest.strip_prefix([' ', 'T']) {
                if let Some((h, m, sec)) = hms(rest) {
                    if let Some(t) = date.and_hms_opt(h, m, sec) {
                        return Ok(Typed::DateTime(t));
                    }
                }
            }
        }
        match DateTime::parse_from_rfc3339(text) {
            Ok(d) => Ok(Typed::Owned(d.to_rfc3339())),
            Err(_) => Err("is not a datetime (RFC 3339 or YYYY-MM-DD HH:MM[:SS])".into()),
        }
    }
}

/// A checked cell, before it is written: as JSON text on the hot path
/// ([`Typed::write`]), or as a `Value` for defaults and tests ([`Typed::into_value`]).
/// Both give the same JSON; a test holds them to it.
#[derive(Debug, Clone, PartialEq)]
enum Typed<'t> {
    /// A string borrowed from the cell.
    Str(&'t str),
    Owned(String),
    Int(i64),
    /// A decimal short enough for an f64 (see [`decimal`]); always finite.
    Float(f64),
    Bool(bool),
    Date(NaiveDate),
    /// A local date and time from `YYYY-MM-DD HH:MM[:SS]` (no fraction of a second).
    DateTime(NaiveDateTime),
}

impl Typed<'_> {
    fn into_value(self) -> Value {
        match self {
            Typed::Str(s) => Value::String(s.to_string()),
            Typed::Owned(s) => Value::String(s),
            Typed::Int(n) => Value::from(n),
            Typed::Float(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
            Typed::Bool(b) => Value::Bool(b),
            Typed::Date(d) => Value::String(ymd(d)),
            Typed::DateTime(t) => Value::String(format!("{}T{}", ymd(t.date()), t.time())),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Typed::Str(s) => template::write_str(out, s),
            Typed::Owned(s) => template::write_str(out, s),
            // serde_json writes numbers with itoa and ryu, as it does inside a Value.
            Typed::Int(n) => {
                serde_json::to_writer(&mut *out, n).expect("writing to a Vec does not fail")
            }
            Typed::Float(f) => {
                serde_json::to_writer(&mut *out, f).expect("writing to a Vec does not fail")
            }
            Typed::Bool(true) => out.extend_from_slice(b"true"),
            Typed::Bool(false) => out.extend_from_slice(b"false"),
            Typed::Date(d) => {
                out.push(b'"');
                push_ymd(out, *d);
                out.push(b'"');
            }
            Typed::DateTime(t) => {
                use chrono::Timelike;
                out.push(b'"');
                push_ymd(out, t.date());
                out.push(b'T');
                push_2(out, t.hour());
                out.push(b':');
                push_2(out, t.minute());
                out.push(b':');
                push_2(out, t.second());
                out.push(b'"');
            }
        }
    }
}

/// [`ymd`] without `format!`, which was the slowest part of a date cell.
fn push_ymd(out: &mut Vec<u8>, d: NaiveDate) {
    use chrono::Datelike;
    match u32::try_from(d.year()) {
        Ok(year) if year <= 9999 => {
            push_2(out, year / 100);
            push_2(out, year % 100);
            out.push(b'-');
            push_2(out, d.month());
            out.push(b'-');
            push_2(out, d.day());
        }
        // Only a custom `format` reaches these years; rare, so the general way.
        _ => out.extend_from_slice(ymd(d).as_bytes()),
    }
}

/// Two decimal digits (`n` < 100).
fn push_2(out: &mut Vec<u8>, n: u32) {
    out.push(b'0' + (n / 10 % 10) as u8);
    out.push(b'0' + (n % 10) as u8);
}

/// `YYYY-MM-DD` or `YYYY/MM/DD` (month and day of one or two digits) at the start of
/// `text`, and what follows it.
fn split_date(text: &str) -> Option<(NaiveDate, &str)> {
    let b = text.as_bytes();
    if b.len() < 8 || !b[..4].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let sep = b[4];
    if sep != b'-' && sep != b'/' {
        return None;
    }
    let (month, rest) = digits(&text[5..], 2)?;
    let rest = rest.strip_prefix(sep as char)?;
    let (day, rest) = digits(rest, 2)?;
    let year: i32 = text[..4].parse().ok()?;
    Some((NaiveDate::from_ymd_opt(year, month, day)?, rest))
}

/// `HH:MM` or `HH:MM:SS`, the whole of `text`.
fn hms(text: &str) -> Option<(u32, u32, u32)> {
    let (h, rest) = digits(text, 2)?;
    let (m, rest) = digits(rest.strip_prefix(':')?, 2)?;
    match rest {
        "" => Some((h, m, 0)),
        _ => match digits(rest.strip_prefix(':')?, 2)? {
            (s, "") => Some((h, m, s)),
            _ => None,
        },
    }
}

/// One to `max` leading ASCII digits as a number, and the rest.
fn digits(text: &str, max: usize) -> Option<(u32, &str)> {
    let n = text
        .bytes()
        .take(max)
        .take_while(u8::is_ascii_digit)
        .count();
    if n == 0 {
        return None;
    }
    Some((text[..n].parse().ok()?, &text[n..]))
}

fn ymd(d: NaiveDate) -> String {
    use chrono::Datelike;
    format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
}

/// A decimal: a JSON number when f64 holds it exactly enough (up to 15 significant
/// digits), else the canonical text, so no digit is silently lost.
fn decimal(text: &str) -> Result<Typed<'_>, CellError> {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let ok = !(int.is_empty() && frac.is_empty())
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit());
    if !ok {
        return Err("is not a decimal number".into());
    }
    let significant = int.trim_start_matches('0').len() + frac.len();
    if significant <= 15 {
        if let Some(f) = text.parse::<f64>().ok().filter(|f| f.is_finite()) {
            return Ok(Typed::Float(f));
        }
    }
    Ok(Typed::Str(text.trim_start_matches('+')))
}

/// A practical address check: one `@`, a local part, a dotted domain, no spaces.
fn is_email(text: &str) -> bool {
    if text.len() > 254 {
        return false;
    }
    // In ASCII, whitespace and control characters are exactly the bytes up to the space
    // and DEL; checking bytes avoids decoding every character of every address.
    let spaced = if text.is_ascii() {
        text.bytes().any(|b| b <= b' ' || b == 0x7f)
    } else {
        text.chars().any(|c| c.is_whitespace() || c.is_control())
    };
    if spaced {
        return false;
    }
    let Some((local, domain)) = text.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && !local.contains('@')
        && domain.contains('.')
        && domain
            .split('.')
            .all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'))
}

/// The schema bound to one file's header: where each column is, if anywhere.
#[derive(Debug, Clone)]
pub struct Bound {
    pub columns: Vec<Column>,
    /// The position of each column in the record.
    pub positions: Vec<Option<usize>>,
    /// How many fields a record must have.
    pub width: usize,
    pub trim: bool,
}

/// Binds columns to a header row (or to positions when there is none). A missing
/// required header, a duplicate or (when refused) an extra header is a file error.
pub fn bind(
    columns: &[Column],
    headers: Option<&[String]>,
    extra: ExtraColumns,
    trim: bool,
) -> Result<Bound, String> {
    let Some(headers) = headers else {
        return Ok(Bound {
            columns: columns.to_vec(),
            positions: (0..columns.len()).map(Some).collect(),
            width: columns.len(),
            trim,
        });
    };
    for (i, h) in headers.iter().enumerate() {
        if headers[..i].contains(h) && columns.iter().any(|c| &c.name == h) {
            return Err(format!("column '{h}' appears twice in the header"));
        }
    }
    let mut positions = Vec::with_capacity(columns.len());
    let mut missing = Vec::new();
    for column in columns {
        let at = headers.iter().position(|h| h == &column.name);
        if at.is_none() && column.required {
            missing.push(column.name.as_str());
        }
        positions.push(at);
    }
    if !missing.is_empty() {
        return Err(format!(
            "missing required column{} {} (the header has: {})",
            if missing.len() > 1 { "s" } else { "" },
            missing
                .iter()
                .map(|m| format!("'{m}'"))
                .collect::<Vec<_>>()
                .join(", "),
            headers.join(", ")
        ));
    }
    if extra == ExtraColumns::Refuse {
        if let Some(h) = headers
            .iter()
            .find(|h| !columns.iter().any(|c| &c.name == *h))
        {
            return Err(format!(
                "column '{h}' is not in the schema (extra_columns = \"refuse\")"
            ));
        }
    }
    Ok(Bound {
        columns: columns.to_vec(),
        positions,
        width: headers.len(),
        trim,
    })
}

impl Bound {
    /// Checks one record and, when every value is valid, appends it to `rows` (one
    /// cell per column; an absent column without a default is left out of the row).
    /// Returns false and fills `errors` when the row is invalid; `rows` is then as it
    /// was.
    pub fn convert(
        &self,
        record: &crate::csvio::Record<'_>,
        rows: &mut Rows,
        errors: &mut Vec<RowError>,
    ) -> bool {
        errors.clear();
        if let Some(problem) = &record.problem {
            errors.push(RowError {
                column: String::new(),
                value: String::new(),
                reason: format!("the record has {problem}"),
            });
            return false;
        }
        if record.len() != self.width {
            errors.push(RowError {
                column: String::new(),
                value: String::new(),
                reason: format!("{} fields, expected {}", record.len(), self.width),
            });
            return false;
        }
        let mark = rows.mark();
        for (column, position) in self.columns.iter().zip(&self.positions) {
            let Some(position) = position else {
                match column.absent_json() {
                    Some(json) => {
                        let _ = rows.push_with(|out| {
                            out.extend_from_slice(json);
                            Ok::<(), ()>(())
                        });
                    }
                    None => rows.push_absent(),
                }
                continue;
            };
            let raw = record.text(*position).unwrap_or_default();
            let text = if self.trim { raw.trim() } else { raw };
            if let Err(reason) = rows.push_with(|out| column.write(text, out)) {
                errors.push(RowError {
                    column: column.name.clone(),
                    value: raw.to_string(),
                    reason: reason.into_reason(),
                });
            }
        }
        if !errors.is_empty() {
            rows.rollback(mark);
        }
        errors.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn column(toml_text: &str) -> Column {
        let c: ColumnConfig = toml::from_str(toml_text).unwrap();
        Column::compile("c", &c).unwrap()
    }

    #[test]
    fn types_convert_to_typed_json() {
        let int = column("name = \"n\"\ntype = \"integer\"");
        assert_eq!(int.value("42"), Ok(json!(42)));
        assert!(int
            .value("4.2")
            .unwrap_err()
            .to_string()
            .contains("not an integer"));
        let dec = column("name = \"d\"\ntype = \"decimal\"");
        assert_eq!(dec.value("1.50"), Ok(json!(1.5)));
        assert_eq!(
            dec.value("12345678901234567.89"),
            Ok(json!("12345678901234567.89"))
        );
        assert!(dec.value("1e5").is_err());
        let b = column("name = \"b\"\ntype = \"boolean\"");
        assert_eq!(b.value("Yes"), Ok(json!(true)));
        assert_eq!(b.value("0"), Ok(json!(false)));
        let d = column("name = \"d\"\ntype = \"date\"");
        assert_eq!(d.value("2024/02/29"), Ok(json!("2024-02-29")));
        assert!(d.value("2023-02-29").is_err());
        let dt = column("name = \"t\"\ntype = \"datetime\"");
        assert_eq!(
            dt.value("2024-01-02 03:04"),
            Ok(json!("2024-01-02T03:04:00"))
        );
        assert_eq!(
            dt.value("2024-01-02T03:04:05+09:00"),
            Ok(json!("2024-01-02T03:04:05+09:00"))
        );
        let e = column("name = \"e\"\ntype = \"email\"");
        assert!(e.value("a@b.jp").is_ok());
        for bad in ["a@b", "@b.jp", "a b@c.jp", "a@-b.jp"] {
            assert!(e.value(bad).is_err(), "{bad}");
        }
        let en = column("name = \"s\"\ntype = \"enum\"\nvalues = [\"a\", \"b\"]");
        assert!(en
            .value("c")
            .unwrap_err()
            .to_string()
            .contains("one of: a, b"));
    }

    #[test]
    fn the_ascii_email_check_refuses_what_the_char_check_refuses() {
        for b in 0..=0x7fu8 {
            let c = b as char;
            let refused = c.is_whitespace() || c.is_control();
            // Characters an address may not hold anyway are not what this is about.
            if c == '@' || c == '.' {
                continue;
            }
            assert_eq!(is_email(&format!("a{c}b@x.jp")), !refused, "{b:#x}");
        }
        assert!(!is_email("a\u{85}b@x.jp"), "a non-ASCII control character");
        assert!(!is_email("a\u{3000}b@x.jp"), "an ideographic space");
        assert!(is_email("山田@例え.jp"));
    }

    #[test]
    fn required_default_max_len_and_pattern() {
        let c = column("name = \"k\"\nrequired = true\nmax_len = 3\npattern = \"[A-Z]+\"");
        assert_eq!(
            c.value("").unwrap_err().to_string(),
            "required value is empty"
        );
        assert!(c
            .value("ABCD")
            .unwrap_err()
            .to_string()
            .contains("max_len 3"));
        assert!(c.value("AB1").unwrap_err().to_string().contains("pattern"));
        // max_len counts characters: three kanji are 9 bytes but 3 characters.
        let j = column("name = \"j\"\nmax_len = 3");
        assert!(j.value("山田太").is_ok());
        let d = column("name = \"x\"\ntype = \"integer\"\ndefault = 7");
        assert_eq!(d.value(""), Ok(json!(7)));
        assert_eq!(d.absent(), Some(json!(7)));
        let bad: ColumnConfig =
            toml::from_str("name = \"x\"\ntype = \"integer\"\ndefault = \"z\"").unwrap();
        assert!(Column::compile("p.columns[0]", &bad)
            .unwrap_err()
            .starts_with("p.columns[0].default"));
    }

    #[test]
    fn binding_names_the_missing_header() {
        let cols = vec![
            column("name = \"Email\"\nrequired = true"),
            column("name = \"Name\""),
        ];
        let headers = vec!["Name".to_string(), "Other".to_string()];
        let err = bind(&cols, Some(&headers), ExtraColumns::Ignore, true).unwrap_err();
        assert!(err.contains("missing required column 'Email'"), "{err}");
        let headers = vec!["Email".to_string(), "Other".to_string()];
        assert!(bind(&cols, Some(&headers), ExtraColumns::Ignore, true).is_ok());
        let err = bind(&cols, Some(&headers), ExtraColumns::Refuse, true).unwrap_err();
        assert!(err.contains("'Other'"), "{err}");
    }
}
