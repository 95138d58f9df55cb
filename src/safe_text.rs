//! Text from the database made safe to print on an operator's terminal: control
//! characters escaped (so a stored ESC sequence or newline cannot redraw the screen or
//! forge a line) and table cells bounded in width (so one huge value cannot break the
//! table, or the formatter).

use std::fmt::Write as _;

/// The widest a table cell may be, in characters; longer values end in `…`.
pub const MAX_CELL: usize = 60;

/// Whether a character must not reach a terminal raw: C0 controls, DEL, C1 controls (0x9b
/// is CSI on some terminals) and the bidirectional overrides that reorder what is shown.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every unsafe character written as an escape (`\n`, `\t`, `\x1b`,
/// `\u{202e}`); everything else, including non-ASCII letters, unchanged.
pub fn escape(text: &str) -> String {
    if !text.chars().any(is_unsafe) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && is_unsafe(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// `text` escaped and cut to at most `max` characters (the last one `…` when cut).
pub fn cell(text: &str, max: usize) -> String {
    let escaped = escape(text);
    if escaped.chars().count() <= max {
        return escaped;
    }
    let mut cut: String = escaped.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// JSON text with DEL, C1 controls and bidi overrides written as `\uXXXX` (serde_json
/// escapes only the C0 controls). Such characters can stand only inside JSON strings,
/// where the escape means the same character, so the output stays the same JSON.
pub fn escape_json(text: &str) -> String {
    if !text.chars().any(is_unsafe) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe(c) && c != '\n' && c != '\t' && c != '\r' {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_letters_kept() {
        assert_eq!(
            escape("a\u{1b}[31mred\nINFO forged\u{7f}\u{9b}"),
            "a\\x1b[31mred\\nINFO forged\\x7f\\u{9b}"
        );
        assert_eq!(escape("日本語 ok"), "日本語 ok");
        assert_eq!(escape("abc\u{202e}txt"), "abc\\u{202e}txt");
    }

    #[test]
    fn cells_are_bounded() {
        let long = "x".repeat(100_000);
        let c = cell(&long, 10);
        assert_eq!(c.chars().count(), 10);
        assert!(c.ends_with('…'));
        assert_eq!(cell("short", 10), "short");
        // Escaping happens before cutting, so the cut never splits an escape's meaning
        // into a raw control character.
        assert!(!cell(&"\u{1b}".repeat(50), 10).contains('\u{1b}'));
    }

    #[test]
    fn json_stays_json_with_no_raw_controls() {
        let value = serde_json::json!({"e": "a\u{7f}b\u{9b}c\u{202e}d\u{1b}"});
        let text = escape_json(&serde_json::to_string(&value).unwrap());
        assert!(!text.chars().any(is_unsafe), "{text}");
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value);
    }
}
