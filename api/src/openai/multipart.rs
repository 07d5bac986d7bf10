//! A streaming `multipart/form-data` reader (RFC 7578), just what a file
//! upload needs: parts one after the other, each part's content in pieces
//! as the body arrives, never the whole body in memory (the buffer holds
//! at most one piece of the body and a delimiter's length). The official
//! OpenAI clients (httpx, undici) and curl send this shape.

use axum::body::{Body, BodyDataStream, Bytes};
use futures::StreamExt;

/// Longest preamble before the first boundary, and longest header block
/// of one part.
const MAX_HEADER_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    #[error("the body is larger than {0} bytes")]
    TooLarge(u64),
    #[error("malformed multipart body: {0}")]
    Malformed(&'static str),
    #[error("the body could not be read")]
    Read,
}

/// One part's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The form field (`Content-Disposition: form-data; name="..."`).
    pub name: String,
    pub filename: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first boundary.
    Start,
    /// The buffer starts with a delimiter.
    AtDelimiter,
    /// Within a part's content.
    InPart,
    Done,
}

pub struct Multipart {
    stream: BodyDataStream,
    buf: Vec<u8>,
    /// `\r\n--<boundary>`.
    delimiter: Vec<u8>,
    state: State,
    read: u64,
    max_bytes: u64,
    ended: bool,
}

/// The boundary of a `multipart/form-data` content type, `None` for any
/// other type.
pub fn boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    let kind = params.next()?.trim();
    if !kind.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_owned())
            .filter(|b| !b.is_empty() && b.len() <= 70)
    })
}

impl Multipart {
    /// Reads `body` split by `boundary`, refusing more than `max_bytes` of
    /// body in all.
    pub fn new(body: Body, boundary: &str, max_bytes: u64) -> Self {
        Self {
            stream: body.into_data_stream(),
            // So a boundary at the very start matches the delimiter too.
            buf: b"\r\n".to_vec(),
            delimiter: format!("\r\n--{boundary}").into_bytes(),
            state: State::Start,
            read: 0,
            max_bytes,
            ended: false,
        }
    }

    /// Reads more of the body into the buffer; `false` at its end.
    async fn fill(&mut self) -> Result<bool, MultipartError> {
        if self.ended {
            return Ok(false);
        }
        match self.stream.next().await {
            None => {
                self.ended = true;
                Ok(false)
            }
            Some(Err(_)) => Err(MultipartError::Read),
            Some(Ok(chunk)) => {
                self.read += chunk.len() as u64;
                if self.read > self.max_bytes {
                    return Err(MultipartError::TooLarge(self.max_bytes));
                }
                self.buf.extend_from_slice(&chunk);
                Ok(true)
            }
        }
    }

    /// Fills until the buffer holds at least `n` bytes.
    async fn want(&mut self, n: usize) -> Result<(), MultipartError> {
        while self.buf.len() < n {
            if !self.fill().await? {
                return Err(MultipartError::Malformed("the body ends early"));
            }
        }
        Ok(())
    }

    /// The next part's headers, skipping what is left of the current part;
    /// `None` after the closing boundary.
    pub async fn next_part(&mut self) -> Result<Option<Part>, MultipartError> {
        loop {
            match self.state {
                State::Done => return Ok(None),
                State::InPart => while self.chunk().await?.is_some() {},
                State::Start => {
                    loop {
                        if let Some(at) = find(&self.buf, &self.delimiter) {
                            self.buf.drain(..at);
                            break;
                        }
                        if self.buf.len() > MAX_HEADER_BYTES {
                            return Err(MultipartError::Malformed("no boundary where one is due"));
                        }
                        if !self.fill().await? {
                            return Err(MultipartError::Malformed("no boundary in the body"));
                        }
                    }
                    self.state = State::AtDelimiter;
                }
                State::AtDelimiter => return self.headers().await,
            }
        }
    }

    /// After a delimiter: the closing `--`, or a part's headers.
    async fn headers(&mut self) -> Result<Option<Part>, MultipartError> {
        let d = self.delimiter.len();
        self.want(d + 2).await?;
        if &self.buf[d..d + 2] == b"--" {
            self.state = State::Done;
            self.buf.clear();
            return Ok(None);
        }
        // The rest of the boundary line (transport padding), then the
        // headers up to an empty line.
        let end = loop {
            if let Some(at) = find(&self.buf[d..], b"\r\n") {
                let block = d + at + 2;
                if self.buf[block..].starts_with(b"\r\n") {
                    break block; // no headers
                }
                if let Some(end) = find(&self.buf[block..], b"\r\n\r\n") {
                    break block + end + 2;
                }
            }
            if self.buf.len() > d + MAX_HEADER_BYTES {
                return Err(MultipartError::Malformed("a part's headers are too long"));
            }
            if !self.fill().await? {
                return Err(MultipartError::Malformed(
                    "the body ends in a part's headers",
                ));
            }
        };
        let head = String::from_utf8_lossy(&self.buf[d..end]).into_owned();
        self.buf.drain(..end + 2);
        self.state = State::InPart;
        let mut lines = head.split("\r\n");
        let padding = lines.next().unwrap_or("");
        if !padding.trim().is_empty() {
            return Err(MultipartError::Malformed("text after a boundary"));
        }
        let disposition = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-disposition"))
            .map(|(_, value)| value.trim().to_owned())
            .ok_or(MultipartError::Malformed(
                "a part without Content-Disposition",
            ))?;
        parse_disposition(&disposition).map(Some)
    }

    /// The next piece of the current part's content, `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, MultipartError> {
        if self.state != State::InPart {
            return Ok(None);
        }
        loop {
            if let Some(at) = find(&self.buf, &self.delimiter) {
                if at == 0 {
                    self.state = State::AtDelimiter;
                    return Ok(None);
                }
                let piece: Vec<u8> = self.buf.drain(..at).collect();
                return Ok(Some(Bytes::from(piece)));
            }
            // Keep what could be the start of a delimiter.
            let keep = self.delimiter.len() - 1;
            if self.buf.len() > keep {
                let piece: Vec<u8> = self.buf.drain(..self.buf.len() - keep).collect();
                return Ok(Some(Bytes::from(piece)));
            }
            if !self.fill().await? {
                return Err(MultipartError::Malformed("the body ends within a part"));
            }
        }
    }

    /// The current part's whole content, if at most `max` bytes.
    pub async fn small_value(&mut self, max: usize) -> Result<Option<String>, MultipartError> {
        let mut value = Vec::new();
        while let Some(piece) = self.chunk().await? {
            value.extend_from_slice(&piece);
            if value.len() > max {
                return Ok(None);
            }
        }
        Ok(String::from_utf8(value).ok())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `form-data; name="file"; filename="batch.jsonl"`.
fn parse_disposition(value: &str) -> Result<Part, MultipartError> {
    let mut params = value.split(';');
    let kind = params.next().unwrap_or("").trim();
    if !kind.eq_ignore_ascii_case("form-data") {
        return Err(MultipartError::Malformed("a part that is not form-data"));
    }
    let (mut name, mut filename, mut extended) = (None, None, None);
    for p in params {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let unquoted = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v)
            .replace("\\\"", "\"");
        match k.trim().to_ascii_lowercase().as_str() {
            "name" => name = Some(unquoted),
            "filename" => filename = Some(unquoted),
            // RFC 5987 (`utf-8''name`); the plain filename wins.
            "filename*" => {
                extended = Some(
                    unquoted
                        .split_once("''")
                        .map_or(unquoted.clone(), |(_, n)| n.to_owned()),
                )
            }
            _ => {}
        }
    }
    Ok(Part {
        name: name.ok_or(MultipartError::Malformed("a part without a name"))?,
        filename: filename.or(extended),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_in_pieces(raw: &[u8], piece: usize) -> Body {
        let pieces: Vec<Result<Bytes, std::io::Error>> = raw
            .chunks(piece)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Body::from_stream(futures::stream::iter(pieces))
    }

    async fn parts(raw: &[u8], piece: usize) -> Result<Vec<(Part, Vec<u8>)>, MultipartError> {
        let mut m = Multipart::new(body_in_pieces(raw, piece), "XyZ", 1 << 20);
        let mut out = Vec::new();
        while let Some(part) = m.next_part().await? {
            let mut data = Vec::new();
            while let Some(p) = m.chunk().await? {
                data.extend_from_slice(&p);
            }
            out.push((part, data));
        }
        Ok(out)
    }

    const BODY: &[u8] = b"--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\nContent-Type: application/octet-stream\r\n\r\n{\"a\":1}\r\n\r\n-XyZ\n--XyZ-x\n{\"b\":2}\n\r\n--XyZ--\r\n";

    #[tokio::test]
    async fn parts_come_whole_however_the_body_is_cut() {
        for piece in [1, 2, 3, 7, 64, 4096] {
            let got = parts(BODY, piece)
                .await
                .unwrap_or_else(|e| panic!("piece {piece}: {e}"));
            assert_eq!(got.len(), 2, "piece {piece}");
            assert_eq!(got[0].0.name, "purpose");
            assert_eq!(got[0].1, b"batch");
            assert_eq!(got[1].0.filename.as_deref(), Some("in.jsonl"));
            assert_eq!(
                got[1].1, b"{\"a\":1}\r\n\r\n-XyZ\n--XyZ-x\n{\"b\":2}\n",
                "piece {piece}"
            );
        }
    }

    #[tokio::test]
    async fn a_preamble_and_an_empty_part_are_fine_a_cut_body_is_not() {
        let raw = b"ignored preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"e\"\r\n\r\n\r\n--XyZ--";
        let got = parts(raw, 5).await.unwrap();
        assert_eq!(got.len(), 1);
        assert!(got[0].1.is_empty());
        let cut = &BODY[..BODY.len() - 12];
        assert!(matches!(
            parts(cut, 9).await,
            Err(MultipartError::Malformed(_))
        ));
        assert!(matches!(
            parts(b"no boundary at all", 4).await,
            Err(MultipartError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn the_size_limit_holds_mid_part() {
        let mut m = Multipart::new(body_in_pieces(BODY, 10), "XyZ", 50);
        let read = async {
            while m.next_part().await?.is_some() {
                while m.chunk().await?.is_some() {}
            }
            Ok::<(), MultipartError>(())
        };
        assert_eq!(read.await, Err(MultipartError::TooLarge(50)));
    }

    #[test]
    fn the_boundary_comes_from_the_content_type() {
        assert_eq!(
            boundary("multipart/form-data; boundary=\"a b\"").as_deref(),
            Some("a b")
        );
        assert_eq!(
            boundary("Multipart/Form-Data;charset=utf-8; boundary=xyz").as_deref(),
            Some("xyz")
        );
        assert_eq!(boundary("application/json; boundary=xyz"), None);
        assert_eq!(boundary("multipart/form-data"), None);
        let part =
            parse_disposition("form-data; name=file; filename*=utf-8''na%20me.jsonl").unwrap();
        assert_eq!(part.filename.as_deref(), Some("na%20me.jsonl"));
    }
}
