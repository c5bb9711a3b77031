//! The agent's modules import each other without a cycle: a layer below never names a layer
//! above. Read from the sources: every `crate::<module>` path in `agent/src/**/*.rs` (comments
//! left out) is an edge from the top-level module of the file (`src/x.rs` or `src/x/`) to
//! `<module>`. `cargo test -p cip-update-agent --test module_graph -- --nocapture` prints the
//! graph's cycles, if any, with the files that make each edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Edges between top-level modules, each with the files that make it.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `line` without its `//` comment. Quotes are followed so that a URL in a string ("http://")
/// is not taken for a comment; a line inside a multi-line string is read as code, which at worst
/// adds an edge, never hides one.
fn without_comment(line: &str) -> &str {
    let b = line.as_bytes();
    let mut in_str = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if in_str => i += 1,
            b'"' => in_str = !in_str,
            // A char literal holding a quote ('"') must not open a string.
            b'\'' if !in_str && b.get(i + 1) == Some(&b'"') && b.get(i + 2) == Some(&b'\'') => {
                i += 2
            }
            b'/' if !in_str && b.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
        i += 1;
    }
    line
}

/// The top-level modules `code` names as `crate::m` or `crate::{m, n::x}`.
fn referenced(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        // `cip_update_agent::`-style names end in `crate::` only if preceded by an identifier.
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // The first path segment of each item of the group, at brace depth 0.
            let mut depth = 0;
            let mut start = 0;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.insert(ident(group[start..j].trim_start()));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(ident(group[start..j].trim_start()));
                        start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|m| !m.is_empty() && m != "self");
    out
}

/// The module graph of the agent's library (`main.rs` is the binary over it, `lib.rs` only
/// declares the modules).
fn graph() -> Graph {
    graph_without(&[])
}

/// [`graph`] without the files (paths under `src/`) named.
fn graph_without(skip: &[&str]) -> Graph {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut g = Graph::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        if first == "main.rs" || first == "lib.rs" || skip.contains(&rel.to_str().unwrap()) {
            continue;
        }
        let module = first.trim_end_matches(".rs").to_owned();
        let text = std::fs::read_to_string(&f).unwrap();
        // Group imports may span lines: the comments go line by line, then the whole is read.
        let code: String = text
            .lines()
            .map(|l| format!("{}\n", without_comment(l)))
            .collect();
        let edges = g.entry(module.clone()).or_default();
        for m in referenced(&code) {
            if m != module {
                edges
                    .entry(m)
                    .or_default()
                    .insert(rel.display().to_string());
            }
        }
    }
    g
}

/// The strongly connected components with more than one module (Tarjan's algorithm).
fn cyclic_components(g: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.g.get(v).into_iter().flat_map(|e| e.keys()) {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack.remove(w);
                comp.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out.sort();
    s.out
}

/// One cycle through `from` inside `comp` (breadth-first: a shortest one), `from` first.
fn a_cycle(g: &Graph, comp: &[String], from: &str) -> Vec<String> {
    let inside: BTreeSet<&str> = comp.iter().map(String::as_str).collect();
    let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([from]);
    while let Some(v) = queue.pop_front() {
        for w in g.get(v).into_iter().flat_map(|e| e.keys()) {
            let w = w.as_str();
            if w == from {
                let mut path = vec![v.to_owned()];
                let mut cur = v;
                while cur != from {
                    cur = prev[cur];
                    path.push(cur.to_owned());
                }
                path.reverse();
                return path;
            }
            if inside.contains(w) && !prev.contains_key(w) {
                prev.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    Vec::new()
}

/// The cycles, one text: each component, one cycle through each of its modules, and the files
/// that make each edge of the component.
fn describe(g: &Graph, comps: &[Vec<String>]) -> String {
    let mut out = String::new();
    for comp in comps {
        out.push_str(&format!("cycle among {{{}}}:\n", comp.join(", ")));
        let mut seen = BTreeSet::new();
        for m in comp {
            let c = a_cycle(g, comp, m);
            let mut key = c.clone();
            key.sort();
            if seen.insert(key) {
                out.push_str(&format!("  {} -> {}\n", c.join(" -> "), c[0]));
            }
        }
        for m in comp {
            for (to, files) in &g[m] {
                if comp.contains(to) {
                    let files: Vec<&str> = files.iter().map(String::as_str).collect();
                    out.push_str(&format!("    {m} -> {to}: {}\n", files.join(", ")));
                }
            }
        }
    }
    out
}

#[test]
fn no_import_cycle_between_agent_modules() {
    let g = graph();
    let comps = cyclic_components(&g);
    let text = describe(&g, &comps);
    println!("{text}");
    assert!(
        comps.is_empty(),
        "import cycles between agent modules:\n{text}"
    );
}

/// The pipeline never names a job source: what a source adds comes in through its hooks and
/// records. And no source builds on the other (each drives the pipeline itself).
#[test]
fn the_pipeline_names_no_job_source_and_the_sources_not_each_other() {
    let g = graph();
    let named: Vec<_> = g["pipeline"]
        .keys()
        .filter(|m| ["sources", "wfx", "cli", "wiring"].contains(&m.as_str()))
        .collect();
    assert!(named.is_empty(), "pipeline imports {named:?}");
    let tuf_only = std::fs::read_to_string(src_dir().join("sources/tuf_only.rs")).unwrap();
    let code: String = tuf_only.lines().map(without_comment).collect();
    for other in ["crate::sources::wfx", "crate::wfx", "super::wfx"] {
        assert!(!code.contains(other), "sources/tuf_only.rs names {other}");
    }
    let mut wfx_files = Vec::new();
    rust_files(&src_dir().join("sources/wfx"), &mut wfx_files);
    for f in wfx_files {
        let code: String = std::fs::read_to_string(&f)
            .unwrap()
            .lines()
            .map(without_comment)
            .collect();
        assert!(!code.contains("tuf_only"), "{} names tuf_only", f.display());
    }
}

/// The configuration is the bottom layer: it names no functional module, only the libraries
/// under the agent (the SWUpdate and TUF clients, which import nothing from it) and the text
/// helpers that make what it shows safe.
#[test]
fn config_imports_no_functional_module() {
    let g = graph();
    let allowed = ["swupdate", "tuf", "redact", "text"];
    let bad: Vec<_> = g["config"]
        .iter()
        .filter(|(to, _)| !allowed.contains(&to.as_str()))
        .collect();
    assert!(bad.is_empty(), "config imports {bad:?}");
    // The helpers it uses are leaves: a cycle cannot run back through them.
    for h in ["redact", "text"] {
        let deps: Vec<_> = g[h].keys().filter(|m| *m != "text").collect();
        assert!(deps.is_empty(), "{h} imports {deps:?}");
    }
}

/// The machinery itself, on a graph made up here: comments and strings are no edges, group
/// imports are, and a cycle is named.
#[test]
fn cycles_are_found_and_named() {
    assert_eq!(
        without_comment(r#"let u = "http://h/a"; // crate::x"#),
        r#"let u = "http://h/a"; "#
    );
    assert_eq!(without_comment("let q = '\"'; // c"), "let q = '\"'; ");
    assert_eq!(
        referenced(
            "use crate::{a::B, b, c::{d, e}};\nlet x = crate::f::g(); $crate::h; my_crate::i"
        ),
        ["a", "b", "c", "f"].map(String::from).into()
    );
    let mut g = Graph::new();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "e")] {
        g.entry(from.into())
            .or_default()
            .entry(to.into())
            .or_default()
            .insert(format!("src/{from}.rs"));
    }
    let comps = cyclic_components(&g);
    assert_eq!(comps, vec![vec!["a", "b", "c"]]);
    let text = describe(&g, &comps);
    assert!(text.contains("a -> b -> c -> a"), "{text}");
    assert!(text.contains("c -> a: src/c.rs"), "{text}");
}
