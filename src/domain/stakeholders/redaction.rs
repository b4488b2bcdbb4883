//! What an external audience may see of text people wrote: the one redaction function,
//! used both for the notice that goes out and for the preview the commander checks, so
//! the two cannot differ.

/// The text an external audience may see: Slack mentions of people, user groups and
/// channels, `@names`, `#channel-names`, incident channel names and anything in
/// backticks (commands, hosts, queries) are replaced by neutral words.
pub fn external_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("```") {
            rest = after.split_once("```").map_or("", |(_, r)| r);
            out.push_str("[details withheld]");
        } else if let Some(after) = rest.strip_prefix('`') {
            rest = after.split_once('`').map_or("", |(_, r)| r);
            out.push_str("[details withheld]");
        } else if rest.starts_with('<')
            && let Some((inner, after)) = rest[1..].split_once('>')
        {
            rest = after;
            out.push_str(match inner.chars().next() {
                Some('@') => "our team",
                Some('#') => "an internal channel",
                Some('!') => "our team",
                // A link: keep its label, never the internal URL.
                _ => inner.split_once('|').map_or("a link", |(_, label)| label),
            });
        } else if (rest.starts_with('@') || rest.starts_with('#'))
            && rest[1..].starts_with(|c: char| c.is_alphanumeric())
        {
            let end = rest[1..]
                .find(|c: char| !(c.is_alphanumeric() || "-_.".contains(c)))
                .map_or(rest.len(), |i| i + 1);
            out.push_str(if rest.starts_with('@') {
                "our team"
            } else {
                "an internal channel"
            });
            rest = &rest[end..];
        } else {
            let c = rest.chars().next().expect("not empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    // Incident channel names written without `#`.
    let words: Vec<String> = out
        .split(' ')
        .map(|w| {
            let bare = w.trim_end_matches(|c: char| ".,;:!?)".contains(c));
            let is_channel = bare.len() > 13
                && bare.starts_with("inc-")
                && bare[4..12].chars().all(|c| c.is_ascii_digit());
            if is_channel {
                format!("an internal channel{}", &w[bare.len()..])
            } else {
                w.to_string()
            }
        })
        .collect();
    words
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
