//! Streaming CSV input for every kind that takes CSV files in (`csv_import`, and the SDS
//! → OneRoster kind): encoding detection and transcoding, dialect (delimiter, quote,
//! header row), RFC 4180 quoting, and the line number of every record. Memory stays
//! bounded by the longest record, never by the file.
//!
//! UTF-8 input is parsed as bytes and checked per record (no transcoding pass). Any other
//! encoding (Shift_JIS/CP932, EUC-JP, UTF-16 with a BOM, ...) is transcoded to UTF-8 on
//! the fly by `encoding_rs_io`; a byte sequence that is not valid in that encoding becomes
//! U+FFFD, and a record holding one is reported as a problem rather than passed on as
//! mojibake.

use encoding_rs::Encoding;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// How much of a file `auto` looks at to choose an encoding, and where a NUL byte marks
/// the file as binary rather than CSV.
pub const SNIFF_LEN: usize = 64 * 1024;
/// The csv parser's buffer: large enough that reads are few, small enough not to matter.
const BUFFER: usize = 64 * 1024;

/// Which encoding a file is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingChoice {
    /// A BOM decides; else UTF-8 if the first [`SNIFF_LEN`] bytes are valid UTF-8; else
    /// the fallback (e.g. Shift_JIS for files exported by Japanese Excel).
    Auto { fallback: &'static Encoding },
    /// This encoding, unless the file starts with a BOM, which wins (a BOM cannot lie
    /// about being one, while a declared encoding can be out of date).
    Fixed(&'static Encoding),
}

impl EncodingChoice {
    /// `"auto"` or an encoding label (see [`encoding_for_label`]).
    pub fn parse(label: &str, fallback: &str) -> Result<EncodingChoice, String> {
        if label.trim().eq_ignore_ascii_case("auto") {
            Ok(EncodingChoice::Auto {
                fallback: encoding_for_label(fallback)?,
            })
        } else {
            Ok(EncodingChoice::Fixed(encoding_for_label(label)?))
        }
    }
}

/// An encoding by its WHATWG label (`utf-8`, `shift_jis`, `windows-31j`, `euc-jp`,
/// `iso-2022-jp`, `utf-16le`, `windows-1252`, ...), plus `cp932`, which WHATWG lacks.
/// WHATWG's `shift_jis` is Microsoft's CP932 (Windows-31J), the superset that Japanese
/// Windows and Excel write, so both names give the same decoder.
pub fn encoding_for_label(label: &str) -> Result<&'static Encoding, String> {
    let trimmed = label.trim();
    let label = if trimmed.eq_ignore_ascii_case("cp932") {
        "windows-31j"
    } else {
        trimmed
    };
    Encoding::for_label(label.as_bytes()).ok_or_else(|| {
        format!("'{trimmed}' is not a known encoding (try utf-8, shift_jis, euc-jp, utf-16le)")
    })
}

/// The shape of the CSV: one-byte delimiter and quote, and whether the first record is
/// a header row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialect {
    pub delimiter: u8,
    pub quote: u8,
    pub has_header: bool,
}

impl Default for Dialect {
    fn default() -> Self {
        Dialect {
            delimiter: b',',
            quote: b'"',
            has_header: true,
        }
    }
}

/// Why a file cannot be read as CSV at all (as opposed to a bad record in it).
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("not a CSV file: {0}")]
    NotCsv(String),
}

/// One record as read: its line, its fields, and what is wrong with its bytes if
/// anything (then the fields must not be trusted).
pub struct Record<'a> {
    /// The line of the file on which the record starts (1-based; the header is line 1).
    pub line: u64,
    /// Set when the record's bytes are not valid in the file's encoding.
    pub problem: Option<String>,
    fields: &'a csv::ByteRecord,
}

impl Record<'_> {
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The field at `index`; a field with invalid bytes is shown lossily.
    pub fn get(&self, index: usize) -> Option<std::borrow::Cow<'_, str>> {
        self.fields.get(index).map(String::from_utf8_lossy)
    }

    /// The field at `index` as text, when the record has no problem. Checked per field
    /// rather than trusted, so it never fails silently.
    pub fn text(&self, index: usize) -> Option<&str> {
        self.fields
            .get(index)
            .and_then(|f| std::str::from_utf8(f).ok())
    }
}

/// A streaming CSV reader over one file.
pub struct CsvReader {
    inner: csv::Reader<Box<dyn Read + Send>>,
    encoding: &'static Encoding,
    /// Whether bytes pass through a decoder (then invalid input shows as U+FFFD).
    transcoded: bool,
    headers: Option<Vec<String>>,
    record: csv::ByteRecord,
}

impl CsvReader {
    /// Opens `path`, chooses its encoding and reads the header row if the dialect has one.
    pub fn open(
        path: &Path,
        encoding: EncodingChoice,
        dialect: &Dialect,
    ) -> Result<CsvReader, CsvError> {
        let io = |source| CsvError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut file = File::open(path).map_err(io)?;
        let mut prefix = Vec::with_capacity(SNIFF_LEN);
        (&mut file)
            .take(SNIFF_LEN as u64)
            .read_to_end(&mut prefix)
            .map_err(io)?;
        if prefix.is_empty() {
            return Err(CsvError::NotCsv("the file is empty".into()));
        }
        let bom = Encoding::for_bom(&prefix);
        let chosen = match (bom, encoding) {
            (Some((enc, _)), _) => enc,
            (None, EncodingChoice::Fixed(enc)) => enc,
            (None, EncodingChoice::Auto { fallback }) => {
                if looks_like_utf8(&prefix, prefix.len() == SNIFF_LEN) {
                    encoding_rs::UTF_8
                } else {
                    fallback
                }
            }
        };
        // UTF-16 is full of NULs; anything else with one is not text.
        if !matches!(chosen.name(), "UTF-16LE" | "UTF-16BE") {
            if let Some(at) = prefix.iter().position(|b| *b == 0) {
                return Err(CsvError::NotCsv(format!(
                    "binary data (a NUL byte at offset {at})"
                )));
            }
        }
        let skip = match bom {
            Some((enc, len)) if enc == encoding_rs::UTF_8 => len as u64,
            _ => 0,
        };
        file.seek(SeekFrom::Start(skip)).map_err(io)?;
        let buffered = BufReader::with_capacity(BUFFER, file);
        let (source, transcoded): (Box<dyn Read + Send>, bool) = if chosen == encoding_rs::UTF_8 {
            (Box::new(buffered), false)
        } else {
            let decoder = encoding_rs_io::DecodeReaderBytesBuilder::new()
                .encoding(Some(chosen))
                .bom_override(true)
                .strip_bom(true)
                .build(buffered);
            (Box::new(decoder), true)
        };
        let inner = csv::ReaderBuilder::new()
            .delimiter(dialect.delimiter)
            .quote(dialect.quote)
            // The header is read here, so line numbers and errors are ours to report.
            .has_headers(false)
            // A record with the wrong number of fields is a row error, not the end.
            .flexible(true)
            .buffer_capacity(BUFFER)
            .from_reader(source);
        let mut reader = CsvReader {
            inner,
            encoding: chosen,
            transcoded,
            headers: None,
            record: csv::ByteRecord::new(),
        };
        if dialect.has_header {
            let headers = match reader.next_record()? {
                None => return Err(CsvError::NotCsv("no header row".into())),
                Some(record) => {
                    if let Some(problem) = record.problem {
                        return Err(CsvError::NotCsv(format!("the header row has {problem}")));
                    }
                    (0..record.len())
                        .map(|i| record.text(i).unwrap_or_default().trim().to_string())
                        .collect::<Vec<_>>()
                }
            };
            reader.headers = Some(headers);
        }
        Ok(reader)
    }

    /// The encoding the file is read in.
    pub fn encoding(&self) -> &'static Encoding {
        self.encoding
    }

    /// The header row (trimmed), when the dialect has one.
    pub fn headers(&self) -> Option<&[String]> {
        self.headers.as_deref()
    }

    /// The next record, or `None` at the end of the file. An error here means the file
    /// cannot be read further (I/O); a malformed record is a [`Record::problem`].
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, CsvError> {
        let more =
            self.inner
                .read_byte_record(&mut self.record)
                .map_err(|e| match e.into_kind() {
                    csv::ErrorKind::Io(source) => CsvError::Io {
                        path: "input".into(),
                        source,
                    },
                    other => CsvError::NotCsv(format!("{other:?}")),
                })?;
        if !more {
            return Ok(None);
        }
        // The parser's position before the record is where the previous one ended, which
        // is short of the record when blank lines (skipped) came between. So count back
        // from where the record ended: its own newlines (in quoted fields) and its
        // terminator, which the last record of a file may lack.
        let before = self.record.position().map(|p| p.line()).unwrap_or(1);
        let after = self.inner.position().line();
        let bytes = self.record.as_slice();
        // A record that took one line starts on `before` whatever it holds, so its bytes
        // are only counted when it spanned more (a per-record cost otherwise).
        let inner_newlines = if after > before + 1 {
            bytes.iter().filter(|b| **b == b'\n').count() as u64
        } else {
            0
        };
        let line = after.saturating_sub(inner_newlines + 1).max(before);
        let problem = if self.transcoded {
            // The decoder turned every invalid sequence into U+FFFD.
            let text = std::str::from_utf8(bytes).unwrap_or("\u{FFFD}");
            text.contains('\u{FFFD}')
                .then(|| format!("bytes that are not valid {}", self.encoding.name()))
        } else {
            std::str::from_utf8(bytes)
                .err()
                .map(|_| "bytes that are not valid UTF-8".to_string())
        };
        Ok(Some(Record {
            line,
            problem,
            fields: &self.record,
        }))
    }
}

/// Whether a prefix of a file is UTF-8. When the prefix was cut at [`SNIFF_LEN`], a
/// sequence cut in half at its end still counts as valid.
fn looks_like_utf8(prefix: &[u8], truncated: bool) -> bool {
    match std::str::from_utf8(prefix) {
        Ok(_) => true,
        Err(e) => truncated && e.error_len().is_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as (line, fields, problem).
    type Row = (u64, Vec<String>, Option<String>);

    fn read_all(bytes: &[u8], choice: EncodingChoice, dialect: &Dialect) -> (String, Vec<Row>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv");
        std::fs::write(&path, bytes).unwrap();
        let mut reader = CsvReader::open(&path, choice, dialect).unwrap();
        let name = reader.encoding().name().to_string();
        let mut rows = Vec::new();
        while let Some(record) = reader.next_record().unwrap() {
            let fields = (0..record.len())
                .map(|i| record.get(i).unwrap().into_owned())
                .collect();
            rows.push((record.line, fields, record.problem.clone()));
        }
        (name, rows)
    }

    fn auto() -> EncodingChoice {
        EncodingChoice::parse("auto", "shift_jis").unwrap()
    }

    #[test]
    fn quotes_newlines_and_line_numbers() {
        let text = "a,b\n1,\"two\nlines\"\n2,\"say \"\"hi\"\", ok\"\n3,x\n";
        let (enc, rows) = read_all(text.as_bytes(), auto(), &Dialect::default());
        assert_eq!(enc, "UTF-8");
        assert_eq!(rows[0], (2, vec!["1".into(), "two\nlines".into()], None));
        assert_eq!(
            rows[1],
            (4, vec!["2".into(), "say \"hi\", ok".into()], None)
        );
        assert_eq!(rows[2].0, 5);
    }

    #[test]
    fn bom_shift_jis_and_bad_bytes() {
        let (enc, rows) = read_all(
            b"\xEF\xBB\xBFname\n\xE5\xB1\xB1\n",
            auto(),
            &Dialect::default(),
        );
        assert_eq!((enc.as_str(), rows[0].1[0].as_str()), ("UTF-8", "山"));
        let (sjis, _, _) = encoding_rs::SHIFT_JIS.encode("name\n山田太郎\n");
        let (enc, rows) = read_all(&sjis, auto(), &Dialect::default());
        assert_eq!(
            (enc.as_str(), rows[0].1[0].as_str()),
            ("Shift_JIS", "山田太郎")
        );
        // Declared UTF-8, given Shift_JIS: a row problem with its line, not mojibake.
        let fixed = EncodingChoice::parse("utf-8", "utf-8").unwrap();
        let (_, rows) = read_all(&sjis, fixed, &Dialect::default());
        assert_eq!(rows[0].0, 2);
        assert_eq!(rows[0].2.as_deref(), Some("bytes that are not valid UTF-8"));
    }

    #[test]
    fn binary_and_empty_files_are_not_csv() {
        let dir = tempfile::tempdir().unwrap();
        for (bytes, expected) in [
            (&b""[..], "empty"),
            (&b"PK\x03\x04\x00\x00"[..], "NUL byte"),
        ] {
            let path = dir.path().join("x");
            std::fs::write(&path, bytes).unwrap();
            let err = CsvReader::open(&path, auto(), &Dialect::default())
                .err()
                .unwrap();
            assert!(err.to_string().contains(expected), "{err}");
        }
    }

    #[test]
    fn labels() {
        assert_eq!(encoding_for_label("CP932").unwrap(), encoding_rs::SHIFT_JIS);
        assert_eq!(
            encoding_for_label("shift_jis").unwrap(),
            encoding_rs::SHIFT_JIS
        );
        assert!(encoding_for_label("klingon").is_err());
    }
}

#[cfg(test)]
mod blank_line_tests {
    use super::*;

    #[test]
    fn blank_lines_are_skipped_and_lines_still_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.csv");
        std::fs::write(&path, "a,b\n\n1,2\n\n\n3,\"x\ny\"\n4,5").unwrap();
        let choice = EncodingChoice::parse("utf-8", "utf-8").unwrap();
        let mut reader = CsvReader::open(&path, choice, &Dialect::default()).unwrap();
        let mut lines = Vec::new();
        while let Some(record) = reader.next_record().unwrap() {
            lines.push((record.line, record.get(0).unwrap().into_owned()));
        }
        assert_eq!(
            lines,
            vec![(3, "1".into()), (6, "3".into()), (8, "4".into())]
        );
    }
}
