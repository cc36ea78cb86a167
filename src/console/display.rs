//! How the console shows values it did not write: cut to fit a table,
//! invisible characters made visible, CSV cells that a spreadsheet will not
//! run.
//!
//! Failure reasons, location ids, account ids and job ids arrive from the
//! Internet. maud escapes HTML, so nothing here does; what is left is that a
//! value can be huge, can look like another value, or can be a formula.

use std::borrow::Cow;
use std::fmt::Write as _;

use unicode_normalization::UnicodeNormalization;

/// The most characters of a value a table or list cell shows.
pub const CELL_CHARS: usize = 120;

/// The value with every control, bidi control and invisible character shown
/// as `⟨U+XXXX⟩`, so two values that differ never look the same. Borrowed
/// when there is nothing to show.
pub fn visible(value: &str) -> Cow<'_, str> {
    let Some(first) = value.find(is_hidden) else {
        return Cow::Borrowed(value);
    };
    // Each escape is at most 13 bytes where the character was 1 to 4.
    let mut out = String::with_capacity(value.len() + 16);
    out.push_str(&value[..first]);
    for c in value[first..].chars() {
        if is_hidden(c) {
            // Writing to a String cannot fail.
            let _ = write!(out, "⟨U+{:04X}⟩", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The value for a table or list: at most [`CELL_CHARS`] characters of it,
/// then `…` when cut, made [`visible`]. Cut first, so an escape is never cut
/// in half and escapes do not push real characters out of the cell.
pub fn cell(value: &str) -> Cow<'_, str> {
    cut(value, CELL_CHARS)
}

/// The value in at most `chars` characters, then `…` when cut, made
/// [`visible`] (a chart's label has less room than a cell).
pub fn cut(value: &str, chars: usize) -> Cow<'_, str> {
    match value.char_indices().nth(chars) {
        None => visible(value),
        Some((end, _)) => {
            let mut out = visible(&value[..end]).into_owned();
            out.push('…');
            Cow::Owned(out)
        }
    }
}

/// Appends the value as one CSV field: always quoted (so `,`, `;` and line
/// breaks stay inside it whatever the reader's separator), inner `"`
/// doubled, and prefixed with `'` inside the quotes when a spreadsheet would
/// take it as a formula. The value itself is written unchanged.
pub fn csv_field(value: &str, out: &mut String) {
    out.push('"');
    if looks_like_formula(value) {
        out.push('\'');
    }
    for (i, part) in value.split('"').enumerate() {
        if i > 0 {
            out.push_str("\"\"");
        }
        out.push_str(part);
    }
    out.push('"');
}

/// Whether a spreadsheet may run the value: a leading tab or CR (some skip
/// them before looking for `=`), or a first non-blank character that is a
/// formula start once normalised, as some spreadsheets fold fullwidth and
/// small forms (`＝`, `﹦`) to ASCII. Only the start is normalised.
fn looks_like_formula(value: &str) -> bool {
    if value.starts_with(['\t', '\r']) {
        return true;
    }
    matches!(
        value.nfkc().find(|c| !c.is_whitespace()),
        Some('=' | '+' | '-' | '@')
    )
}

/// Characters that do not show, or show as something else, in a page.
fn is_hidden(c: char) -> bool {
    // C0, DEL and C1: tab, CR and LF too, as a cell is one line and a
    // stray CR or escape sequence hides what follows it.
    c.is_control()
        || matches!(
            c,
            // Bidi controls: reorder the text after them, so
            // `loc-\u{202E}gnp.exe` reads as `loc-exe.png`.
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                // Zero-width and formatting characters: no glyph, so
                // `reason` and `reason\u{200B}` would look the same.
                | '\u{00AD}'
                | '\u{034F}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200D}'
                | '\u{2060}'..='\u{2064}'
                | '\u{206A}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                // Fillers and inherent vowels that render as blank space.
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{3164}'
                | '\u{FFA0}'
                // Variation selectors, and tags that can spell out hidden
                // ASCII text: invisible, they change nothing shown.
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{E0000}'..='\u{E0FFF}'
                // Line and paragraph separators: break the line like LF.
                | '\u{2028}'
                | '\u{2029}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(value: &str) -> String {
        let mut out = String::new();
        csv_field(value, &mut out);
        out
    }

    #[test]
    fn a_huge_value_is_cut_to_the_cell() {
        let value = "x".repeat(100_000);
        let shown = cell(&value);
        assert_eq!(shown, format!("{}…", "x".repeat(CELL_CHARS)));
        assert_eq!(shown.chars().count(), CELL_CHARS + 1);
    }

    #[test]
    fn the_cut_counts_characters_not_bytes() {
        let value = "é".repeat(CELL_CHARS + 1);
        assert_eq!(cell(&value), format!("{}…", "é".repeat(CELL_CHARS)));
    }

    #[test]
    fn a_cell_of_exactly_the_limit_is_not_cut() {
        let value = "x".repeat(CELL_CHARS);
        assert!(matches!(cell(&value), Cow::Borrowed(v) if v == value));
        let value = "x".repeat(CELL_CHARS + 1);
        assert_eq!(cell(&value), format!("{}…", "x".repeat(CELL_CHARS)));
    }

    #[test]
    fn escapes_come_after_the_cut() {
        // Last character kept: escaped whole, after which the cut is marked.
        let value = format!("{}\u{202e}{}", "a".repeat(119), "b".repeat(10));
        assert_eq!(cell(&value), format!("{}⟨U+202E⟩…", "a".repeat(119)));
        // First character cut: gone, not escaped.
        let value = format!("{}\u{202e}{}", "a".repeat(120), "b".repeat(10));
        assert_eq!(cell(&value), format!("{}…", "a".repeat(120)));
        // Further past the cut: gone too.
        let value = format!("{}\u{202e}{}", "a".repeat(121), "b".repeat(10));
        assert_eq!(cell(&value), format!("{}…", "a".repeat(120)));
    }

    #[test]
    fn a_short_clean_cell_borrows() {
        assert!(matches!(cell("job-42"), Cow::Borrowed("job-42")));
        assert_eq!(cell("job-\u{200b}42"), "job-⟨U+200B⟩42");
    }

    #[test]
    fn bidi_override_is_shown() {
        assert_eq!(visible("loc-\u{202e}gnp.exe"), "loc-⟨U+202E⟩gnp.exe");
    }

    #[test]
    fn a_zero_width_space_makes_a_value_look_different() {
        assert_ne!(visible("reason"), visible("reason\u{200b}"));
        assert_eq!(visible("reason\u{200b}"), "reason⟨U+200B⟩");
    }

    #[test]
    fn a_plain_value_borrows() {
        assert!(matches!(
            visible("plain value, ünïcödé 日本"),
            Cow::Borrowed(_)
        ));
        assert!(matches!(visible(""), Cow::Borrowed("")));
    }

    #[test]
    fn controls_are_shown() {
        assert_eq!(visible("a\tb\r\nc"), "a⟨U+0009⟩b⟨U+000D⟩⟨U+000A⟩c");
        assert_eq!(visible("\u{7f}\u{85}\u{1b}"), "⟨U+007F⟩⟨U+0085⟩⟨U+001B⟩");
        assert_eq!(visible("a\u{2028}b\u{2029}"), "a⟨U+2028⟩b⟨U+2029⟩");
    }

    #[test]
    fn every_listed_character_is_shown() {
        let hidden = [
            '\u{061C}',
            '\u{200E}',
            '\u{200F}',
            '\u{202A}',
            '\u{202E}',
            '\u{2066}',
            '\u{2069}',
            '\u{00AD}',
            '\u{034F}',
            '\u{115F}',
            '\u{1160}',
            '\u{17B4}',
            '\u{17B5}',
            '\u{180B}',
            '\u{180F}',
            '\u{200B}',
            '\u{200D}',
            '\u{2060}',
            '\u{2064}',
            '\u{206A}',
            '\u{206F}',
            '\u{3164}',
            '\u{FE00}',
            '\u{FE0F}',
            '\u{FEFF}',
            '\u{FFA0}',
            '\u{FFF9}',
            '\u{FFFB}',
            '\u{1BCA0}',
            '\u{1BCA3}',
            '\u{1D173}',
            '\u{1D17A}',
            '\u{E0000}',
            '\u{E0FFF}',
        ];
        for c in hidden {
            let expected = format!("⟨U+{:04X}⟩", u32::from(c));
            assert_eq!(visible(&c.to_string()), expected);
        }
        // Neighbours of the ranges are ordinary text.
        for c in [
            '\u{2010}',
            '\u{2065}',
            '\u{FE10}',
            '\u{E1000}',
            ' ',
            '\u{a0}',
        ] {
            assert!(!is_hidden(c), "{:04X}", u32::from(c));
        }
    }

    #[test]
    fn tags_are_shown_with_five_digits() {
        assert_eq!(visible("id\u{E0041}"), "id⟨U+E0041⟩");
    }

    #[test]
    fn csv_quotes_without_prefix_when_not_a_formula() {
        assert_eq!(csv("x;=1+1"), r#""x;=1+1""#);
        assert_eq!(csv("plain"), r#""plain""#);
        assert_eq!(csv(""), r#""""#);
        assert_eq!(csv("１"), "\"１\"");
        assert_eq!(csv("a,b\nc"), "\"a,b\nc\"");
    }

    #[test]
    fn csv_doubles_quotes() {
        assert_eq!(csv(r#"a"b"#), r#""a""b""#);
        assert_eq!(csv(r#"=a"b"#), r#""'=a""b""#);
    }

    #[test]
    fn csv_defuses_formulas() {
        for value in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(csv(value), format!("\"'{value}\""), "{value:?}");
        }
    }

    #[test]
    fn csv_defuses_formulas_after_whitespace() {
        assert_eq!(csv(" =1+1"), r#""' =1+1""#);
        assert_eq!(csv("\n\u{3000}@x"), "\"'\n\u{3000}@x\"");
    }

    #[test]
    fn csv_defuses_formulas_that_normalise_to_one() {
        assert_eq!(csv("＝4+4"), "\"'＝4+4\"");
        assert_eq!(csv("﹦1"), "\"'﹦1\"");
        assert_eq!(csv("＋1"), "\"'＋1\"");
    }

    #[test]
    fn csv_writes_the_value_unchanged() {
        assert_eq!(csv("ﬁle ①"), "\"ﬁle ①\"");
    }
}
