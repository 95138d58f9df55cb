//! One event: its validation, and the body each destination shape makes of it (sGTM as
//! is, GA4 Measurement Protocol, Meta Conversions API with normalised, SHA-256 hashed
//! user data). Pure functions: no I/O, so the fan-out of a 4,000-event batch stays cheap.

use super::config::{DestinationConfig, Shape, DEFAULT_META_ACTION_SOURCE};
use chrono::{DateTime, FixedOffset};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// A valid event: the required fields read once, the rest kept as it came.
#[derive(Debug)]
pub struct Event<'a> {
    pub fields: &'a Map<String, Value>,
    pub order_id: String,
    pub storefront: &'a str,
    pub name: &'a str,
    pub time: DateTime<FixedOffset>,
}

/// Meta's customer information keys that are hashed, with the event fields they are read
/// from (Meta's own key first; `user_data.KEY` works too).
const HASHED: [(&str, &[&str]); 11] = [
    ("em", &["em", "email"]),
    ("ph", &["ph", "phone"]),
    ("fn", &["fn", "first_name"]),
    ("ln", &["ln", "last_name"]),
    ("ge", &["ge", "gender"]),
    ("db", &["db", "date_of_birth", "dob"]),
    ("ct", &["ct", "city"]),
    ("st", &["st", "state"]),
    ("zp", &["zp", "zip", "postal_code"]),
    ("country", &["country"]),
    ("external_id", &["external_id", "customer_id"]),
];

/// Meta's keys that must not be hashed.
const PLAIN: [&str; 4] = ["client_ip_address", "client_user_agent", "fbc", "fbp"];

/// Fields the shapes read themselves, so they are not passed on as parameters.
const HANDLED: [&str; 7] = [
    "event_name",
    "event_time",
    "client_id",
    "user_id",
    "currency",
    "order_revenue",
    "user_data",
];

/// Checks the required fields, naming every one that is wrong.
pub fn check(value: &Value) -> Result<Event<'_>, Vec<String>> {
    let Some(fields) = value.as_object() else {
        return Err(vec!["an event must be a JSON object".into()]);
    };
    let mut errors = Vec::new();
    let text = |name: &str, errors: &mut Vec<String>| -> Option<&str> {
        match fields.get(name) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.as_str()),
            Some(Value::String(_)) => {
                errors.push(format!("{name}: must not be empty"));
                None
            }
            None | Some(Value::Null) => {
                errors.push(format!("{name}: required"));
                None
            }
            Some(_) => {
                errors.push(format!("{name}: must be a string"));
                None
            }
        }
    };
    // The OMS sends order_id as a string; a number is taken as its digits.
    let order_id = match fields.get("order_id") {
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => text("order_id", &mut errors).map(str::to_string),
    };
    let storefront = text("storefront_id", &mut errors);
    let name = text("event_name", &mut errors);
    let time = text("event_time", &mut errors).and_then(|t| {
        DateTime::parse_from_rfc3339(t)
            .map_err(|e| errors.push(format!("event_time: '{t}' is not RFC 3339 ({e})")))
            .ok()
    });
    match (order_id, storefront, name, time) {
        (Some(order_id), Some(storefront), Some(name), Some(time)) if errors.is_empty() => {
            Ok(Event {
                fields,
                order_id,
                storefront,
                name,
                time,
            })
        }
        _ => Err(errors),
    }
}

/// The event name this destination uses, or `None` when it takes only mapped names.
pub fn mapped_name<'a>(dest: &'a DestinationConfig, name: &'a str) -> Option<&'a str> {
    match dest.event_names.get(name) {
        Some(mapped) => Some(mapped),
        None if dest.only_mapped => None,
        None => Some(name),
    }
}

/// The request body for `dest`, and the query parameters that are not secrets.
pub fn body(
    event: &Event<'_>,
    dest: &DestinationConfig,
    name: &str,
) -> (Value, Map<String, Value>) {
    let mut query = Map::new();
    let body = match dest.shape {
        Shape::Sgtm => sgtm(event, name),
        Shape::Ga4 => {
            let id = dest.measurement_id.clone().unwrap_or_default();
            query.insert("measurement_id".into(), Value::String(id));
            ga4(event, dest, name)
        }
        Shape::MetaCapi => meta(event, dest, name),
    };
    (body, query)
}

/// sGTM takes the event as it came; only a mapped name is changed.
fn sgtm(event: &Event<'_>, name: &str) -> Value {
    if name == event.name {
        return Value::Object(event.fields.clone());
    }
    let mut fields = event.fields.clone();
    fields.insert("event_name".into(), Value::String(name.into()));
    Value::Object(fields)
}

fn is_identity(key: &str) -> bool {
    HANDLED.contains(&key)
        || PLAIN.contains(&key)
        || HASHED.iter().any(|(_, from)| from.contains(&key))
}

/// The currency of `order_revenue`: the event's, else the destination's.
fn currency(event: &Event<'_>, dest: &DestinationConfig) -> Option<Value> {
    event
        .fields
        .get("currency")
        .filter(|c| c.is_string())
        .cloned()
        .or_else(|| dest.currency.clone().map(Value::String))
}

/// GA4 Measurement Protocol: one event with its fields as params. Personal data (email,
/// phone, names, address) never goes to GA4, whose terms forbid it.
fn ga4(event: &Event<'_>, dest: &DestinationConfig, name: &str) -> Value {
    let mut params = Map::new();
    params.insert(
        "transaction_id".into(),
        Value::String(event.order_id.clone()),
    );
    if let Some(value) = event.fields.get("order_revenue").filter(|v| v.is_number()) {
        params.insert("value".into(), value.clone());
        if let Some(currency) = currency(event, dest) {
            params.insert("currency".into(), currency);
        }
    }
    for (key, value) in event.fields {
        if is_identity(key) || !(value.is_string() || value.is_number() || value.is_boolean()) {
            continue;
        }
        params.entry(ga4_param_name(key)).or_insert(value.clone());
    }
    // GA4 needs a client_id; OMS events carry none, so the session, else the order,
    // stands in for the browser instance.
    let client_id = ["client_id", "session_id"]
        .iter()
        .find_map(|k| event.fields.get(*k).and_then(Value::as_str))
        .map(str::to_string)
        .unwrap_or_else(|| event.order_id.clone());
    let mut body = json!({
        "client_id": client_id,
        "timestamp_micros": event.time.timestamp_micros(),
        "events": [{"name": name, "params": params}],
    });
    if let Some(user_id) = event.fields.get("user_id").filter(|v| v.is_string()) {
        body["user_id"] = user_id.clone();
    }
    body
}

/// GA4 parameter names are letters, digits and underscores, starting with a letter, at
/// most 40 characters (`t-value` becomes `t_value`).
fn ga4_param_name(key: &str) -> String {
    let mut name: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        name.insert_str(0, "p_");
    }
    name.truncate(40);
    name
}

/// Meta Conversions API: one server event. `event_id` is the order id, so Meta counts an
/// event sent twice (by us or by a browser pixel) once.
fn meta(event: &Event<'_>, dest: &DestinationConfig, name: &str) -> Value {
    let mut custom = Map::new();
    custom.insert("order_id".into(), Value::String(event.order_id.clone()));
    if let Some(value) = event.fields.get("order_revenue").filter(|v| v.is_number()) {
        custom.insert("value".into(), value.clone());
        if let Some(currency) = currency(event, dest) {
            custom.insert("currency".into(), currency);
        }
    }
    for (key, value) in event.fields {
        if is_identity(key)
            || matches!(key.as_str(), "action_source" | "event_source_url")
            || !(value.is_string() || value.is_number() || value.is_boolean())
        {
            continue;
        }
        custom.entry(key.clone()).or_insert(value.clone());
    }
    let action_source = event
        .fields
        .get("action_source")
        .and_then(Value::as_str)
        .or(dest.action_source.as_deref())
        .unwrap_or(DEFAULT_META_ACTION_SOURCE);
    let mut server_event = json!({
        "event_name": name,
        "event_time": event.time.timestamp(),
        "event_id": event.order_id,
        "action_source": action_source,
        "user_data": user_data(event.fields),
        "custom_data": custom,
    });
    if let Some(url) = event
        .fields
        .get("event_source_url")
        .filter(|v| v.is_string())
    {
        server_event["event_source_url"] = url.clone();
    }
    let mut body = json!({ "data": [server_event] });
    if let Some(code) = &dest.test_event_code {
        body["test_event_code"] = Value::String(code.clone());
    }
    body
}

/// Meta's `user_data`: identity fields normalised then SHA-256 hashed (hex); IP, user
/// agent and click ids as they are. Read from the event and from its `user_data` object.
pub fn user_data(fields: &Map<String, Value>) -> Value {
    let nested = fields.get("user_data").and_then(Value::as_object);
    let lookup = |key: &str| {
        nested
            .and_then(|n| n.get(key))
            .or_else(|| fields.get(key))
            .filter(|v| !v.is_null())
    };
    let mut out = Map::new();
    for (meta_key, sources) in HASHED {
        let Some(value) = sources.iter().find_map(|k| lookup(k)) else {
            continue;
        };
        let hashed = match value {
            Value::Array(items) => {
                let all: Vec<Value> = items
                    .iter()
                    .filter_map(|v| hash_field(meta_key, v))
                    .map(Value::String)
                    .collect();
                (!all.is_empty()).then_some(Value::Array(all))
            }
            other => hash_field(meta_key, other).map(Value::String),
        };
        if let Some(hashed) = hashed {
            out.insert(meta_key.into(), hashed);
        }
    }
    for key in PLAIN {
        if let Some(value) = lookup(key).filter(|v| v.is_string()) {
            out.insert(key.into(), value.clone());
        }
    }
    Value::Object(out)
}

/// Normalises then hashes one value; `None` when nothing is left to send.
fn hash_field(meta_key: &str, value: &Value) -> Option<String> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    // Already hashed by the sender: Meta takes it as is; hashing it again would not match.
    if text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Some(text);
    }
    let normal = normalise(meta_key, &text);
    (!normal.is_empty()).then(|| sha256_hex(&normal))
}

/// Meta's normalisation rules per customer information key.
pub fn normalise(meta_key: &str, text: &str) -> String {
    let lower = text.trim().to_lowercase();
    let letters_digits =
        |s: &str| -> String { s.chars().filter(|c| c.is_alphanumeric()).collect() };
    match meta_key {
        "em" => lower,
        // Digits only, country code included, no leading zeros.
        "ph" => {
            let digits: String = lower.chars().filter(char::is_ascii_digit).collect();
            digits.trim_start_matches('0').to_string()
        }
        // Lowercase, no punctuation (letters of any script kept).
        "fn" | "ln" => lower
            .chars()
            .filter(|c| c.is_alphanumeric() || c.is_whitespace())
            .collect::<String>()
            .trim()
            .to_string(),
        // f or m.
        "ge" => lower.chars().next().map(String::from).unwrap_or_default(),
        // YYYYMMDD.
        "db" => lower.chars().filter(char::is_ascii_digit).collect(),
        // Lowercase, no spaces or punctuation.
        "ct" | "st" | "country" => letters_digits(&lower),
        // Lowercase, no spaces; a US ZIP+4 keeps its first five digits.
        "zp" => {
            let zip = lower.split('-').next().unwrap_or("");
            zip.chars().filter(|c| !c.is_whitespace()).collect()
        }
        _ => text.trim().to_string(),
    }
}

pub fn sha256_hex(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(text.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push(HEX[usize::from(byte >> 4)] as char);
        hex.push(HEX[usize::from(byte & 0xf)] as char);
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected hashes computed outside Rust: printf %s 'VALUE' | sha256sum.
    const EMAIL: &str = "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b";
    const PHONE: &str = "d6736136ea896c1bfdc553e0e86e702c70d060d805696ca3e4e9e0961353860a";
    const CITY: &str = "350c754ba4d38897693aa077ef43072a859d23f613443133fecbbd90a3512ca5";
    const DOB: &str = "267b39628557f31a6766b3d7f8823978c276759be4a5c9c52bf868d802ba5a0d";
    const ZIP: &str = "e73ac16e69f060ee98b0fda5f66f48c4648ee26950e9bab3a097389853fd859e";

    #[test]
    fn user_data_is_normalised_then_hashed_and_click_ids_are_not() {
        let event = json!({
            "email": "  Test@Example.COM ",
            "phone": "+1 (555) 123-4567",
            "user_data": {"ct": "New York", "fbp": "fb.1.123.456"},
            "date_of_birth": "1990-01-31",
            "zip": "94105-1234",
            "client_ip_address": "203.0.113.9",
        });
        let data = user_data(event.as_object().unwrap());
        assert_eq!(data["em"], EMAIL);
        assert_eq!(data["ph"], PHONE);
        assert_eq!(data["ct"], CITY);
        assert_eq!(data["db"], DOB);
        assert_eq!(data["zp"], ZIP);
        assert_eq!(data["fbp"], "fb.1.123.456");
        assert_eq!(data["client_ip_address"], "203.0.113.9");
        let prehashed = json!({"em": EMAIL});
        assert_eq!(user_data(prehashed.as_object().unwrap())["em"], EMAIL);
    }

    #[test]
    fn every_missing_or_bad_required_field_is_named() {
        let errors = check(&json!({"order_id": "", "event_time": "yesterday", "event_name": 3}))
            .unwrap_err();
        let text = errors.join("; ");
        for expected in [
            "order_id: must not be empty",
            "storefront_id: required",
            "event_name: must be a string",
            "event_time: 'yesterday' is not RFC 3339",
        ] {
            assert!(text.contains(expected), "{text}");
        }
        assert!(check(&json!([1])).is_err());
        let ok = json!({"order_id": 42, "storefront_id": "s", "event_name": "e",
                        "event_time": "2026-01-15T10:25:00+01:00"});
        let event = check(&ok).unwrap();
        assert_eq!(event.order_id, "42");
        assert_eq!(event.time.timestamp(), 1_768_469_100);
    }

    #[test]
    fn ga4_param_names_are_made_valid() {
        assert_eq!(ga4_param_name("t-value"), "t_value");
        assert_eq!(ga4_param_name("1st"), "p_1st");
        assert_eq!(ga4_param_name(&"x".repeat(50)).len(), 40);
    }
}
