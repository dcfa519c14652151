//! Bounded line framing: every line-based reader (CSV, JSON lines; files, stdin, followed
//! files) reads through [`BoundedLines`], which never buffers more than its limit of one
//! line. A longer line is skipped to its newline and reported with its size, so 2 GB of
//! input with no newline costs the limit in memory, not 2 GB.

use std::io::{BufRead, ErrorKind};

/// One line read.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// The line's bytes, without the newline (and a `\r` before it).
    Text(&'a [u8]),
    /// A line longer than the limit, skipped; `size` is its length in bytes.
    TooLong {
        /// Bytes in the line (without the newline).
        size: usize,
    },
}

/// Lines of a reader, each at most `limit` bytes kept.
pub struct BoundedLines<R> {
    inner: R,
    limit: usize,
    buf: Vec<u8>,
    line: u64,
}

impl<R: BufRead> BoundedLines<R> {
    /// Lines of `inner`, keeping at most `limit` bytes of any one.
    pub fn new(inner: R, limit: usize) -> Self {
        Self {
            inner,
            limit,
            buf: Vec::new(),
            line: 0,
        }
    }

    /// The 1-based number of the line last returned.
    #[must_use]
    pub fn line_number(&self) -> u64 {
        self.line
    }

    /// The most bytes of a line kept.
    #[must_use]
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The next line and its 1-based number; `None` at the end of the input. A last line
    /// without a newline is returned too.
    pub fn next_line(&mut self) -> Option<std::io::Result<(u64, Line<'_>)>> {
        self.buf.clear();
        let mut size = 0usize;
        let mut any = false;
        loop {
            let available = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Some(Err(e)),
            };
            if available.is_empty() {
                if !any {
                    return None;
                }
                break;
            }
            any = true;
            let (chunk, done) = match memchr::memchr(b'\n', available) {
                Some(i) => (&available[..i], Some(i + 1)),
                None => (available, None),
            };
            let room = self.limit.saturating_sub(self.buf.len());
            if size <= self.limit {
                self.buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            size += chunk.len();
            let used = done.unwrap_or(available.len());
            self.inner.consume(used);
            if done.is_some() {
                break;
            }
        }
        self.line += 1;
        if size > self.limit {
            // The kept prefix is dropped with the rest of the line.
            self.buf.clear();
            self.buf.shrink_to(self.limit.min(1 << 16));
            return Some(Ok((self.line, Line::TooLong { size })));
        }
        let text = match self.buf.last() {
            Some(b'\r') => &self.buf[..self.buf.len() - 1],
            _ => &self.buf[..],
        };
        Some(Ok((self.line, Line::Text(text))))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufReader, Read};

    use super::*;

    fn lines(input: &[u8], limit: usize, cap: usize) -> Vec<Result<String, usize>> {
        let mut r = BoundedLines::new(BufReader::with_capacity(cap, input), limit);
        let mut out = Vec::new();
        while let Some(l) = r.next_line() {
            out.push(match l.unwrap().1 {
                Line::Text(t) => Ok(String::from_utf8(t.to_vec()).unwrap()),
                Line::TooLong { size } => Err(size),
            });
        }
        out
    }

    #[test]
    fn splits_lines_and_skips_long_ones_whatever_the_buffer() {
        for cap in [1, 2, 3, 7, 64, 4096] {
            let got = lines(b"ab\r\n\nabcdefgh\nxyz", 4, cap);
            assert_eq!(
                got,
                vec![Ok("ab".into()), Ok(String::new()), Err(8), Ok("xyz".into())],
                "buffer {cap}"
            );
        }
        assert_eq!(lines(b"abcd\n", 4, 2), vec![Ok("abcd".into())]);
        assert!(lines(b"", 4, 8).is_empty());
    }

    /// A reader of `n` bytes of `a` and no newline, generated on the fly.
    struct Endless(u64);

    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = (buf.len() as u64).min(self.0) as usize;
            buf[..n].fill(b'a');
            self.0 -= n as u64;
            Ok(n)
        }
    }

    #[test]
    fn memory_stays_at_the_limit_without_a_newline() {
        let mut r = BoundedLines::new(BufReader::new(Endless(50_000_000)), 1024);
        assert_eq!(
            r.next_line().unwrap().unwrap(),
            (1, Line::TooLong { size: 50_000_000 })
        );
        assert!(r.buf.capacity() <= 1 << 16);
        assert_eq!(r.line_number(), 1);
        assert!(r.next_line().is_none());
    }
}
