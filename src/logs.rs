//! The engine's log: `tracing` events on stderr, filtered in RUST_LOG (`EnvFilter`) syntax,
//! in one of two formats:
//!
//! - `human` (the default): each event is the line the engine has always printed, with no
//!   timestamp or level added (journald and the test rigs stamp lines themselves, and the
//!   scripts grep them): `flowtwin: <message>` for the engine, `flowtwin-sync[node N]:
//!   <message>` for its sync thread (the event's `node` field). Messages are written to read
//!   on their own; the structured fields repeat what they say for machines.
//! - `json`: one object per event and line: `timestamp`, `level`, `message`, the event's
//!   fields (`event` names what happened: `takeover`, `peer_lost`, ...), `target`.
//!
//! Settings, the first one given wins: the filter from `FLOWTWIN_LOG`, `RUST_LOG`, the
//! config's `[log] level`, then `info`; the format from `FLOWTWIN_LOG_FORMAT`, the config's
//! `[log] format`, then `human`. The subscriber is installed before the config is read
//! ([`install`]), so that an error reading it comes out in the format the environment asks
//! for, and takes the config's settings once it is ([`Logs::configure`]).
//!
//! Events are rare (starts, role changes, peers, takeovers, rate-limited drop warnings): the
//! packet path never logs.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Environment variables holding a filter, in the order they are looked at.
pub const FILTER_VARS: [&str; 2] = ["FLOWTWIN_LOG", "RUST_LOG"];
/// Environment variable holding the format.
pub const FORMAT_VAR: &str = "FLOWTWIN_LOG_FORMAT";
/// The filter when neither the environment nor the config gives one.
pub const DEFAULT_FILTER: &str = "info";

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Human,
    Json,
}

impl Format {
    /// `"human"` or `"json"`.
    pub fn parse(s: &str) -> Result<Format, String> {
        match s {
            "human" => Ok(Format::Human),
            "json" => Ok(Format::Json),
            _ => Err("expected \"human\" or \"json\"".into()),
        }
    }
}

/// A filter in RUST_LOG syntax (`info`, `warn,flowtwin_sync=debug`, ...). Stricter than
/// `EnvFilter` on one point: a directive without `=` must be a level or name one of
/// flowtwin's own targets (EnvFilter would read `level = "warning"` as "everything of a
/// target called warning", i.e. silence).
pub fn parse_filter(s: &str) -> Result<EnvFilter, String> {
    for d in s.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !d.contains('=') && !d.contains('[');
        if bare && !LEVELS.contains(&d.to_ascii_lowercase().as_str()) && !d.starts_with("flowtwin") {
            return Err(format!(
                "{d:?} is neither a level ({}) nor a flowtwin target (e.g. flowtwin_sync=debug)",
                LEVELS.join(", ")
            ));
        }
    }
    EnvFilter::builder().parse(s).map_err(|e| format!("not a filter in RUST_LOG syntax: {e}"))
}

/// Where each setting comes from and what it is.
#[derive(Debug, PartialEq, Eq)]
pub struct Settings {
    /// The filter and the name of what gave it (an environment variable, `log.level`).
    pub filter: (String, &'static str),
    /// The format and the name of what gave it.
    pub format: (Format, &'static str),
}

impl Settings {
    /// The settings from the environment (`var`, which reads one variable; empty counts as
    /// unset) over the config's `level` and `format` (already checked by the config).
    pub fn resolve(var: &dyn Fn(&str) -> Option<String>, level: Option<&str>, fmt_name: Option<&str>) -> Result<Settings, String> {
        let set = |name: &'static str| var(name).filter(|v| !v.trim().is_empty()).map(|v| (v, name));
        let filter = FILTER_VARS
            .iter()
            .find_map(|n| set(n))
            .or_else(|| level.map(|l| (l.to_string(), "log.level")))
            .unwrap_or_else(|| (DEFAULT_FILTER.to_string(), "default"));
        parse_filter(&filter.0).map_err(|e| format!("{} = {:?}: {e}", filter.1, filter.0))?;
        let format = match set(FORMAT_VAR) {
            Some((v, n)) => (Format::parse(v.trim()).map_err(|e| format!("{n} = {v:?}: {e}"))?, n),
            None => match fmt_name {
                Some(f) => (Format::parse(f).map_err(|e| format!("log.format = {f:?}: {e}"))?, "log.format"),
                None => (Format::Human, "default"),
            },
        };
        Ok(Settings { filter, format })
    }

    /// From the process environment.
    pub fn from_env(level: Option<&str>, fmt_name: Option<&str>) -> Result<Settings, String> {
        Settings::resolve(&|n| std::env::var(n).ok(), level, fmt_name)
    }
}

/// The installed subscriber's handles: the config's settings apply through them.
#[derive(Clone)]
pub struct Logs {
    filter: reload::Handle<EnvFilter, Registry>,
    json: Arc<AtomicBool>,
}

impl Logs {
    /// Apply the config's `[log]` (checked by the config), under the environment's settings.
    pub fn configure(&self, level: &str, fmt_name: &str) -> Result<(), String> {
        let s = Settings::from_env(Some(level), Some(fmt_name))?;
        self.apply(&s)
    }

    fn apply(&self, s: &Settings) -> Result<(), String> {
        let f = parse_filter(&s.filter.0).map_err(|e| format!("{} = {:?}: {e}", s.filter.1, s.filter.0))?;
        self.filter.reload(f).map_err(|e| format!("log filter: {e}"))?;
        self.json.store(s.format.0 == Format::Json, Ordering::Relaxed);
        Ok(())
    }
}

/// The subscriber writing to `writer` with settings `s`, and its handles.
pub fn subscriber<W>(s: &Settings, writer: W) -> Result<(impl Subscriber + Send + Sync, Logs), String>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let (filter, handle) = reload::Layer::new(EnvFilter::default());
    let json = Arc::new(AtomicBool::new(false));
    let fmt = tracing_subscriber::fmt::layer()
        .event_format(EitherFormat { json: json.clone(), json_format: json_format() })
        .fmt_fields(JsonFields::new())
        .with_writer(writer);
    let logs = Logs { filter: handle, json };
    logs.apply(s)?;
    Ok((Registry::default().with(filter).with(fmt), logs))
}

/// Install the process's subscriber on stderr, with the environment's settings.
pub fn install() -> Result<Logs, String> {
    let s = Settings::from_env(None, None)?;
    let (sub, logs) = subscriber(&s, io::stderr)?;
    tracing::subscriber::set_global_default(sub).map_err(|e| format!("log: {e}"))?;
    Ok(logs)
}

/// The JSON format: flat (the event's fields beside `message`), no spans.
fn json_format() -> format::Format<format::Json> {
    format::format().with_ansi(false).json().flatten_event(true).with_current_span(false).with_span_list(false)
}

/// Human or JSON, as `json` says at each event (the config decides after installation).
struct EitherFormat {
    json: Arc<AtomicBool>,
    json_format: format::Format<format::Json>,
}

impl<S, N> FormatEvent<S, N> for EitherFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        if self.json.load(Ordering::Relaxed) {
            return self.json_format.format_event(ctx, w, event);
        }
        let mut v = HumanVisitor::default();
        event.record(&mut v);
        if event.metadata().target().starts_with("flowtwin_sync") {
            match v.node {
                Some(n) => write!(w, "flowtwin-sync[node {n}]: ")?,
                None => w.write_str("flowtwin-sync: ")?,
            }
        } else {
            w.write_str("flowtwin: ")?;
        }
        writeln!(w, "{}", v.message)
    }
}

/// What the human format prints of an event: its message, and the sync thread's `node`.
#[derive(Default)]
struct HumanVisitor {
    message: String,
    node: Option<u64>,
}

impl Visit for HumanVisitor {
    fn record_u64(&mut self, f: &Field, v: u64) {
        if f.name() == "node" {
            self.node = Some(v);
        }
    }
    fn record_str(&mut self, f: &Field, v: &str) {
        if f.name() == "message" {
            self.message.push_str(v);
        }
    }
    fn record_debug(&mut self, f: &Field, v: &dyn fmt::Debug) {
        if f.name() == "message" {
            // The message is `format_args!`, whose Debug is its Display.
            use fmt::Write;
            let _ = write!(self.message, "{v:?}");
        }
    }
}

#[cfg(test)]
pub mod testing {
    //! A subscriber writing into a buffer, for tests of what events print.
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::{subscriber, Format, Settings};

    #[derive(Clone, Default)]
    pub struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Buffer {
        pub fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'w self) -> Buffer {
            self.clone()
        }
    }

    /// What `f` logs in `format` with filter `filter`.
    pub fn capture(format: Format, filter: &str, f: impl FnOnce()) -> String {
        let buf = Buffer::default();
        let s = Settings { filter: (filter.to_string(), "test"), format: (format, "test") };
        let (sub, _logs) = subscriber(&s, buf.clone()).unwrap();
        tracing::subscriber::with_default(sub, f);
        buf.text()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::capture;
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string())
    }

    #[test]
    fn the_environment_overrides_the_config() {
        let s = Settings::resolve(&env(&[]), None, None).unwrap();
        assert_eq!(s, Settings { filter: ("info".into(), "default"), format: (Format::Human, "default") });
        let s = Settings::resolve(&env(&[]), Some("warn"), Some("json")).unwrap();
        assert_eq!(s, Settings { filter: ("warn".into(), "log.level"), format: (Format::Json, "log.format") });
        let s = Settings::resolve(&env(&[("RUST_LOG", "debug")]), Some("warn"), None).unwrap();
        assert_eq!(s.filter, ("debug".into(), "RUST_LOG"));
        let vars = [("RUST_LOG", "debug"), ("FLOWTWIN_LOG", "error,flowtwin_sync=info"), ("FLOWTWIN_LOG_FORMAT", "human")];
        let s = Settings::resolve(&env(&vars), Some("warn"), Some("json")).unwrap();
        assert_eq!(s.filter, ("error,flowtwin_sync=info".into(), "FLOWTWIN_LOG"));
        assert_eq!(s.format, (Format::Human, "FLOWTWIN_LOG_FORMAT"));
        // Set but empty is unset (`FLOWTWIN_LOG= flowtwin run ...`).
        let s = Settings::resolve(&env(&[("FLOWTWIN_LOG", ""), ("FLOWTWIN_LOG_FORMAT", " ")]), Some("warn"), Some("json")).unwrap();
        assert_eq!(s, Settings { filter: ("warn".into(), "log.level"), format: (Format::Json, "log.format") });
    }

    #[test]
    fn a_bad_filter_or_format_names_where_it_came_from() {
        let err = |vars: &[(&str, &str)], level: Option<&str>, f: Option<&str>| Settings::resolve(&env(vars), level, f).unwrap_err();
        let e = err(&[], Some("verbose"), None);
        assert!(e.starts_with("log.level = \"verbose\": \"verbose\" is neither a level"), "{e}");
        let e = err(&[("FLOWTWIN_LOG", "flowtwin_sync=loud")], Some("info"), None);
        assert!(e.starts_with("FLOWTWIN_LOG = \"flowtwin_sync=loud\": not a filter in RUST_LOG syntax"), "{e}");
        let e = err(&[("RUST_LOG", "warning")], None, None);
        assert!(e.starts_with("RUST_LOG = \"warning\""), "{e}");
        let e = err(&[], None, Some("xml"));
        assert_eq!(e, "log.format = \"xml\": expected \"human\" or \"json\"");
        let e = err(&[("FLOWTWIN_LOG_FORMAT", "JSON")], None, Some("json"));
        assert_eq!(e, "FLOWTWIN_LOG_FORMAT = \"JSON\": expected \"human\" or \"json\"");
        for ok in ["info", "WARN", "off", "warn,flowtwin_sync=debug", "flowtwin::run=trace", "flowtwin_engine", ""] {
            parse_filter(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
    }

    #[test]
    fn human_lines_are_the_message_after_the_component() {
        let out = capture(Format::Human, "info", || {
            tracing::info!(event = "started", workers = 2, "running with 2 worker(s); SIGINT/SIGTERM stops");
            tracing::warn!(target: "flowtwin_sync::session", node = 2u32, event = "peer_lost", reason = "x", "standby lost: x");
            tracing::info!(target: "flowtwin_sync::node", "no node field");
            tracing::debug!("filtered out");
        });
        assert_eq!(
            out,
            "flowtwin: running with 2 worker(s); SIGINT/SIGTERM stops\n\
             flowtwin-sync[node 2]: standby lost: x\n\
             flowtwin-sync: no node field\n"
        );
        assert_eq!(capture(Format::Human, "warn", || tracing::info!("hidden")), "");
        let out = capture(Format::Human, "warn,flowtwin_sync=info", || {
            tracing::info!(target: "flowtwin_sync::node", node = 1u32, "shown");
            tracing::info!("hidden");
        });
        assert_eq!(out, "flowtwin-sync[node 1]: shown\n");
    }

    #[test]
    fn json_is_one_object_per_event_with_its_fields() {
        let out = capture(Format::Json, "info", || {
            tracing::warn!(target: "flowtwin_sync::session", node = 2u32, event = "peer_lost", reason = "no heartbeat", "standby lost: no heartbeat");
            tracing::info!(event = "vip", vip = %std::net::Ipv4Addr::new(198, 18, 0, 100), "serving VIP 198.18.0.100");
        });
        let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect();
        assert_eq!(lines.len(), 2, "{out}");
        let l = &lines[0];
        assert_eq!(l["level"], "WARN");
        assert_eq!(l["message"], "standby lost: no heartbeat");
        assert_eq!((&l["event"], &l["node"], &l["reason"]), (&"peer_lost".into(), &2.into(), &"no heartbeat".into()));
        assert_eq!(l["target"], "flowtwin_sync::session");
        assert!(l["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{l}");
        assert_eq!((&lines[1]["event"], &lines[1]["vip"]), (&"vip".into(), &"198.18.0.100".into()));
    }
}
