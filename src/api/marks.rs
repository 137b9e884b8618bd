//! The gateway's own lines in a followed log. A follow streams the job's output and, when a
//! read fails, a line of the gateway's; so that no job can print a line that passes for the
//! gateway's, a gateway line starts with [`MARK`], and a line of the job's that starts with
//! the mark after any number of `>` gets one more `>` (as mbox quotes "From "). A line
//! that starts with the mark is the gateway's, and a reader who strips one `>` from a line
//! that starts with `>`s and the mark has the job's line back.

/// How a gateway line starts.
pub const MARK: &str = "[offload] ";

/// Quotes a job's output as it streams, read by read.
#[derive(Default)]
pub struct Quoter {
    /// The start of the current line, held while it may still become `>*` and the mark.
    held: String,
    /// Whether the current line has been decided (sent on, quoted or not).
    decided: bool,
}

impl Quoter {
    /// The job's text as it is sent: every line start decided so far, quoted where it
    /// would pass for the gateway's; a line start that may still become one is held back.
    pub fn push(&mut self, text: &str) -> String {
        let mut out = String::with_capacity(text.len() + 1);
        for c in text.chars() {
            if self.decided {
                out.push(c);
                self.decided = c != '\n';
                continue;
            }
            self.held.push(c);
            let rest = self.held.trim_start_matches('>');
            if rest.starts_with(MARK) {
                out.push('>');
            } else if MARK.starts_with(rest) {
                continue;
            }
            out.push_str(&self.held);
            self.decided = c != '\n';
            self.held.clear();
        }
        out
    }

    /// A gateway line, after whatever is held of the job's (on a line of its own).
    pub fn gateway_line(&mut self, message: &str) -> String {
        let mut out = std::mem::take(&mut self.held);
        if self.decided || !out.is_empty() {
            out.push('\n');
        }
        self.decided = false;
        out + MARK + message + "\n"
    }

    /// What is still held back, at the end of the log: a line start that never became the
    /// mark.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_that_would_pass_for_the_gateways_are_quoted_however_they_are_cut() {
        let text = "[offload] a\n>[offload] b\nx [offload] c\n[offload]d\n[offload] ";
        let whole = Quoter::default().push(text);
        for cut in 0..text.len() {
            let mut q = Quoter::default();
            let mut out = q.push(&text[..cut]);
            out += &q.push(&text[cut..]);
            assert_eq!(out, whole, "cut at {cut}");
        }
        assert_eq!(
            whole,
            ">[offload] a\n>>[offload] b\nx [offload] c\n[offload]d\n>[offload] "
        );
        let mut q = Quoter::default();
        assert_eq!(q.push("half a line [offl"), "half a line [offl");
        assert_eq!(q.gateway_line("oops"), "\n[offload] oops\n");
        assert_eq!(q.push("[off"), "");
        assert_eq!(q.finish(), "[off");
    }
}
