//! Log output for the daemon: human-readable text, JSON, or — when stderr is connected to
//! the systemd journal — lines without timestamps that start with the `<N>` syslog level
//! prefix journald understands (`<3>` error, `<4>` warn, `<6>` info, `<7>` debug/trace).
//!
//! systemd sets `JOURNAL_STREAM=DEV:INODE` for a service whose stderr is the journal. The
//! variable is inherited by children whose stderr points elsewhere, so it only counts
//! when it matches stderr's device and inode (as `sd_journal_stream_fd(3)` advises).
//!
//! Text and journald lines escape control characters in every field and message
//! ([`EscapedFields`]): values come from job errors, file names and payloads, and a
//! newline in one must not start a line that looks like the daemon's own. JSON escapes
//! them already.

use crate::config::LogFormat;
use std::fmt;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// The variable systemd sets when stdout/stderr are connected to the journal.
pub const JOURNAL_STREAM_ENV: &str = "JOURNAL_STREAM";

/// Installs the global subscriber. `RUST_LOG` overrides `level`.
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only for a person at a terminal, not in files or the journal.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        // JSON stays JSON: a prefix would break every line for the machine reading it.
        LogFormat::Json => builder.json().init(),
        LogFormat::Text if stderr_is_journal() => builder
            .fmt_fields(EscapedFields::default())
            .event_format(JournaldFormat)
            .init(),
        LogFormat::Text => builder.fmt_fields(EscapedFields::default()).init(),
    }
}

/// Whether `JOURNAL_STREAM` names the file stderr is open on.
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os(JOURNAL_STREAM_ENV) else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(parse_journal_stream) else {
        return false;
    };
    // SAFETY: fstat on fd 2 with a zeroed stat buffer we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    st.st_dev as u64 == dev && st.st_ino as u64 == ino
}

/// `JOURNAL_STREAM` is `DEV:INODE`, both decimal.
pub fn parse_journal_stream(value: &str) -> Option<(u64, u64)> {
    let (dev, ino) = value.trim().split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// The default field format (`message key=value ...`), with every control character
/// escaped as Rust writes it (`\n`, `\u{1b}`), so one event is always one line and no
/// value can carry terminal escapes. Span fields go through it too.
#[derive(Default)]
pub struct EscapedFields(DefaultFields);

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut text = String::new();
        self.0.format_fields(Writer::new(&mut text), fields)?;
        writer.write_str(&escape_controls(&text))
    }
}

/// `text` with each control character (newline, carriage return, ESC, ...) escaped.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The syslog priority journald reads from the start of a line.
pub fn level_prefix(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "<3>",
        Level::WARN => "<4>",
        Level::INFO => "<6>",
        Level::DEBUG | Level::TRACE => "<7>",
    }
}

/// One line per event: `<N>message key=value ...`. No timestamp (journald adds its own)
/// and no level word (the prefix carries it). Fields come escaped ([`EscapedFields`]), so
/// an event is one line; should a newline get through anyway, every line still gets the
/// prefix, since journald splits the stream at newlines.
pub struct JournaldFormat;

impl<S, N> FormatEvent<S, N> for JournaldFormat
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
        let prefix = level_prefix(event.metadata().level());
        let mut text = String::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                text.push_str(span.name());
                text.push_str(": ");
            }
        }
        ctx.field_format()
            .format_fields(Writer::new(&mut text), event)?;
        for line in text.lines() {
            writeln!(writer, "{prefix}{line}")?;
        }
        if text.is_empty() {
            writeln!(writer, "{prefix}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_is_dev_colon_inode() {
        assert_eq!(parse_journal_stream("8:12345"), Some((8, 12345)));
        assert_eq!(parse_journal_stream(" 0:1\n"), Some((0, 1)));
        assert_eq!(parse_journal_stream("8"), None);
        assert_eq!(parse_journal_stream("a:b"), None);
    }

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_kept() {
        assert_eq!(escape_controls("took in a.csv"), "took in a.csv");
        assert_eq!(
            escape_controls("x\n2026-01-01 INFO jobd ready\r\t\u{1b}[31m"),
            "x\\n2026-01-01 INFO jobd ready\\r\\t\\u{1b}[31m"
        );
        assert_eq!(escape_controls("caf\u{e9} \u{85}"), "caf\u{e9} \\u{85}");
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(level_prefix(&Level::ERROR), "<3>");
        assert_eq!(level_prefix(&Level::WARN), "<4>");
        assert_eq!(level_prefix(&Level::INFO), "<6>");
        assert_eq!(level_prefix(&Level::DEBUG), "<7>");
        assert_eq!(level_prefix(&Level::TRACE), "<7>");
    }
}
