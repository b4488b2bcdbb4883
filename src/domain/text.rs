//! What text people type may contain: no control characters, no bidirectional overrides
//! (U+202A-U+202E, U+2066-U+2069: they make a title read differently from what it is, the
//! "Trojan Source" trick), and no invisible characters (zero-width spaces and joiners, the
//! BOM, soft hyphens, tag characters...), which made a title of only zero-width spaces look
//! non-empty and produced a channel with no slug.
//!
//! Refused rather than stripped, so that what is stored is exactly what was typed, and the
//! person is told which character, where, and which rule.

/// Whether `c` is a bidirectional embedding, override or isolate control.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// Whether `c` renders as nothing (or nearly nothing) while still being text.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200D}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{2060}'..='\u{2064}'
            | '\u{206A}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{E0000}'..='\u{E007F}'
    )
}

/// Where a piece of text goes, which decides what whitespace it may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextKind {
    /// One line (titles, summaries folded to a line): no control character at all.
    Line,
    /// Several lines (status updates): newlines and tabs allowed, and the zero-width
    /// joiner when it joins two emoji (family and flag sequences).
    Block,
}

/// The first character that breaks the rules, as a rule people can read: e.g.
/// `must not contain invisible characters (U+200B at position 1)`.
pub fn check(text: &str, kind: TextKind) -> Result<(), String> {
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let position = i + 1;
        let code = format!("U+{:04X}", c as u32);
        if c.is_control() {
            if kind == TextKind::Block && matches!(c, '\n' | '\t') {
                continue;
            }
            return Err(format!(
                "must not contain control characters ({code} at position {position})"
            ));
        }
        if is_bidi_control(c) {
            return Err(format!(
                "must not contain bidirectional text controls ({code} at position {position}); they make text read differently from what it is"
            ));
        }
        if is_invisible(c) {
            let joins_emoji = kind == TextKind::Block
                && c == '\u{200D}'
                && i > 0
                && chars.get(i + 1).is_some_and(|n| !n.is_ascii())
                && !chars[i - 1].is_ascii();
            if joins_emoji {
                continue;
            }
            return Err(format!(
                "must not contain invisible characters ({code} at position {position})"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_and_accents_pass() {
        assert_eq!(check("Paiement refusé — 50 %", TextKind::Line), Ok(()));
        assert_eq!(check("line one\nline two", TextKind::Block), Ok(()));
        assert_eq!(check("family 👨\u{200D}👩", TextKind::Block), Ok(()));
    }

    #[test]
    fn controls_bidi_and_invisibles_are_named_with_their_position() {
        assert_eq!(
            check("a\u{7}b", TextKind::Line),
            Err("must not contain control characters (U+0007 at position 2)".into())
        );
        assert_eq!(
            check("line one\nline two", TextKind::Line),
            Err("must not contain control characters (U+000A at position 9)".into())
        );
        assert!(
            check("abc\u{202E}fdp.exe", TextKind::Block)
                .unwrap_err()
                .starts_with("must not contain bidirectional text controls (U+202E at position 4)")
        );
        assert!(check("x\u{2066}y", TextKind::Line).is_err());
        assert_eq!(
            check("\u{200B}\u{200B}", TextKind::Line),
            Err("must not contain invisible characters (U+200B at position 1)".into())
        );
        assert!(check("a\u{FEFF}", TextKind::Block).is_err());
        assert!(check("a\u{200D}b", TextKind::Block).is_err());
        assert!(check("tag\u{E0041}", TextKind::Line).is_err());
    }
}
