//! Markdown helpers shared by the comparison crate and `cargo xtask bench-compare` (which
//! includes this file with `#[path]`): replacing one `## ` section of a document, and moving a
//! report's headings one level down.

/// Replaces the section under `heading` (a `## ` line) in `text`, up to the next `## ` heading or
/// the end, with `section`; appends `section` at the end when there is no such heading.
pub fn splice_section(text: &str, heading: &str, section: &str) -> String {
    let mut offset = 0;
    let mut start = None;
    let mut end = text.len();
    for line in text.split_inclusive('\n') {
        let line_heading = line.trim_end();
        if start.is_none() && line_heading == heading {
            start = Some(offset);
        } else if start.is_some() && line_heading.starts_with("## ") {
            end = offset;
            break;
        }
        offset += line.len();
    }
    let section = section.trim_end_matches('\n');
    match start {
        Some(start) => {
            let mut out = String::with_capacity(text.len() + section.len());
            out.push_str(&text[..start]);
            out.push_str(section);
            out.push('\n');
            if end < text.len() {
                out.push('\n');
            }
            out.push_str(&text[end..]);
            out
        }
        None => {
            let mut out = text.trim_end_matches('\n').to_string();
            out.push_str("\n\n");
            out.push_str(section);
            out.push('\n');
            out
        }
    }
}

/// Moves every Markdown heading of `text` one level down (`## ` becomes `### `).
// Used by the xtask, which includes this file; the comparison crate itself does not need it.
#[allow(dead_code)]
pub fn demote_headings(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.split_inclusive('\n') {
        if line.starts_with('#') {
            out.push('#');
        }
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "## Against peers";

    #[test]
    fn splice_appends_then_replaces_only_its_section() {
        let doc = "# B\n\n## Frame codec\n\nfigures\n";
        let first = splice_section(doc, H, "## Against peers\n\nv1\n");
        assert_eq!(
            first,
            "# B\n\n## Frame codec\n\nfigures\n\n## Against peers\n\nv1\n"
        );
        let second = splice_section(&first, H, "## Against peers\n\nv2\n\n");
        assert_eq!(
            second,
            "# B\n\n## Frame codec\n\nfigures\n\n## Against peers\n\nv2\n"
        );
        let middle = "# B\n\n## Against peers\n\nold\n### sub\n\n## Session\n\ns\n";
        assert_eq!(
            splice_section(middle, H, "## Against peers\n\nnew\n"),
            "# B\n\n## Against peers\n\nnew\n\n## Session\n\ns\n"
        );
        // Another heading of the same level that merely starts alike is not the section.
        let other = "# B\n\n## Against peers, old\n\nx\n";
        assert!(
            splice_section(other, H, "## Against peers\n\nn\n")
                .ends_with("x\n\n## Against peers\n\nn\n")
        );
    }

    #[test]
    fn headings_move_one_level_down() {
        assert_eq!(
            demote_headings("## A\ntext # not\n### B\n"),
            "### A\ntext # not\n#### B\n"
        );
    }
}
