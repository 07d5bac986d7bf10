//! Reading a JSONL batch as a stream: each line validated as it arrives and
//! the valid ones spooled to an anonymous temporary file, so the body is
//! never whole in memory (only the current line, and the custom_ids seen,
//! which must be unique). Nothing touches Redis until the whole body was
//! read: a refused batch leaves nothing behind.

use std::io::SeekFrom;

use axum::body::Body;
use ferry_common::batch::line::{Rules, SeenIds};
use ferry_common::job::kinds::ChatCompletion;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncSeekExt, AsyncWriteExt, BufReader, BufWriter};

use crate::v1::error::{LineError, V1Error};

/// Longest line accepted, in bytes.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;
/// Bad lines reported in a refusal (all are counted).
pub const MAX_REPORTED_LINES: usize = 100;

/// The limits of one batch.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_lines: u64,
}

/// A fully read batch: its valid lines on disk, its bad lines counted.
pub struct Intake {
    spool: tokio::fs::File,
    pub valid: u64,
    pub invalid: u64,
    /// The first [`MAX_REPORTED_LINES`] bad lines.
    pub errors: Vec<LineError>,
}

/// One spooled line.
#[derive(Serialize, Deserialize)]
struct Spooled {
    c: String,
    p: ChatCompletion,
}

/// Reads and validates the whole body. Errors: 413 past the limits, 503 if
/// the spool cannot be written, 400 if the body cannot be read.
pub async fn read(body: Body, rules: &Rules, limits: Limits) -> Result<Intake, V1Error> {
    let file = tempfile::tempfile().map_err(|e| {
        tracing::error!(error = %e, "cannot create a batch spool file in the temp directory");
        V1Error::unavailable()
    })?;
    let mut spool = BufWriter::new(tokio::fs::File::from_std(file));
    let mut intake = Lines {
        rules,
        seen: SeenIds::default(),
        number: 0,
        valid: 0,
        invalid: 0,
        errors: Vec::new(),
        max_lines: limits.max_lines,
    };
    let mut line: Vec<u8> = Vec::new();
    let mut too_long = false;
    let mut total: u64 = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| V1Error::bad_request("the body could not be read"))?;
        total += chunk.len() as u64;
        if total > limits.max_bytes {
            return Err(V1Error::too_large(limits.max_bytes));
        }
        for piece in chunk.split_inclusive(|b| *b == b'\n') {
            let ends = piece.ends_with(b"\n");
            let content = if ends {
                &piece[..piece.len() - 1]
            } else {
                piece
            };
            if !too_long {
                if line.len() + content.len() > MAX_LINE_BYTES {
                    too_long = true;
                    line.clear();
                } else {
                    line.extend_from_slice(content);
                }
            }
            if ends {
                intake.line(&line, too_long, &mut spool).await?;
                line.clear();
                too_long = false;
            }
        }
    }
    if !line.is_empty() || too_long {
        intake.line(&line, too_long, &mut spool).await?;
    }
    spool.flush().await.map_err(spool_failed)?;
    let mut spool = spool.into_inner();
    spool.seek(SeekFrom::Start(0)).await.map_err(spool_failed)?;
    Ok(Intake {
        spool,
        valid: intake.valid,
        invalid: intake.invalid,
        errors: intake.errors,
    })
}

struct Lines<'a> {
    rules: &'a Rules,
    seen: SeenIds,
    number: u64,
    valid: u64,
    invalid: u64,
    errors: Vec<LineError>,
    max_lines: u64,
}

impl Lines<'_> {
    async fn line(
        &mut self,
        raw: &[u8],
        too_long: bool,
        spool: &mut BufWriter<tokio::fs::File>,
    ) -> Result<(), V1Error> {
        self.number += 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if !too_long && raw.iter().all(u8::is_ascii_whitespace) {
            return Ok(()); // blank lines (a trailing newline) are no requests
        }
        if self.valid + self.invalid >= self.max_lines {
            return Err(V1Error::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("a batch holds at most {} lines", self.max_lines),
            ));
        }
        let checked = if too_long {
            Err(format!("the line is longer than {MAX_LINE_BYTES} bytes"))
        } else {
            self.rules.check(raw, true).and_then(|v| {
                let id = v.custom_id.expect("required for batch lines");
                self.seen.insert(&id)?;
                Ok((id, v.payload))
            })
        };
        match checked {
            Ok((c, p)) => {
                let mut json = serde_json::to_vec(&Spooled { c, p }).expect("serializes");
                json.push(b'\n');
                spool.write_all(&json).await.map_err(spool_failed)?;
                self.valid += 1;
            }
            Err(reason) => {
                self.invalid += 1;
                if self.errors.len() < MAX_REPORTED_LINES {
                    self.errors.push(LineError {
                        line: self.number,
                        reason,
                    });
                }
            }
        }
        Ok(())
    }
}

fn spool_failed(e: std::io::Error) -> V1Error {
    tracing::error!(error = %e, "cannot write the batch spool file");
    V1Error::unavailable()
}

impl Intake {
    /// The valid lines, `chunk` at a time, in order.
    pub fn chunks(self, chunk: usize) -> Chunks {
        Chunks {
            lines: BufReader::new(self.spool).lines(),
            chunk,
        }
    }
}

pub struct Chunks {
    lines: tokio::io::Lines<BufReader<tokio::fs::File>>,
    chunk: usize,
}

impl Chunks {
    /// The next chunk; empty at the end.
    pub async fn next(&mut self) -> std::io::Result<Vec<(String, ChatCompletion)>> {
        let mut out = Vec::with_capacity(self.chunk);
        while out.len() < self.chunk {
            let Some(line) = self.lines.next_line().await? else {
                break;
            };
            let s: Spooled = serde_json::from_str(&line)?;
            out.push((s.c, s.p));
        }
        Ok(out)
    }
}
