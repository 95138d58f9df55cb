//! How jobctl shows things to people: relative times and short durations, absolute times
//! in UTC or local time, colour by state, and tables fitted to the terminal's width. Pure
//! functions of their inputs (`now` is an argument); `--json` output never comes here.

use crate::job::UnixMillis;
use std::cell::Cell;
use std::io::IsTerminal;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// `--color`: whether tables are coloured by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorChoice {
    /// Colour when standard output is a terminal and NO_COLOR is not set.
    #[default]
    Auto,
    /// Always colour (even through a pipe, and despite NO_COLOR).
    Always,
    /// Never colour.
    Never,
}

/// Whether to colour: `always` and `never` say so; `auto` colours a terminal unless
/// `NO_COLOR` is set to anything but the empty string (no-color.org).
pub fn color_enabled(choice: ColorChoice, is_terminal: bool, no_color: Option<&str>) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => is_terminal && no_color.is_none_or(str::is_empty),
    }
}

/// The widest a cell gets when the width to fit is unknown (output to a pipe or file).
pub const MAX_CELL: usize = 60;

/// How one jobctl run prints: the time it runs at, colour, UTC or local, and the width
/// to fit tables into (`None`: not a terminal; cells are capped at [`MAX_CELL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub now: UnixMillis,
    pub color: bool,
    pub utc: bool,
    pub width: Option<usize>,
    /// Standard output is this process's and a terminal (where `top` runs live).
    pub terminal: bool,
}

impl Style {
    /// Plain: no colour, UTC, no width. What tests and library callers get by default.
    pub fn plain(now: UnixMillis) -> Style {
        Style {
            now,
            color: false,
            utc: true,
            width: None,
            terminal: false,
        }
    }

    /// The style for the output: a terminal or not (only when the output is this
    /// process's standard output, `on_stdout`), its width (`COLUMNS` wins when set, so
    /// `COLUMNS=100 jobctl list | less` fits too), `NO_COLOR`.
    pub fn detect(choice: ColorChoice, utc: bool, now: UnixMillis, on_stdout: bool) -> Style {
        let tty = on_stdout && std::io::stdout().is_terminal();
        let no_color = std::env::var("NO_COLOR").ok();
        let columns = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.trim().parse::<usize>().ok())
            .filter(|c| *c > 0);
        let width = columns.or_else(|| {
            tty.then(|| ratatui::crossterm::terminal::size().ok())
                .flatten()
                .map(|(w, _)| usize::from(w))
                .filter(|w| *w > 0)
        });
        Style {
            now,
            color: color_enabled(choice, tty, no_color.as_deref()),
            utc,
            width,
            terminal: tty,
        }
    }

    /// A time relative to now: "3m ago", "in 12s".
    pub fn ago(&self, at: UnixMillis) -> String {
        relative(at, self.now)
    }

    /// An optional time relative to now, "-" for none.
    pub fn ago_or_dash(&self, at: Option<UnixMillis>) -> String {
        at.map(|t| self.ago(t)).unwrap_or_else(|| "-".into())
    }

    /// An absolute time with its relative one: "2026-12-01 08:34:09Z (3m ago)".
    pub fn time(&self, at: UnixMillis) -> String {
        format!("{} ({})", absolute(at, self.utc), self.ago(at))
    }

    /// An optional absolute time, "-" for none.
    pub fn time_or_dash(&self, at: Option<UnixMillis>) -> String {
        at.map(|t| self.time(t)).unwrap_or_else(|| "-".into())
    }

    /// `text` in the colour of a state or attempt outcome, when colour is on.
    pub fn paint(&self, state: &str, text: &str) -> String {
        match (self.color, state_color(state)) {
            (true, Some(code)) => format!("\x1b[{code}m{text}\x1b[0m"),
            _ => text.to_string(),
        }
    }

    /// The lines of a table (first row the header), fitted to the width.
    pub fn table(&self, rows: &[Vec<String>]) -> Vec<String> {
        render_table(rows, self)
    }
}

thread_local! {
    // The style of the jobctl run on this thread, set once by `cli::run`, so that every
    // table (including ones added later) is fitted and coloured alike. Per thread because
    // tests run many jobctl commands at once in one process.
    static CURRENT: Cell<Option<Style>> = const { Cell::new(None) };
}

/// Sets the style of the jobctl run on this thread.
pub fn set_current(style: Style) {
    CURRENT.with(|c| c.set(Some(style)));
}

/// The style of the jobctl run on this thread (plain if none was set).
pub fn current(now: UnixMillis) -> Style {
    CURRENT
        .with(|c| c.get())
        .unwrap_or_else(|| Style::plain(now))
}

/// The SGR colour of a state or outcome. Written by hand, not through crossterm's styles,
/// because those consult NO_COLOR themselves and would undo `--color always`.
fn state_color(state: &str) -> Option<&'static str> {
    Some(match state.to_ascii_lowercase().as_str() {
        "queued" => "34",                 // blue
        "running" | "claimed" => "36",    // cyan
        "retrying" | "retry" => "33",     // yellow
        "waiting" | "paused" => "35",     // magenta
        "succeeded" => "32",              // green
        "dead" | "lease_expired" => "31", // red
        "cancelled" | "interrupted" => "90",
        _ => return None,
    })
}

/// A time relative to `now`, in its largest whole unit: "now", "12s ago", "in 3m",
/// "2h ago", "5d ago".
pub fn relative(at: UnixMillis, now: UnixMillis) -> String {
    let diff = now.saturating_sub(at);
    let span = diff.unsigned_abs() / 1000;
    if span == 0 {
        return "now".into();
    }
    let amount = match span {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    };
    if diff > 0 {
        format!("{amount} ago")
    } else {
        format!("in {amount}")
    }
}

/// A duration for people: "850ms", "1.2s", "3m04s", "2h05m", "3d04h". Negative
/// durations (clock steps) show as 0ms.
pub fn short_duration(ms: i64) -> String {
    let ms = ms.max(0) as u64;
    match ms {
        m if m < 1000 => format!("{m}ms"),
        m if m < 60_000 => format!("{}.{}s", m / 1000, (m % 1000) / 100),
        m if m < 3_600_000 => format!("{}m{:02}s", m / 60_000, (m % 60_000) / 1000),
        m if m < 86_400_000 => format!("{}h{:02}m", m / 3_600_000, (m % 3_600_000) / 60_000),
        m => format!("{}d{:02}h", m / 86_400_000, (m % 86_400_000) / 3_600_000),
    }
}

/// An absolute time to the second: "2026-12-01 08:34:09Z" in UTC, or local time with its
/// offset, "2026-12-01 09:34:09 +01:00" (the TZ variable or /etc/localtime decides).
pub fn absolute(at: UnixMillis, utc: bool) -> String {
    let Some(t) = chrono::DateTime::from_timestamp_millis(at) else {
        return at.to_string();
    };
    if utc {
        t.format("%Y-%m-%d %H:%M:%SZ").to_string()
    } else {
        t.with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S %:z")
            .to_string()
    }
}

/// Text on one line: control characters (newline, ESC, ...) are escaped as `\n`,
/// `\u{1b}`, so a value can neither move the cursor nor break a table's rows.
pub fn one_line(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// How many terminal columns `text` takes.
pub fn width_of(text: &str) -> usize {
    UnicodeWidthStr::width(text)
}

/// `text` cut to at most `width` columns, ending in "…" when cut.
pub fn truncate_to_width(text: &str, width: usize) -> String {
    if width_of(text) <= width {
        return text.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if used + w > width - 1 {
            break;
        }
        used += w;
        out.push(c);
    }
    out.push('…');
    out
}

/// Column widths that fit `budget` columns of content: the widest column gives way one
/// column at a time, none below its floor. When even the floors do not fit, the floors.
pub fn fit_widths(natural: &[usize], floors: &[usize], budget: usize) -> Vec<usize> {
    let floor = |i: usize| floors.get(i).copied().unwrap_or(1).min(natural[i]);
    let mut widths: Vec<usize> = (0..natural.len())
        .map(|i| natural[i].min(budget).max(floor(i)))
        .collect();
    loop {
        let total: usize = widths.iter().sum();
        if total <= budget {
            return widths;
        }
        // The widest column that can still give way (ties: the rightmost, where the
        // free text usually is).
        let Some(i) = (0..widths.len())
            .filter(|&i| widths[i] > floor(i))
            .max_by_key(|&i| (widths[i], i))
        else {
            return widths;
        };
        let excess = total - budget;
        let second = (0..widths.len())
            .filter(|&j| j != i)
            .map(|j| widths[j])
            .max()
            .unwrap_or(0);
        // Shrink straight down to the next-widest (or the floor) to stay fast for huge cells.
        let step = excess
            .min(widths[i] - floor(i))
            .min(widths[i].saturating_sub(second).max(1));
        widths[i] -= step;
    }
}

/// A table's lines: two spaces between columns, the last column unpadded, every cell on
/// one line and cut with "…" to fit `style.width` (or [`MAX_CELL`] when it is unknown).
/// A column headed STATE or OUTCOME, and a header naming a state, are coloured by state.
pub fn render_table(rows: &[Vec<String>], style: &Style) -> Vec<String> {
    const GAP: usize = 2;
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    if columns == 0 {
        return Vec::new();
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| one_line(c)).collect())
        .collect();
    let cap = style.width.unwrap_or(MAX_CELL);
    let natural: Vec<usize> = (0..columns)
        .map(|c| {
            cells
                .iter()
                .filter_map(|r| r.get(c))
                .map(|v| width_of(v).min(cap))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let widths = match style.width {
        Some(width) => {
            let header = &cells[0];
            let floors: Vec<usize> = (0..columns)
                .map(|c| header.get(c).map(|h| width_of(h)).unwrap_or(0).max(3))
                .collect();
            let budget = width.saturating_sub(GAP * (columns - 1));
            fit_widths(&natural, &floors, budget)
        }
        None => natural,
    };
    let colored_columns: Vec<bool> = (0..columns)
        .map(|c| {
            matches!(
                cells[0].get(c).map(String::as_str),
                Some("STATE") | Some("OUTCOME")
            )
        })
        .collect();
    cells
        .iter()
        .enumerate()
        .map(|(r, row)| {
            let mut line = String::new();
            for (c, value) in row.iter().enumerate() {
                let text = truncate_to_width(value, widths[c]);
                let pad = if c + 1 == row.len() {
                    0
                } else {
                    widths[c].saturating_sub(width_of(&text))
                };
                let painted = if r == 0 || colored_columns[c] {
                    style.paint(value, &text)
                } else {
                    text
                };
                if c > 0 {
                    line.push_str(&" ".repeat(GAP));
                }
                line.push_str(&painted);
                line.push_str(&" ".repeat(pad));
            }
            line.trim_end().to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMillis = 1_764_578_049_000; // 2025-12-01 08:34:09Z

    #[test]
    fn relative_times_use_the_largest_whole_unit() {
        assert_eq!(relative(NOW, NOW), "now");
        assert_eq!(relative(NOW - 999, NOW), "now");
        assert_eq!(relative(NOW - 12_000, NOW), "12s ago");
        assert_eq!(relative(NOW + 12_400, NOW), "in 12s");
        assert_eq!(relative(NOW - 3 * 60_000 - 59_000, NOW), "3m ago");
        assert_eq!(relative(NOW - 47 * 3_600_000, NOW), "47h ago");
        assert_eq!(relative(NOW - 5 * 86_400_000, NOW), "5d ago");
        assert_eq!(relative(NOW + 2 * 3_600_000, NOW), "in 2h");
        // Far-away times do not overflow.
        assert_eq!(relative(i64::MIN, i64::MAX), relative(i64::MIN, i64::MAX));
        assert!(relative(0, i64::MAX).ends_with("d ago"));
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(short_duration(0), "0ms");
        assert_eq!(short_duration(850), "850ms");
        assert_eq!(short_duration(1_234), "1.2s");
        assert_eq!(short_duration(59_999), "59.9s");
        assert_eq!(short_duration(184_000), "3m04s");
        assert_eq!(short_duration(2 * 3_600_000 + 5 * 60_000), "2h05m");
        assert_eq!(short_duration(3 * 86_400_000 + 4 * 3_600_000), "3d04h");
        assert_eq!(short_duration(-5), "0ms");
        assert_eq!(short_duration(i64::MAX), short_duration(i64::MAX));
    }

    #[test]
    fn absolute_times_in_utc_or_local() {
        assert_eq!(absolute(NOW, true), "2025-12-01 08:34:09Z");
        let local = absolute(NOW, false);
        // Local time carries its offset, whatever the machine's zone.
        assert!(
            local.len() == "2025-12-01 08:34:09 +00:00".len() && local.contains(':'),
            "{local}"
        );
        assert_eq!(absolute(i64::MAX, true), i64::MAX.to_string());
    }

    #[test]
    fn no_color_and_the_color_flag() {
        assert!(color_enabled(ColorChoice::Auto, true, None));
        assert!(color_enabled(ColorChoice::Auto, true, Some("")));
        assert!(!color_enabled(ColorChoice::Auto, true, Some("1")));
        assert!(!color_enabled(ColorChoice::Auto, false, None));
        assert!(color_enabled(ColorChoice::Always, false, Some("1")));
        assert!(!color_enabled(ColorChoice::Never, true, None));
    }

    #[test]
    fn paint_colours_states_only_when_on() {
        let mut style = Style::plain(NOW);
        assert_eq!(style.paint("dead", "dead"), "dead");
        style.color = true;
        assert_eq!(style.paint("dead", "dead"), "\x1b[31mdead\x1b[0m");
        assert_eq!(style.paint("DEAD", "DEAD"), "\x1b[31mDEAD\x1b[0m");
        assert_eq!(style.paint("noop", "noop"), "noop");
    }

    #[test]
    fn one_line_escapes_control_characters() {
        assert_eq!(one_line("plain é 日本"), "plain é 日本");
        assert_eq!(one_line("a\nb\x1b[31m"), "a\\nb\\u{1b}[31m");
    }

    #[test]
    fn truncation_counts_display_columns() {
        assert_eq!(truncate_to_width("hello", 5), "hello");
        assert_eq!(truncate_to_width("hello world", 6), "hello…");
        assert_eq!(truncate_to_width("日本語のテキスト", 7), "日本語…");
        assert!(width_of(&truncate_to_width("日本語のテキスト", 7)) <= 7);
        assert_eq!(truncate_to_width("abc", 0), "");
        assert_eq!(truncate_to_width("abc", 1), "…");
    }

    #[test]
    fn the_widest_column_gives_way_first() {
        assert_eq!(fit_widths(&[2, 10, 40], &[2, 5, 5], 60), vec![2, 10, 40]);
        assert_eq!(fit_widths(&[2, 10, 40], &[2, 5, 5], 30), vec![2, 10, 18]);
        assert_eq!(fit_widths(&[2, 30, 30], &[2, 5, 5], 32), vec![2, 15, 15]);
        // Floors hold even when the budget is too small.
        assert_eq!(fit_widths(&[2, 30, 30], &[2, 5, 5], 3), vec![2, 5, 5]);
        assert_eq!(fit_widths(&[1_000_000], &[3], 80), vec![80]);
    }

    fn rows(long: &str) -> Vec<Vec<String>> {
        vec![
            vec![
                "ID".into(),
                "STATE".into(),
                "QUEUE".into(),
                "LAST ERROR".into(),
            ],
            vec![
                "1".into(),
                "dead".into(),
                long.into(),
                "boom\nline two".into(),
            ],
            vec!["22".into(), "queued".into(), "default".into(), "".into()],
        ]
    }

    #[test]
    fn tables_fit_the_width_whatever_the_values() {
        let long = "q".repeat(100_000);
        let mut style = Style::plain(NOW);
        style.width = Some(50);
        let lines = render_table(&rows(&long), &style);
        assert_eq!(lines.len(), 3);
        for line in &lines {
            assert!(width_of(line) <= 50, "{line}");
            assert!(!line.contains('\n'));
        }
        assert!(lines[1].contains('…'), "{}", lines[1]);
        assert!(lines[1].contains("boom\\nline"), "{}", lines[1]);
        // Columns line up: STATE starts at the same place in every row.
        let at = |l: &str, w: &str| l.find(w).unwrap();
        assert_eq!(at(&lines[0], "STATE"), at(&lines[1], "dead"));
        assert_eq!(at(&lines[0], "STATE"), at(&lines[2], "queued"));
        // Width unknown (a pipe): cells are capped.
        let piped = render_table(&rows(&long), &Style::plain(NOW));
        assert!(
            piped.iter().all(|l| width_of(l) < 2 * MAX_CELL),
            "{piped:?}"
        );
        // A terminal too narrow for the headers still gives lines, without a panic.
        style.width = Some(5);
        assert_eq!(render_table(&rows(&long), &style).len(), 3);
        style.width = Some(0);
        assert_eq!(render_table(&rows(&long), &style).len(), 3);
        assert!(render_table(&[], &style).is_empty());
    }

    #[test]
    fn tables_colour_the_state_column_without_breaking_alignment() {
        let mut style = Style::plain(NOW);
        style.color = true;
        style.width = Some(80);
        let lines = render_table(&rows("default"), &style);
        assert!(lines[1].contains("\x1b[31mdead\x1b[0m"), "{:?}", lines[1]);
        assert!(lines[2].contains("\x1b[34mqueued\x1b[0m"), "{:?}", lines[2]);
        // Not the queue column, even though "default" is not a state anyway: check ID.
        assert!(lines[1].starts_with("1 "), "{:?}", lines[1]);
        let strip = |l: &str| {
            l.replace("\x1b[31m", "")
                .replace("\x1b[34m", "")
                .replace("\x1b[0m", "")
        };
        let plain = render_table(
            &rows("default"),
            &Style {
                color: false,
                ..style
            },
        );
        assert_eq!(lines.iter().map(|l| strip(l)).collect::<Vec<_>>(), plain);
    }
}
