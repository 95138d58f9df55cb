//! Files the daemon writes for people and other programs (outputs, error reports, spool
//! records, metrics): never world-readable, whatever the umask; written whole or not at
//! all ([`AtomicFile`]); named to fit the file-name limit ([`sidecar_name`]); hashed
//! ([`sha256_file`]).

use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The mode of every such file: the owner writes, the group (operators) reads.
pub const PRIVATE_MODE: u32 = 0o640;

/// A file a job writes for its output (or reads back) that could not be: which, doing
/// what, and the system's reason. Whether that ends the job is its kind's to say.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} {}: {cause}", path.display())]
pub struct FileError {
    pub action: FileAction,
    pub path: PathBuf,
    pub cause: String,
}

/// What was being done to the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileAction {
    /// Create a folder (and its parents).
    Create,
    Write,
    /// Make written bytes durable (fsync the file or its folder).
    Sync,
    /// Add a file to an archive.
    Zip,
}

impl std::fmt::Display for FileAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileAction::Create => "create",
            FileAction::Write => "write",
            FileAction::Sync => "sync",
            FileAction::Zip => "zip",
        })
    }
}

impl FileError {
    pub fn new(action: FileAction, path: &Path, cause: impl std::fmt::Display) -> FileError {
        FileError {
            action,
            path: path.to_path_buf(),
            cause: cause.to_string(),
        }
    }

    /// `cannot write PATH: cause`.
    pub fn write(path: &Path, cause: impl std::fmt::Display) -> FileError {
        FileError::new(FileAction::Write, path, cause)
    }
}

/// Creates (or truncates) `path` with mode 0640. The mode is set again after opening
/// because the umask may have taken the group's read bit away.
pub fn create_private(path: &Path) -> io::Result<File> {
    create_with_mode(path, PRIVATE_MODE)
}

/// Creates (or truncates) `path` with exactly `mode`, whatever the umask.
pub fn create_with_mode(path: &Path, mode: u32) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    file.set_permissions(Permissions::from_mode(mode))?;
    Ok(file)
}

/// The mode of every folder the daemon makes: the group (operators) may look in.
pub const PRIVATE_DIR_MODE: u32 = 0o750;

/// Creates `dir` and its missing parents with mode 0750 (less what the umask takes), like
/// the spool's folders; folders that exist keep their mode.
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
}

/// A file written under a temporary name beside its final one and renamed over it by
/// [`AtomicFile::commit`], so a reader sees the old file or the whole new one, never
/// part of one. Dropped without `commit` (an error on the way), the temporary file goes.
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
}

impl AtomicFile {
    /// Starts writing `path` (mode 0640) under [`temp_name`].
    pub fn create(path: &Path) -> io::Result<AtomicFile> {
        AtomicFile::create_with_mode(path, PRIVATE_MODE)
    }

    /// Starts writing `path` with exactly `mode` (0600 for state only the daemon reads).
    pub fn create_with_mode(path: &Path, mode: u32) -> io::Result<AtomicFile> {
        let tmp = temp_name(path);
        let file = create_with_mode(&tmp, mode)?;
        Ok(AtomicFile {
            path: path.to_path_buf(),
            tmp,
            file: Some(file),
        })
    }

    /// Where the file will be.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("open until committed")
    }

    /// Syncs the data and renames the file into place.
    pub fn commit(mut self) -> io::Result<()> {
        let file = self.file.take().expect("open until committed");
        file.sync_data()?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path)?;
        // Renamed: nothing left for drop to remove.
        self.tmp = PathBuf::new();
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file().flush()
    }
}

impl Seek for AtomicFile {
    fn seek(&mut self, position: SeekFrom) -> io::Result<u64> {
        self.file().seek(position)
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` to `path` (mode 0640) whole or not at all.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with_mode(path, bytes, PRIVATE_MODE)
}

/// Writes `bytes` to `path` with exactly `mode`, whole or not at all.
pub fn write_atomic_with_mode(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut file = AtomicFile::create_with_mode(path, mode)?;
    file.write_all(bytes)?;
    file.commit()
}

/// A temporary name beside `path`, hidden, and unique per call in this process (the
/// process id and a counter), so two writers of one path at once (the same file dropped
/// twice, two jobs writing one output) never rename each other's halves. Shortened like
/// [`sidecar_name`], so a name that just fits still has a temporary one; it never ends
/// like `path` (node_exporter reads only `*.prom`).
pub fn temp_name(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(sidecar_name(
        &format!(".{name}"),
        &format!(".tmp-{}-{n}", std::process::id()),
    ))
}

/// The longest file name most file systems allow, in bytes.
pub const NAME_MAX: usize = 255;

/// The name of a file that belongs to the input `name`: `<name><suffix>`, or, when that
/// would pass the file-name limit, the name cut to fit plus `~` and 8 hex digits of the
/// name's SHA-256, so it stays unique, starts like the input and still fits. (The
/// spool's `.error.json`, csv_import's `.summary.json` and `.errors.csv`, temporary
/// names.)
pub fn sidecar_name(name: &str, suffix: &str) -> String {
    if name.len() + suffix.len() <= NAME_MAX {
        return format!("{name}{suffix}");
    }
    let tag = &hex(&Sha256::digest(name.as_bytes()))[..8];
    let mut keep = NAME_MAX.saturating_sub(suffix.len() + tag.len() + 1);
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}~{tag}{suffix}", &name[..keep])
}

/// The SHA-256 (lower-case hex) and size of a file's contents, read in 64 KiB pieces.
pub fn sha256_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    Ok((hex(&hasher.finalize()), size))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_in(dir: &Path) -> Vec<std::ffi::OsString> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    }

    #[test]
    fn an_atomic_write_is_whole_private_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        std::fs::write(&path, "old").unwrap();
        write_atomic(&path, b"new contents").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new contents");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        write_atomic_with_mode(&path, b"state", 0o600).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(names_in(dir.path()), ["out.json"]);
    }

    #[test]
    fn a_file_dropped_before_commit_leaves_the_old_one_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.csv");
        std::fs::write(&path, "old").unwrap();
        let mut file = AtomicFile::create(&path).unwrap();
        file.write_all(b"half a rep").unwrap();
        drop(file);
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(names_in(dir.path()), ["report.csv"]);
    }

    #[test]
    fn temporary_names_differ_per_call_are_hidden_and_fit() {
        let path = Path::new("/srv/out/metrics.prom");
        let a = temp_name(path);
        let b = temp_name(path);
        assert_ne!(a, b);
        for t in [&a, &b] {
            let name = t.file_name().unwrap().to_string_lossy().into_owned();
            assert!(name.starts_with(".metrics.prom.tmp-"), "{name}");
            assert!(!name.ends_with(".prom"), "{name}");
            assert_eq!(t.parent(), path.parent());
        }
        let long = format!("/srv/{}", "n".repeat(NAME_MAX));
        let name = temp_name(Path::new(&long));
        assert!(name.file_name().unwrap().len() <= NAME_MAX);
    }

    #[test]
    fn two_writers_of_one_file_at_once_leave_one_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("same.csv");
        // Big enough that a shared temporary file would interleave the two writers.
        let contents: Vec<Vec<u8>> = (0..2u8).map(|i| vec![b'a' + i; 1 << 20]).collect();
        let barrier = std::sync::Barrier::new(2);
        std::thread::scope(|scope| {
            for bytes in &contents {
                let (path, barrier) = (&path, &barrier);
                scope.spawn(move || {
                    let mut file = AtomicFile::create(path).unwrap();
                    barrier.wait();
                    for chunk in bytes.chunks(4096) {
                        file.write_all(chunk).unwrap();
                    }
                    file.commit().unwrap();
                });
            }
        });
        let written = std::fs::read(&path).unwrap();
        assert!(
            contents.contains(&written),
            "a torn file of {} bytes",
            written.len()
        );
        assert_eq!(names_in(dir.path()), ["same.csv"]);
    }

    #[test]
    fn a_file_hashes_to_its_sha256_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, "abc").unwrap();
        assert_eq!(
            sha256_file(&path).unwrap(),
            (
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
                3
            )
        );
    }

    #[test]
    fn a_private_folder_is_made_with_its_parents() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_private_dir_all(&deep).unwrap();
        assert!(deep.is_dir());
        let mode = std::fs::metadata(&deep).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o007, 0, "{mode:o}");
    }

    #[test]
    fn a_private_file_is_0640_and_an_old_one_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        std::fs::write(&path, "old contents").unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o666)).unwrap();
        drop(create_private(&path).unwrap());
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        assert_eq!(meta.len(), 0);
    }
}
