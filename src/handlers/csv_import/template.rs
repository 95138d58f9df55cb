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

/// A compiled template node.
#[derive(Debug, Clone)]
enum Node {
    /// A constant part of the template, rendered once when the template is compiled.
    Literal(Vec<u8>),
    Rows,
    Row,
    Field(usize),
    Keys,
    Values,
    Array(Vec<Node>),
    /// Entries with their keys already rendered as `"key":`.
    Object(Vec<(Vec<u8>, Node)>),
}

/// A batch body: the batch template and the row template.
#[derive(Debug, Clone)]
pub struct Body {
    batch: Node,
    row: Node,
    /// Output field names, in column order, rendered as `"name":` once (every row of a
    /// file repeats them).
    keys: Vec<Vec<u8>>,
    /// Which columns are keys.
    is_key: Vec<bool>,
}

/// The rows of one batch, every cell already rendered as JSON text, so that a row is
/// written once (no `serde_json::Value` per cell) and a body is made of copies.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    /// The rendered cells, back to back.
    bytes: Vec<u8>,
    /// Per row, one entry per column: the cell's range in `bytes`, or `None` for a
    /// column absent from the file (its field is left out).
    cells: Vec<Option<(usize, usize)>>,
    width: usize,
}

/// Where a row began, to take back a row that turned out invalid.
#[derive(Debug, Clone, Copy)]
pub struct RowMark {
    bytes: usize,
    cells: usize,
}

impl Rows {
    /// Rows of `width` columns.
    pub fn new(width: usize) -> Rows {
        Rows {
            width,
            ..Rows::default()
        }
    }

    pub fn len(&self) -> usize {
        self.cells.len().checked_div(self.width).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.cells.clear();
    }

    /// Starts a row; its cells follow, one per column, in column order.
    pub fn mark(&self) -> RowMark {
        RowMark {
            bytes: self.bytes.len(),
            cells: self.cells.len(),
        }
    }

    /// Forgets everything pushed since `mark`.
    pub fn rollback(&mut self, mark: RowMark) {
        self.bytes.truncate(mark.bytes);
        self.cells.truncate(mark.cells);
    }

    /// Adds a cell that `write` renders as one JSON value; on error the cell is taken
    /// back and an absent cell stands in its place (the caller drops the row anyway).
    pub fn push_with<E>(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let start = self.bytes.len();
        match write(&mut self.bytes) {
            Ok(()) => {
                self.cells.push(Some((start, self.bytes.len())));
                Ok(())
            }
            Err(e) => {
                self.bytes.truncate(start);
                self.cells.push(None);
                Err(e)
            }
        }
    }

    /// Adds a column absent from the file.
    pub fn push_absent(&mut self) {
        self.cells.push(None);
    }

    fn row(&self, index: usize) -> &[Option<(usize, usize)>] {
        self.cells
            .get(index * self.width..(index + 1) * self.width)
            .unwrap_or(&[])
    }

    fn cell(&self, cell: (usize, usize)) -> &[u8] {
        &self.bytes[cell.0..cell.1]
    }
}

/// The body presets: `rows` (an array of row objects) and `sfmc_rowset`
/// (`[{"keys": {...}, "values": {...}}]`).
pub const ROWS: &str = "{{rows}}";

/// `text` as a JSON string: serde_json's own escaping, so bodies are what serialising
/// a `Value` gives.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(&mut *out, text).expect("writing to a Vec does not fail");
}

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
            keys: fields.iter().map(|f| object_key(f)).collect(),
            is_key,
        })
    }

    /// Appends the body of one batch to `out`. Outside `{{rows}}`, row placeholders
    /// take the first row (`batch_size = 1`).
    pub fn write(&self, out: &mut Vec<u8>, rows: &Rows) {
        self.node(out, &self.batch, 0, rows)
    }

    fn node(&self, out: &mut Vec<u8>, node: &Node, row: usize, rows: &Rows) {
        match node {
            Node::Literal(bytes) => out.extend_from_slice(bytes),
            Node::Rows => {
                out.push(b'[');
                for r in 0..rows.len() {
                    if r > 0 {
                        out.push(b',');
                    }
                    self.node(out, &self.row, r, rows);
                }
                out.push(b']');
            }
            Node::Row => self.object(out, rows, row, |_| true),
            Node::Keys => self.object(out, rows, row, |i| self.is_key[i]),
            Node::Values => self.object(out, rows, row, |i| !self.is_key[i]),
            Node::Field(i) => match rows.row(row).get(*i).copied().flatten() {
                Some(cell) => out.extend_from_slice(rows.cell(cell)),
                None => out.extend_from_slice(b"null"),
            },
            Node::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.node(out, item, row, rows);
                }
                out.push(b']');
            }
            Node::Object(entries) => {
                out.push(b'{');
                for (i, (name, item)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(name);
                    self.node(out, item, row, rows);
                }
                out.push(b'}');
            }
        }
    }

    fn object(&self, out: &mut Vec<u8>, rows: &Rows, row: usize, take: impl Fn(usize) -> bool) {
        out.push(b'{');
        let mut first = true;
        for (i, cell) in rows.row(row).iter().enumerate() {
            let Some(cell) = cell else { continue };
            if !take(i) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(&self.keys[i]);
            out.extend_from_slice(rows.cell(*cell));
        }
        out.push(b'}');
    }
}

/// `"name":`, as an object's key is written.
fn object_key(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 3);
    write_str(&mut key, name);
    key.push(b':');
    key
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
                .map(|(k, v)| Ok((object_key(k), compile(key, v, fields, has_keys, batch)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => Node::Literal(serde_json::to_vec(other).map_err(|e| format!("{key}: {e}"))?),
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
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    fn fields() -> Vec<String> {
        vec!["id".into(), "name".into(), "age".into()]
    }

    /// Rows as the renderer takes them, from one `Option<Value>` per cell.
    pub(crate) fn rows_of(width: usize, rows: &[Vec<Option<Value>>]) -> Rows {
        let mut out = Rows::new(width);
        for row in rows {
            for cell in row {
                match cell {
                    Some(v) => out
                        .push_with(|bytes| serde_json::to_writer(bytes, v))
                        .unwrap(),
                    None => out.push_absent(),
                }
            }
        }
        out
    }

    fn render(body: &Body, rows: Vec<Vec<Option<Value>>>) -> Value {
        let mut out = Vec::new();
        body.write(&mut out, &rows_of(3, &rows));
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

/// The renderer as it was before rows were rendered cell by cell: over
/// `serde_json::Value`s, serialising each one when the body is written. Kept for tests,
/// which hold the renderer to its bytes.
#[cfg(test)]
pub(crate) mod reference {
    use serde_json::Value;

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

    fn compile(value: &Value, fields: &[String]) -> Node {
        match value {
            Value::String(s) if s.starts_with("{{") && s.ends_with("}}") => {
                match s[2..s.len() - 2].trim() {
                    "rows" => Node::Rows,
                    "row" => Node::Row,
                    "keys" => Node::Keys,
                    "values" => Node::Values,
                    other => {
                        let field = other.strip_prefix("row.").expect("a known placeholder");
                        Node::Field(fields.iter().position(|f| f == field).expect("a field"))
                    }
                }
            }
            Value::Array(items) => Node::Array(items.iter().map(|v| compile(v, fields)).collect()),
            Value::Object(map) => Node::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), compile(v, fields)))
                    .collect(),
            ),
            other => Node::Literal(other.clone()),
        }
    }

    struct Renderer<'a> {
        row: Node,
        fields: &'a [String],
        is_key: Vec<bool>,
    }

    /// The body of one batch, as the old renderer wrote it.
    pub(crate) fn write(
        template: &Value,
        row_template: &Value,
        fields: &[String],
        keys: &[String],
        rows: &[Vec<Option<Value>>],
    ) -> Vec<u8> {
        let r = Renderer {
            row: compile(row_template, fields),
            fields,
            is_key: fields.iter().map(|f| keys.contains(f)).collect(),
        };
        let mut out = Vec::new();
        let first = rows.first().map(Vec::as_slice).unwrap_or(&[]);
        r.node(&mut out, &compile(template, fields), first, rows);
        out
    }

    impl Renderer<'_> {
        fn node(
            &self,
            out: &mut Vec<u8>,
            node: &Node,
            row: &[Option<Value>],
            rows: &[Vec<Option<Value>>],
        ) {
            match node {
                Node::Literal(v) => serde_json::to_writer(&mut *out, v).unwrap(),
                Node::Rows => {
                    out.push(b'[');
                    for (i, r) in rows.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        self.node(out, &self.row, r, rows);
                    }
                    out.push(b']');
                }
                Node::Row => self.object(out, row, |_| true),
                Node::Keys => self.object(out, row, |i| self.is_key[i]),
                Node::Values => self.object(out, row, |i| !self.is_key[i]),
                Node::Field(i) => match row.get(*i).and_then(Option::as_ref) {
                    Some(v) => serde_json::to_writer(&mut *out, v).unwrap(),
                    None => out.extend_from_slice(b"null"),
                },
                Node::Array(items) => {
                    out.push(b'[');
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        self.node(out, item, row, rows);
                    }
                    out.push(b']');
                }
                Node::Object(entries) => {
                    out.push(b'{');
                    for (i, (name, item)) in entries.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        serde_json::to_writer(&mut *out, name).unwrap();
                        out.push(b':');
                        self.node(out, item, row, rows);
                    }
                    out.push(b'}');
                }
            }
        }

        fn object(&self, out: &mut Vec<u8>, row: &[Option<Value>], take: impl Fn(usize) -> bool) {
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
                serde_json::to_writer(&mut *out, &self.fields[i]).unwrap();
                out.push(b':');
                serde_json::to_writer(&mut *out, value).unwrap();
            }
            out.push(b'}');
        }
    }
}
