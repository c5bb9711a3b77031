//! URLs as they may be shown: in log lines, wfx status messages, MQTT and `status`.
//!
//! An artifact URI from wfx can carry a credential: a password in its user info, or a token in
//! its query (pre-signed object-store URLs: `X-Amz-Signature=...`, `sig=...`, `token=...`).
//! Whatever reads the device's logs or the fleet's job history must not learn it, so every
//! URL the agent shows goes through [`url`]: the password and every query value become `***`;
//! the scheme, host, path and the query's parameter names stay, so a reader can still tell
//! which file on which server was meant.

/// `u` with its password and query values replaced by `***`. Text that is not a URL with a
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
            None => format!("{userinfo}@{host}"),
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

#[cfg(test)]
mod tests {
    use super::url;

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

    #[test]
    fn the_rest_is_kept() {
        for same in [
            "http://127.0.0.1:8080/www/os-1.1.swu",
            "https://h",
            "http://user@h/x",
            "/var/lib/cip-update-agent/staged/1.swu",
            "os-1.1.swu",
        ] {
            assert_eq!(url(same), same);
        }
    }
}
