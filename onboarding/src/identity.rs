//! Who the device is: its serial and model, from the configuration, DMI (x86 boards such as the
//! IPC227E) or the device tree (ARM boards such as the BeagleBone Black, RZ/G2M).

use std::path::{Path, PathBuf};

use crate::protocol::{check_model, check_serial};

/// Where the firmware tells serial and model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    /// DMI's product serial (x86).
    pub dmi_serial: PathBuf,
    /// The device tree's serial number.
    pub dt_serial: PathBuf,
    /// DMI's product name (x86).
    pub dmi_model: PathBuf,
    /// The device tree's model.
    pub dt_model: PathBuf,
}

impl Default for Sources {
    fn default() -> Self {
        Sources {
            dmi_serial: "/sys/class/dmi/id/product_serial".into(),
            dt_serial: "/proc/device-tree/serial-number".into(),
            dmi_model: "/sys/class/dmi/id/product_name".into(),
            dt_model: "/proc/device-tree/model".into(),
        }
    }
}

/// The device's serial cannot be found or used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// No source gives a serial.
    #[error("no serial number: {tried}; set onboarding.serial in the configuration")]
    NoSerial {
        /// The sources tried.
        tried: String,
    },
    /// A source gives a serial that cannot be used.
    #[error("{source_name}: {reason}; set onboarding.serial in the configuration")]
    BadSerial {
        /// The source.
        source_name: String,
        /// What is wrong with its serial.
        reason: String,
    },
    /// A configured value that cannot be used.
    #[error("onboarding.{key}: {reason}")]
    BadConfig {
        /// The key of `[onboarding]`.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Firmware placeholders that are not serials or models.
const PLACEHOLDERS: &[&str] = &[
    "0",
    "none",
    "not specified",
    "not applicable",
    "to be filled by o.e.m.",
    "default string",
    "system serial number",
    "system product name",
    "0123456789",
    "123456789",
];

/// Text of a firmware file: device-tree strings end in NUL, DMI ones in a line break.
pub fn clean(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let t = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    if t.is_empty() || PLACEHOLDERS.contains(&t.to_ascii_lowercase().as_str()) {
        None
    } else {
        Some(t.to_owned())
    }
}

fn read(path: &Path) -> Result<Option<String>, String> {
    match std::fs::read(path) {
        Ok(b) => Ok(clean(&b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// The serial and where it came from: the configuration, else DMI, else the device tree.
pub fn serial(
    configured: Option<&str>,
    sources: &Sources,
) -> Result<(String, String), IdentityError> {
    if let Some(s) = configured {
        check_serial(s).map_err(|e| IdentityError::BadConfig {
            key: "serial",
            reason: e.to_string(),
        })?;
        return Ok((s.to_owned(), "the configuration".into()));
    }
    let mut tried = Vec::new();
    for p in [&sources.dmi_serial, &sources.dt_serial] {
        match read(p) {
            Ok(Some(s)) => {
                check_serial(&s).map_err(|e| IdentityError::BadSerial {
                    source_name: p.display().to_string(),
                    reason: e.to_string(),
                })?;
                return Ok((s, p.display().to_string()));
            }
            Ok(None) => tried.push(format!("{} absent or empty", p.display())),
            Err(e) => tried.push(e),
        }
    }
    Err(IdentityError::NoSerial {
        tried: tried.join(", "),
    })
}

/// The model: the configuration, else DMI's product name, else the device tree's model, else
/// "unknown" (the model is informative; the serial and the key identify the device).
pub fn model(configured: Option<&str>, sources: &Sources) -> Result<String, IdentityError> {
    if let Some(m) = configured {
        check_model(m).map_err(|e| IdentityError::BadConfig {
            key: "model",
            reason: e.to_string(),
        })?;
        return Ok(m.to_owned());
    }
    for p in [&sources.dmi_model, &sources.dt_model] {
        if let Ok(Some(m)) = read(p) {
            if check_model(&m).is_ok() {
                return Ok(m);
            }
        }
    }
    Ok("unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(d: &Path) -> Sources {
        Sources {
            dmi_serial: d.join("product_serial"),
            dt_serial: d.join("serial-number"),
            dmi_model: d.join("product_name"),
            dt_model: d.join("model"),
        }
    }

    #[test]
    fn config_then_dmi_then_device_tree() {
        let d = tempfile::tempdir().unwrap();
        let s = sources(d.path());
        assert!(matches!(
            serial(None, &s),
            Err(IdentityError::NoSerial { .. })
        ));
        std::fs::write(&s.dt_serial, b"BBB-1234\0").unwrap();
        assert_eq!(serial(None, &s).unwrap().0, "BBB-1234");
        std::fs::write(&s.dmi_serial, b"To Be Filled By O.E.M.\n").unwrap();
        assert_eq!(serial(None, &s).unwrap().0, "BBB-1234");
        std::fs::write(&s.dmi_serial, b"IPC-77\n").unwrap();
        assert_eq!(serial(None, &s).unwrap().0, "IPC-77");
        assert_eq!(serial(Some("CFG1"), &s).unwrap().0, "CFG1");
        let e = serial(Some("a b"), &s).unwrap_err().to_string();
        assert!(e.starts_with("onboarding.serial: "), "{e}");
        std::fs::write(&s.dmi_serial, b"has space\n").unwrap();
        let e = serial(None, &s).unwrap_err().to_string();
        assert!(
            e.contains("product_serial") && e.contains("onboarding.serial"),
            "{e}"
        );
    }

    #[test]
    fn model_falls_back() {
        let d = tempfile::tempdir().unwrap();
        let s = sources(d.path());
        assert_eq!(model(None, &s).unwrap(), "unknown");
        std::fs::write(&s.dt_model, b"TI AM335x BeagleBone Black\0").unwrap();
        assert_eq!(model(None, &s).unwrap(), "TI AM335x BeagleBone Black");
        std::fs::write(&s.dmi_model, b"SIMATIC IPC227E\n").unwrap();
        assert_eq!(model(None, &s).unwrap(), "SIMATIC IPC227E");
        assert_eq!(model(Some("qemu"), &s).unwrap(), "qemu");
        assert!(model(Some("a\nb"), &s).is_err());
    }

    #[test]
    fn clean_trims_and_drops_placeholders() {
        assert_eq!(clean(b"  X1 \n\0"), Some("X1".into()));
        assert_eq!(clean(b"Default string"), None);
        assert_eq!(clean(b"\0"), None);
        assert_eq!(clean(&[0xff, b'A']), Some("\u{fffd}A".into()));
    }
}
