//! Turning a raw RFC 822 e-mail into training text (the spamassassin recipe).
//!
//! Rules (documented in the recipe):
//! - text = `Subject` + blank line + body; all other headers are removed.
//! - MIME: the decoded (quoted-printable / base64, charset-converted) `text/plain` parts are kept
//!   and joined; if a message has no `text/plain` part, its `text/html` parts are used with tags,
//!   scripts, styles and comments removed and entities decoded. Parts with
//!   `Content-Disposition: attachment` and all non-text parts (images, application/*, base64
//!   binaries) are dropped. A `text/plain` part that is evidently HTML (spam mislabels it) is
//!   stripped the same way.
//! - Quoted reply lines (first non-blank character `>`) are removed: they repeat another message's
//!   text (often another person's), which would let one person's words appear in several records.
//! - Runs of blank lines are collapsed to one and trailing spaces removed.

use mailparse::{DispositionType, MailHeaderMap, ParsedMail};

/// Subject and cleaned body of a raw message. Never fails: an unparseable message falls back to
/// the text after the first blank line.
pub fn email_to_text(raw: &[u8]) -> String {
    match mailparse::parse_mail(raw) {
        Ok(m) => {
            let subject = m.headers.get_first_value("Subject").unwrap_or_default();
            let mut plain = Vec::new();
            let mut html = Vec::new();
            collect_parts(&m, &mut plain, &mut html);
            let body = if !plain.is_empty() {
                plain.join("\n\n")
            } else {
                html.iter()
                    .map(|h| strip_html(h))
                    .collect::<Vec<_>>()
                    .join("\n\n")
            };
            join_subject(&subject, &clean_body(&body))
        }
        Err(_) => {
            let s = String::from_utf8_lossy(raw);
            let body = s.split_once("\n\n").map(|x| x.1).unwrap_or("");
            clean_body(body)
        }
    }
}

fn join_subject(subject: &str, body: &str) -> String {
    let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
    match (subject.is_empty(), body.is_empty()) {
        (true, _) => body.to_string(),
        (false, true) => subject,
        (false, false) => format!("{subject}\n\n{body}"),
    }
}

fn collect_parts(m: &ParsedMail<'_>, plain: &mut Vec<String>, html: &mut Vec<String>) {
    if !m.subparts.is_empty() {
        for p in &m.subparts {
            collect_parts(p, plain, html);
        }
        return;
    }
    if m.get_content_disposition().disposition == DispositionType::Attachment {
        return;
    }
    let mime = m.ctype.mimetype.to_ascii_lowercase();
    let target = match mime.as_str() {
        "text/plain" | "text" => plain,
        "text/html" => html,
        _ => return,
    };
    if let Ok(body) = m.get_body() {
        // Spam often labels HTML as text/plain (or sends no Content-Type): strip it all the same.
        let body = if mime != "text/html" && looks_like_html(&body) {
            strip_html(&body)
        } else {
            body
        };
        target.push(body);
    }
}

/// `<html`, `<body`, or at least three common tags.
fn looks_like_html(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    l.contains("<html")
        || l.contains("<body")
        || ["<br", "<p>", "<p ", "</p", "<font", "</a>", "<td", "<div"]
            .iter()
            .map(|t| l.matches(t).count())
            .sum::<usize>()
            >= 3
}

/// Remove quoted lines, trailing spaces and runs of blank lines.
fn clean_body(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut blank_run = 0;
    for line in body.lines() {
        let line = line.trim_end();
        if line.trim_start().starts_with('>') {
            continue;
        }
        if line.trim().is_empty() {
            blank_run += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank_run > 0 { "\n\n" } else { "\n" });
        }
        blank_run = 0;
        out.push_str(line);
    }
    out
}

/// A small HTML-to-text conversion: drops `<script>`, `<style>`, `<head>` and comments, turns block
/// tags into line breaks, removes other tags, decodes common entities and collapses spaces.
pub fn strip_html(html: &str) -> String {
    let lower = html.to_ascii_lowercase();
    let bytes = html.as_bytes();
    let mut out = String::with_capacity(html.len() / 2);
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'<' {
            if lower[i..].starts_with("<!--") {
                i = lower[i..]
                    .find("-->")
                    .map(|k| i + k + 3)
                    .unwrap_or(bytes.len());
                continue;
            }
            let skip_to = ["script", "style", "head", "title"].iter().find_map(|t| {
                let open = format!("<{t}");
                if lower[i..].starts_with(&open)
                    && matches!(
                        lower.as_bytes().get(i + open.len()),
                        Some(b'>' | b' ' | b'\t' | b'\n' | b'\r' | b'/')
                    )
                {
                    // Skip to after the closing tag; without one (sloppy HTML such as an
                    // unclosed `<head>`), drop only the opening tag.
                    let close = format!("</{t}");
                    lower[i..].find(&close).map(|k| {
                        let j = i + k;
                        lower[j..]
                            .find('>')
                            .map(|e| j + e + 1)
                            .unwrap_or(bytes.len())
                    })
                } else {
                    None
                }
            });
            if let Some(j) = skip_to {
                i = j;
                continue;
            }
            let end = lower[i..]
                .find('>')
                .map(|k| i + k + 1)
                .unwrap_or(bytes.len());
            let tag = lower[i + 1..end.saturating_sub(1).max(i + 1)].trim_start_matches('/');
            let name: String = tag
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            if matches!(
                name.as_str(),
                "br" | "p"
                    | "div"
                    | "tr"
                    | "li"
                    | "h1"
                    | "h2"
                    | "h3"
                    | "h4"
                    | "h5"
                    | "h6"
                    | "table"
                    | "ul"
                    | "ol"
                    | "blockquote"
                    | "hr"
            ) {
                out.push('\n');
            } else {
                out.push(' ');
            }
            i = end;
            continue;
        }
        if bytes[i] == b'&' {
            if let Some((s, len)) = entity(&html[i..]) {
                out.push_str(&s);
                i += len;
                continue;
            }
        }
        let ch = html[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    // Collapse spaces within lines.
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

fn entity(s: &str) -> Option<(String, usize)> {
    // Byte search: `;` is ASCII, so `end` is a char boundary even in multi-byte text.
    let end = s.as_bytes().iter().take(12).position(|&b| b == b';')?;
    let name = &s[1..end];
    let c = match name {
        "nbsp" => ' ',
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "copy" => '©',
        "reg" => '®',
        "pound" => '£',
        "euro" => '€',
        _ => {
            let code = if let Some(h) = name.strip_prefix("#x").or_else(|| name.strip_prefix("#X"))
            {
                u32::from_str_radix(h, 16).ok()?
            } else if let Some(d) = name.strip_prefix('#') {
                d.parse().ok()?
            } else {
                return None;
            };
            char::from_u32(code)?
        }
    };
    Some((c.to_string(), end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_message_subject_body_quotes_removed() {
        let raw = b"From: a@b\r\nSubject: Hello  there\r\n\r\nHi,\r\n> quoted line\r\n  >> deeper\r\n\r\n\r\n\r\nBye  \r\n";
        assert_eq!(email_to_text(raw), "Hello there\n\nHi,\n\nBye");
    }

    #[test]
    fn multipart_prefers_plain_and_drops_attachments() {
        let raw = "Subject: s\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"XX\"\n\n--XX\nContent-Type: text/html\n\n<p>html <b>part</b></p>\n--XX\nContent-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\nplain=20part\n--XX\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\nContent-Disposition: attachment; filename=a.bin\n\nQUJDREVGRw==\n--XX--\n";
        assert_eq!(email_to_text(raw.as_bytes()), "s\n\nplain part");
    }

    #[test]
    fn multibyte_text_never_panics() {
        for s in [
            "&amp; CFO\u{ef}\u{bf}\u{bd}s</font>",
            "&\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9};",
            "<\u{e9}>&#x1F600;<scr",
            "<!-- \u{e9}",
            "&",
            "<",
        ] {
            let _ = strip_html(s);
            let _ = email_to_text(
                format!("Subject: \u{e9}\nContent-Type: text/html\n\n{s}").as_bytes(),
            );
        }
        assert_eq!(
            strip_html("caf\u{e9} &#x1F600; &bogus; x"),
            "caf\u{e9} \u{1F600} &bogus; x"
        );
        // Unclosed <head>: the body text survives.
        assert_eq!(
            strip_html("<html><head><body><p>Buy</p></body>").trim(),
            "Buy"
        );
    }

    #[test]
    fn html_only_is_stripped() {
        let raw = "Subject: offer\nContent-Type: text/html\n\n<html><head><style>p{}</style></head><body><p>Buy&nbsp;now &amp; save</p><script>x()</script><!-- c --><br>Call &#65;</body></html>\n";
        assert_eq!(
            email_to_text(raw.as_bytes()),
            "offer\n\nBuy now & save\n\nCall A"
        );
    }
}
