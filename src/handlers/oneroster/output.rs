//! Writing a OneRoster set to disk: each CSV streamed through a SHA-256 hasher under a
//! temporary name, then `manifest.csv`, `metadata.json`, `errors.csv` and the optional
//! zip, every file put in place whole or not at all.

use super::map::{self, Out, SdsError, Sink};
use super::{sha_hex, Payload, Written, MANIFEST_FILES};
use crate::files::{AtomicFile, FileAction, FileError};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// errors.csv: `file,line,field,value,reason`; `file` as it is named on disk, `line`
/// empty for an error about the file as a whole.
pub(super) fn write_errors(path: &Path, errors: &[SdsError]) -> Result<(), FileError> {
    let rows: Vec<Vec<String>> = errors
        .iter()
        .map(|e| {
            vec![
                e.file.clone(),
                if e.line == 0 {
                    String::new()
                } else {
                    e.line.to_string()
                },
                e.field.clone(),
                e.value.clone(),
                e.reason.clone(),
            ]
        })
        .collect();
    let bytes = csv_bytes(&["file", "line", "field", "value", "reason"], &rows)
        .map_err(|e| FileError::write(path, e))?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` (0640) whole or not at all.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    crate::files::write_atomic(path, bytes).map_err(|e| FileError::write(path, e))
}

/// Writes `files` of `dir` into one zip at `path`, at its root, under a temporary name
/// first. The same files give the same bytes: fixed order, fixed entry times
/// (1980-01-01, the zip epoch) and modes, deflate (RFC 1951, as the spec asks).
pub(super) fn write_zip(path: &Path, dir: &Path, files: &[String]) -> Result<(), FileError> {
    use zip::write::SimpleFileOptions;
    let fail = |e: &dyn std::fmt::Display| FileError::write(path, e);
    let write = || -> Result<(), FileError> {
        let file = AtomicFile::create(path).map_err(|e| fail(&e))?;
        let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file));
        let options = SimpleFileOptions::DEFAULT
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(0o640);
        for name in files {
            zip.start_file(name.as_str(), options)
                .map_err(|e| fail(&e))?;
            let source = dir.join(name);
            std::fs::File::open(&source)
                .and_then(|mut f| std::io::copy(&mut f, &mut zip))
                .map_err(|e| FileError::new(FileAction::Zip, &source, e))?;
        }
        let file = zip
            .finish()
            .map_err(|e| fail(&e))?
            .into_inner()
            .map_err(|e| fail(&e.error().to_string()))?;
        file.commit().map_err(|e| fail(&e))
    };
    write()
}

/// RFC 4180 with LF line ends, quoting only where needed, UTF-8 without BOM.
fn csv_bytes(header: &[&str], rows: &[Vec<String>]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .quote_style(csv::QuoteStyle::Necessary)
        .from_writer(Vec::new());
    w.write_record(header)?;
    for row in rows {
        // No carriage returns inside a field (OneRoster §3).
        if row.iter().any(|f| f.contains(['\r', '\n'])) {
            let cleaned: Vec<String> = row.iter().map(|f| f.replace(['\r', '\n'], " ")).collect();
            w.write_record(&cleaned)?;
        } else {
            w.write_record(row)?;
        }
    }
    w.into_inner().map_err(|e| e.into_error().into())
}

/// A writer that hashes what passes through it.
struct Hashing {
    inner: std::io::BufWriter<AtomicFile>,
    hasher: Sha256,
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// One output CSV being written under a temporary name (removed if it is dropped).
struct OutCsv {
    name: String,
    path: PathBuf,
    writer: csv::Writer<Hashing>,
    records: u64,
}

impl OutCsv {
    fn create(dir: &Path, entity: &str, header: &[&str]) -> Result<OutCsv, FileError> {
        let name = format!("{entity}.csv");
        let path = dir.join(&name);
        let file = AtomicFile::create(&path).map_err(|e| FileError::write(&path, e))?;
        let mut writer = csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .quote_style(csv::QuoteStyle::Necessary)
            .from_writer(Hashing {
                inner: std::io::BufWriter::with_capacity(256 * 1024, file),
                hasher: Sha256::new(),
            });
        writer
            .write_record(header)
            .map_err(|e| FileError::write(&path, e))?;
        Ok(OutCsv {
            name,
            path,
            writer,
            records: 0,
        })
    }

    fn row(&mut self, fields: &[&str]) -> Result<(), FileError> {
        let written = if fields.iter().any(|f| f.contains(['\r', '\n'])) {
            // No carriage returns inside a field (OneRoster §3).
            let cleaned: Vec<String> = fields
                .iter()
                .map(|f| f.replace(['\r', '\n'], " "))
                .collect();
            self.writer.write_record(&cleaned)
        } else {
            self.writer.write_record(fields)
        };
        written.map_err(|e| FileError::write(&self.path, e))?;
        self.records += 1;
        Ok(())
    }

    /// Flushes, syncs and renames into place.
    fn finish(self) -> Result<Written, FileError> {
        let fail = |e: &dyn std::fmt::Display| FileError::write(&self.path, e);
        let hashing = self.writer.into_inner().map_err(|e| fail(&e.to_string()))?;
        let file = hashing
            .inner
            .into_inner()
            .map_err(|e| fail(&e.to_string()))?;
        file.commit().map_err(|e| fail(&e))?;
        Ok(Written {
            name: self.name,
            records: self.records,
            sha256: format!("{:x}", hashing.hasher.finalize()),
        })
    }
}

/// The OneRoster files of one run, in the order they are listed and uploaded.
pub(super) struct Files {
    files: Vec<(Option<Out>, OutCsv)>,
}

impl Files {
    pub(super) fn create(dir: &Path) -> Result<Files, FileError> {
        let specs: [(Option<Out>, &str, &[&str]); 8] = [
            (Some(Out::Orgs), "orgs", map::ORGS),
            (Some(Out::Users), "users", map::USERS),
            (Some(Out::Roles), "roles", map::ROLES),
            (Some(Out::Courses), "courses", map::COURSES),
            (Some(Out::Classes), "classes", map::CLASSES),
            (Some(Out::Enrollments), "enrollments", map::ENROLLMENTS),
            (
                Some(Out::AcademicSessions),
                "academicSessions",
                map::ACADEMIC_SESSIONS,
            ),
            (None, "demographics", map::DEMOGRAPHICS),
        ];
        let mut files = Files { files: Vec::new() };
        for (out, entity, header) in specs {
            match OutCsv::create(dir, entity, header) {
                Ok(f) => files.files.push((out, f)),
                // The files made so far are dropped, and with them their temporary names.
                Err(e) => return Err(e),
            }
        }
        Ok(files)
    }
}

impl Sink for Files {
    fn row(&mut self, out: Out, fields: &[&str]) -> Result<(), FileError> {
        let (_, file) = self
            .files
            .iter_mut()
            .find(|(o, _)| *o == Some(out))
            .expect("every output has a file");
        file.row(fields)
    }
}

/// Finishes the CSVs, then writes manifest.csv and metadata.json, each under a
/// temporary name first.
pub(super) fn write_set(
    out_dir: &Path,
    files: Files,
    p: &Payload,
    now: &str,
) -> Result<Vec<Written>, FileError> {
    let mut written = Vec::new();
    let mut rest = files.files.into_iter();
    // A file dropped unfinished (no rows, or after an error) takes its temporary name
    // with it.
    for (_, f) in rest.by_ref() {
        if f.records == 0 {
            // No data rows: not allowed in a set, so neither written nor described (and
            // an earlier run's file of that name goes too).
            let _ = std::fs::remove_file(&f.path);
            continue;
        }
        written.push(f.finish()?);
    }
    let mut manifest: Vec<Vec<String>> = vec![
        vec!["manifest.version".into(), "1.0".into()],
        vec!["oneroster.version".into(), "1.2".into()],
    ];
    for entity in MANIFEST_FILES {
        let file = format!("{entity}.csv");
        let mode = if written.iter().any(|w| w.name == file) {
            "bulk"
        } else {
            "absent"
        };
        manifest.push(vec![format!("file.{entity}"), mode.into()]);
    }
    if let Some(system) = &p.source_system_name {
        manifest.push(vec!["source.systemName".into(), system.clone()]);
    }
    let manifest_path = out_dir.join("manifest.csv");
    let bytes = csv_bytes(&["propertyName", "value"], &manifest)
        .map_err(|e| FileError::write(&manifest_path, e))?;
    write_atomic(&manifest_path, &bytes)?;
    written.insert(
        0,
        Written {
            name: "manifest.csv".into(),
            records: manifest.len() as u64,
            sha256: sha_hex(&bytes),
        },
    );
    let metadata = json!({
        "source": p.source_system_name.clone().unwrap_or_else(|| "jobd".into()),
        "version": "1.2",
        "uploadedAt": now,
        "recordCounts": written.iter().map(|w| (w.name.clone(), w.records)).collect::<BTreeMap<_, _>>(),
        "checksums": written.iter().map(|w| (w.name.clone(), w.sha256.clone())).collect::<BTreeMap<_, _>>(),
    });
    let metadata_path = out_dir.join("metadata.json");
    let bytes =
        serde_json::to_vec_pretty(&metadata).map_err(|e| FileError::write(&metadata_path, e))?;
    write_atomic(&metadata_path, &bytes)?;
    Ok(written)
}
