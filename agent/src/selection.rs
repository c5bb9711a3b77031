//! Which of the image's software sets SWUpdate installs: the agent names it in the install
//! request (SWUpdate's `-e set,mode`, sent over IPC) from the slot that runs, so one `.swu` with
//! two sets (e.g. `copy1` writes slot A, `copy2` writes slot B) always writes the slot that is
//! not running. SWUpdate accepts a selection over IPC only if it is on its `-q` list.

pub use crate::config::Selection;

/// The selection for an install while `booted` runs, as the boot backend names slots A and B
/// (`names`: `A`, `B` for EFI Boot Guard; `boot.uboot_slots` for U-Boot).
/// Without configured selections: none (SWUpdate's own `-e` or default applies). With them,
/// a running slot the agent cannot tell is an error: guessing could overwrite the running slot.
pub fn for_running<'a>(
    on_a: Option<&'a Selection>,
    on_b: Option<&'a Selection>,
    names: (&str, &str),
    booted: Option<&str>,
) -> Result<Option<&'a Selection>, String> {
    if on_a.is_none() && on_b.is_none() {
        return Ok(None);
    }
    match booted {
        Some(s) if s == names.0 => Ok(on_a),
        Some(s) if s == names.1 => Ok(on_b),
        Some(other) => Err(format!(
            "the boot backend reports slot {other:?} running, neither {:?} (A) nor {:?} (B)",
            names.0, names.1
        )),
        None => Err(
            "the running slot cannot be told, so the software set that writes the other slot is unknown"
                .into(),
        ),
    }
}

/// The configured selections, and how the boot backend names slots A and B.
#[derive(Debug, Clone)]
pub struct Selector {
    on_a: Option<Selection>,
    on_b: Option<Selection>,
    names: (String, String),
}

impl Selector {
    /// The selections for slots A and B, and the backend's names of the slots.
    pub fn new(
        on_a: Option<Selection>,
        on_b: Option<Selection>,
        names: (String, String),
    ) -> Selector {
        Selector { on_a, on_b, names }
    }

    /// The selection for an install now: the one for the slot the bootloader says runs.
    pub fn for_install(&self, boot: &dyn crate::boot::Boot) -> Result<Option<Selection>, String> {
        if self.on_a.is_none() && self.on_b.is_none() {
            return Ok(None);
        }
        let status = boot.read().map_err(|e| e.to_string())?;
        let names = (self.names.0.as_str(), self.names.1.as_str());
        for_running(
            self.on_a.as_ref(),
            self.on_b.as_ref(),
            names,
            status.booted.as_deref(),
        )
        .map(|s| s.cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(s: &str) -> Selection {
        s.parse().unwrap()
    }

    #[test]
    fn parses_set_and_mode() {
        assert_eq!(
            sel("stable,copy2"),
            Selection {
                set: "stable".into(),
                mode: "copy2".into()
            }
        );
        assert_eq!(sel("stable,copy2").to_string(), "stable,copy2");
        for bad in ["stable", ",copy1", "stable,", "a,b,c", ""] {
            let e = bad.parse::<Selection>().unwrap_err();
            assert!(e.contains("set,mode"), "{bad}: {e}");
        }
        let long = format!("{},copy1", "s".repeat(256));
        assert!(long.parse::<Selection>().unwrap_err().contains("255 bytes"));
    }

    #[test]
    fn the_set_follows_the_running_slot() {
        let (a, b) = (sel("stable,copy2"), sel("stable,copy1"));
        let ab = ("A", "B");
        assert_eq!(for_running(Some(&a), Some(&b), ab, Some("A")), Ok(Some(&a)));
        assert_eq!(for_running(Some(&a), Some(&b), ab, Some("B")), Ok(Some(&b)));
        // U-Boot with its own slot values.
        let uboot = ("0", "1");
        assert_eq!(
            for_running(Some(&a), Some(&b), uboot, Some("1")),
            Ok(Some(&b))
        );
        assert!(for_running(Some(&a), Some(&b), uboot, Some("B")).is_err());
        assert_eq!(for_running(None, None, ab, None), Ok(None));
        assert!(
            for_running(Some(&a), Some(&b), ab, None)
                .unwrap_err()
                .contains("cannot be told")
        );
        assert!(
            for_running(Some(&a), Some(&b), ab, Some("C"))
                .unwrap_err()
                .contains("\"C\"")
        );
    }
}
