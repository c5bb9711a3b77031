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
    let cut = s.char_indices().nth(max).map_or(s.len(), |(i, _)| i);
    let mut out = escaped(&s[..cut]).into_owned();
    if cut < s.len() {
        out.push('…');
    }
    out
}

/// `s` whole, with control and other unprintable characters escaped: for a text that must stay
/// complete (a message to wfx, a field of `status`) but may come from a server.
pub fn escaped(s: &str) -> std::borrow::Cow<'_, str> {
    if s.chars().all(|c| !needs_escape(c)) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if needs_escape(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Control characters, and what Unicode does not print: bidi overrides, zero widths, combining
/// marks (which could make a line read otherwise). Quotes and backslashes, which
/// `escape_debug` escapes too, are harmless in a line and kept.
fn needs_escape(c: char) -> bool {
    !matches!(c, '"' | '\'' | '\\') && c.escape_debug().len() > 1
}

/// `s` cut to at most `max` bytes, at a char boundary: for a field with a byte limit (SWUpdate's
/// 511-byte `info`, a wfx message).
pub fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// An error and its causes, `: `-separated; a cause whose text the chain already holds is left
/// out (many errors repeat their source's message).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
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
            escaped("a.swu\nERROR forged\r\u{1b}[2J\u{0}"),
            "a.swu\\nERROR forged\\r\\u{1b}[2J\\0"
        );
        assert!(matches!(escaped("plain ü"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(
            shown("a\u{202e}b\u{200b}c ü \\"),
            "a\\u{202e}b\\u{200b}c ü \\"
        );
    }

    #[test]
    fn truncated_at_a_char_boundary() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("abcdef", 3), "abc");
        // "ü" is two bytes: a cut inside it keeps the whole char out.
        assert_eq!(truncate("aü", 2), "a");
    }

    #[test]
    fn chains_without_repeats() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: {0}")]
        struct Outer(#[source] std::io::Error);
        #[derive(Debug, thiserror::Error)]
        #[error("wrapper")]
        struct Wrapper(#[source] Outer);
        let e = Wrapper(Outer(std::io::Error::other("inner")));
        assert_eq!(error_chain(&e), "wrapper: outer: inner");
    }
}
