//! `jobctl top`: a live view of the queue refreshed about once a second (counts per queue
//! and state, throughput, what each worker runs and since when, held destinations, recent
//! deaths), drawn with ratatui on crossterm; one plain snapshot when standard output is
//! not a terminal.

use crate::cli::CtlError;
use crate::clock::Clock;
use crate::flow::DestinationView;
use crate::job::{JobState, UnixMillis};
use crate::present::{short_duration, Style};
use crate::store::{Death, RunningJob, Stats, Store};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style as TuiStyle};
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the live view reads the database again.
pub const REFRESH: Duration = Duration::from_secs(1);
/// At most this many running jobs and deaths are read per refresh.
const LIST_LIMIT: usize = 200;
/// Deaths shown.
const DEATHS: usize = 10;

/// Everything one screen shows, read at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub at: UnixMillis,
    pub stats: Stats,
    pub running: Vec<RunningJob>,
    pub deaths: Vec<Death>,
    /// Destinations (and keys) held now: none of their jobs is claimed.
    pub held: Vec<DestinationView>,
}

impl Snapshot {
    pub fn read(db: &dyn Store, now: UnixMillis) -> Result<Snapshot, CtlError> {
        Ok(Snapshot {
            at: now,
            stats: db.stats(now)?,
            running: db.running_jobs(LIST_LIMIT)?,
            deaths: db.recent_deaths(DEATHS)?,
            held: db
                .destinations(&[], now)?
                .into_iter()
                .filter(|d| d.is_held(now))
                .collect(),
        })
    }
}

/// A titled table of the view: header row first.
pub struct Section {
    pub title: String,
    pub rows: Vec<Vec<String>>,
    /// Shown instead of the table when it has no rows.
    pub empty: &'static str,
}

/// The view's sections, as rows of text (pure: `style.now` is the time it is shown at).
pub fn sections(s: &Snapshot, style: &Style) -> Vec<Section> {
    let mut header = vec!["QUEUE".to_string()];
    header.extend(JobState::ALL.iter().map(|s| s.as_str().to_uppercase()));
    header.push("OLDEST READY".into());
    let mut counts = vec![header];
    for (queue, q) in &s.stats.queues {
        let mut row = vec![queue.clone()];
        row.extend(
            JobState::ALL
                .iter()
                .map(|st| q.states.get(st.as_str()).copied().unwrap_or(0).to_string()),
        );
        row.push(
            q.oldest_ready_age_ms
                .map(short_duration)
                .unwrap_or_else(|| "-".into()),
        );
        counts.push(row);
    }
    let mut throughput = vec![vec![
        "FINISHED".to_string(),
        "SUCCEEDED".into(),
        "DEAD".into(),
        "CANCELLED".into(),
        "PER MINUTE".into(),
    ]];
    for (label, finished, minutes) in [
        ("last minute", &s.stats.finished_last_minute, 1.0),
        ("last hour", &s.stats.finished_last_hour, 60.0),
    ] {
        let n = |state: &str| finished.get(state).copied().unwrap_or(0);
        let total = n("succeeded") + n("dead") + n("cancelled");
        throughput.push(vec![
            label.to_string(),
            n("succeeded").to_string(),
            n("dead").to_string(),
            n("cancelled").to_string(),
            format!("{:.1}", total as f64 / minutes),
        ]);
    }
    let mut running = vec![vec![
        "WORKER".to_string(),
        "JOB".into(),
        "KIND".into(),
        "QUEUE".into(),
        "ATTEMPT".into(),
        "STATE".into(),
        "FOR".into(),
        "SINCE".into(),
    ]];
    for r in &s.running {
        // A job claimed ahead has not started: its time counts from the claim.
        let (state, since) = match r.started_at {
            Some(started) => ("running", started),
            None => ("claimed", r.since),
        };
        running.push(vec![
            r.worker.clone().unwrap_or_else(|| "-".into()),
            r.id.to_string(),
            r.kind.clone(),
            r.queue.clone(),
            r.attempt.to_string(),
            state.into(),
            short_duration(style.now - since),
            crate::present::absolute(since, style.utc),
        ]);
    }
    let mut deaths = vec![vec![
        "JOB".to_string(),
        "KIND".into(),
        "QUEUE".into(),
        "ATTEMPTS".into(),
        "DIED".into(),
        "LAST ERROR".into(),
    ]];
    for d in &s.deaths {
        deaths.push(vec![
            d.id.to_string(),
            d.kind.clone(),
            d.queue.clone(),
            d.attempts.to_string(),
            style.ago(d.finished_at),
            d.last_error.clone().unwrap_or_default(),
        ]);
    }
    let mut held = vec![vec![
        "DESTINATION".to_string(),
        "WAITING".into(),
        "HELD UNTIL".into(),
        "LEFT".into(),
        "WHY".into(),
    ]];
    for d in &s.held {
        let until = d.held_until.unwrap_or(style.now);
        held.push(vec![
            d.label(),
            d.waiting.to_string(),
            crate::present::absolute(until, style.utc),
            short_duration(until - style.now),
            d.hold_reason.clone().unwrap_or_default(),
        ]);
    }
    vec![
        Section {
            title: "Queues".into(),
            rows: counts,
            empty: "no jobs",
        },
        Section {
            title: "Throughput".into(),
            rows: throughput,
            empty: "",
        },
        Section {
            title: format!(
                "Workers ({} running, {} claimed ahead)",
                s.stats.total(JobState::Running),
                s.stats.claimed()
            ),
            rows: running,
            empty: "no job is running",
        },
        Section {
            title: "Held destinations".into(),
            rows: held,
            empty: "no destination is held",
        },
        Section {
            title: "Recent deaths".into(),
            rows: deaths,
            empty: "no dead jobs",
        },
    ]
}

/// The snapshot as plain lines: what `jobctl top` prints when not on a terminal.
pub fn snapshot_lines(s: &Snapshot, style: &Style, title: &str) -> Vec<String> {
    let mut lines = vec![format!(
        "{title} at {}",
        crate::present::absolute(s.at, style.utc)
    )];
    for section in sections(s, style) {
        lines.push(String::new());
        lines.push(section.title.clone());
        if section.rows.len() <= 1 {
            lines.push(section.empty.to_string());
        } else {
            lines.extend(style.table(&section.rows));
        }
    }
    lines
}

/// Restores the terminal however the view ends (return, error or panic).
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// The live view on this process's terminal until `q`, Esc, Ctrl-C, SIGTERM or SIGHUP.
/// No mouse capture, so it works over any SSH session and leaves the terminal's own
/// copy and paste alone.
pub fn run_live(
    db: &dyn Store,
    style: Style,
    title: &str,
    clock: &dyn Clock,
) -> Result<(), CtlError> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGINT,
    ] {
        let _ = signal_hook::flag::register(signal, Arc::clone(&stop));
    }
    let mut terminal = ratatui::try_init()
        .map_err(|e| CtlError::Failure(format!("cannot set up the terminal: {e}")))?;
    let _guard = TerminalGuard;
    let mut next_read = Instant::now();
    let mut snapshot: Option<Snapshot> = None;
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() >= next_read {
            let now = clock.now_ms();
            // A busy or briefly missing database is shown, not fatal: the view goes on.
            let error = match Snapshot::read(db, now) {
                Ok(s) => {
                    snapshot = Some(s);
                    None
                }
                Err(e) => Some(e.to_string()),
            };
            next_read = Instant::now() + REFRESH;
            let shown = Style { now, ..style };
            terminal
                .draw(|frame| draw(frame, snapshot.as_ref(), error.as_deref(), &shown, title))
                .map_err(|e| CtlError::Failure(format!("cannot draw: {e}")))?;
        }
        // Short polls, so a signal is noticed quickly too.
        let wait = next_read
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(200));
        // Wait on the terminal ourselves: crossterm's own poll reads end-of-file from a
        // hung-up terminal over and over and never returns.
        match terminal_input(wait) {
            Input::HungUp => break,
            Input::None => continue,
            Input::Ready => {}
        }
        let input = |e: std::io::Error| CtlError::Failure(format!("terminal input: {e}"));
        while event::poll(Duration::ZERO).map_err(input)? {
            match event::read().map_err(input)? {
                Event::Key(key) if key.kind != KeyEventKind::Release => {
                    let ctrl_c = key.modifiers.contains(KeyModifiers::CONTROL)
                        && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('d'));
                    if ctrl_c || matches!(key.code, KeyCode::Char('q') | KeyCode::Esc) {
                        return Ok(());
                    }
                }
                Event::Resize(..) => next_read = Instant::now(),
                _ => {}
            }
        }
    }
    Ok(())
}

/// What the terminal on standard input has for the view.
enum Input {
    /// Bytes to read (keys, or a resize report).
    Ready,
    /// Nothing within the wait.
    None,
    /// Its other end went away (an SSH link dropped, tmux killed), which does not always
    /// come with a SIGHUP: the view ends instead of spinning on unseen.
    HungUp,
}

/// Waits up to `wait` for the terminal on standard input.
fn terminal_input(wait: Duration) -> Input {
    let mut fd = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    let timeout = wait.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: poll(2) on one pollfd that lives for the call.
    let ready = unsafe { libc::poll(&mut fd, 1, timeout) };
    if ready <= 0 {
        // A signal (EINTR) or the timeout: the loop looks at the stop flag and the clock.
        return Input::None;
    }
    if fd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
        return Input::HungUp;
    }
    Input::Ready
}

fn tui_color(state: &str) -> Option<Color> {
    Some(match state.to_ascii_lowercase().as_str() {
        "queued" => Color::Blue,
        "running" => Color::Cyan,
        "retrying" => Color::Yellow,
        "waiting" => Color::Magenta,
        "succeeded" => Color::Green,
        "dead" => Color::Red,
        "cancelled" => Color::DarkGray,
        _ => return None,
    })
}

fn draw(
    frame: &mut ratatui::Frame,
    snapshot: Option<&Snapshot>,
    error: Option<&str>,
    style: &Style,
    title: &str,
) {
    let heading = format!(
        "{title}  {}  (every {}s; q quits)",
        crate::present::absolute(style.now, style.utc),
        REFRESH.as_secs()
    );
    let sections = snapshot.map(|s| sections(s, style)).unwrap_or_default();
    let mut constraints = vec![Constraint::Length(1)];
    if error.is_some() {
        constraints.push(Constraint::Length(1));
    }
    for (i, section) in sections.iter().enumerate() {
        let body = section.rows.len().max(2) as u16;
        if i + 1 == sections.len() {
            constraints.push(Constraint::Min(body.min(4) + 2));
        } else {
            constraints.push(Constraint::Length(body + 2));
        }
    }
    let areas = Layout::vertical(constraints).split(frame.area());
    frame.render_widget(
        Paragraph::new(Line::from(heading)).style(TuiStyle::new().add_modifier(Modifier::BOLD)),
        areas[0],
    );
    let mut next = 1;
    if let Some(error) = error {
        frame.render_widget(
            Paragraph::new(crate::present::one_line(error)).style(TuiStyle::new().fg(Color::Red)),
            areas[next],
        );
        next += 1;
    }
    for section in &sections {
        let area = areas[next];
        next += 1;
        let block = Block::bordered().title(section.title.clone());
        if section.rows.len() <= 1 {
            frame.render_widget(Paragraph::new(section.empty).block(block), area);
            continue;
        }
        let header = &section.rows[0];
        let widths: Vec<Constraint> = (0..header.len())
            .map(|c| {
                let natural = section
                    .rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|v| crate::present::width_of(&crate::present::one_line(v)))
                    .max()
                    .unwrap_or(1);
                if c + 1 == header.len() {
                    Constraint::Min(natural.min(u16::MAX as usize) as u16)
                } else {
                    Constraint::Length(natural.min(40) as u16)
                }
            })
            .collect();
        let header_row = Row::new(header.iter().map(|h| {
            let mut s = TuiStyle::new().add_modifier(Modifier::BOLD);
            if let Some(color) = tui_color(h) {
                s = s.fg(color);
            }
            Cell::from(h.clone()).style(s)
        }));
        let rows = section.rows[1..].iter().map(|r| {
            Row::new(r.iter().enumerate().map(|(c, v)| {
                let mut cell = Cell::from(crate::present::one_line(v));
                // Non-zero counts in the state columns take the state's colour.
                if let Some(color) = tui_color(&header[c]) {
                    if v != "0" {
                        cell = cell.style(TuiStyle::new().fg(color));
                    }
                }
                cell
            }))
        });
        frame.render_widget(
            Table::new(rows, widths)
                .header(header_row)
                .column_spacing(2)
                .block(block),
            area,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::QueueStats;

    #[test]
    fn sections_show_counts_throughput_workers_and_deaths() {
        let now = 1_764_578_049_000;
        let mut stats = Stats::default();
        let mut q = QueueStats::default();
        q.states.insert("queued".into(), 7);
        q.states.insert("running".into(), 1);
        q.oldest_ready_age_ms = Some(184_000);
        stats.queues.insert("reports".into(), q);
        stats.finished_last_hour.insert("succeeded".into(), 120);
        let snapshot = Snapshot {
            at: now,
            stats,
            running: vec![RunningJob {
                id: 42,
                queue: "reports".into(),
                kind: "exec".into(),
                worker: Some("host:77".into()),
                attempt: 2,
                since: now - 66_000,
                lease_until: Some(now + 10_000),
                started_at: Some(now - 65_000),
            }],
            deaths: vec![Death {
                id: 9,
                queue: "reports".into(),
                kind: "http".into(),
                finished_at: now - 180_000,
                attempts: 5,
                last_error: Some("HTTP 500\nfrom upstream".into()),
            }],
            held: vec![DestinationView {
                destination: "shopify".into(),
                key: String::new(),
                rate_per_second: None,
                burst: None,
                max_in_flight: None,
                tokens: None,
                in_flight: 0,
                waiting: 12,
                held_until: Some(now + 30_000),
                hold_status: Some(429),
                hold_reason: Some("answered 429, Retry-After 30s".into()),
                held_at: Some(now),
            }],
        };
        let lines = snapshot_lines(&snapshot, &Style::plain(now), "jobd");
        let text = lines.join("\n");
        assert!(text.contains("reports  7"), "{text}");
        assert!(text.contains("3m04s"), "oldest ready: {text}");
        assert!(text.contains("last hour    120"), "{text}");
        assert!(text.contains("2.0"), "per minute: {text}");
        assert!(text.contains("host:77  42   exec"), "{text}");
        assert!(text.contains("1m05s"), "running for: {text}");
        assert!(
            text.contains("3m ago") && text.contains("HTTP 500\\nfrom"),
            "{text}"
        );
        assert!(
            text.contains("Workers (1 running, 0 claimed ahead)"),
            "{text}"
        );
        assert!(text.contains("Held destinations"), "{text}");
        assert!(
            text.contains("shopify      12")
                && text.contains("30s")
                && text.contains("answered 429, Retry-After 30s"),
            "{text}"
        );
    }
}
