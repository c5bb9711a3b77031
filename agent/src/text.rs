//! Text from a server, made fit to show: in a log line (one event, one line) or a message to
//! wfx, where a line break would forge what follows and a megabyte would drown the rest.

/// Characters of untrusted text kept when it is shown.
pub const SHOWN_MAX: usize = 64;

/// `s` with control and other unprintable characters escaped (`\n`, `\u{85}`, `\u{202e}`)
/// and cut after [`SHOWN_MAX`] characters (`…` marks the cut).
pub fn shown(s: &str) -> String {
    shown_upto(s, SHOWN_MAX)
}

/// [`shown`], keeping up to `max` characters.
pub fn shown_upto(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars().take(max) {
        match c {
            // (escape_debug would escape these too; they are harmless in a line.)
            '"' | '\'' | '\\' => out.push(c),
            // Control characters, and what Unicode does not print: bidi overrides, zero
            // widths, combining marks (which could make a line read otherwise).
            _ => out.extend(c.escape_debug()),
        }
    }
    if s.chars().nth(max).is_some() {
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
        assert_eq!(
            shown("a\u{202e}b\u{200b}c ü \\"),
            "a\\u{202e}b\\u{200b}c ü \\"
        );
    }
}
