//! What the CLI writes to a terminal. Job output, job names, labels and reasons are a
//! tenant's text: written raw, a job could clear the user's screen, set the terminal's
//! title or write the clipboard (OSC 52). On a terminal, control characters are shown
//! escaped: C0 and DEL in caret notation (`^[`, `^G`, `^?`, as `cat -v` writes them), C1 as
//! `\u{9b}`; newlines and tabs stay. Written to a pipe or a file, text passes unchanged.

use std::borrow::Cow;
use std::io::Write;

/// Whether `c` is shown escaped.
fn is_control(c: char) -> bool {
    c.is_control() && c != '\n' && c != '\t'
}

/// `text` as a terminal may show it.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c as u32 {
            _ if !is_control(c) => out.push(c),
            0x7f => out.push_str("^?"),
            n @ 0..=0x1f => {
                out.push('^');
                out.push(char::from(b'@' + n as u8));
            }
            n => out.push_str(&format!("\\u{{{n:x}}}")),
        }
    }
    Cow::Owned(out)
}

/// `text` escaped when `terminal` says so.
pub fn shown(text: &str, terminal: bool) -> Cow<'_, str> {
    match terminal {
        true => escape(text),
        false => Cow::Borrowed(text),
    }
}

/// Writes a byte stream (a log) to `out`, escaped when it is a terminal: a character cut
/// between two chunks waits for the rest of it.
pub struct Sink<W> {
    out: W,
    terminal: bool,
    carry: Vec<u8>,
}

impl<W: Write> Sink<W> {
    pub fn new(out: W, terminal: bool) -> Self {
        Sink {
            out,
            terminal,
            carry: vec![],
        }
    }

    pub fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        if !self.terminal {
            self.out.write_all(chunk)?;
            return self.out.flush();
        }
        self.carry.extend_from_slice(chunk);
        let whole = match std::str::from_utf8(&self.carry) {
            Ok(_) => self.carry.len(),
            // An incomplete character at the end waits; anything invalid is replaced.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.carry.len(),
        };
        let text = String::from_utf8_lossy(&self.carry[..whole]).into_owned();
        self.carry.drain(..whole);
        self.out.write_all(escape(&text).as_bytes())?;
        self.out.flush()
    }

    /// Writes what is still carried (a character the stream cut short).
    pub fn finish(&mut self) -> std::io::Result<()> {
        let rest = std::mem::take(&mut self.carry);
        self.out
            .write_all(escape(&String::from_utf8_lossy(&rest)).as_bytes())?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_escaped_on_a_terminal_only() {
        let osc52 = "\x1b]52;c;aGk=\x07\x1b[2J\u{9b}0m\r\x7fok\n\tend";
        assert_eq!(escape(osc52), "^[]52;c;aGk=^G^[[2J\\u{9b}0m^M^?ok\n\tend");
        assert_eq!(shown(osc52, false), osc52);
        assert!(matches!(escape("plain text\n"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_character_cut_between_chunks_is_written_whole() {
        let mut out = vec![];
        let mut sink = Sink::new(&mut out, true);
        let text = "é\x1b".as_bytes();
        sink.write(&text[..1]).unwrap();
        sink.write(&text[1..]).unwrap();
        sink.finish().unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "é^[");
    }
}
