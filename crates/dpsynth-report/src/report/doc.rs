//! A tiny document model rendered both as self-contained HTML and as Markdown, so the two
//! reports always say the same thing. All text is plain text; the renderers escape it.

/// A block of a report.
#[derive(Debug, Clone)]
pub enum Block {
    Heading(u8, String),
    Para(String),
    /// A highlighted remark (e.g. "not run", "not private").
    Note(String),
    List(Vec<String>),
    Table {
        head: Vec<String>,
        rows: Vec<Vec<String>>,
    },
    /// An SVG chart: `name` is the file stem used by the Markdown report.
    Chart {
        name: String,
        alt: String,
        svg: String,
    },
    /// A labeled quotation (synthetic sample texts).
    Quote {
        label: String,
        text: String,
    },
    Pre(String),
    /// A link (relative path) with its text.
    Link {
        text: String,
        href: String,
    },
}

/// A whole document.
#[derive(Debug, Clone, Default)]
pub struct Doc {
    pub title: String,
    pub blocks: Vec<Block>,
}

impl Doc {
    pub fn new(title: impl Into<String>) -> Self {
        Doc {
            title: title.into(),
            blocks: Vec::new(),
        }
    }
    pub fn h2(&mut self, s: impl Into<String>) {
        self.blocks.push(Block::Heading(2, s.into()));
    }
    pub fn h3(&mut self, s: impl Into<String>) {
        self.blocks.push(Block::Heading(3, s.into()));
    }
    pub fn p(&mut self, s: impl Into<String>) {
        self.blocks.push(Block::Para(s.into()));
    }
    pub fn note(&mut self, s: impl Into<String>) {
        self.blocks.push(Block::Note(s.into()));
    }
    pub fn list(&mut self, items: Vec<String>) {
        self.blocks.push(Block::List(items));
    }
    pub fn table(&mut self, head: &[&str], rows: Vec<Vec<String>>) {
        self.blocks.push(Block::Table {
            head: head.iter().map(|s| s.to_string()).collect(),
            rows,
        });
    }
    pub fn push(&mut self, b: Block) {
        self.blocks.push(b);
    }

    /// The SVG charts and their Markdown file names.
    pub fn charts(&self) -> Vec<(String, &str)> {
        self.blocks
            .iter()
            .filter_map(|b| match b {
                Block::Chart { name, svg, .. } => Some((format!("{name}.svg"), svg.as_str())),
                _ => None,
            })
            .collect()
    }
}

/// Escape text for HTML element content and attribute values.
pub fn esc_html(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Escape text for Markdown: HTML specials as entities, Markdown specials with a backslash,
/// newlines folded, so data can never become markup.
pub fn esc_md(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '#' | '!' | '~' => {
                o.push('\\');
                o.push(c);
            }
            '\n' | '\r' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}\
h1{border-bottom:2px solid #ddd;padding-bottom:.3em}h2{margin-top:1.8em;border-bottom:1px solid #eee}\
table{border-collapse:collapse;margin:.8em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}\
th{background:#f4f4f4}.note{background:#fff6e0;border-left:4px solid #e0a000;padding:.5em .8em;margin:.8em 0}\
blockquote{border-left:4px solid #9cc;margin:.5em 0;padding:.2em .8em;background:#f6fbfb}\
.label{font-weight:600;color:#366}pre{background:#f6f6f6;padding:.8em;overflow-x:auto}\
figure{margin:1em 0}svg{max-width:100%;height:auto}";

/// Render as one self-contained HTML page (inline CSS and SVG, no JavaScript, no external links).
pub fn to_html(doc: &Doc) -> String {
    let mut o = String::new();
    o.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    o.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    o.push_str(&format!(
        "<title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        esc_html(&doc.title)
    ));
    o.push_str(&format!("<h1>{}</h1>\n", esc_html(&doc.title)));
    for b in &doc.blocks {
        match b {
            Block::Heading(l, s) => o.push_str(&format!("<h{l}>{}</h{l}>\n", esc_html(s))),
            Block::Para(s) => o.push_str(&format!("<p>{}</p>\n", esc_html(s))),
            Block::Note(s) => o.push_str(&format!("<div class=\"note\">{}</div>\n", esc_html(s))),
            Block::List(items) => {
                o.push_str("<ul>\n");
                for i in items {
                    o.push_str(&format!("<li>{}</li>\n", esc_html(i)));
                }
                o.push_str("</ul>\n");
            }
            Block::Table { head, rows } => {
                o.push_str("<table>\n<tr>");
                for h in head {
                    o.push_str(&format!("<th>{}</th>", esc_html(h)));
                }
                o.push_str("</tr>\n");
                for r in rows {
                    o.push_str("<tr>");
                    for c in r {
                        o.push_str(&format!("<td>{}</td>", esc_html(c)));
                    }
                    o.push_str("</tr>\n");
                }
                o.push_str("</table>\n");
            }
            Block::Chart { alt, svg, .. } => {
                // plotters escapes text it draws; strip anything script-like defensively.
                let svg = svg.replace("<script", "&lt;script");
                let svg = svg.trim_start_matches(|c| c != '<');
                let svg = match svg.find("<svg") {
                    Some(i) => &svg[i..],
                    None => svg,
                };
                o.push_str(&format!(
                    "<figure role=\"img\" aria-label=\"{}\">\n{}\n</figure>\n",
                    esc_html(alt),
                    svg
                ));
            }
            Block::Quote { label, text } => o.push_str(&format!(
                "<blockquote><span class=\"label\">{}</span>: {}</blockquote>\n",
                esc_html(label),
                esc_html(text)
            )),
            Block::Pre(s) => o.push_str(&format!("<pre>{}</pre>\n", esc_html(s))),
            Block::Link { text, href } => o.push_str(&format!(
                "<p><a href=\"{}\">{}</a></p>\n",
                esc_html(href),
                esc_html(text)
            )),
        }
    }
    o.push_str("</body>\n</html>\n");
    o
}

/// Render as Markdown; charts are referenced as `<files_dir>/<name>.svg`.
pub fn to_markdown(doc: &Doc, files_dir: &str) -> String {
    let mut o = format!("# {}\n\n", esc_md(&doc.title));
    for b in &doc.blocks {
        match b {
            Block::Heading(l, s) => {
                o.push_str(&format!("{} {}\n\n", "#".repeat(*l as usize), esc_md(s)))
            }
            Block::Para(s) => o.push_str(&format!("{}\n\n", esc_md(s))),
            Block::Note(s) => o.push_str(&format!("> **Note:** {}\n\n", esc_md(s))),
            Block::List(items) => {
                for i in items {
                    o.push_str(&format!("- {}\n", esc_md(i)));
                }
                o.push('\n');
            }
            Block::Table { head, rows } => {
                o.push_str(&format!(
                    "| {} |\n|{}\n",
                    head.iter()
                        .map(|h| esc_md(h))
                        .collect::<Vec<_>>()
                        .join(" | "),
                    "---|".repeat(head.len())
                ));
                for r in rows {
                    o.push_str(&format!(
                        "| {} |\n",
                        r.iter().map(|c| esc_md(c)).collect::<Vec<_>>().join(" | ")
                    ));
                }
                o.push('\n');
            }
            Block::Chart { name, alt, .. } => {
                o.push_str(&format!("![{}]({files_dir}/{name}.svg)\n\n", esc_md(alt)))
            }
            Block::Quote { label, text } => {
                o.push_str(&format!("> **{}**: {}\n\n", esc_md(label), esc_md(text)))
            }
            Block::Pre(s) => {
                // A fence longer than any backtick run inside, so the text cannot close it.
                let longest = s.split(|c| c != '`').map(|r| r.len()).max().unwrap_or(0);
                let fence = "`".repeat(longest.max(2) + 1);
                o.push_str(&format!("{fence}\n{s}\n{fence}\n\n"))
            }
            Block::Link { text, href } => o.push_str(&format!(
                "[{}]({})\n\n",
                esc_md(text),
                href.replace(' ', "%20")
            )),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_neutralizes_markup() {
        let mut d = Doc::new("t <b>");
        d.push(Block::Quote {
            label: "pos".into(),
            text: "<script>alert(1)</script> & *bold* | `x`".into(),
        });
        d.push(Block::Pre("```\n<i>".into()));
        let h = to_html(&d);
        assert!(!h.contains("<script"));
        assert!(h.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; *bold*"));
        assert!(h.contains("<title>t &lt;b&gt;</title>"));
        let m = to_markdown(&d, "f");
        assert!(!m.contains("<script"));
        assert!(m.contains("\\*bold\\* \\| \\`x\\`"));
        assert!(m.contains("````\n```\n<i>\n````"), "{m}");
    }
}
