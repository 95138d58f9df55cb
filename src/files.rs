//! Files the daemon writes for people and other programs (outputs, error reports, spool
//! records, metrics): never world-readable, whatever the umask.

use std::fs::{File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of every such file: the owner writes, the group (operators) reads.
pub const PRIVATE_MODE: u32 = 0o640;

/// Creates (or truncates) `path` with mode 0640. The mode is set again after opening
/// because the umask may have taken the group's read bit away.
pub fn create_private(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_MODE)
        .open(path)?;
    file.set_permissions(Permissions::from_mode(PRIVATE_MODE))?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
