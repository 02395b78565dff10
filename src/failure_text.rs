//! Long failure output (a Java stack trace, an HTML error page) reduced to what fits on one
//! line of a summary or a progress line. Pure text in, text out: it never decides what is
//! recorded (the ledger and notes keep the whole text), only what a person sees at a glance.

/// How many characters of the first meaningful line of a long (multi-line) output a summary
/// shows.
pub const LINE_LIMIT: usize = 120;

/// How long a message of one line may be before it is cut too: one line is usually the whole
/// story (`sha256 mismatch: expected ..., got ...`) and is kept, unless it is a wall of text.
pub const ONE_LINE_LIMIT: usize = 500;

/// The first meaningful line of `text` (not blank, not only markup or punctuation), with an
/// HTML page reduced to its title, and whether anything was left out. Text of several lines
/// is cut to its first meaningful line of at most `limit` characters; text of one line is kept
/// up to [`ONE_LINE_LIMIT`] characters.
pub fn first_line(text: &str, limit: usize) -> (String, bool) {
    let text = html_reduced(text);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let first = lines
        .iter()
        .copied()
        .find(|l| meaningful(l))
        .or_else(|| lines.first().copied())
        .unwrap_or("");
    let several = lines.len() > 1;
    let limit = if several { limit } else { ONE_LINE_LIMIT };
    if first.chars().count() > limit {
        let mut s: String = first.chars().take(limit.saturating_sub(1)).collect();
        s.push('…');
        (s, true)
    } else {
        (first.to_string(), several)
    }
}

/// A line that says something: it has a letter or digit outside markup.
fn meaningful(line: &str) -> bool {
    strip_tags(line).chars().any(char::is_alphanumeric)
}

/// `text` with every HTML document in it reduced to its title, or else its first text: an
/// error page says what it is in its title, and the rest is markup and styling.
pub fn html_reduced(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let Some(start) = ["<!doctype html", "<html"]
        .iter()
        .filter_map(|m| lower.find(m))
        .min()
    else {
        return text.to_string();
    };
    let end = lower[start..]
        .find("</html>")
        .map(|e| start + e + "</html>".len())
        .unwrap_or(text.len());
    let page = &text[start..end];
    let page_lower = &lower[start..end];
    let title = page_lower.find("<title>").and_then(|t| {
        let from = t + "<title>".len();
        page_lower[from..]
            .find("</title>")
            .map(|e| page[from..from + e].trim().to_string())
    });
    let body = match page_lower.find("<body") {
        Some(b) => &page[b..],
        None => page,
    };
    let reduced = title.filter(|t| !t.is_empty()).unwrap_or_else(|| {
        strip_tags(body)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    });
    format!("{}(HTML page: {reduced}){}", &text[..start], &text[end..])
}

/// `s` without `<...>` tags (and without the contents of `<style>`/`<script>`, which are not
/// text a person reads).
fn strip_tags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let tag = &rest[open..];
        let lower = tag.to_ascii_lowercase();
        let skip_to = ["style", "script"].iter().find_map(|name| {
            lower
                .starts_with(&format!("<{name}"))
                .then(|| {
                    lower
                        .find(&format!("</{name}>"))
                        .map(|e| e + name.len() + 3)
                })
                .flatten()
        });
        let close = skip_to.or_else(|| tag.find('>').map(|e| e + 1));
        // A tag separates words (`<h1>Gone</h1><p>try` is two of them).
        out.push(' ');
        match close {
            Some(c) => rest = &tag[c..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stack_trace_is_its_first_line() {
        let trace = "Exception in thread \"main\" java.lang.IllegalStateException: no database\n\tat com.example.Main.start(Main.java:12)\n\tat com.example.Main.main(Main.java:3)\n";
        let (line, cut) = first_line(trace, LINE_LIMIT);
        assert_eq!(
            line,
            "Exception in thread \"main\" java.lang.IllegalStateException: no database"
        );
        assert!(cut);
    }

    #[test]
    fn long_lines_are_cut_and_short_ones_kept() {
        let (line, cut) = first_line(&format!("{}\nmore", "x".repeat(150)), 100);
        assert_eq!(line.chars().count(), 100);
        assert!(line.ends_with('…') && cut);
        // One line is the whole message unless it is a wall of text.
        let one = "y".repeat(300);
        assert_eq!(first_line(&one, 100), (one.clone(), false));
        let (wall, cut) = first_line(&"z".repeat(2000), 100);
        assert!(wall.chars().count() == ONE_LINE_LIMIT && cut);
        assert_eq!(first_line("applied", 100), ("applied".to_string(), false));
    }

    #[test]
    fn an_html_page_is_its_title_or_first_text() {
        let page = "GET http://x/health: status 404\n<!DOCTYPE html>\n<html><head><title>404 Not Found</title><style>body{}</style></head>\n<body><h1>Not Found</h1></body></html>\n";
        assert_eq!(
            html_reduced(page),
            "GET http://x/health: status 404\n(HTML page: 404 Not Found)\n"
        );
        let untitled = "<html><head><style>p{color:red}</style></head><body>\n<h1>Gone</h1><p>try later</p></body></html>";
        assert_eq!(html_reduced(untitled), "(HTML page: Gone try later)");
        let (line, _) = first_line("<html>\n<body><p>Oops</p></body></html>", 100);
        assert_eq!(line, "(HTML page: Oops)");
    }

    #[test]
    fn markup_only_lines_are_skipped() {
        let (line, cut) = first_line("\n  <div>\n  ---\nreal problem here\n", 100);
        assert_eq!(line, "real problem here");
        assert!(cut);
    }
}
