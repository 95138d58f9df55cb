//! Request bodies from a declarative template. A template is any JSON value in which a
//! string that is exactly a placeholder is replaced:
//!
//! - in the batch `template`: `"{{rows}}"`, the array of the batch's rows, each built by
//!   `row_template`;
//! - in `row_template` (and in `template` when `batch_size = 1`): `"{{row}}"` (the row as
//!   an object of its fields), `"{{row.FIELD}}"` (one field), `"{{keys}}"` and
//!   `"{{values}}"` (the row split by the pipeline's `keys`, for SFMC rowsets).
//!
//! Placeholders are whole strings, never spliced into text, so a value can never change
//! the shape of the JSON. Templates are compiled once and written straight to bytes.

use serde_json::Value;
use std::io::Write;

/// A compiled template node.
#[derive(Debug, Clone)]
enum Node {
    Literal(Value),
    Rows,
    Row,
    Field(usize),
    Keys,
    Values,
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

/// A batch body: the batch template and the row template.
#[derive(Debug, Clone)]
pub struct Body {
    batch: Node,
    row: Node,
    /// Output field names, in column order.
    fields: Vec<String>,
    /// Which columns are keys.
    is_key: Vec<bool>,
}

/// The body presets: `rows` (an array of row objects) and `sfmc_rowset`
/// (`[{"keys": {...}, "values": {...}}]`).
pub const ROWS: &str = "{{rows}}";

impl Body {
    /// Compiles `template` and `row_template`. `fields` are the output names of the
    /// columns; `keys` names some of them. Errors name the key under `key`.
    pub fn compile(
        key: &str,
        template: &Value,
        row_template: &Value,
        fields: &[String],
        keys: &[String],
        batch_size: usize,
    ) -> Result<Body, String> {
        let is_key: Vec<bool> = fields.iter().map(|f| keys.contains(f)).collect();
        let batch = compile(
            &format!("{key}.template"),
            template,
            fields,
            !keys.is_empty(),
            true,
        )?;
        let row = compile(
            &format!("{key}.row_template"),
            row_template,
            fields,
            !keys.is_empty(),
            false,
        )?;
        let rows = count(&batch, &|n| matches!(n, Node::Rows));
        let per_row = count(&batch, &|n| {
            matches!(n, Node::Row | Node::Field(_) | Node::Keys | Node::Values)
        });
        if rows > 1 {
            return Err(format!(
                "{key}.template: \"{{{{rows}}}}\" may appear only once"
            ));
        }
        if rows == 0 && batch_size != 1 {
            return Err(format!(
                "{key}.template: needs \"{{{{rows}}}}\", or batch_size = 1 to use row placeholders"
            ));
        }
        if rows == 1 && per_row > 0 {
            return Err(format!(
                "{key}.template: row placeholders go in row_template when the template has \"{{{{rows}}}}\""
            ));
        }
        Ok(Body {
            batch,
            row,
            fields: fields.to_vec(),
            is_key,
        })
    }

    /// Writes the body of one batch. `rows` hold one entry per column (`None`: absent).
    pub fn write(&self, out: &mut Vec<u8>, rows: &[Vec<Option<Value>>]) -> std::io::Result<()> {
        let first = rows.first().map(Vec::as_slice).unwrap_or(&[]);
        self.node(out, &self.batch, first, rows)
    }

    fn node(
        &self,
        out: &mut Vec<u8>,
        node: &Node,
        row: &[Option<Value>],
        rows: &[Vec<Option<Value>>],
    ) -> std::io::Result<()> {
        match node {
            Node::Literal(v) => serde_json::to_writer(&mut *out, v)?,
            Node::Rows => {
                out.push(b'[');
                for (i, r) in rows.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.node(out, &self.row, r, rows)?;
                }
                out.push(b']');
            }
            Node::Row => self.object(out, row, |_| true)?,
            Node::Keys => self.object(out, row, |i| self.is_key[i])?,
            Node::Values => self.object(out, row, |i| !self.is_key[i])?,
            Node::Field(i) => match row.get(*i).and_then(Option::as_ref) {
                Some(v) => serde_json::to_writer(&mut *out, v)?,
                None => out.write_all(b"null")?,
            },
            Node::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.node(out, item, row, rows)?;
                }
                out.push(b']');
            }
            Node::Object(entries) => {
                out.push(b'{');
                for (i, (name, item)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut *out, name)?;
                    out.push(b':');
                    self.node(out, item, row, rows)?;
                }
                out.push(b'}');
            }
        }
        Ok(())
    }

    fn object(
        &self,
        out: &mut Vec<u8>,
        row: &[Option<Value>],
        take: impl Fn(usize) -> bool,
    ) -> std::io::Result<()> {
        out.push(b'{');
        let mut first = true;
        for (i, value) in row.iter().enumerate() {
            let Some(value) = value else { continue };
            if !take(i) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut *out, &self.fields[i])?;
            out.push(b':');
            serde_json::to_writer(&mut *out, value)?;
        }
        out.push(b'}');
        Ok(())
    }
}

fn compile(
    key: &str,
    value: &Value,
    fields: &[String],
    has_keys: bool,
    batch: bool,
) -> Result<Node, String> {
    Ok(match value {
        Value::String(s) if s.starts_with("{{") && s.ends_with("}}") => {
            let name = s[2..s.len() - 2].trim();
            match name {
                "rows" if batch => Node::Rows,
                "rows" => {
                    return Err(format!(
                        "{key}: \"{{{{rows}}}}\" belongs in template, not row_template"
                    ))
                }
                "row" => Node::Row,
                "keys" | "values" if !has_keys => {
                    return Err(format!("{key}: \"{s}\" needs the pipeline's keys"))
                }
                "keys" => Node::Keys,
                "values" => Node::Values,
                other => match other.strip_prefix("row.") {
                    Some(field) => {
                        Node::Field(fields.iter().position(|f| f == field).ok_or_else(|| {
                            format!(
                                "{key}: \"{s}\" names no column (output names: {})",
                                fields.join(", ")
                            )
                        })?)
                    }
                    None => return Err(format!("{key}: unknown placeholder \"{s}\"")),
                },
            }
        }
        Value::Array(items) => Node::Array(
            items
                .iter()
                .map(|v| compile(key, v, fields, has_keys, batch))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Node::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), compile(key, v, fields, has_keys, batch)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => Node::Literal(other.clone()),
    })
}

fn count(node: &Node, what: &dyn Fn(&Node) -> bool) -> usize {
    let own = usize::from(what(node));
    own + match node {
        Node::Array(items) => items.iter().map(|n| count(n, what)).sum(),
        Node::Object(entries) => entries.iter().map(|(_, n)| count(n, what)).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields() -> Vec<String> {
        vec!["id".into(), "name".into(), "age".into()]
    }

    fn render(body: &Body, rows: Vec<Vec<Option<Value>>>) -> Value {
        let mut out = Vec::new();
        body.write(&mut out, &rows).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn sfmc_rowset_splits_keys_and_values_and_leaves_absent_fields_out() {
        let body = Body::compile(
            "p",
            &json!("{{rows}}"),
            &json!({"keys": "{{keys}}", "values": "{{values}}"}),
            &fields(),
            &["id".into()],
            100,
        )
        .unwrap();
        let out = render(
            &body,
            vec![
                vec![Some(json!("a1")), Some(json!("山田")), Some(json!(3))],
                vec![Some(json!("a2")), Some(Value::Null), None],
            ],
        );
        assert_eq!(
            out,
            json!([
                {"keys": {"id": "a1"}, "values": {"name": "山田", "age": 3}},
                {"keys": {"id": "a2"}, "values": {"name": null}}
            ])
        );
    }

    #[test]
    fn a_per_recipient_template_and_its_checks() {
        let t = json!({"To": {"Address": "{{row.name}}", "SubscriberKey": "{{row.id}}", "ContactAttributes": {"SubscriberAttributes": "{{row}}"}}});
        let body = Body::compile("p", &t, &json!("{{row}}"), &fields(), &[], 1).unwrap();
        let out = render(
            &body,
            vec![vec![Some(json!("k")), Some(json!("a@b.jp")), None]],
        );
        assert_eq!(out["To"]["Address"], "a@b.jp");
        assert_eq!(
            out["To"]["ContactAttributes"]["SubscriberAttributes"],
            json!({"id": "k", "name": "a@b.jp"})
        );
        let err = Body::compile("p", &t, &json!("{{row}}"), &fields(), &[], 50).unwrap_err();
        assert!(err.contains("batch_size = 1"), "{err}");
        let err = Body::compile(
            "p",
            &json!("{{rows}}"),
            &json!("{{row.nope}}"),
            &fields(),
            &[],
            5,
        )
        .unwrap_err();
        assert!(err.contains("names no column"), "{err}");
        let err = Body::compile(
            "p",
            &json!("{{rows}}"),
            &json!("{{keys}}"),
            &fields(),
            &[],
            5,
        )
        .unwrap_err();
        assert!(err.contains("needs the pipeline's keys"), "{err}");
    }
}
