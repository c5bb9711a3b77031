//! Facts about the device, read from its files: the running version, the hardware revision, and
//! the MQTT inventory made of them. One reader each, for every mode and subcommand.

use std::path::Path;

/// The running version: `VERSION_ID` of an os-release file, or the first line of a file that
/// holds only the version.
pub fn read_version(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    if let Some(v) = text.lines().find_map(|l| l.strip_prefix("VERSION_ID=")) {
        return Some(v.trim().trim_matches('"').to_owned());
    }
    let first = text.lines().next()?.trim();
    (!first.is_empty() && !first.contains('=')).then(|| first.to_owned())
}

/// The hardware revision file (`/etc/hwrevision`: "board revision"), trimmed; `None` when it
/// cannot be read or is empty.
pub fn read_hwrevision(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// What the device is, for the MQTT inventory: its hardware revision and os-release fields from
/// these files, the SWUpdate wire spoken and the boot backend's name.
pub fn inventory(
    hwrevision_file: &Path,
    version_file: &Path,
    swupdate_wire: String,
    boot_backend: &str,
) -> crate::mqtt::Inventory {
    let mut inv = crate::mqtt::Inventory::new();
    inv.hardware_revision = read_hwrevision(hwrevision_file);
    if let Ok(text) = std::fs::read_to_string(version_file) {
        inv.os_release = crate::mqtt::payload::os_release_fields(&text);
    }
    inv.swupdate_wire = Some(swupdate_wire);
    inv.boot_backend = Some(boot_backend.to_owned());
    inv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_os_release_or_a_plain_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("v");
        std::fs::write(&p, "NAME=\"CIP\"\nVERSION_ID=\"1.4\"\n").unwrap();
        assert_eq!(read_version(&p).as_deref(), Some("1.4"));
        std::fs::write(&p, "2.0-rc1\n").unwrap();
        assert_eq!(read_version(&p).as_deref(), Some("2.0-rc1"));
        std::fs::write(&p, "NAME=x\n").unwrap();
        assert_eq!(read_version(&p), None);
        assert_eq!(read_version(&d.path().join("none")), None);
    }

    #[test]
    fn hardware_revision_trimmed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("hwrevision");
        assert_eq!(read_hwrevision(&p), None);
        std::fs::write(&p, "qemu-amd64 cip-core-1.0\n").unwrap();
        assert_eq!(
            read_hwrevision(&p).as_deref(),
            Some("qemu-amd64 cip-core-1.0")
        );
        std::fs::write(&p, " \n").unwrap();
        assert_eq!(read_hwrevision(&p), None);
    }
}
