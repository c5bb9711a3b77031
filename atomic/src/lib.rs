//! Files that are either absent or complete: written to a temporary file in the same folder,
//! fsynced, renamed (or linked, when an existing file must win), and the folder fsynced, so a
//! power cut leaves the old file or the new one, never a part.
//!
//! The one implementation for the workspace: the agent's journal, delta cache and staged
//! downloads, the TUF store (`cip-tuf`) and the onboarding store and keys (`cip-onboarding`).
//!
//! The agent runs as root in directories an attacker may reach (a state directory restored from
//! a backup, a predictable temporary name): a temporary is created exclusively (`O_EXCL`) and
//! never through a symbolic link (`O_NOFOLLOW`), and its mode is set explicitly, whatever the
//! umask. New directories are 0700.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Mode of a file under the agent's state directory (journal, keys, staged images).
pub const PRIVATE_FILE: u32 = 0o600;
/// Mode of a directory the agent creates.
pub const PRIVATE_DIR: u32 = 0o700;

/// `.<name>.tmp.<pid>` beside `path`.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp.{}", std::process::id()))
}

/// Creates `dir` and its missing parents with mode 0700 (existing ones are left as they are).
pub fn create_dirs(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(dir)
}

/// Creates `path` for writing: it must not exist, is not followed if it is a link, and gets
/// exactly `mode` (the umask does not widen or narrow it).
pub fn create_exclusive(path: &Path, mode: u32) -> std::io::Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(mode)
        .open(path)?;
    f.set_permissions(Permissions::from_mode(mode))?;
    Ok(f)
}

/// Opens `path` for writing, created with `mode` if absent (kept when present: a resumed
/// download), never through a symbolic link; its mode is set to `mode` either way.
pub fn open_private(path: &Path, mode: u32, truncate: bool) -> std::io::Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(truncate)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(mode)
        .open(path)?;
    f.set_permissions(Permissions::from_mode(mode))?;
    Ok(f)
}

/// A new temporary file beside `path` (its folder created if needed), for a caller that
/// streams into it and then calls [`persist`].
pub fn create_temp(path: &Path, mode: u32) -> std::io::Result<(File, PathBuf)> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_dirs(dir)?;
    }
    let tmp = temp_path(path);
    // A leftover of an earlier run of this pid (a link is removed, not followed).
    let _ = fs::remove_file(&tmp);
    let f = create_exclusive(&tmp, mode)?;
    Ok((f, tmp))
}

fn write_temp(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<PathBuf> {
    let (mut f, tmp) = create_temp(path, mode)?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

/// Makes the folder of `path` durable (after a rename or link in it).
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

/// Renames a written and synced temporary over `path` and makes that durable; the temporary
/// is removed if the rename fails.
pub fn persist(tmp: &Path, path: &Path) -> std::io::Result<()> {
    if let Err(e) = fs::rename(tmp, path) {
        let _ = fs::remove_file(tmp);
        return Err(e);
    }
    sync_dir(path)
}

/// Replaces `path` with `bytes` (file mode `mode`).
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = write_temp(path, bytes, mode)?;
    persist(&tmp, path)
}

/// Creates `path` with `bytes` unless it exists: `Ok(false)` when another file was there first
/// (it is kept). A hard link does not replace its target, so two starts at once cannot both
/// believe their file is the one stored.
pub fn create_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<bool> {
    let tmp = write_temp(path, bytes, mode)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(path)?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn write_replaces_and_create_new_keeps() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/f");
        write(&p, b"one", 0o600).unwrap();
        write(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(&d.path().join("sub")), 0o700);
        assert!(!create_new(&p, b"three", 0o600).unwrap());
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let q = d.path().join("g");
        assert!(create_new(&q, b"x", 0o600).unwrap());
        assert_eq!(fs::read(&q).unwrap(), b"x");
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(d.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f"]);
    }

    /// A link planted where a file is opened is not followed: its target stays untouched.
    #[test]
    fn links_are_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        let link = d.path().join("part");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(create_exclusive(&link, 0o600).is_err());
        assert!(open_private(&link, 0o600, true).is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        // A link in the temporary's place is removed, not written through.
        let p = d.path().join("f");
        std::os::unix::fs::symlink(&victim, temp_path(&p)).unwrap();
        write(&p, b"new", 0o600).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert_eq!(fs::read(&p).unwrap(), b"new");
    }

    /// The mode is the one asked for, even where the umask would widen a default one.
    #[test]
    fn modes_are_set_explicitly() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let f = open_private(&p, 0o600, false).unwrap();
        drop(f);
        assert_eq!(mode(&p), 0o600);
        fs::set_permissions(&p, Permissions::from_mode(0o666)).unwrap();
        drop(open_private(&p, 0o600, false).unwrap());
        assert_eq!(mode(&p), 0o600);
    }
}
