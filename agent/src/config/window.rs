//! `reboot.window`: a weekly maintenance window, parsed (and so checked) at load. The decision
//! to reboot, which asks it whether it is open, is `reboot.rs`'s.

const DAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];
const DAY_MIN: u32 = 24 * 60;

/// A weekly maintenance window: days on which it opens, and its start and end (minutes after
/// local midnight; an end before the start runs past midnight into the next day).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    days: [bool; 7],
    start: u32,
    end: u32,
    text: String,
}

fn parse_day(s: &str) -> Option<usize> {
    let s = s.to_ascii_lowercase();
    (s.len() >= 3)
        .then(|| DAYS.iter().position(|d| d.starts_with(s.as_str())))
        .flatten()
}

fn parse_time(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && s.len() <= 5).then_some(h * 60 + m)
}

impl Window {
    /// `"Sat 02:00-04:00"`, `"Mon-Fri 22:00-23:30"`, `"Sat,Sun 01:00-05:00"`, `"02:00-04:00"`
    /// (every day), `"Sun 23:00-01:00"` (past midnight).
    pub fn parse(text: &str) -> Result<Window, String> {
        let bad = |why: &str| {
            format!(
                "`{text}` is not a window such as \"Sat 02:00-04:00\" or \"Mon-Fri 22:00-23:30\": {why}"
            )
        };
        let mut parts = text.split_whitespace();
        let (days_part, times) = match (parts.next(), parts.next(), parts.next()) {
            (Some(t), None, None) => (None, t),
            (Some(d), Some(t), None) => (Some(d), t),
            _ => return Err(bad("expected [DAYS] HH:MM-HH:MM")),
        };
        let mut days = [days_part.is_none(); 7];
        if let Some(d) = days_part {
            for item in d.split(',') {
                match item.split_once('-') {
                    Some((a, b)) => {
                        let a = parse_day(a).ok_or_else(|| bad(&format!("unknown day `{a}`")))?;
                        let b = parse_day(b).ok_or_else(|| bad(&format!("unknown day `{b}`")))?;
                        let mut i = a;
                        loop {
                            days[i] = true;
                            if i == b {
                                break;
                            }
                            i = (i + 1) % 7;
                        }
                    }
                    None => {
                        days[parse_day(item)
                            .ok_or_else(|| bad(&format!("unknown day `{item}`")))?] = true
                    }
                }
            }
        }
        let (s, e) = times
            .split_once('-')
            .ok_or_else(|| bad("expected HH:MM-HH:MM"))?;
        let start = parse_time(s).ok_or_else(|| bad(&format!("`{s}` is not a time HH:MM")))?;
        let end = parse_time(e).ok_or_else(|| bad(&format!("`{e}` is not a time HH:MM")))?;
        if start == end {
            return Err(bad("it is empty"));
        }
        Ok(Window {
            days,
            start,
            end,
            text: text.to_owned(),
        })
    }

    /// Whether the window is open at `minute` (of the day) on `day` (0 = Monday).
    pub fn contains(&self, day: usize, minute: u32) -> bool {
        if self.start < self.end {
            self.days[day] && (self.start..self.end).contains(&minute)
        } else {
            (self.days[day] && minute >= self.start)
                || (self.days[(day + 6) % 7] && minute < self.end)
        }
    }

    /// Minutes until the window opens (0: open now).
    pub fn minutes_until_open(&self, day: usize, minute: u32) -> u32 {
        (0..=7 * DAY_MIN)
            .find(|k| {
                let t = minute + k;
                self.contains((day + (t / DAY_MIN) as usize) % 7, t % DAY_MIN)
            })
            .unwrap_or(7 * DAY_MIN)
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse() {
        let w = Window::parse("Sat 02:00-04:00").unwrap();
        assert!(w.contains(5, 120) && w.contains(5, 239));
        assert!(!w.contains(5, 240) && !w.contains(4, 150) && !w.contains(5, 119));
        let w = Window::parse("mon-fri 22:00-23:30").unwrap();
        assert!(w.contains(0, 22 * 60) && w.contains(4, 23 * 60) && !w.contains(5, 22 * 60));
        let w = Window::parse("Fri-Mon 01:00-02:00").unwrap();
        assert!(w.contains(4, 60) && w.contains(6, 60) && w.contains(0, 60) && !w.contains(1, 60));
        let w = Window::parse("Sat,Sunday 01:00-02:00").unwrap();
        assert!(w.contains(5, 90) && w.contains(6, 90) && !w.contains(0, 90));
        let w = Window::parse("02:00-04:00").unwrap();
        assert!((0..7).all(|d| w.contains(d, 150)));
        // Past midnight: opens Sunday 23:00, closes Monday 01:00.
        let w = Window::parse("Sun 23:00-01:00").unwrap();
        assert!(w.contains(6, 23 * 60 + 30) && w.contains(0, 30));
        assert!(!w.contains(0, 23 * 60 + 30) && !w.contains(6, 30));
        for bad in [
            "Sat",
            "Sat 02:00",
            "Xyz 02:00-04:00",
            "Sat 24:00-01:00",
            "Sat 02:00-02:00",
            "Sat 2:0x-3:00",
            "a b c",
        ] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
    }
}
