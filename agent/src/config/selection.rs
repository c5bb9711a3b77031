//! `swupdate.select_on_a` / `select_on_b`: a software set and running mode, `set,mode`, checked
//! at load; which one an install uses is decided in `selection.rs`.

use std::fmt;
use std::str::FromStr;

/// A software set and running mode, `set,mode` as SWUpdate writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub set: String,
    pub mode: String,
}

impl FromStr for Selection {
    type Err = String;

    fn from_str(s: &str) -> Result<Selection, String> {
        let (set, mode) = s
            .split_once(',')
            .ok_or_else(|| format!("{s:?} is not \"set,mode\" (e.g. \"stable,copy2\")"))?;
        for (what, v) in [("set", set), ("mode", mode)] {
            if v.is_empty() || v.contains(',') {
                return Err(format!(
                    "{s:?}: the {what} is empty or has a comma; write \"set,mode\""
                ));
            }
            // The request's fields are char[256] with a terminating NUL.
            if v.len() > 255 || v.contains('\0') {
                return Err(format!(
                    "{s:?}: the {what} must be at most 255 bytes without NUL"
                ));
            }
        }
        Ok(Selection {
            set: set.to_owned(),
            mode: mode.to_owned(),
        })
    }
}

impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.set, self.mode)
    }
}
