//! Logs: the `tracing` subscriber of the process, set up once from the global `-v`/`-q`,
//! `CLARITY_LOG` and `--log-format` options. Every log line goes to stderr, so a command's
//! readable output on stdout (plans, step lines, summaries) and the agent's JSON protocol on
//! its stdout stay as they are. `text` renders one human line per event (`warning: ...`, the
//! level as the prefix, no timestamp); `json` renders one JSON object per line with the fields
//! of every span the event sits in (`run_id`, `host`, `deployment`, `step`) at the top level.
//! It decides nothing about what is logged and never sees secret values: callers log ids,
//! paths and versions only.

use clap::{ArgAction, Args, ValueEnum};
use std::io::Write;
use std::sync::OnceLock;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// The environment variable with `RUST_LOG`-style directives; it wins over `-v`/`-q`.
pub const LOG_ENV: &str = "CLARITY_LOG";

/// How much the process logs, and how.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// More detail in the logs on stderr: `-v` debug, `-vv` trace. CLARITY_LOG (directives
    /// as in RUST_LOG: `warn`, `info,clarity::transport=debug`) wins over -v and -q.
    #[arg(short = 'v', long = "verbose", global = true, action = ArgAction::Count)]
    pub verbose: u8,
    /// Only errors in the logs on stderr (no warnings, no notes).
    #[arg(short = 'q', long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Format of the logs on stderr: `text` (a line per event, for people) or `json` (an
    /// object per line with run_id, host, deployment and step fields, for the journal and
    /// log collectors). Output on stdout is not affected.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = LogFormat::Text,
        env = "CLARITY_LOG_FORMAT",
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// The format logs are written in (text until [`init`] ran).
pub fn format() -> LogFormat {
    FORMAT.get().copied().unwrap_or(LogFormat::Text)
}

/// The filter directives for these options: `CLARITY_LOG` when set (unless `own_flags_only`),
/// else the level of `-q`/`-v`. At the default level the text format leaves out the fleet
/// apply's per-step events, which the command prints on stdout already.
pub fn directives(
    args: &LogArgs,
    env: Option<&str>,
    own_flags_only: bool,
) -> (String, &'static str) {
    if let Some(d) = env.map(str::trim).filter(|d| !d.is_empty())
        && !own_flags_only
    {
        return (d.to_string(), LOG_ENV);
    }
    let d = match (args.quiet, args.verbose) {
        (true, _) => "error",
        (false, 0) if args.log_format == LogFormat::Text => "info,clarity::apply::fleet=warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    (d.to_string(), "-v/-q")
}

/// Installs the subscriber for the process. `agent` is true for the agent on a host: it
/// ignores `CLARITY_LOG` (which a `local` agent inherits from the reconciler's environment),
/// because its stderr is read back by the reconciler into error messages.
pub fn init(args: &LogArgs, agent: bool) -> Result<(), super::CliError> {
    let env = std::env::var(LOG_ENV).ok();
    let (directives, from) = directives(args, env.as_deref(), agent);
    let filter = EnvFilter::builder()
        .with_regex(false)
        .parse(&directives)
        .map_err(|e| {
            super::CliError::new(format!("{from}: `{directives}` is not a log filter: {e}")).hint(
                "CLARITY_LOG takes RUST_LOG-style directives: a level (`warn`), or \
                 `target=level` pairs separated by commas (`info,clarity::transport=debug`)",
            )
        })?;
    let _ = FORMAT.set(args.log_format);
    let _ = tracing_subscriber::registry()
        .with(
            Lines {
                format: args.log_format,
            }
            .with_filter(filter),
        )
        .try_init();
    Ok(())
}

/// A validation diagnostic on stderr: as its own text (`file:line:column: error[code]: ...`,
/// with its hint) in the text format, whatever the level; as one event with `file`, `line`,
/// `column`, `code` and `hint` fields in JSON.
pub fn diagnostic(d: &crate::diag::Diagnostic) {
    if format() == LogFormat::Text {
        eprintln!("{d}");
        return;
    }
    let at = format!("{}:{}:{}", d.file, d.line, d.column);
    macro_rules! event {
        ($level:ident) => {
            tracing::$level!(
                file = %d.file,
                line = d.line,
                column = d.column,
                code = d.code,
                hint = d.hint.as_deref(),
                "{at}: {}",
                d.message
            )
        };
    }
    match d.severity {
        crate::diag::Severity::Error => event!(error),
        _ => event!(warn),
    }
}

/// The fields of a span or an event, in the order they were recorded.
#[derive(Debug, Default, Clone)]
struct Fields(Vec<(&'static str, serde_json::Value)>);

impl Fields {
    fn set(&mut self, name: &'static str, value: serde_json::Value) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field.name(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.set(field.name(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.set(field.name(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.set(field.name(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.set(field.name(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.set(field.name(), format!("{value:?}").into());
    }
}

/// The layer that writes one line per event to stderr.
struct Lines {
    format: LogFormat,
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Lines {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        if let Some(span) = ctx.span(id) {
            let mut ext = span.extensions_mut();
            if let Some(fields) = ext.get_mut::<Fields>() {
                values.record(fields);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // Span fields from the outermost in, then the event's own: an inner value wins.
        let mut fields = Fields::default();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(f) = span.extensions().get::<Fields>() {
                    for (name, value) in &f.0 {
                        fields.set(name, value.clone());
                    }
                }
            }
        }
        let mut own = Fields::default();
        event.record(&mut own);
        let mut message = String::new();
        for (name, value) in own.0 {
            if name == "message" {
                message = match value {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
            } else {
                fields.set(name, value);
            }
        }
        let meta = event.metadata();
        let line = match self.format {
            LogFormat::Text => text_line(*meta.level(), &message, &fields),
            LogFormat::Json => json_line(*meta.level(), meta.target(), &message, &fields),
        };
        // One write per line, so that lines of parallel hosts never interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

/// `warning: message` with the fields after it (` host=web-1 step="install release"`).
fn text_line(level: Level, message: &str, fields: &Fields) -> String {
    let prefix = match level {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "note",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    };
    let mut line = format!("{prefix}: {message}");
    for (name, value) in &fields.0 {
        let v = match value {
            serde_json::Value::String(s) if !s.is_empty() && !s.contains([' ', '"', '=']) => {
                s.clone()
            }
            other => other.to_string(),
        };
        line.push_str(&format!(" {name}={v}"));
    }
    line.push('\n');
    line
}

/// One JSON object: timestamp, level, target, message, then every field.
fn json_line(level: Level, target: &str, message: &str, fields: &Fields) -> String {
    let mut obj = serde_json::Map::new();
    obj.insert("timestamp".into(), timestamp().into());
    obj.insert("level".into(), level.as_str().into());
    obj.insert("target".into(), target.into());
    obj.insert("message".into(), message.into());
    for (name, value) in &fields.0 {
        // The fixed keys are the line's frame; a field of the same name does not replace them.
        if !obj.contains_key(*name) {
            obj.insert((*name).to_string(), value.clone());
        }
    }
    let mut line = serde_json::Value::Object(obj).to_string();
    line.push('\n');
    line
}

/// Now, as RFC 3339 UTC with milliseconds.
fn timestamp() -> String {
    let now = crate::clock::since_epoch();
    let secs = crate::clock::rfc3339(now.as_secs());
    format!("{}.{:03}Z", secs.trim_end_matches('Z'), now.subsec_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(verbose: u8, quiet: bool, log_format: LogFormat) -> LogArgs {
        LogArgs {
            verbose,
            quiet,
            log_format,
        }
    }

    #[test]
    fn levels_follow_the_flags_and_the_environment_wins() {
        let d = |a: &LogArgs, env| directives(a, env, false).0;
        assert_eq!(
            d(&args(0, false, LogFormat::Text), None),
            "info,clarity::apply::fleet=warn"
        );
        assert_eq!(d(&args(0, false, LogFormat::Json), None), "info");
        assert_eq!(d(&args(1, false, LogFormat::Text), None), "debug");
        assert_eq!(d(&args(2, false, LogFormat::Text), None), "trace");
        assert_eq!(d(&args(5, false, LogFormat::Json), None), "trace");
        assert_eq!(d(&args(0, true, LogFormat::Json), None), "error");
        assert_eq!(d(&args(2, false, LogFormat::Text), Some("warn")), "warn");
        assert_eq!(d(&args(0, true, LogFormat::Text), Some("  ")), "error");
        // The agent on a host reads its own flags only.
        assert_eq!(
            directives(&args(0, false, LogFormat::Json), Some("trace"), true).0,
            "info"
        );
    }

    #[test]
    fn lines_carry_the_fields() {
        let mut f = Fields::default();
        f.set("host", "web-1".into());
        f.set("step", "install release 1.2.0".into());
        f.set("duration_ms", 12u64.into());
        assert_eq!(
            text_line(Level::WARN, "slow", &f),
            "warning: slow host=web-1 step=\"install release 1.2.0\" duration_ms=12\n"
        );
        let line = json_line(Level::INFO, "clarity::apply::fleet", "step done", &f);
        assert!(line.ends_with('\n') && !line.trim_end().contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "step done");
        assert_eq!(v["host"], "web-1");
        assert_eq!(v["duration_ms"], 12);
        assert_eq!(v["target"], "clarity::apply::fleet");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn a_field_does_not_replace_the_frame() {
        let mut f = Fields::default();
        f.set("level", "fake".into());
        let v: serde_json::Value =
            serde_json::from_str(&json_line(Level::ERROR, "t", "m", &f)).unwrap();
        assert_eq!(v["level"], "ERROR");
    }
}
