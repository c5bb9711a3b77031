//! Text from a server, made fit to show: in a log line (one event, one line) or a message to
//! wfx, where a line break would forge what follows and a megabyte would drown the rest.

/// Characters of untrusted text kept when it is shown.
pub const SHOWN_MAX: usize = 64;

/// `s` with control characters escaped (`\n`, `\u{85}`) and cut after [`SHOWN_MAX`]
/// characters (`…` marks the cut).
pub fn shown(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().take(SHOWN_MAX) {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    if s.chars().nth(SHOWN_MAX).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_and_short() {
        assert_eq!(shown("a\nb\"c\u{85}"), "a\\nb\"c\\u{85}");
        assert_eq!(shown("plain"), "plain");
        let long = shown(&"y".repeat(100));
        assert_eq!(long.chars().count(), SHOWN_MAX + 1);
        assert!(long.ends_with('…'));
        assert!(!shown("\u{1b}[31mred\r").chars().any(char::is_control));
    }
}
