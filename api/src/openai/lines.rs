//! Lines of an input file: counted and measured as an upload streams in
//! ([`LineScan`], the limits of a batch body), read back line by line from
//! its stored chunks ([`StoredLines`]) when a batch is made of it.

use ferry_common::batch::files::Files;
use ferry_common::queue::QueueError;

/// Chunks read per Redis round trip.
const CHUNKS_PER_READ: usize = 4;

/// Why an upload is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineProblem {
    /// Line `n` (1-based) is longer than the longest line accepted.
    TooLong(u64),
    /// More non-blank lines than a batch may have.
    TooMany(u64),
}

/// Counts the lines of a stream of bytes and checks their length.
#[derive(Debug)]
pub struct LineScan {
    max_line: usize,
    max_lines: u64,
    /// Lines started so far (the current one included).
    number: u64,
    current: usize,
    current_blank: bool,
    /// Non-blank lines, finished or not.
    lines: u64,
}

impl LineScan {
    pub fn new(max_line: usize, max_lines: u64) -> Self {
        Self {
            max_line,
            max_lines,
            number: 1,
            current: 0,
            current_blank: true,
            lines: 0,
        }
    }

    pub fn feed(&mut self, data: &[u8]) -> Result<(), LineProblem> {
        for piece in data.split_inclusive(|b| *b == b'\n') {
            let ends = piece.ends_with(b"\n");
            let content = if ends {
                &piece[..piece.len() - 1]
            } else {
                piece
            };
            self.current += content.len();
            if self.current > self.max_line {
                return Err(LineProblem::TooLong(self.number));
            }
            if self.current_blank && !content.iter().all(u8::is_ascii_whitespace) {
                self.current_blank = false;
                self.lines += 1;
                if self.lines > self.max_lines {
                    return Err(LineProblem::TooMany(self.max_lines));
                }
            }
            if ends {
                self.number += 1;
                self.current = 0;
                self.current_blank = true;
            }
        }
        Ok(())
    }

    /// The non-blank lines seen.
    pub fn lines(&self) -> u64 {
        self.lines
    }
}

/// The non-blank lines of a stored file, in order, with their numbers.
pub struct StoredLines {
    files: Files,
    id: String,
    next_chunk: usize,
    buf: Vec<u8>,
    /// Where the unread part of `buf` starts.
    at: usize,
    ended: bool,
    number: u64,
}

impl StoredLines {
    pub fn new(files: Files, id: &str) -> Self {
        Self {
            files,
            id: id.to_owned(),
            next_chunk: 0,
            buf: Vec::new(),
            at: 0,
            ended: false,
            number: 0,
        }
    }

    /// The next non-blank line (without its line end) and its 1-based
    /// number; `None` at the end.
    pub async fn next(&mut self) -> Result<Option<(u64, Vec<u8>)>, QueueError> {
        loop {
            if let Some(nl) = self.buf[self.at..].iter().position(|b| *b == b'\n') {
                let line = self.buf[self.at..self.at + nl].to_vec();
                self.at += nl + 1;
                self.number += 1;
                if let Some(line) = non_blank(line) {
                    return Ok(Some((self.number, line)));
                }
                continue;
            }
            if self.ended {
                if self.at < self.buf.len() {
                    let line = self.buf[self.at..].to_vec();
                    self.at = self.buf.len();
                    self.number += 1;
                    if let Some(line) = non_blank(line) {
                        return Ok(Some((self.number, line)));
                    }
                }
                return Ok(None);
            }
            let chunks = self
                .files
                .chunks(&self.id, self.next_chunk, CHUNKS_PER_READ)
                .await?;
            self.next_chunk += chunks.len();
            self.ended = chunks.len() < CHUNKS_PER_READ;
            self.buf.drain(..self.at);
            self.at = 0;
            for chunk in chunks {
                self.buf.extend_from_slice(&chunk);
            }
        }
    }
}

fn non_blank(mut line: Vec<u8>) -> Option<Vec<u8>> {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    (!line.iter().all(u8::is_ascii_whitespace)).then_some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_counted_and_measured_across_pieces() {
        let mut scan = LineScan::new(5, 3);
        for piece in [&b"ab"[..], b"c\n\n  \nde", b"f\r\n"] {
            scan.feed(piece).unwrap();
        }
        assert_eq!(scan.lines(), 2);
        assert_eq!(scan.feed(b"123456"), Err(LineProblem::TooLong(5)));
        let mut many = LineScan::new(100, 2);
        assert_eq!(many.feed(b"a\nb\nc"), Err(LineProblem::TooMany(2)));
    }
}
