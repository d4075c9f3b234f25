//! Logging: `tracing` to stdout and, through `tracing-appender`, to daily files in
//! `LOG_DIR`. `RUST_LOG` filters both; the default is `info` (warp's per-request lines at `warn`).

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, FormatFields, Writer};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

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
    let (file_writer, guard) = tracing_appender::non_blocking(file);
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,warp=warn"));
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer())
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .fmt_fields(FileFields::default())
                .with_writer(file_writer),
        )
        .try_init()
        .map_err(std::io::Error::other)?;
    Ok(guard)
}

/// The file layer's field formatter. Span fields are formatted once per formatter
/// *type* and cached on the span, so two layers sharing `DefaultFields` would
/// write fields recorded later (`call_sid`) twice, and stdout's colour codes into
/// the file. A type of its own keeps the file's copy separate and plain.
#[derive(Default)]
struct FileFields(DefaultFields);

impl<'writer> FormatFields<'writer> for FileFields {
    fn format_fields<R: RecordFields>(
        &self,
        writer: Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        self.0.format_fields(writer, fields)
    }
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
