//! Passive measurement: the server's processing time read from its access log.
//!
//! Active probing costs the server a request per sample and measures one
//! synthetic request; the access log already holds a request time for every
//! real request, at no cost to the server. So in passive mode the agent follows
//! the log like `tail -F` and turns each new line into one sample of the
//! server's time-until-first-read. Two parts:
//!
//! * [`parse_line`] reads the request time out of one line, for the
//!   [`LogFormat`] the operator configured. It never fails loudly: a line
//!   without a usable time is simply no sample.
//! * [`LogFollower`] reads the lines appended since the last poll and survives
//!   log rotation (rename + create, copytruncate, deletion), so that a
//!   long-running agent keeps measuring across the nightly logrotate without
//!   reading any line twice.
//!
//! The follower is polled, not event-driven: the caller owns the clock (and
//! the tests are deterministic), and a poll is a handful of system calls.
//! It relies on Unix file identities (device, inode), which is where the
//! servers it watches run.

use std::borrow::Cow;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Which field of an access-log line holds the request time.
#[derive(Debug, Clone)]
pub enum LogFormat {
    /// nginx with a key=value field: `rt=$request_time` (seconds, ms
    /// resolution, e.g. `rt=0.012`) or `uht=$upstream_header_time` (seconds;
    /// may be `-` or a comma/colon-separated list when several upstreams were
    /// tried: the LAST entry is the upstream that answered, so it is the one
    /// taken; `-` means no sample).
    Nginx(NginxField),
    /// Apache `%D` (microseconds, integer) as the LAST whitespace-separated
    /// field of the line.
    Apache,
    /// A regex whose named capture `t` holds a number, in the given unit:
    /// the escape hatch for any other log format.
    Regex {
        /// Must contain a named group `t`; a line where it does not match
        /// (or `t` did not participate) gives no sample.
        regex: regex::Regex,
        /// What one unit of the captured number is.
        unit: TimeUnit,
    },
}

/// Which nginx variable the agent reads (see [`LogFormat::Nginx`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NginxField {
    /// `rt=$request_time`: from the first byte read from the client to the
    /// last byte sent, so it includes sending the response. Works for every
    /// request, proxied or not.
    RequestTime,
    /// `uht=$upstream_header_time`: until the upstream's response header
    /// arrived, i.e. closest to time-until-first-read for a proxying nginx.
    /// Requests nginx answers itself (static files, cache hits) log `-`.
    UpstreamHeaderTime,
}

impl NginxField {
    /// The `key=` this field is logged under, by the convention documented
    /// on [`LogFormat::Nginx`].
    fn key(self) -> &'static str {
        match self {
            NginxField::RequestTime => "rt=",
            NginxField::UpstreamHeaderTime => "uht=",
        }
    }
}

/// The unit of a number captured by [`LogFormat::Regex`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    /// Seconds, possibly fractional (`0.012`).
    Seconds,
    /// Milliseconds, possibly fractional (`12.5`).
    Milliseconds,
    /// Microseconds (`12500`).
    Microseconds,
}

impl TimeUnit {
    fn nanos(self) -> u64 {
        match self {
            TimeUnit::Seconds => 1_000_000_000,
            TimeUnit::Milliseconds => 1_000_000,
            TimeUnit::Microseconds => 1_000,
        }
    }
}

/// Longest request time taken as a sample. Anything longer is a misparse (a
/// byte count or a timestamp read as a time) or a request that says nothing
/// about processing time (a long poll, a stuck download); either would wreck
/// the smoothed estimate, so it is dropped.
const MAX_SAMPLE_NANOS: u128 = 3_600 * 1_000_000_000;

/// Reads one request time from one log line; None when the line has no usable sample
/// (field absent, `-`, not a finite non-negative number, absurd > 1 hour).
///
/// Never panics, whatever the line: log files are written by another program
/// and may hold anything, including half-written or corrupted lines.
pub fn parse_line(format: &LogFormat, line: &str) -> Option<Duration> {
    match format {
        LogFormat::Nginx(field) => parse_number(nginx_value(line, field.key())?, TimeUnit::Seconds),
        LogFormat::Apache => {
            // `%D` is an integer; insisting on digits keeps a line in another
            // format (ending in `-`, a quoted user agent, a float) from giving
            // a plausible-looking wrong sample.
            let last = line.split_ascii_whitespace().next_back()?;
            if !last.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            parse_number(last, TimeUnit::Microseconds)
        }
        LogFormat::Regex { regex, unit } => {
            let t = regex.captures(line)?.name("t")?;
            parse_number(t.as_str(), *unit)
        }
    }
}

/// The value of nginx's `key=` field in `line`: the last entry of a possibly
/// comma/colon-separated list, as a string still to be parsed.
///
/// The LAST occurrence of the key at a field boundary is used: the extra
/// fields are appended at the end of the line, after the client-controlled
/// request and user agent, which could contain the same text.
fn nginx_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.rmatch_indices(key).map(|(i, _)| i).find(|&i| {
        line[..i]
            .chars()
            .next_back()
            .is_none_or(char::is_whitespace)
    })?;
    let mut rest = &line[start + key.len()..];
    // A log_format may quote the value (`rt="$request_time"`); then the quotes,
    // not whitespace, delimit it.
    if let Some(quoted) = rest.strip_prefix('"') {
        rest = quoted.split('"').next().unwrap_or(quoted);
    }
    // nginx writes `0.002, 0.005` for upstreams tried in turn and
    // `0.002 : 0.005` across an internal redirect.
    let mut last;
    loop {
        let end = rest
            .find(|c: char| c.is_whitespace() || c == ',' || c == ':' || c == '"')
            .unwrap_or(rest.len());
        last = &rest[..end];
        if last.is_empty() {
            return None;
        }
        let after = rest[end..].trim_start();
        match after.strip_prefix([',', ':']) {
            Some(next) => rest = next.trim_start(),
            None => return Some(last),
        }
    }
}

/// Parses a non-negative number of `unit`s into a duration, None if it is not
/// a finite non-negative number or is above [`MAX_SAMPLE_NANOS`].
///
/// Plain decimals are converted exactly (`0.012` s is exactly 12 ms, which
/// going through `f64` would not be); other spellings Rust's `f64` accepts
/// (`1e-3`) go through `f64`, which also rejects `NaN` and infinities.
fn parse_number(s: &str, unit: TimeUnit) -> Option<Duration> {
    let per = unit.nanos();
    let nanos = match parse_decimal_nanos(s, per) {
        Some(n) => n,
        None => {
            let v: f64 = s.parse().ok()?;
            if !v.is_finite() || v.is_sign_negative() {
                return None;
            }
            let ns = v * per as f64;
            if ns > MAX_SAMPLE_NANOS as f64 {
                return None;
            }
            // In range and finite: the cast neither saturates nor wraps.
            ns as u128
        }
    };
    if nanos > MAX_SAMPLE_NANOS {
        return None;
    }
    Some(Duration::from_nanos(u64::try_from(nanos).ok()?))
}

/// `digits[.digits]` (either side may be empty, not both) times `per`
/// nanoseconds, exactly (truncated below a nanosecond); None for anything
/// else. Saturates instead of overflowing on absurdly long inputs.
fn parse_decimal_nanos(s: &str, per: u64) -> Option<u128> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if (whole.is_empty() && frac.is_empty())
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let per = u128::from(per);
    let whole = whole.bytes().fold(0u128, |acc, b| {
        acc.saturating_mul(10).saturating_add(u128::from(b - b'0'))
    });
    // Nine fraction digits reach a nanosecond even in seconds; more would only
    // be truncated away.
    let (frac_value, frac_scale) = frac.bytes().take(9).fold((0u128, 1u128), |(v, s), b| {
        (v * 10 + u128::from(b - b'0'), s * 10)
    });
    Some(
        whole
            .saturating_mul(per)
            .saturating_add(frac_value * per / frac_scale),
    )
}

/// Longest partial line buffered while waiting for its newline. Access-log
/// lines are a few hundred bytes; a longer "line" is binary junk or a runaway
/// field, and buffering it without bound would let the log grow our memory.
const MAX_LINE: usize = 64 * 1024;

/// Most bytes read by one [`LogFollower::poll`], so that a huge backlog (a
/// follower started `from_start` on a big log, or a stall) is worked off over
/// several polls instead of stalling the caller for seconds.
const MAX_BYTES_PER_POLL: usize = 4 * 1024 * 1024;

/// Size of one read; also the scratch buffer allocated per poll.
const READ_CHUNK: usize = 64 * 1024;

/// How many bytes just before the read offset are remembered, to notice a
/// copytruncate after which the file has already grown past our offset again.
const TAIL_CHECK: usize = 64;

/// A rotated-away file is still read until it has been idle (no new bytes) for
/// this many polls AND [`RETIRE_GRACE`]: after logrotate renames the log and
/// creates a new one, the server keeps writing to the old file until it has
/// been told to reopen (and, for nginx, until every worker has), so switching
/// at once and closing the old file would lose those last lines.
const RETIRE_IDLE_POLLS: u32 = 3;

/// See [`RETIRE_IDLE_POLLS`].
const RETIRE_GRACE: Duration = Duration::from_secs(30);

/// Most rotated-away files still being read; beyond it the oldest is closed.
/// Only reached if the log is rotated faster than the writer reopens it.
const MAX_RETIRING: usize = 4;

/// A file's identity: (device, inode). The path is no identity: rotation
/// makes the same path name another file.
type FileId = (u64, u64);

/// One open log file and how far it has been read.
struct Source {
    file: File,
    id: FileId,
    /// Bytes of the file consumed (complete lines, the partial line and skipped bytes).
    offset: u64,
    /// The start of a line whose newline has not been read yet.
    partial: Vec<u8>,
    /// Discarding up to the next newline: an over-long line (already counted),
    /// or the rest of a line we opened the file in the middle of.
    skipping: bool,
    /// The last (up to) [`TAIL_CHECK`] bytes before `offset`.
    tail: Vec<u8>,
    /// Consecutive polls that found this file at its end with nothing new.
    idle_polls: u32,
    /// When this file last gave bytes (or was retired).
    last_active: Instant,
}

/// What one [`Source::read_new`] did.
struct ReadOutcome {
    /// Bytes consumed.
    bytes: usize,
    /// Whether the file was read to its end (not cut short by the budget).
    at_end: bool,
}

impl Source {
    fn new(file: File, id: FileId) -> Source {
        Source {
            file,
            id,
            offset: 0,
            partial: Vec::new(),
            skipping: false,
            tail: Vec::new(),
            idle_polls: 0,
            last_active: Instant::now(),
        }
    }

    /// Positions at the current end of the file, for a follower that only
    /// counts what is appended from now on. If the file does not end with a
    /// newline, a line is being written: its rest is skipped rather than
    /// parsed as a (truncated, wrong) line of its own.
    fn seek_to_end(&mut self) -> io::Result<()> {
        let len = self.file.metadata()?.len();
        let tail_len = len.min(TAIL_CHECK as u64);
        let mut tail = vec![0; tail_len as usize];
        self.file.read_exact_at(&mut tail, len - tail_len)?;
        self.skipping = tail.last().is_some_and(|&b| b != b'\n');
        self.offset = len;
        self.tail = tail;
        Ok(())
    }

    /// Whether the file was truncated (copytruncate) since we last read it:
    /// it is shorter than our offset, or it grew back past our offset and the
    /// bytes just before our offset are no longer the ones we read there.
    fn truncated(&self, len: u64) -> io::Result<bool> {
        if len < self.offset {
            return Ok(true);
        }
        if self.tail.is_empty() {
            return Ok(false);
        }
        let mut now = vec![0; self.tail.len()];
        let at = self.offset - self.tail.len() as u64;
        match self.file.read_exact_at(&mut now, at) {
            Ok(()) => Ok(now != self.tail),
            // Shrunk between the metadata call and this read.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Reads the complete lines appended since the last call (up to `budget`
    /// bytes, which it decrements), parsing each into `out` or counting it in
    /// `unparsed`.
    fn read_new(
        &mut self,
        format: &LogFormat,
        buf: &mut [u8],
        budget: &mut usize,
        out: &mut Vec<Duration>,
        unparsed: &mut u64,
    ) -> io::Result<ReadOutcome> {
        let len = self.file.metadata()?.len();
        if self.truncated(len)? {
            // copytruncate: everything up to the truncation went to the copy,
            // including the start of any partial line; the file's new content
            // starts at 0 (the writer appends with O_APPEND).
            self.offset = 0;
            self.partial.clear();
            self.skipping = false;
            self.tail.clear();
        }
        let mut bytes = 0;
        while self.offset < len && *budget > 0 {
            let want = usize::try_from(len - self.offset)
                .unwrap_or(usize::MAX)
                .min(*budget)
                .min(buf.len());
            let n = match self.file.read_at(&mut buf[..want], self.offset) {
                Ok(0) => break, // shrunk since the metadata call; next poll sees it
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let data = &buf[..n];
            self.consume(format, data, out, unparsed);
            self.remember_tail(data);
            self.offset += n as u64;
            *budget -= n;
            bytes += n;
        }
        Ok(ReadOutcome {
            bytes,
            at_end: self.offset >= len,
        })
    }

    /// Splits `data` into lines, joining the partial line left by the previous
    /// read, and keeps the new trailing partial line (bounded by [`MAX_LINE`]).
    fn consume(
        &mut self,
        format: &LogFormat,
        data: &[u8],
        out: &mut Vec<Duration>,
        unparsed: &mut u64,
    ) {
        let mut rest = data;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let segment = &rest[..nl];
            rest = &rest[nl + 1..];
            if self.skipping {
                self.skipping = false;
            } else if self.partial.is_empty() {
                handle_line(format, segment, out, unparsed);
            } else if self.partial.len() + segment.len() > MAX_LINE {
                self.partial.clear();
                *unparsed += 1;
            } else {
                self.partial.extend_from_slice(segment);
                handle_line(format, &self.partial, out, unparsed);
                self.partial.clear();
            }
        }
        if self.skipping || rest.is_empty() {
            return;
        }
        if self.partial.len() + rest.len() > MAX_LINE {
            // Count it now, once; its remainder is skipped up to its newline.
            self.partial.clear();
            self.skipping = true;
            *unparsed += 1;
        } else {
            self.partial.extend_from_slice(rest);
        }
    }

    fn remember_tail(&mut self, data: &[u8]) {
        if data.len() >= TAIL_CHECK {
            self.tail.clear();
            self.tail
                .extend_from_slice(&data[data.len() - TAIL_CHECK..]);
        } else {
            self.tail.extend_from_slice(data);
            let excess = self.tail.len().saturating_sub(TAIL_CHECK);
            self.tail.drain(..excess);
        }
    }
}

/// Parses one complete line (without its `\n`) into `out`, or counts it.
fn handle_line(format: &LogFormat, line: &[u8], out: &mut Vec<Duration>, unparsed: &mut u64) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // Lossy: one bad byte in a user agent must not cost the line its sample.
    let line: Cow<'_, str> = String::from_utf8_lossy(line);
    match parse_line(format, &line) {
        Some(sample) => out.push(sample),
        None => *unparsed += 1,
    }
}

/// Follows a log file across rotations, returning the request times of lines appended since the last poll.
///
/// Like `tail -F`, it follows the *path*: when the path comes to name another
/// file (rotation), it finishes the old file and goes on with the new one from
/// its start. Rotated-away files stay open and are still read, oldest first,
/// until they have given nothing new for 3 polls and 30 seconds (at most 4 of
/// them), because the server writes to them until it reopens its log.
///
/// Known limits, shared with every tail-based reader: a copytruncate is
/// noticed when the file has become shorter than what was read, or when the
/// bytes just before the read offset changed; lines appended between the copy
/// and the truncation are in the copy only and are not read. A file that was
/// created and rotated away again between two polls is never seen.
pub struct LogFollower {
    path: PathBuf,
    format: LogFormat,
    /// The file the path named when last checked; None until it exists.
    current: Option<Source>,
    /// Rotated-away files still being drained, oldest first.
    retiring: Vec<Source>,
    unparsed: u64,
    /// An error met after samples had already been read in the same poll: it
    /// is returned by the next poll, so that neither the samples nor the error
    /// is lost.
    pending_error: Option<io::Error>,
    /// [`RETIRE_GRACE`], shortened by tests.
    retire_grace: Duration,
}

impl fmt::Debug for LogFollower {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogFollower")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("current", &self.current.as_ref().map(|s| (s.id, s.offset)))
            .field(
                "retiring",
                &self
                    .retiring
                    .iter()
                    .map(|s| (s.id, s.offset))
                    .collect::<Vec<_>>(),
            )
            .field("unparsed", &self.unparsed)
            .finish_non_exhaustive()
    }
}

impl LogFollower {
    /// Opens `path`. With `from_start == false` (the normal case) lines already in the file are skipped:
    /// only what is appended after opening counts. If the file does not exist yet, that is not an
    /// error: the follower waits for it to appear (and then reads it from its start).
    ///
    /// Skipping the existing lines is the normal case because they describe
    /// the server's past load, not its present one. Errors: the path names
    /// something that is not a regular file (a directory, a FIFO the agent
    /// would block on), or it cannot be read (e.g. permission denied), so a
    /// misconfiguration is reported at startup rather than as silence.
    pub fn open(path: &Path, format: LogFormat, from_start: bool) -> io::Result<LogFollower> {
        let mut follower = LogFollower {
            path: path.to_path_buf(),
            format,
            current: None,
            retiring: Vec::new(),
            unparsed: 0,
            pending_error: None,
            retire_grace: RETIRE_GRACE,
        };
        // Absent: `poll` opens it once it appears, at its start.
        if let Some(mut source) = open_source(path)? {
            if !from_start {
                source.seek_to_end()?;
            }
            follower.current = Some(source);
        }
        Ok(follower)
    }

    /// Reads every complete new line and returns the samples parsed from them (in order).
    /// A trailing partial line (no '\n' yet) is kept until completed.
    /// Rotation:
    ///  * rename + new file (logrotate `create`): detect that `path` now names a different file
    ///    (compare (dev, inode) via std::os::unix::fs::MetadataExt); first drain the remaining lines of
    ///    the OLD open file handle, then switch to the new file and read it from its start.
    ///  * copytruncate: the file's length is now smaller than our read offset: restart at offset 0.
    ///  * the file disappearing (deleted, not yet recreated): keep the old handle, drain it, and keep
    ///    checking for the path to reappear; no error.
    ///
    /// Returns Err only for unexpected I/O errors (e.g. permission denied), never for rotation.
    ///
    /// Reads at most a few MiB per call; the rest of a large backlog is read
    /// by the following calls.
    pub fn poll(&mut self) -> io::Result<Vec<Duration>> {
        if let Some(e) = self.pending_error.take() {
            return Err(e);
        }
        // Look at the path first: a file found replaced is retired, and
        // retired files are drained before the current one, so lines stay in
        // order. If the path cannot be checked (say logrotate created the new
        // file unreadable to us), the files already open are still drained
        // before the error is reported.
        let checked = self.check_path();
        let mut out = Vec::new();
        let read = self.read_sources(&mut out);
        match checked.and(read) {
            Ok(()) => Ok(out),
            Err(e) if out.is_empty() => Err(e),
            Err(e) => {
                self.pending_error = Some(e);
                Ok(out)
            }
        }
    }

    /// Lines read that gave no sample, since open (so operators can spot a wrong format).
    ///
    /// This includes lines that legitimately carry no sample, such as
    /// `uht=-` for requests nginx answered without an upstream, and lines
    /// discarded for being longer than 64 KiB.
    pub fn unparsed_lines(&self) -> u64 {
        self.unparsed
    }

    /// Opens the file `path` names if it is not the one being read (or none
    /// is), retiring the old one. A missing path is no error: the old file is
    /// kept (deleted, or renamed and not yet replaced).
    fn check_path(&mut self) -> io::Result<()> {
        match fs::metadata(&self.path) {
            Ok(meta) => {
                if self
                    .current
                    .as_ref()
                    .is_some_and(|c| c.id == file_id(&meta))
                {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        // The identity that counts is the opened handle's: the path may have
        // been replaced again between the metadata call and the open.
        let Some(source) = open_source(&self.path)? else {
            return Ok(());
        };
        if self.current.as_ref().is_some_and(|c| c.id == source.id) {
            return Ok(());
        }
        if let Some(mut old) = self.current.replace(source) {
            old.idle_polls = 0;
            old.last_active = Instant::now();
            self.retiring.push(old);
            if self.retiring.len() > MAX_RETIRING {
                self.retiring.remove(0);
            }
        }
        Ok(())
    }

    /// Drains the retired files, oldest first, then the current one, within
    /// the per-poll byte budget; closes retired files idle long enough.
    fn read_sources(&mut self, out: &mut Vec<Duration>) -> io::Result<()> {
        let mut buf = vec![0; READ_CHUNK];
        let mut budget = MAX_BYTES_PER_POLL;
        for source in &mut self.retiring {
            let outcome =
                source.read_new(&self.format, &mut buf, &mut budget, out, &mut self.unparsed)?;
            if outcome.bytes > 0 {
                source.idle_polls = 0;
                source.last_active = Instant::now();
            } else if outcome.at_end {
                source.idle_polls = source.idle_polls.saturating_add(1);
            }
            if !outcome.at_end {
                // Budget spent: newer files wait, to keep lines in order.
                return Ok(());
            }
        }
        let grace = self.retire_grace;
        self.retiring
            .retain(|s| s.idle_polls < RETIRE_IDLE_POLLS || s.last_active.elapsed() < grace);
        if let Some(source) = &mut self.current {
            source.read_new(&self.format, &mut buf, &mut budget, out, &mut self.unparsed)?;
        }
        Ok(())
    }
}

fn file_id(meta: &fs::Metadata) -> FileId {
    (meta.dev(), meta.ino())
}

/// Opens `path` for following; None if it does not exist.
///
/// Only regular files: opening a FIFO would block the caller until a writer
/// appears, and a directory cannot be read; so the path is checked before it
/// is opened (and the handle again after, in case the path changed between).
fn open_source(path: &Path) -> io::Result<Option<Source>> {
    let not_regular = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        )
    };
    match fs::metadata(path) {
        Ok(meta) if !meta.is_file() => return Err(not_regular()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    }
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    Ok(Some(Source::new(file, file_id(&meta))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const NGINX_RT: LogFormat = LogFormat::Nginx(NginxField::RequestTime);
    const NGINX_UHT: LogFormat = LogFormat::Nginx(NginxField::UpstreamHeaderTime);

    /// A realistic nginx line: combined format plus `rt=` and `uht=`.
    fn nginx_line(rt: &str, uht: &str) -> String {
        format!(
            "203.0.113.7 - - [12/Mar/2026:09:14:02 +0000] \"GET /api/v1/items HTTP/1.1\" 200 913 \
             \"https://www.example.com/\" \"Mozilla/5.0 (X11; Linux x86_64; rv:124.0) Gecko/20100101 \
             Firefox/124.0\" rt={rt} uht={uht}"
        )
    }

    /// A realistic Apache line: common log format plus `%D`.
    fn apache_line(d: &str) -> String {
        format!(
            "198.51.100.23 - alice [12/Mar/2026:09:14:03 +0000] \"POST /api/v1/items HTTP/1.1\" 201 88 {d}"
        )
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn nginx_request_time() {
        assert_eq!(
            parse_line(&NGINX_RT, &nginx_line("0.012", "0.004")),
            Some(ms(12))
        );
        assert_eq!(
            parse_line(&NGINX_RT, &nginx_line("0.000", "-")),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_line(&NGINX_RT, &nginx_line("12.345", "-")),
            Some(ms(12_345))
        );
    }

    #[test]
    fn nginx_field_selection() {
        let line = nginx_line("0.012", "0.004");
        assert_eq!(parse_line(&NGINX_RT, &line), Some(ms(12)));
        assert_eq!(parse_line(&NGINX_UHT, &line), Some(ms(4)));
    }

    #[test]
    fn nginx_upstream_dash_is_no_sample() {
        assert_eq!(parse_line(&NGINX_UHT, &nginx_line("0.001", "-")), None);
        assert_eq!(parse_line(&NGINX_UHT, &nginx_line("0.001", "-, -")), None);
        assert_eq!(
            parse_line(&NGINX_UHT, &nginx_line("0.001", "0.003, -")),
            None
        );
    }

    #[test]
    fn nginx_upstream_list_takes_last() {
        assert_eq!(
            parse_line(&NGINX_UHT, &nginx_line("0.009", "0.002, 0.005")),
            Some(ms(5))
        );
        assert_eq!(
            parse_line(&NGINX_UHT, &nginx_line("0.009", "0.002 : 0.005")),
            Some(ms(5))
        );
        assert_eq!(
            parse_line(&NGINX_UHT, &nginx_line("0.009", "0.001, 0.002 : 0.005")),
            Some(ms(5))
        );
        assert_eq!(
            parse_line(&NGINX_UHT, &nginx_line("0.009", "-, 0.005")),
            Some(ms(5))
        );
        // A list in the middle of the line ends where the list does.
        let line = "1.2.3.4 - - [x] \"GET / HTTP/1.1\" 200 1 \"-\" \"-\" uht=0.002, 0.005 rt=0.009";
        assert_eq!(parse_line(&NGINX_UHT, line), Some(ms(5)));
        assert_eq!(parse_line(&NGINX_RT, line), Some(ms(9)));
    }

    #[test]
    fn nginx_key_only_at_field_boundary_and_last_wins() {
        // `rt=` inside the request or `urt=` is not our field.
        let line =
            "1.2.3.4 - - [x] \"GET /?a=1&rt=9.9 HTTP/1.1\" 200 1 \"-\" \"-\" urt=5.0 rt=0.007";
        assert_eq!(parse_line(&NGINX_RT, line), Some(ms(7)));
        // A user agent containing " rt=" comes before the real field.
        let line = "1.2.3.4 - - [x] \"GET / HTTP/1.1\" 200 1 \"-\" \"evil rt=9.9\" rt=0.007";
        assert_eq!(parse_line(&NGINX_RT, line), Some(ms(7)));
        let line = "1.2.3.4 - - [x] \"GET / HTTP/1.1\" 200 1 \"-\" \"-\" urt=0.005";
        assert_eq!(parse_line(&NGINX_RT, line), None);
    }

    #[test]
    fn nginx_quoted_value() {
        let line = "1.2.3.4 - - [x] \"GET / HTTP/1.1\" 200 1 \"-\" \"-\" rt=\"0.012\" uht=\"0.002, 0.005\"";
        assert_eq!(parse_line(&NGINX_RT, line), Some(ms(12)));
        assert_eq!(parse_line(&NGINX_UHT, line), Some(ms(5)));
    }

    #[test]
    fn nginx_bad_values() {
        for bad in [
            "",
            "-",
            "-0.5",
            "NaN",
            "nan",
            "inf",
            "infinity",
            "abc",
            "0.0.1",
            ".",
            "3600.001",
            "99999999999999999999999999999999999999999999",
            "1e300",
        ] {
            assert_eq!(
                parse_line(&NGINX_RT, &nginx_line(bad, "-")),
                None,
                "rt={bad}"
            );
        }
        assert_eq!(
            parse_line(&NGINX_RT, &nginx_line("3600.000", "-")),
            Some(Duration::from_secs(3600))
        );
        // Absent field.
        assert_eq!(
            parse_line(
                &NGINX_RT,
                "1.2.3.4 - - [x] \"GET / HTTP/1.1\" 200 1 \"-\" \"-\""
            ),
            None
        );
        assert_eq!(parse_line(&NGINX_UHT, "rt=0.001"), None);
    }

    #[test]
    fn apache_microseconds() {
        assert_eq!(
            parse_line(&LogFormat::Apache, &apache_line("1234")),
            Some(us(1234))
        );
        assert_eq!(
            parse_line(&LogFormat::Apache, &apache_line("0")),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_line(&LogFormat::Apache, &(apache_line("87") + "\r")),
            Some(us(87))
        );
        assert_eq!(
            parse_line(&LogFormat::Apache, &apache_line("3600000000")),
            Some(Duration::from_secs(3600))
        );
    }

    #[test]
    fn apache_bad_values() {
        for bad in [
            "-",
            "-5",
            "1.5",
            "NaN",
            "inf",
            "3600000001",
            "99999999999999999999999999999999999999999999",
            "\"Mozilla/5.0\"",
        ] {
            assert_eq!(
                parse_line(&LogFormat::Apache, &apache_line(bad)),
                None,
                "%D={bad}"
            );
        }
    }

    #[test]
    fn regex_format() {
        let format = LogFormat::Regex {
            regex: regex::Regex::new(r"took (?P<t>[0-9.]+)ms").unwrap(),
            unit: TimeUnit::Milliseconds,
        };
        let line = "2026-03-12T09:14:02Z INFO handler GET /api/v1/items took 12.5ms status=200";
        assert_eq!(parse_line(&format, line), Some(us(12_500)));
        assert_eq!(
            parse_line(&format, "2026-03-12T09:14:02Z INFO took 3ms"),
            Some(ms(3))
        );
        assert_eq!(
            parse_line(&format, "2026-03-12T09:14:02Z INFO took ms"),
            None
        );
        assert_eq!(
            parse_line(&format, "2026-03-12T09:14:02Z INFO took 1.2.3ms"),
            None
        );
        assert_eq!(parse_line(&format, "took 3600001ms"), None);
        assert_eq!(parse_line(&format, "no timing here"), None);

        let seconds = LogFormat::Regex {
            regex: regex::Regex::new(r"t=(?P<t>\S+)").unwrap(),
            unit: TimeUnit::Seconds,
        };
        assert_eq!(parse_line(&seconds, "t=0.012"), Some(ms(12)));
        assert_eq!(parse_line(&seconds, "t=1e-3"), Some(ms(1)));
        for bad in ["t=NaN", "t=-1", "t=-0", "t=inf", "t=1e10", "t=+"] {
            assert_eq!(parse_line(&seconds, bad), None, "{bad}");
        }
        let micros = LogFormat::Regex {
            regex: regex::Regex::new(r"(?P<t>\d+)us$").unwrap(),
            unit: TimeUnit::Microseconds,
        };
        assert_eq!(parse_line(&micros, "done in 1234us"), Some(us(1234)));

        // No group named `t`: never a sample, no panic.
        let unnamed = LogFormat::Regex {
            regex: regex::Regex::new(r"took ([0-9.]+)ms").unwrap(),
            unit: TimeUnit::Milliseconds,
        };
        assert_eq!(parse_line(&unnamed, "took 3ms"), None);
    }

    #[test]
    fn garbage_never_panics() {
        let formats = [
            NGINX_RT,
            NGINX_UHT,
            LogFormat::Apache,
            LogFormat::Regex {
                regex: regex::Regex::new(r"(?P<t>\S*)$").unwrap(),
                unit: TimeUnit::Seconds,
            },
        ];
        let inputs = [
            "",
            " ",
            "\n",
            "rt=",
            "uht=",
            "rt=\"",
            "uht=\"0.1,",
            "uht=0.1,",
            "uht=0.1 :",
            "uht=, 0.1",
            "rt=é",
            "é rt=0.001 é",
            "\u{0}\u{ffff}rt=1",
            "rt=0.001rt=0.002",
            "-",
            "18446744073709551616",
            "0.99999999999999999999999",
            "garbage garbage garbage",
        ];
        for format in &formats {
            for input in inputs {
                let _ = parse_line(format, input);
            }
        }
        assert_eq!(parse_line(&NGINX_RT, "é rt=0.001 é"), Some(ms(1)));
        assert_eq!(parse_line(&NGINX_RT, ""), None);
        assert_eq!(parse_line(&LogFormat::Apache, ""), None);
        assert_eq!(parse_line(&NGINX_UHT, "uht=0.1,"), None);
        // Sub-nanosecond digits are truncated, not rounded up past the cap.
        assert_eq!(
            parse_line(&NGINX_RT, "rt=0.99999999999999999999999"),
            Some(Duration::from_nanos(999_999_999))
        );
    }

    // Included relative to this file, so it works wherever the module is compiled.
    const NGINX_FIXTURE: &str = include_str!("../tests/fixtures/nginx-access.log");
    const APACHE_FIXTURE: &str = include_str!("../tests/fixtures/apache-access.log");

    fn parse_all(format: &LogFormat, log: &str) -> Vec<Option<Duration>> {
        log.lines().map(|line| parse_line(format, line)).collect()
    }

    #[test]
    fn nginx_fixture() {
        let rt: Vec<Option<Duration>> = [
            12, 0, 45, 131, 1, 207, 1503, 9, 8, 3001, 60_002, 0, 23, 2, 17, 310, 54, 0, 12_114, 39,
        ]
        .into_iter()
        .map(|n| Some(ms(n)))
        .collect();
        assert_eq!(parse_all(&NGINX_RT, NGINX_FIXTURE), rt);

        let uht: Vec<Option<Duration>> = [
            Some(10),
            None,
            Some(44),
            Some(127),
            None,
            Some(205),
            Some(1480),
            Some(5),
            Some(5),
            None,
            None,
            None,
            Some(21),
            Some(1),
            Some(16),
            Some(306),
            Some(53),
            None,
            Some(3),
            Some(38),
        ]
        .into_iter()
        .map(|n| n.map(ms))
        .collect();
        assert_eq!(parse_all(&NGINX_UHT, NGINX_FIXTURE), uht);
    }

    #[test]
    fn apache_fixture() {
        let expected: Vec<Option<Duration>> = [
            Some(11_873),
            Some(412),
            Some(45_210),
            Some(131_002),
            Some(87),
            Some(207_334),
            Some(1_503_117),
            Some(1234),
            Some(3_001_456),
            Some(301),
            Some(23_007),
            Some(640),
            Some(95),
            Some(310_480),
            Some(54_012),
            Some(18),
            Some(12_114_233),
            Some(39_001),
            None, // 4000 s: over the one-hour cap
            Some(0),
        ]
        .into_iter()
        .map(|n| n.map(us))
        .collect();
        assert_eq!(parse_all(&LogFormat::Apache, APACHE_FIXTURE), expected);
    }

    // ---- LogFollower ----

    /// Lines carrying `rt=` of `n` milliseconds, so that samples name their line.
    fn lines(ns: impl IntoIterator<Item = u64>) -> String {
        ns.into_iter()
            .map(|n| format!("{}\n", nginx_line(&format!("0.{n:03}"), "-")))
            .collect()
    }

    fn samples(ns: impl IntoIterator<Item = u64>) -> Vec<Duration> {
        ns.into_iter().map(ms).collect()
    }

    fn append(path: &Path, data: &str) {
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        file.write_all(data.as_bytes()).unwrap();
    }

    fn follower(path: &Path, from_start: bool) -> LogFollower {
        LogFollower::open(path, NGINX_RT, from_start).unwrap()
    }

    #[test]
    fn starts_at_end_ignoring_existing_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        append(&path, &lines(1..=3));
        let mut f = follower(&path, false);
        assert_eq!(f.poll().unwrap(), vec![]);
        append(&path, &lines([4]));
        assert_eq!(f.poll().unwrap(), samples([4]));
        assert_eq!(f.unparsed_lines(), 0);
    }

    #[test]
    fn from_start_reads_existing_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        append(&path, &lines(1..=3));
        let mut f = follower(&path, true);
        assert_eq!(f.poll().unwrap(), samples(1..=3));
        assert_eq!(f.poll().unwrap(), vec![]);
    }

    #[test]
    fn opened_mid_line_skips_the_fragment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let line = lines([7]);
        let (head, rest) = line.split_at(line.len() - 4);
        append(&path, &(lines([1]) + head));
        let mut f = follower(&path, false);
        append(&path, rest);
        append(&path, &lines([2]));
        assert_eq!(f.poll().unwrap(), samples([2]));
        assert_eq!(f.unparsed_lines(), 0);
    }

    #[test]
    fn reads_appended_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        append(&path, "");
        let mut f = follower(&path, false);
        append(&path, &lines(1..=3));
        assert_eq!(f.poll().unwrap(), samples(1..=3));
        assert_eq!(f.poll().unwrap(), vec![]);
        append(&path, &lines(4..=5));
        append(&path, "not a log line\n\n");
        append(&path, &lines([6]));
        assert_eq!(f.poll().unwrap(), samples(4..=6));
        assert_eq!(f.unparsed_lines(), 2);
    }

    #[test]
    fn partial_line_completed_across_polls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        append(&path, "");
        let mut f = follower(&path, false);
        let line = lines([42]);
        let (a, rest) = line.split_at(20);
        let (b, c) = rest.split_at(rest.len() - 3); // cut inside `rt=0.042`
        append(&path, &(lines([1]) + a));
        assert_eq!(f.poll().unwrap(), samples([1]));
        append(&path, b);
        assert_eq!(f.poll().unwrap(), vec![]);
        append(&path, c);
        assert_eq!(f.poll().unwrap(), samples([42]));
        assert_eq!(f.unparsed_lines(), 0);
    }

    #[test]
    fn crlf_line_endings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        append(&path, "");
        let mut f = LogFollower::open(&path, LogFormat::Apache, false).unwrap();
        append(&path, &(apache_line("1234") + "\r\n"));
        assert_eq!(f.poll().unwrap(), vec![us(1234)]);
    }

    #[test]
    fn overlong_line_discarded_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        append(&path, "");
        let mut f = follower(&path, false);
        // Longer than MAX_LINE, arriving over several polls, then a good line.
        let junk = "x".repeat(MAX_LINE / 2);
        append(&path, &(lines([1]) + &junk));
        assert_eq!(f.poll().unwrap(), samples([1]));
        append(&path, &junk);
        append(&path, &junk);
        assert_eq!(f.poll().unwrap(), vec![]);
        assert_eq!(f.unparsed_lines(), 1);
        append(&path, &(junk.clone() + " rt=0.009\n"));
        append(&path, &lines([2]));
        assert_eq!(f.poll().unwrap(), samples([2]));
        assert_eq!(f.unparsed_lines(), 1);
        // A complete over-long line read in one go is discarded too.
        append(&path, &("y".repeat(MAX_LINE * 2) + " rt=0.009\n"));
        append(&path, &lines([3]));
        assert_eq!(f.poll().unwrap(), samples([3]));
        assert_eq!(f.unparsed_lines(), 2);
    }

    #[test]
    fn large_backlog_is_read_over_several_polls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let one = lines([5]);
        let count = MAX_BYTES_PER_POLL / one.len() * 2 + 10;
        append(&path, &one.repeat(count));
        let mut f = follower(&path, true);
        let mut total = 0;
        let mut polls = 0;
        loop {
            let got = f.poll().unwrap();
            if got.is_empty() {
                break;
            }
            // At most the budget, plus the line completed from the previous poll's partial.
            assert!((got.len() - 1) * one.len() <= MAX_BYTES_PER_POLL);
            assert!(got.iter().all(|&d| d == ms(5)));
            total += got.len();
            polls += 1;
        }
        assert_eq!(total, count);
        assert!(polls >= 3, "{polls} polls");
        assert_eq!(f.unparsed_lines(), 0);
    }

    #[test]
    fn rename_rotation_reads_every_line_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let rotated = dir.path().join("access.log.1");
        append(&path, &lines([99]));
        let mut f = follower(&path, false);
        append(&path, &lines(1..=3));
        assert_eq!(f.poll().unwrap(), samples(1..=3));
        append(&path, &lines(4..=5));
        fs::rename(&path, &rotated).unwrap();
        // The server still writes to the old file until it reopens.
        append(&rotated, &lines([6]));
        append(&path, &lines(7..=9));
        assert_eq!(f.poll().unwrap(), samples(4..=9));
        append(&path, &lines([10]));
        assert_eq!(f.poll().unwrap(), samples([10]));
        assert_eq!(f.unparsed_lines(), 0);
    }

    #[test]
    fn rename_rotation_keeps_reading_late_writes_to_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let rotated = dir.path().join("access.log.1");
        append(&path, "");
        let mut f = follower(&path, false);
        append(&path, &lines([1]));
        fs::rename(&path, &rotated).unwrap();
        append(&path, "");
        assert_eq!(f.poll().unwrap(), samples([1]));
        // Written to the old file after the switch, before the server reopened.
        append(&rotated, &lines([2]));
        assert_eq!(f.poll().unwrap(), samples([2]));
        append(&path, &lines([3]));
        assert_eq!(f.poll().unwrap(), samples([3]));
    }

    #[test]
    fn retired_file_is_closed_once_idle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        append(&path, "");
        let mut f = follower(&path, false);
        f.retire_grace = Duration::ZERO;
        fs::rename(&path, dir.path().join("access.log.1")).unwrap();
        append(&path, "");
        f.poll().unwrap();
        assert_eq!(f.retiring.len(), 1);
        for _ in 0..RETIRE_IDLE_POLLS {
            f.poll().unwrap();
        }
        assert!(f.retiring.is_empty());
        // With the real grace period, idle polls alone do not close it.
        let mut f = follower(&path, false);
        fs::rename(&path, dir.path().join("access.log.2")).unwrap();
        append(&path, "");
        for _ in 0..=RETIRE_IDLE_POLLS {
            f.poll().unwrap();
        }
        assert_eq!(f.retiring.len(), 1);
    }

    #[test]
    fn repeated_rotations_stay_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let rotated = |round: u64| dir.path().join(format!("access.log.{round}"));
        append(&path, "");
        let mut f = follower(&path, false);
        let rounds = MAX_RETIRING as u64;
        for round in 0..rounds {
            let n = round * 10;
            append(&path, &lines([n + 1]));
            fs::rename(&path, rotated(round)).unwrap();
            append(&path, &lines([n + 2]));
            assert_eq!(f.poll().unwrap(), samples([n + 1, n + 2]));
        }
        // Late lines in every rotated file: read oldest file first.
        let mut expected = Vec::new();
        for round in 0..rounds {
            append(&rotated(round), &lines([round * 10 + 3]));
            expected.push(ms(round * 10 + 3));
        }
        append(&path, &lines([99]));
        expected.push(ms(99));
        assert_eq!(f.poll().unwrap(), expected);
        // One rotation more: the oldest file is closed, the others kept.
        fs::rename(&path, rotated(rounds)).unwrap();
        append(&path, "");
        f.poll().unwrap();
        assert_eq!(f.retiring.len(), MAX_RETIRING);
        append(&rotated(0), &lines([5]));
        append(&rotated(1), &lines([6]));
        assert_eq!(f.poll().unwrap(), samples([6]));
    }

    #[test]
    fn copytruncate_restarts_at_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        append(&path, &lines([99]));
        let mut f = follower(&path, false);
        append(&path, &lines(1..=4));
        assert_eq!(f.poll().unwrap(), samples(1..=4));
        // logrotate copytruncate: copy, then truncate in place.
        fs::copy(&path, dir.path().join("access.log.1")).unwrap();
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&path, &lines(5..=6));
        assert_eq!(f.poll().unwrap(), samples(5..=6));
        append(&path, &lines([7]));
        assert_eq!(f.poll().unwrap(), samples([7]));
        assert_eq!(f.unparsed_lines(), 0);
    }

    #[test]
    fn copytruncate_noticed_after_file_regrew_past_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        append(&path, "");
        let mut f = follower(&path, false);
        append(&path, &lines([1]));
        assert_eq!(f.poll().unwrap(), samples([1]));
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        // More written after the truncation than had been read before it.
        let mut regrown =
            String::from("198.51.100.1 - - [12/Mar/2026:10:00:00 +0000] \"GET /x\" rt=0.002\n");
        regrown += &lines(3..=5);
        append(&path, &regrown);
        assert_eq!(f.poll().unwrap(), samples(2..=5));
    }

    #[test]
    fn truncation_drops_stale_partial_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        append(&path, "");
        let mut f = follower(&path, false);
        append(
            &path,
            &(lines([1]) + "203.0.113.7 - - [12/Mar/2026:09:14:02 +0000] \"GET /pa"),
        );
        assert_eq!(f.poll().unwrap(), samples([1]));
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&path, &lines([2]));
        assert_eq!(f.poll().unwrap(), samples([2]));
        assert_eq!(f.unparsed_lines(), 0);
    }

    #[test]
    fn missing_at_open_then_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let mut f = follower(&path, false);
        assert_eq!(f.poll().unwrap(), vec![]);
        assert_eq!(f.poll().unwrap(), vec![]);
        append(&path, &lines(1..=2));
        assert_eq!(f.poll().unwrap(), samples(1..=2));
        append(&path, &lines([3]));
        assert_eq!(f.poll().unwrap(), samples([3]));
    }

    #[test]
    fn missing_directory_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nginx").join("access.log");
        let mut f = follower(&path, false);
        assert_eq!(f.poll().unwrap(), vec![]);
        fs::create_dir(dir.path().join("nginx")).unwrap();
        append(&path, &lines([1]));
        assert_eq!(f.poll().unwrap(), samples([1]));
    }

    #[test]
    fn deleted_then_recreated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        append(&path, "");
        let mut f = follower(&path, false);
        // Open the writer's handle before deleting, as the server would hold it.
        let mut writer = fs::OpenOptions::new().append(true).open(&path).unwrap();
        writer.write_all(lines([1]).as_bytes()).unwrap();
        assert_eq!(f.poll().unwrap(), samples([1]));
        fs::remove_file(&path).unwrap();
        writer.write_all(lines([2]).as_bytes()).unwrap();
        assert_eq!(f.poll().unwrap(), samples([2]));
        assert_eq!(f.poll().unwrap(), vec![]);
        writer.write_all(lines([3]).as_bytes()).unwrap();
        append(&path, &lines(4..=5));
        assert_eq!(f.poll().unwrap(), samples(3..=5));
        append(&path, &lines([6]));
        assert_eq!(f.poll().unwrap(), samples([6]));
        assert_eq!(f.unparsed_lines(), 0);
    }

    #[test]
    fn unreadable_new_file_is_an_error_after_draining_the_old() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        append(&path, "");
        let mut f = follower(&path, false);
        append(&path, &lines([1]));
        fs::rename(&path, dir.path().join("access.log.1")).unwrap();
        append(&path, &lines([2]));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).unwrap();
        if File::open(&path).is_ok() {
            // Running as root (or with CAP_DAC_OVERRIDE): nothing to test.
            return;
        }
        assert_eq!(f.poll().unwrap(), samples([1]));
        let err = f.poll().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(
            f.poll().unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(f.poll().unwrap(), samples([2]));
    }

    #[test]
    fn unreadable_at_open_is_an_error() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        append(&path, &lines([1]));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).unwrap();
        if File::open(&path).is_ok() {
            return; // root: see above
        }
        let err = LogFollower::open(&path, NGINX_RT, false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn not_a_regular_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = LogFollower::open(dir.path(), NGINX_RT, false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn debug_output_is_compact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        append(&path, &"z".repeat(1000));
        let f = follower(&path, true);
        let debug = format!("{f:?}");
        assert!(debug.contains("LogFollower"));
        assert!(debug.len() < 500, "{debug}");
    }
}
