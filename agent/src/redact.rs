//! What may be shown: in log lines, wfx status messages, MQTT, `status` and configuration errors.
//!
//! An artifact URI from wfx, `wfx.url` or `proxy.url` can carry a credential: a password or a
//! token in its user info, or a token in its query (pre-signed object-store URLs:
//! `X-Amz-Signature=...`, `sig=...`, `token=...`). Whatever reads the device's logs or the fleet's
//! job history must not learn it, so every URL the agent shows goes through [`url`]: the user
//! info (all of it when there is no password: `https://TOKEN@host` is a token) and every query
//! value become `***`; the scheme, host, path and the query's parameter names stay, so a reader
//! can still tell which file on which server was meant.
//!
//! Text from a server (job ids, URIs, error bodies) may hold control characters: a newline would
//! forge a line in the log, an escape sequence would drive the terminal. [`crate::text::escaped`]
//! makes them visible instead; [`message`] does both for a free text sent to wfx or MQTT.

/// `u` with its user info and query values replaced by `***`. Text that is not a URL with a
/// scheme is returned unchanged (a file path is no secret).
pub fn url(u: &str) -> String {
    let Some((scheme, rest)) = u.split_once("://") else {
        return u.to_owned();
    };
    let (rest, fragment) = match rest.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (rest, None),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            // A user name alone is how many services take a token (`https://TOKEN@host`).
            None => format!("***@{host}"),
        },
        None => authority.to_owned(),
    };
    let mut out = format!("{scheme}://{authority}{path}");
    if let Some(q) = query {
        out.push('?');
        let pairs: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) => format!("{k}=***"),
                None if p.is_empty() => String::new(),
                None => "***".to_owned(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    if fragment.is_some() {
        out.push_str("#***");
    }
    out
}

/// A value meant as a URL, shown: [`url`], or for one without a scheme, all before its last
/// `@` hidden (`TOKEN@host`).
pub fn url_like(s: &str) -> String {
    match s.rsplit_once('@') {
        Some(_) if s.contains("://") => url(s),
        Some((_, host)) => format!("***@{host}"),
        None => s.to_owned(),
    }
}

/// Where a URL inside a text ends: at white space, a quote or a bracket.
fn ends_url(c: char) -> bool {
    c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '`' | '<' | '>' | ')' | ']')
}

/// `text` with every `scheme://...` in it redacted by [`url`].
pub fn urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        // The scheme: the letters (and + - .) just before `://`.
        let start = rest[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |j| j + 1);
        let end = rest[i + 3..]
            .find(ends_url)
            .map_or(rest.len(), |j| i + 3 + j);
        out.push_str(&rest[..start]);
        out.push_str(&url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// A free text for wfx or MQTT: URLs in it redacted, control characters escaped.
pub fn message(s: &str) -> String {
    crate::text::escaped(&urls_in(s)).into_owned()
}

/// Words that make a TOML key's value a secret whatever it looks like.
const SECRET_WORDS: [&str; 4] = ["password", "passphrase", "secret", "token"];

/// `text` without its URLs (a `token=` in a URL's query is redacted by [`url`], not dropped).
fn without_urls(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let end = rest[i + 3..]
            .find(ends_url)
            .map_or(rest.len(), |j| i + 3 + j);
        out.push_str(&rest[..i]);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn mentions_secret(text: &str) -> bool {
    let t = without_urls(text).to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| t.contains(w))
}

/// The values given to secret keys on a line (`password = "x"`, `{ token = 12 }`), unquoted.
fn secret_values(text: &str) -> Vec<String> {
    let t = without_urls(text);
    let lower = t.to_ascii_lowercase();
    let mut values = Vec::new();
    for w in SECRET_WORDS {
        for (at, _) in lower.match_indices(w) {
            let after = t[at + w.len()..]
                .trim_start_matches(|c: char| c.is_ascii_alphanumeric() || "_-\"'".contains(c))
                .trim_start();
            let Some(v) = after.strip_prefix('=').map(str::trim_start) else {
                continue;
            };
            let v = match v.chars().next() {
                Some(q @ ('"' | '\'')) => v[1..].split(q).next().unwrap_or(""),
                _ => v.split([',', '}', ']', ' ', '\t']).next().unwrap_or(""),
            };
            if !v.is_empty() {
                values.push(v.to_owned());
            }
        }
    }
    values
}

/// One line of a TOML file as a configuration error may quote it: everything after the `=` of
/// a line that mentions a secret (`password = ...`, an inline table holding one) is dropped,
/// URLs in any other value are redacted.
pub fn toml_line(line: &str) -> String {
    match line.split_once('=') {
        Some((key, _)) if mentions_secret(line) => format!("{key}= ***"),
        Some((key, value)) => {
            // A quoted URL is redacted whole: a bad one may hold a space before its '@'.
            let v = value.trim_start();
            let quoted = v
                .chars()
                .next()
                .filter(|q| matches!(q, '"' | '\''))
                .and_then(|q| {
                    v[1..]
                        .rfind(q)
                        .map(|end| (q, &v[1..1 + end], &v[2 + end..]))
                });
            match quoted {
                Some((q, inner, after)) if inner.contains("://") || key.trim().ends_with("url") => {
                    format!("{key}= {q}{}{q}{}", url_like(inner), urls_in(after))
                }
                _ => urls_in(line),
            }
        }
        None => urls_in(line),
    }
}

/// The line number and text of a line of toml's excerpt (`3 | key = value`).
fn excerpt(l: &str) -> Option<(&str, &str)> {
    l.split_once(" | ")
        .filter(|(n, _)| !n.trim().is_empty() && n.trim().chars().all(|c| c.is_ascii_digit()))
}

/// A message of the TOML parser: its excerpt of the file (the lines `N | text`) goes through
/// [`toml_line`] (a line continuing a secret's value is dropped whole), the rest through
/// [`urls_in`]; the value of a secret key is hidden wherever the message repeats it
/// (`invalid type: integer \`1234\``).
pub fn toml_error(message: &str) -> String {
    let secrets: Vec<String> = message
        .lines()
        .filter_map(excerpt)
        .flat_map(|(_, text)| secret_values(text))
        .collect();
    let mut in_secret = false;
    message
        .lines()
        .map(|l| match excerpt(l) {
            Some((n, text)) => {
                if mentions_secret(text) {
                    in_secret = true;
                    format!("{n} | {}", toml_line(text))
                } else if in_secret && !text.contains('=') {
                    // The rest of a multi-line array or string that holds the secret.
                    format!("{n} | ***")
                } else {
                    in_secret = false;
                    format!("{n} | {}", toml_line(text))
                }
            }
            None => {
                let mut l = urls_in(l);
                for v in &secrets {
                    // A short value would also match inside line and column numbers.
                    if v.len() >= 3 {
                        l = l.replace(v.as_str(), "***");
                    } else {
                        l = l.replace(&format!("`{v}`"), "`***`");
                        l = l.replace(&format!("\"{v}\""), "\"***\"");
                    }
                }
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_query_values_are_hidden() {
        assert_eq!(
            url(
                "https://bucket.s3.example/fw/os-1.1.swu?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=9f3a"
            ),
            "https://bucket.s3.example/fw/os-1.1.swu?X-Amz-Credential=***&X-Amz-Signature=***"
        );
        assert_eq!(
            url("http://fleet:s3cret@10.0.0.1:8080/a.swu"),
            "http://fleet:***@10.0.0.1:8080/a.swu"
        );
        assert_eq!(url("https://h/a.swu?opaque-token"), "https://h/a.swu?***");
        assert_eq!(url("https://h/a.swu#k=v"), "https://h/a.swu#***");
        // A password with '@' in it: the host is after the last '@'.
        assert_eq!(url("http://u:p@ss@h/x"), "http://u:***@h/x");
    }

    /// A user name alone is a token as often as a name: it goes.
    #[test]
    fn user_only_tokens_are_hidden() {
        assert_eq!(url("https://ghp_T0KEN@h/x.swu"), "https://***@h/x.swu");
        assert_eq!(url("https://T0KEN@h"), "https://***@h");
    }

    #[test]
    fn the_rest_is_kept() {
        for same in [
            "http://127.0.0.1:8080/www/os-1.1.swu",
            "https://h",
            "/var/lib/cip-update-agent/staged/1.swu",
            "os-1.1.swu",
        ] {
            assert_eq!(url(same), same);
        }
    }

    #[test]
    fn urls_inside_a_text() {
        assert_eq!(
            urls_in("download of http://u:pw@h/a.swu?t=1 failed: `https://TOK@h2/x` (404)"),
            "download of http://u:***@h/a.swu?t=*** failed: `https://***@h2/x` (404)"
        );
        assert_eq!(urls_in("no url here"), "no url here");
        assert_eq!(urls_in("ends with http://h"), "ends with http://h");
        assert_eq!(urls_in("x\"mqtt://tok@b:1\"y"), "x\"mqtt://***@b:1\"y");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(message("x\nhttp://T@h/?k=v"), "x\\nhttp://***@h/?k=***");
    }

    #[test]
    fn toml_excerpts_lose_their_secrets() {
        assert_eq!(toml_line("password = 12345"), "password = ***");
        assert_eq!(toml_line("  \"api_token\"=\"x\""), "  \"api_token\"= ***");
        assert_eq!(
            toml_line("url = \"http://u:pw@h/?token=tok\" x"),
            "url = \"http://u:***@h/?token=***\" x"
        );
        assert_eq!(toml_line("poll = \"1m\""), "poll = \"1m\"");
        assert_eq!(
            toml_line("url = \"http://tok en@h/x\" # c"),
            "url = \"http://***@h/x\" # c"
        );
        let e = "TOML parse error at line 3, column 1\n  |\n3 | password = 5\n  | ^^^^\ninvalid type: integer `5`, expected a string";
        let shown = toml_error(e);
        assert!(shown.contains("3 | password = ***"), "{shown}");
        assert!(shown.contains("invalid type"), "{shown}");
        assert!(!shown.contains('5'), "{shown}");
        let e = "TOML parse error at line 1\n1 | password = \"hunter22\"\nbad value \"hunter22\"";
        let shown = toml_error(e);
        assert!(!shown.contains("hunter22"), "{shown}");
        assert_eq!(
            secret_values(
                "m = { url = \"http://h/?token=q\", password = 987654, api_token='x y' }"
            ),
            ["987654", "x y"]
        );
        // An inline table holding a password; a multi-line array holding one.
        assert_eq!(
            toml_line("mqtt = { url = \"mqtt://h\", password = \"hunter22\" }"),
            "mqtt = ***"
        );
        let e = "TOML parse error at line 4\n4 | password = [\n5 |   \"hunter22\",\n6 | ]\ninvalid type";
        let shown = toml_error(e);
        assert!(!shown.contains("hunter22"), "{shown}");
        assert!(shown.contains("invalid type"), "{shown}");
    }
}
