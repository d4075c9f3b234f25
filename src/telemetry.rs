//! Logging: `tracing` to stdout and, through `tracing-appender`, to daily files in
//! `LOG_DIR`. `RUST_LOG` filters both; the default is `info` (warp's per-request lines at `warn`).
//! Every field value is escaped on the way out (see [`EscapedFields`]).
//!
//! May import nothing of voxrelay (the order is checked by `.ci/layers`).

use std::fmt::{self, Write as _};
use std::sync::OnceLock;

use tracing::field::{Field, Visit};
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::{FormatFields, Writer};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Log lines that may wait for the file writer; past that, lines are dropped
/// (and counted: [`log_lines_dropped`]) rather than slowing calls. Each slot is
/// 32 bytes, resident from the start. 4 096 lines lost none at `info` under
/// the benchmark's saturation of 9 300 turns a second (BENCHMARKS.md, issue 17).
const LOG_QUEUE_LINES: usize = 4 * 1024;

/// Installs the global subscriber. Keep the guard alive until exit: dropping it
/// flushes the file writer.
pub fn init(log_dir: &str) -> Result<WorkerGuard, std::io::Error> {
    std::fs::create_dir_all(log_dir)?;
    let file = tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix("voxrelay")
        .filename_suffix("log")
        .build(log_dir)
        .map_err(std::io::Error::other)?;
    let (file_writer, guard) = file_queue(file, LOG_QUEUE_LINES);
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,warp=warn"));
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().fmt_fields(EscapedFields))
        .with(file_layer(file_writer))
        .try_init()
        .map_err(std::io::Error::other)?;
    Ok(guard)
}

/// Lines the log file's writer dropped because its queue was full (see
/// [`log_lines_dropped`]).
static DROPPED_LINES: OnceLock<ErrorCounter> = OnceLock::new();

/// The queue of `lines` to the thread that writes `file`, whose dropped lines
/// [`log_lines_dropped`] reports (the first queue made counts). The queue is
/// allocated whole up front: tracing-appender's default of 128 000 lines costs
/// 4 MiB of resident memory on an idle server.
fn file_queue<W: std::io::Write + Send + 'static>(
    file: W,
    lines: usize,
) -> (NonBlocking, WorkerGuard) {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(lines)
        .lossy(true)
        .finish(file);
    let _ = DROPPED_LINES.set(writer.error_counter());
    (writer, guard)
}

/// Log lines lost since start because the log file could not keep up
/// (`voxrelay_log_lines_dropped_total`): the calls never wait for the disk.
pub fn log_lines_dropped() -> u64 {
    DROPPED_LINES
        .get()
        .map_or(0, |counter| counter.dropped_lines() as u64)
}

/// The log-file layer: plain text, every field escaped.
pub fn file_layer<S, W>(writer: W) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .fmt_fields(FileFields)
        .with_writer(writer)
}

/// The console's field formatter: every value (the message included) is written
/// with control characters escaped, so nothing a caller or a peer sent (a number
/// with a newline, a terminal escape) can forge a log line or drive a terminal.
#[derive(Default)]
pub struct EscapedFields;

/// The file's field formatter: the same, as a type of its own. Span fields are
/// formatted once per formatter *type* and cached on the span, so two layers
/// sharing one type would write fields recorded later (`call_sid`) twice.
#[derive(Default)]
pub struct FileFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        format_escaped(writer, fields)
    }
}

impl<'writer> FormatFields<'writer> for FileFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        format_escaped(writer, fields)
    }
}

fn format_escaped<R: RecordFields>(writer: Writer<'_>, fields: R) -> fmt::Result {
    let mut visitor = EscapingVisitor {
        writer,
        result: Ok(()),
        first: true,
    };
    fields.record(&mut visitor);
    visitor.result
}

/// Writes `message` bare and other fields as `name=value`, space-separated, like
/// tracing's default format, with every value escaped.
struct EscapingVisitor<'w> {
    writer: Writer<'w>,
    result: fmt::Result,
    first: bool,
}

impl Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        if name.starts_with("log.") {
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        self.result = (|| {
            self.writer.write_str(separator)?;
            if name != "message" {
                self.writer
                    .write_str(name.strip_prefix("r#").unwrap_or(name))?;
                self.writer.write_char('=')?;
            }
            write!(Escaping(&mut self.writer), "{value:?}")
        })();
    }
}

/// A writer that escapes control characters (C0, DEL, C1) and the Unicode line,
/// paragraph and direction-override characters as `\n`, `\u{1b}`, ...
struct Escaping<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(at) = rest.find(needs_escape) {
            self.0.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or(' ');
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c => write!(self.0, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `value` as it would appear in a log line (for tests).
pub fn escape_for_log(value: &str) -> String {
    let mut out = String::new();
    let _ = Escaping(&mut out).write_str(value);
    out
}

/// The span every task of one call runs in; `call_sid` and `session_id` are
/// recorded once Twilio's first message names them.
pub fn call_span(transport: &'static str) -> tracing::Span {
    tracing::info_span!(
        "call",
        transport,
        call_sid = tracing::field::Empty,
        session_id = tracing::field::Empty
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log file whose disk has stalled until the test lets it go.
    struct StalledFile(std::sync::mpsc::Receiver<()>);

    impl std::io::Write for StalledFile {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.recv();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_the_file_cannot_take_are_dropped_and_counted() {
        use std::io::Write as _;
        let (release, stalled) = std::sync::mpsc::channel();
        let (mut writer, guard) = file_queue(StalledFile(stalled), 4);
        for i in 0..20 {
            // One write per line, as the fmt layer does; never blocks, however
            // far behind the file is.
            let _ = writer.write_all(format!("line {i}\n").as_bytes());
        }
        // The writer thread holds at most one line, the queue four: the rest went.
        let dropped = log_lines_dropped();
        assert!((15..=16).contains(&dropped), "{dropped}");
        drop(release);
        drop(guard);
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            escape_for_log("+55\n2026-01-01 INFO forged\r\u{1b}[31m\u{85}\u{2028}ok"),
            "+55\\n2026-01-01 INFO forged\\r\\u{1b}[31m\\u{85}\\u{2028}ok"
        );
        assert_eq!(escape_for_log("Olá, ação 😀"), "Olá, ação 😀");
    }
}
