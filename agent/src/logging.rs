//! Where the log goes, and how: journald's native protocol when systemd connected stderr to the
//! journal (priorities and fields such as `JOB_ID`, so `journalctl -p warning` and
//! `journalctl JOB_ID=…` work), else text on stderr: `<N>`-prefixed lines without a timestamp
//! for a journal stream without the native socket, coloured only for a person at a terminal.
//!
//! The native sender is written here rather than taken from `tracing-journald`: that crate
//! writes field values unredacted (a URL's credentials would reach the journal), prefixes and
//! names fields its own way, sends to a fixed socket path (a test could read it back only
//! inside a mount namespace), and carries `unsafe` code for memfds (not needed here: a value
//! is cut instead, see [`VALUE_MAX`]).

use std::ffi::OsStr;
use std::fmt::{self, Write as _};
use std::io::{self, IsTerminal};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber, span};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

/// journald's native socket.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Overrides [`JOURNAL_SOCKET`]: for the tests, which read the entries back from a socket of
/// their own, and for a container that mounts the host's socket elsewhere.
pub const JOURNAL_SOCKET_ENV: &str = "CIP_UPDATE_AGENT_JOURNAL_SOCKET";

/// The `SYSLOG_IDENTIFIER` of every entry (whatever the binary was renamed to).
pub const SYSLOG_IDENTIFIER: &str = "cip-update-agent";

/// Bytes kept of a field's value: one entry must fit in one datagram (sending a larger one in a
/// memfd would take `unsafe` code); the agent's lines are far shorter.
pub const VALUE_MAX: usize = 48 * 1024;

/// How the log is written.
pub enum Output {
    /// journald's native protocol.
    Journal(Journal),
    /// Text lines on stderr with the `<N>` priority prefix journald reads, no timestamp.
    SyslogText,
    /// Text lines on stderr, coloured when `ansi`.
    Text { ansi: bool },
}

impl Output {
    /// The output for this process, from its environment (`JOURNAL_STREAM`, `NO_COLOR`,
    /// [`JOURNAL_SOCKET_ENV`]) and its stderr.
    pub fn detect() -> Output {
        let stream = std::env::var_os("JOURNAL_STREAM");
        if stream.as_deref().is_some_and(stderr_is_stream) {
            let _ = JOURNAL_STREAM.set(true);
            let socket = std::env::var_os(JOURNAL_SOCKET_ENV)
                .filter(|s| !s.is_empty())
                .map_or_else(|| PathBuf::from(JOURNAL_SOCKET), PathBuf::from);
            return match Journal::connect(&socket) {
                Ok(j) => Output::Journal(j),
                Err(_) => Output::SyslogText,
            };
        }
        Output::Text {
            ansi: colour(
                std::env::var_os("NO_COLOR").as_deref(),
                io::stderr().is_terminal(),
            ),
        }
    }
}

/// Whether text is coloured: for a person at a terminal, unless `NO_COLOR` is set non-empty
/// (<https://no-color.org>).
pub fn colour(no_color: Option<&OsStr>, terminal: bool) -> bool {
    terminal && no_color.is_none_or(OsStr::is_empty)
}

/// Set by [`Output::detect`] when stderr is the journal.
static JOURNAL_STREAM: OnceLock<bool> = OnceLock::new();

/// Prints a fatal error (`error: …`) on stderr, outside the log: with the `<3>` prefix when
/// stderr is the journal, so that it has the error priority there too (`journalctl -p err`).
pub fn fatal(message: impl fmt::Display) {
    let prefix = if JOURNAL_STREAM.get().is_some() {
        "<3>"
    } else {
        ""
    };
    eprintln!("{prefix}error: {message}");
}

/// Whether `JOURNAL_STREAM` (`<dev>:<inode>`, as systemd sets it) names this process's stderr:
/// a child that inherited the variable but not the stream must not take it for the journal.
pub fn stderr_is_stream(journal_stream: &OsStr) -> bool {
    let Some((dev, ino)) = journal_stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // fstat of a duplicate of fd 2: the same open file, so the same device and inode.
    let meta = io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .and_then(|fd| std::fs::File::from(fd).metadata());
    meta.is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// The filter: `wanted` (e.g. `debug`, or `info,cip_update_agent=trace`: a level per target
/// prefix) if it parses, else `default`. (`Targets`, not `EnvFilter`: no regex engine in the
/// binary, about 0.3 MB; span and field filters are not needed on a device.)
pub fn filter(wanted: Option<&str>, default: &str) -> Targets {
    wanted
        .and_then(|w| w.parse().ok())
        .or_else(|| default.parse().ok())
        .unwrap_or_default()
}

/// Installs the global subscriber: `output` with `filter`. (One subscriber type for all three
/// outputs, the others `None`: each type would be compiled into the binary once more.)
pub fn init(output: Output, filter: Targets) {
    let (journal, text) = match output {
        Output::Journal(j) => (Some(j), None),
        Output::SyslogText => (None, Some((true, false))),
        Output::Text { ansi } => (None, Some((false, ansi))),
    };
    let text = text.map(|(prefixed, ansi)| {
        tracing_subscriber::fmt::layer()
            .fmt_fields(escaped_fields())
            .event_format(Line {
                prefixed,
                timed: format::Format::default(),
                untimed: format::Format::default().without_time(),
            })
            .with_ansi(ansi)
            .with_writer(io::stderr)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(journal)
        .with(text)
        .init();
}

/// The client id for the `CLIENT_ID` field of every journal entry from now on; set once, by
/// `run`, when it is known.
pub fn set_client_id(id: &str) {
    let _ = CLIENT_ID.set(id.to_owned());
}

static CLIENT_ID: OnceLock<String> = OnceLock::new();

/// The log's field formatter for text: every value (the message too) with its control
/// characters escaped, so that a job id or a URI from a server cannot forge a log line or drive
/// a terminal, and every URL in it redacted, whichever module formatted it (a TUF fetch error, a
/// reqwest error chain).
pub fn escaped_fields() -> impl for<'w> FormatFields<'w> + 'static {
    use tracing_subscriber::field::MakeExt as _;
    format::debug_fn(|w, field, value| {
        let text = crate::redact::message(&format!("{value:?}"));
        match field.name() {
            "message" => write!(w, "{text}"),
            name => write!(w, "{name}={text}"),
        }
    })
    .delimited(" ")
}

/// The syslog priority of a level, as journald reads it.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// A text line: with a timestamp, or (`prefixed`) with `<N>` before it and none, journald
/// taking N for the line's priority (and stripping it) and adding its own timestamp.
struct Line {
    prefixed: bool,
    timed: format::Format,
    untimed: format::Format<format::Full, ()>,
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if !self.prefixed {
            return self.timed.format_event(ctx, writer, event);
        }
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.untimed.format_event(ctx, writer.by_ref(), event)
    }
}

/// The journal field for a tracing field: the agent's names for the job, its wfx state and the
/// client made into the fields operators filter on; others upper-cased, with what journald
/// refuses in a name (anything but `A-Z0-9_`, a leading `_`, which marks trusted fields) left out.
pub fn field_name(name: &str) -> String {
    match name {
        "message" => "MESSAGE".into(),
        "job" | "job_id" => "JOB_ID".into(),
        "state" => "WFX_STATE".into(),
        "client" | "client_id" => "CLIENT_ID".into(),
        _ => {
            let n: String = name
                .chars()
                .filter_map(|c| match c {
                    'a'..='z' => Some(c.to_ascii_uppercase()),
                    'A'..='Z' | '0'..='9' | '_' => Some(c),
                    '.' | '-' => Some('_'),
                    _ => None,
                })
                .collect();
            let n = n.trim_start_matches(|c: char| c == '_' || c.is_ascii_digit());
            if n.is_empty() {
                "FIELD".into()
            } else {
                // journald's limit on a field name.
                n.chars().take(64).collect()
            }
        }
    }
}

/// Appends one field in the native protocol: `KEY=value\n`, or for a value with a line break
/// `KEY\n<u64 LE length><value>\n`.
pub fn put_field(buf: &mut Vec<u8>, name: &str, value: &[u8]) {
    let value = &value[..value.len().min(VALUE_MAX)];
    buf.extend_from_slice(name.as_bytes());
    if value.contains(&b'\n') {
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        buf.push(b'=');
    }
    buf.extend_from_slice(value);
    buf.push(b'\n');
}

/// The tracing layer sending each event to journald as one entry: `MESSAGE`, `PRIORITY`,
/// `SYSLOG_IDENTIFIER`, `TARGET`, `CLIENT_ID` once known, and the fields of the event and of
/// the spans it is in (the innermost value of a name wins).
pub struct Journal {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Journal {
    /// A sender to the socket at `path`, which must take an (empty, ignored) datagram now.
    pub fn connect(path: &Path) -> io::Result<Journal> {
        let socket = UnixDatagram::unbound()?;
        socket.send_to(&[], path)?;
        Ok(Journal {
            socket,
            path: path.to_owned(),
        })
    }

    /// One entry for `fields` (name, value) and an event of `level`.
    pub fn entry(&self, level: &Level, fields: &[(String, String)]) -> Vec<u8> {
        let mut buf = Vec::with_capacity(256);
        put_field(&mut buf, "PRIORITY", priority(level).to_string().as_bytes());
        put_field(&mut buf, "SYSLOG_IDENTIFIER", SYSLOG_IDENTIFIER.as_bytes());
        if let Some(id) = CLIENT_ID.get() {
            if !fields.iter().any(|(n, _)| n == "CLIENT_ID") {
                put_field(&mut buf, "CLIENT_ID", crate::redact::message(id).as_bytes());
            }
        }
        for (name, value) in fields {
            put_field(&mut buf, name, value.as_bytes());
        }
        buf
    }
}

/// The fields of a span, journal-named, kept in its extensions for the events inside it.
struct SpanFields(Vec<(String, String)>);

/// Collects fields as (journal name, redacted value); a later value of a name replaces the one
/// before.
struct Collect<'a>(&'a mut Vec<(String, String)>);

impl Collect<'_> {
    fn put(&mut self, field: &Field, value: &str) {
        let name = field_name(field.name());
        let value = crate::redact::message(value);
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }
}

impl Visit for Collect<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut s = String::new();
        let _ = write!(s, "{value:?}");
        self.put(field, &s);
    }
}

impl<S> tracing_subscriber::Layer<S> for Journal
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Vec::new();
        attrs.record(&mut Collect(&mut fields));
        span.extensions_mut().insert(SpanFields(fields));
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(SpanFields(fields)) = ext.get_mut::<SpanFields>() {
            values.record(&mut Collect(fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = vec![("TARGET".to_owned(), event.metadata().target().to_owned())];
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanFields(f)) = span.extensions().get::<SpanFields>() {
                    for (n, v) in f {
                        match fields.iter_mut().find(|(m, _)| m == n) {
                            Some(slot) => slot.1.clone_from(v),
                            None => fields.push((n.clone(), v.clone())),
                        }
                    }
                }
            }
        }
        event.record(&mut Collect(&mut fields));
        let entry = self.entry(event.metadata().level(), &fields);
        // Nowhere left to report a failed send to: the entry is lost, as a full journal's is.
        let _ = self.socket.send_to(&entry, &self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The native protocol's entries parsed back: `KEY=value` lines and the binary-length form.
    fn parse(mut b: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let nl = b.iter().position(|&c| c == b'\n').unwrap();
            let line = &b[..nl];
            if let Some(eq) = line.iter().position(|&c| c == b'=') {
                out.push((
                    String::from_utf8(line[..eq].to_vec()).unwrap(),
                    line[eq + 1..].to_vec(),
                ));
                b = &b[nl + 1..];
            } else {
                let name = String::from_utf8(line.to_vec()).unwrap();
                let len = u64::from_le_bytes(b[nl + 1..nl + 9].try_into().unwrap()) as usize;
                let value = b[nl + 9..nl + 9 + len].to_vec();
                assert_eq!(b[nl + 9 + len], b'\n');
                out.push((name, value));
                b = &b[nl + 10 + len..];
            }
        }
        out
    }

    #[test]
    fn a_field_with_a_line_break_takes_the_binary_form() {
        let mut buf = Vec::new();
        put_field(&mut buf, "MESSAGE", b"two\nlines");
        put_field(&mut buf, "JOB_ID", b"j1");
        assert_eq!(&buf[..8], b"MESSAGE\n");
        assert_eq!(
            parse(&buf),
            [
                ("MESSAGE".into(), b"two\nlines".to_vec()),
                ("JOB_ID".into(), b"j1".to_vec())
            ]
        );
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
        assert_eq!(priority(&Level::TRACE), 7);
    }

    #[test]
    fn field_names_are_what_journald_accepts() {
        assert_eq!(field_name("job"), "JOB_ID");
        assert_eq!(field_name("state"), "WFX_STATE");
        assert_eq!(field_name("client_id"), "CLIENT_ID");
        assert_eq!(field_name("action"), "ACTION");
        assert_eq!(field_name("_hostname"), "HOSTNAME");
        assert_eq!(field_name("a.b-c"), "A_B_C");
        assert_eq!(field_name("ü"), "FIELD");
    }

    #[test]
    fn colour_only_at_a_terminal_without_no_color() {
        assert!(colour(None, true));
        assert!(colour(Some(OsStr::new("")), true));
        assert!(!colour(Some(OsStr::new("1")), true));
        assert!(!colour(None, false));
    }

    #[test]
    fn stderr_is_not_a_stream_it_was_not_given() {
        assert!(!stderr_is_stream(OsStr::new("")));
        assert!(!stderr_is_stream(OsStr::new("1:x")));
        assert!(!stderr_is_stream(OsStr::new("0:0")));
    }

    /// Events of a subscriber with the layer, read back from a socket of the test's own.
    #[test]
    fn an_event_in_a_job_span_carries_the_job_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let server = UnixDatagram::bind(&path).unwrap();
        let journal = Journal::connect(&path).unwrap();
        let subscriber = tracing_subscriber::registry().with(journal);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("job", job = "j-1");
            let _in = span.enter();
            tracing::warn!(state = "DOWNLOADING", "fetch http://u:pw@h/x failed\x1b[2m");
        });
        let mut buf = vec![0; 65536];
        assert_eq!(server.recv(&mut buf).unwrap(), 0, "the probe");
        let n = server.recv(&mut buf).unwrap();
        let fields = parse(&buf[..n]);
        let get = |k: &str| {
            let v = &fields.iter().find(|(n, _)| n == k).unwrap().1;
            String::from_utf8(v.clone()).unwrap()
        };
        assert_eq!(get("PRIORITY"), "4");
        assert_eq!(get("SYSLOG_IDENTIFIER"), "cip-update-agent");
        assert_eq!(get("JOB_ID"), "j-1");
        assert_eq!(get("WFX_STATE"), "DOWNLOADING");
        let message = get("MESSAGE");
        assert!(
            !message.contains("pw") && !message.contains('\x1b'),
            "{message}"
        );
    }
}
