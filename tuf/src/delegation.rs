//! Which delegated roles may vouch for a target path: `paths` patterns (shell globs matched
//! per `/`-separated segment, so `*` and `?` never cross a `/`; case-sensitive, as python's
//! `fnmatchcase`), `path_hash_prefixes`, and TAP 15 succinct hash bins.

use ring::digest;

use super::metadata::{DelegatedRole, Delegations, SuccinctRoles};

/// The roles of `d` to search for `path`, in order, each with its `terminating` flag (succinct
/// bins are terminating: TAP 15).
pub fn roles_for_target(d: &Delegations, path: &str) -> Vec<(String, bool)> {
    if let Some(roles) = &d.roles {
        roles
            .iter()
            .filter(|r| is_delegated_path(r, path))
            .map(|r| (r.name.clone(), r.terminating))
            .collect()
    } else if let Some(s) = &d.succinct_roles {
        vec![(bin_for_target(s, path), true)]
    } else {
        Vec::new()
    }
}

/// The keys and threshold `d` gives the role `name`, if it delegates to it.
pub fn delegated_role<'a>(d: &'a Delegations, name: &str) -> Option<(&'a [String], u64)> {
    if let Some(roles) = &d.roles {
        return roles
            .iter()
            .find(|r| r.name == name)
            .map(|r| (r.keyids.as_slice(), r.threshold));
    }
    let s = d.succinct_roles.as_ref()?;
    is_bin(s, name).then_some((s.keyids.as_slice(), s.threshold))
}

/// Whether `r` may vouch for `path`: its `paths` patterns or its `path_hash_prefixes`.
pub fn is_delegated_path(r: &DelegatedRole, path: &str) -> bool {
    if let Some(prefixes) = &r.path_hash_prefixes {
        let h = hex::encode(digest::digest(&digest::SHA256, path.as_bytes()));
        return prefixes.iter().any(|p| h.starts_with(p.as_str()));
    }
    r.paths
        .iter()
        .flatten()
        .any(|pattern| path_matches(pattern, path))
}

/// A pattern matches when it has as many segments as the path and each segment matches.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let pat: Vec<&str> = pattern.split('/').collect();
    let segs: Vec<&str> = path.split('/').collect();
    pat.len() == segs.len()
        && pat.iter().zip(&segs).all(|(p, s)| {
            let p: Vec<char> = p.chars().collect();
            let s: Vec<char> = s.chars().collect();
            glob(&p, &s)
        })
}

/// fnmatch: `*` any run, `?` one character, `[...]` a class (`!` negates, `a-z` ranges); a `[`
/// without its `]` is itself.
fn glob(p: &[char], s: &[char]) -> bool {
    // Iterative with one backtrack point for the last `*`: linear-ish, no recursion depth.
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, si));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, next)) = class(&p[pi..], s[si]) {
                        if matched {
                            pi += next;
                            si += 1;
                            continue;
                        }
                    } else if s[si] == '[' {
                        pi += 1;
                        si += 1;
                        continue;
                    }
                }
                c if c == s[si] => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, ss)) => {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Matches `c` against the class at the start of `p` (which begins with `[`): whether it
/// matched and the class's length, or `None` when the class is not closed.
fn class(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(p.get(i), Some('!'));
    if negate {
        i += 1;
    }
    let start = i;
    let mut matched = false;
    while i < p.len() {
        if p[i] == ']' && i > start {
            return Some((matched != negate, i + 1));
        }
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            if p[i] <= c && c <= p[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

/// Hex digits of a bin suffix: those of `2^bit_length - 1`.
fn suffix_len(s: &SuccinctRoles) -> usize {
    let last = (1u64 << s.bit_length) - 1;
    format!("{last:x}").len()
}

/// The bin of `path`: the first `bit_length` bits of sha256(path), zero-padded hex.
pub fn bin_for_target(s: &SuccinctRoles, path: &str) -> String {
    let h = digest::digest(&digest::SHA256, path.as_bytes());
    let first = u32::from_be_bytes([h.as_ref()[0], h.as_ref()[1], h.as_ref()[2], h.as_ref()[3]]);
    let bin = u64::from(first) >> (32 - s.bit_length);
    format!("{}-{:0width$x}", s.name_prefix, bin, width = suffix_len(s))
}

/// Whether `name` is one of the bins (exact width, lowercase hex, in range).
pub fn is_bin(s: &SuccinctRoles, name: &str) -> bool {
    let Some(suffix) = name
        .strip_prefix(s.name_prefix.as_str())
        .and_then(|r| r.strip_prefix('-'))
    else {
        return false;
    };
    suffix.len() == suffix_len(s)
        && suffix
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && u64::from_str_radix(suffix, 16).is_ok_and(|n| n < (1u64 << s.bit_length))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bins(bit_length: u32) -> SuccinctRoles {
        SuccinctRoles {
            keyids: vec![],
            threshold: 1,
            bit_length,
            name_prefix: "bins".into(),
        }
    }

    #[test]
    fn globs_do_not_cross_slashes() {
        let yes = [
            ("*", "f.swu"),
            ("a/*.swu", "a/f.swu"),
            ("a/*/f.swu", "a/b/f.swu"),
            ("a/f?.swu", "a/f1.swu"),
            ("a/[abc]-[0-9].swu", "a/b-7.swu"),
            ("a/[!x]", "a/y"),
            ("a/[", "a/["),
            ("*.tar.*", "x.tar.gz"),
            ("**", "abc"),
        ];
        for (p, s) in yes {
            assert!(path_matches(p, s), "{p} {s}");
        }
        let no = [
            ("*", "a/f.swu"),
            ("a/*", "a/b/f.swu"),
            ("a/*.swu", "A/f.swu"),
            ("a/f?.swu", "a/f12.swu"),
            ("a/[!x]", "a/x"),
            ("a/[abc]", "a/d"),
            ("*.swu", "f.swux"),
            ("a/", "a"),
        ];
        for (p, s) in no {
            assert!(!path_matches(p, s), "{p} {s}");
        }
    }

    #[test]
    fn hash_bin_names_and_selection() {
        // Reference values from python-tuf's SuccinctRoles.get_role_for_target:
        // sha256("a/b/f.swu") starts with these bits.
        let h = digest::digest(&digest::SHA256, b"a/b/f.swu");
        let first = u32::from_be_bytes(h.as_ref()[..4].try_into().unwrap());
        for bits in [1u32, 4, 5, 8, 16, 32] {
            let s = bins(bits);
            let name = bin_for_target(&s, "a/b/f.swu");
            let want = u64::from(first) >> (32 - bits);
            let width = format!("{:x}", (1u64 << bits) - 1).len();
            assert_eq!(name, format!("bins-{want:0width$x}"));
            assert!(is_bin(&s, &name));
        }
        // 256 bins: two hex digits, zero-padded; 5 bits: 32 bins, "1f" the last.
        assert!(is_bin(&bins(8), "bins-00") && is_bin(&bins(8), "bins-ff"));
        assert!(!is_bin(&bins(8), "bins-0") && !is_bin(&bins(8), "bins-100"));
        assert!(!is_bin(&bins(8), "bins-FF") && !is_bin(&bins(8), "other-00"));
        assert!(is_bin(&bins(5), "bins-1f") && !is_bin(&bins(5), "bins-20"));
        assert!(is_bin(&bins(1), "bins-1") && !is_bin(&bins(1), "bins-2"));
        assert_eq!(
            bin_for_target(&bins(32), "x").len(),
            "bins-".len() + 8,
            "32 bits give 8 hex digits"
        );
    }

    #[test]
    fn roles_in_order_with_their_flags() {
        let d: Delegations = serde_json::from_value(serde_json::json!({
            "keys": {},
            "roles": [
                {"name": "a", "keyids": [], "threshold": 1, "paths": ["x/*"]},
                {"name": "b", "keyids": [], "threshold": 1, "paths": ["y/*"], "terminating": true},
                {"name": "c", "keyids": [], "threshold": 1, "paths": ["*/f"]},
                {"name": "d", "keyids": [], "threshold": 1,
                 "path_hash_prefixes": [hex::encode(digest::digest(&digest::SHA256, b"x/f"))[..3].to_owned()]},
            ]
        }))
        .unwrap();
        assert_eq!(
            roles_for_target(&d, "x/f"),
            vec![
                ("a".to_owned(), false),
                ("c".to_owned(), false),
                ("d".to_owned(), false)
            ]
        );
        assert_eq!(
            roles_for_target(&d, "y/f"),
            vec![("b".to_owned(), true), ("c".to_owned(), false)]
        );
        assert!(roles_for_target(&d, "z/g").is_empty());
        assert_eq!(delegated_role(&d, "b").map(|r| r.1), Some(1));
        assert!(delegated_role(&d, "e").is_none());
    }
}
