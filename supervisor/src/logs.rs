//! The daemon's and the lanes' log files: where lines go, rotation by size, and reading
//! them back for `prq logs`.
//!
//! prq writes every log file itself, so it can rotate them without a restart and
//! without cutting a line: the daemon's own lines (`logs/daemon.log`) through
//! [`Sink`], and each lane's — its worker's and its Chromium's output, piped to the
//! daemon — through the same kind of sink for `logs/<lane>.log`. A file past
//! `[logs] max_bytes` becomes `<file>.1` (the older ones move up, the oldest past
//! `[logs] keep` is deleted) before the line that would cross it is written, so a
//! home's logs take at most `(keep + 1) × max_bytes` per file, plus one line.
//!
//! A line that cannot be written (a full disk, an unwritable `logs/`) is lost, never
//! waited for: it is counted ([`lines_dropped`]: `prq status`,
//! `prq_log_lines_dropped_total`), and each file says once on the daemon's standard
//! error when its loss starts and when it ends, with how many lines it lost.
//!
//! In the foreground (`prq start --foreground`, systemd) nothing is written to files:
//! the daemon's lines and its lanes' (each prefixed with `[lane-id]`) go to standard
//! error, and journald keeps them.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context};
use prq_protocol::log_format::{self, Format};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::home::Home;

/// `[logs]`: how big a log file may grow, how many rotated ones are kept, the format.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    pub max_bytes: u64,
    pub keep: usize,
    pub format: Format,
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self {
            max_bytes: 10 * 1024 * 1024,
            keep: 5,
            format: Format::Text,
        }
    }
}

impl LogsConfig {
    /// The smallest `max_bytes`: below it a file would rotate every few lines.
    pub const MIN_BYTES: u64 = 4096;
    /// The most rotated files kept per log.
    pub const MAX_KEEP: usize = 1000;
}

/// A line longer than this (a stray dump on a lane's output) is written in pieces of
/// this size, so the daemon never buffers an unbounded line.
const MAX_LINE: u64 = 64 * 1024;

/// How often `prq logs -f` looks at the files. They are written by another process;
/// a quarter second is quick for a person and costs nothing.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// Where the daemon sends its lines and its lanes', decided once at start.
#[derive(Debug, Clone)]
struct Settings {
    config: LogsConfig,
    /// Files under the home (`prq start`), or standard error (`--foreground`).
    to_files: bool,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// The open sinks by path, so a lane restarted while its old worker's output is still
/// draining writes through the same sink (one rotation for the file, not two).
static SINKS: Mutex<BTreeMap<PathBuf, Sink>> = Mutex::new(BTreeMap::new());

/// The tasks copying lanes' output, so the daemon can let them write a worker's last
/// lines before it exits.
static PUMPS: Mutex<Vec<tokio::task::JoinHandle<()>>> = Mutex::new(Vec::new());

/// Log lines lost since the daemon started, over every log file.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Log lines the daemon could not write since it started (a full disk, an unwritable
/// `logs/`).
pub fn lines_dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// How long an exiting daemon waits for its ended workers' last lines.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

fn settings() -> Settings {
    SETTINGS.get().cloned().unwrap_or(Settings {
        config: LogsConfig::default(),
        to_files: true,
    })
}

/// Installs the daemon's logging. `to_files`: the daemon was started in the background
/// by `prq start` and writes `logs/daemon.log` (standard output and error are pointed at
/// it too, so a panic's message lands in the current file); else standard error.
pub fn init_daemon(home: &Home, config: &LogsConfig, to_files: bool) -> anyhow::Result<()> {
    let _ = SETTINGS.set(Settings {
        config: config.clone(),
        to_files,
    });
    let filter = EnvFilter::try_from_env("PRQ_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    if to_files {
        home.create()?;
        let sink = Sink::open(&home.daemon_log(), config, true)
            .with_context(|| format!("cannot open {}", home.daemon_log().display()))?;
        log_format::install(config.format, filter, sink, false);
    } else {
        let ansi =
            std::io::IsTerminal::is_terminal(&std::io::stderr()) && config.format == Format::Text;
        log_format::install(config.format, filter, std::io::stderr, ansi);
    }
    Ok(())
}

/// The environment a worker is started with so that it writes the daemon's format.
pub fn worker_env() -> (&'static str, &'static str) {
    (log_format::FORMAT_ENV, settings().config.format.name())
}

/// Sends a lane's worker output (its standard output and error, which its Chromium
/// shares) to the lane's log, line by line, until the last writer closes it.
pub fn attach_lane(
    home: &Home,
    lane_id: &str,
    stdout: Option<impl AsyncRead + Unpin + Send + 'static>,
    stderr: Option<impl AsyncRead + Unpin + Send + 'static>,
) -> Result<(), String> {
    let s = settings();
    let out = if s.to_files {
        let path = home.lane_log(lane_id);
        let sink = {
            let mut sinks = SINKS.lock().unwrap_or_else(|e| e.into_inner());
            match sinks.get(&path) {
                Some(sink) => sink.clone(),
                None => {
                    let sink = Sink::open(&path, &s.config, false)
                        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
                    sinks.insert(path, sink.clone());
                    sink
                }
            }
        };
        LaneOut::File(sink)
    } else {
        LaneOut::Stderr(format!("[{lane_id}] "))
    };
    let mut pumps = PUMPS.lock().unwrap_or_else(|e| e.into_inner());
    pumps.retain(|p| !p.is_finished());
    if let Some(r) = stdout {
        pumps.push(tokio::spawn(pump(r, out.clone())));
    }
    if let Some(r) = stderr {
        pumps.push(tokio::spawn(pump(r, out)));
    }
    Ok(())
}

/// Waits (a second at most) until the lanes' output has been written: each copy ends
/// when its worker and browser have closed their end, which they have when the daemon
/// calls this on its way out.
pub async fn drain_lanes() {
    let pumps = std::mem::take(&mut *PUMPS.lock().unwrap_or_else(|e| e.into_inner()));
    let _ = tokio::time::timeout(DRAIN_GRACE, futures::future::join_all(pumps)).await;
}

#[derive(Clone)]
enum LaneOut {
    File(Sink),
    /// In the foreground: the daemon's standard error, each line after this prefix.
    Stderr(String),
}

impl LaneOut {
    fn write_line(&self, line: &[u8]) {
        // A log that cannot be written is not worth failing a lane for.
        let _ = match self {
            LaneOut::File(sink) => sink.lock().write_record(line),
            LaneOut::Stderr(prefix) => {
                let mut record = Vec::with_capacity(prefix.len() + line.len());
                record.extend_from_slice(prefix.as_bytes());
                record.extend_from_slice(line);
                io::stderr().lock().write_all(&record)
            }
        };
    }
}

async fn pump(reader: impl AsyncRead + Unpin, out: LaneOut) {
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if !line.ends_with(b"\n") {
                    line.push(b'\n');
                }
                out.write_line(&line);
            }
        }
    }
}

/// One log file, shared by whoever writes it; each write is one whole record.
#[derive(Clone)]
pub struct Sink(Arc<Mutex<Rotating>>);

impl Sink {
    /// Opens `path` for appending. `stdio`: standard output and error follow the file
    /// across rotations.
    pub fn open(path: &Path, config: &LogsConfig, stdio: bool) -> io::Result<Self> {
        let mut file = Rotating {
            path: path.to_path_buf(),
            max_bytes: config.max_bytes,
            keep: config.keep,
            stdio,
            file: None,
            size: 0,
            lost: None,
        };
        file.reopen()?;
        Ok(Self(Arc::new(Mutex::new(file))))
    }

    fn lock(&self) -> MutexGuard<'_, Rotating> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = SinkWriter<'a>;
    fn make_writer(&'a self) -> SinkWriter<'a> {
        SinkWriter(self.lock())
    }
}

/// The writer tracing gets for one event: it writes the event's formatted line in one
/// call, under the sink's lock, so rotation falls between lines.
pub struct SinkWriter<'a>(MutexGuard<'a, Rotating>);

impl Write for SinkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_record(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub struct Rotating {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    stdio: bool,
    file: Option<File>,
    size: u64,
    /// Lines lost in a row to failed writes, while that lasts.
    lost: Option<u64>,
}

impl Rotating {
    /// Writes one record, or counts it lost; says on the daemon's standard error when
    /// this file starts and stops losing lines.
    fn write_record(&mut self, record: &[u8]) -> io::Result<()> {
        let written = self.try_write(record);
        match (&written, self.lost) {
            (Ok(()), None) => {}
            (Ok(()), Some(lost)) => {
                self.lost = None;
                notice(&format!(
                    "prq: {} is written again; {lost} log line(s) were lost to it",
                    self.path.display()
                ));
            }
            (Err(e), lost) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
                self.lost = Some(lost.unwrap_or(0) + 1);
                if lost.is_none() {
                    notice(&format!(
                        "prq: cannot write {}: {e}; its log lines are lost (counted in prq status and prq_log_lines_dropped_total) until it can be written again",
                        self.path.display()
                    ));
                }
            }
        }
        written
    }

    fn try_write(&mut self, record: &[u8]) -> io::Result<()> {
        if self.size > 0 && self.size + record.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("log file not open"));
        };
        file.write_all(record)?;
        self.size += record.len() as u64;
        Ok(())
    }

    /// `log.(keep-1)` → `log.keep`, …, `log` → `log.1`, then a new `log`. The oldest
    /// is overwritten by the rename, so at most `keep` old files remain.
    fn rotate(&mut self) -> io::Result<()> {
        if self.keep == 0 {
            let _ = fs::remove_file(&self.path);
        }
        for n in (1..self.keep).rev() {
            let from = rotated(&self.path, n);
            if from.exists() {
                fs::rename(&from, rotated(&self.path, n + 1))?;
            }
        }
        if self.keep > 0 {
            fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        self.reopen()
    }

    fn reopen(&mut self) -> io::Result<()> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = file.metadata()?.len();
        if self.stdio {
            use std::os::fd::AsRawFd;
            for fd in [1, 2] {
                // SAFETY: dup2 on a file descriptor this struct owns (kept open in
                // `self.file`) onto the process's standard output or error; it only
                // replaces what those descriptors point at.
                if unsafe { libc::dup2(file.as_raw_fd(), fd) } < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        self.file = Some(file);
        Ok(())
    }
}

/// One line on the daemon's standard error: the journal in the foreground; in the
/// background the daemon's log, through the descriptor it already has open (so a
/// notice still lands there when the directory cannot take a new file).
fn notice(line: &str) {
    let _ = writeln!(io::stderr().lock(), "{line}");
}

/// `log.n`, the n-th rotated file of `log`.
fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

// ---- reading: `prq logs` -------------------------------------------------------------

/// What `prq logs` was asked for.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// `daemon` (also when `None`), `all`, a lane ID (`sandbox#1`) or a lane prefix.
    pub which: Option<String>,
    pub follow: bool,
    /// The last N lines (after the other filters).
    pub lines: Option<usize>,
    /// Only lines from this long ago on.
    pub since: Option<Duration>,
    /// Only lines about this request.
    pub request: Option<u64>,
}

/// One log, as the reader sees it: a name to show and its file.
struct Log {
    name: String,
    path: PathBuf,
}

/// `prq logs`: prints the chosen logs, across their rotated files, oldest line first;
/// lines of several logs merged by time, each after its log's name. With `follow`,
/// goes on printing new lines until interrupted, across rotations.
pub fn show(home: &Home, query: &Query, out: &mut impl Write) -> anyhow::Result<()> {
    let logs = choose(home, query.which.as_deref())?;
    let several = logs.len() > 1;
    let cutoff = query.since.map(|d| now_secs() - d.as_secs_f64());
    let mut lines: Vec<(f64, usize, String)> = Vec::new();
    let mut followed = Vec::new();
    for log in &logs {
        let (history, tail) = read_log(log)?;
        let mut time = f64::MIN;
        for text in history {
            if let Some(t) = line_time(&text) {
                time = t;
            }
            if cutoff.is_some_and(|c| time < c) || !about_request(&text, query.request) {
                continue;
            }
            let shown = if several {
                format!("[{}] {text}", log.name)
            } else {
                text
            };
            lines.push((time, lines.len(), shown));
        }
        followed.push(tail);
    }
    // Each file is in order already; a stable sort by time merges them.
    lines.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let skip = match query.lines {
        Some(n) => lines.len().saturating_sub(n),
        None if query.follow => lines.len().saturating_sub(10),
        None => 0,
    };
    for (_, _, text) in lines.iter().skip(skip) {
        writeln!(out, "{text}")?;
    }
    if !query.follow {
        // A line still being written when we looked.
        for tail in &followed {
            if !tail.partial.is_empty() {
                writeln!(out, "{}", String::from_utf8_lossy(&tail.partial))?;
            }
        }
    }
    out.flush()?;
    if query.follow {
        follow(followed, several, query.request, out)?;
    }
    Ok(())
}

fn choose(home: &Home, which: Option<&str>) -> anyhow::Result<Vec<Log>> {
    let dir = home.logs_dir();
    let daemon = Log {
        name: "daemon".into(),
        path: home.daemon_log(),
    };
    let lanes = lane_logs(&dir);
    match which.unwrap_or("daemon") {
        "daemon" => Ok(vec![daemon]),
        "all" => Ok(std::iter::once(daemon).chain(lanes).collect()),
        wanted => {
            let exact: Vec<Log> = lanes
                .iter()
                .filter(|l| l.name == wanted)
                .map(Log::copy)
                .collect();
            if !exact.is_empty() {
                return Ok(exact);
            }
            let of_prefix: Vec<Log> = lanes
                .iter()
                .filter(|l| l.name.rsplit_once('#').is_some_and(|(p, _)| p == wanted))
                .map(Log::copy)
                .collect();
            if !of_prefix.is_empty() {
                return Ok(of_prefix);
            }
            let known: Vec<&str> = lanes.iter().map(|l| l.name.as_str()).collect();
            if known.is_empty() {
                bail!(
                    "no lane has a log in {} yet; `prq logs` shows the daemon's",
                    dir.display()
                );
            }
            bail!(
                "no log for lane {wanted:?} in {}; lanes with logs: {} (or `daemon`, `all`)",
                dir.display(),
                known.join(", ")
            )
        }
    }
}

impl Log {
    fn copy(&self) -> Log {
        Log {
            name: self.name.clone(),
            path: self.path.clone(),
        }
    }
}

/// The lanes' logs in the directory, by lane ID (`alpha#1` is `alpha-1.log`).
fn lane_logs(dir: &Path) -> Vec<Log> {
    let mut logs: Vec<Log> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let file = entry.file_name().to_str()?.to_string();
            let stem = file.strip_suffix(".log")?;
            let (prefix, n) = stem.rsplit_once('-')?;
            n.parse::<u32>().ok()?;
            Some(Log {
                name: format!("{prefix}#{n}"),
                path: entry.path(),
            })
        })
        .collect();
    logs.sort_by(|a, b| a.name.cmp(&b.name));
    logs
}

/// Where reading a log has got to: the current file, open, read to its end, for
/// following it.
struct Tail<'a> {
    log: &'a Log,
    file: Option<File>,
    ino: u64,
    /// The start of a line not yet ended.
    partial: Vec<u8>,
}

/// Every line of a log and its rotated files, oldest first, and the open current file.
/// The current file is opened first: what is written from then on is read through it,
/// so nothing falls between reading and following; a rotation meanwhile shows as our
/// file among the rotated ones, which is then not read twice.
fn read_log(log: &Log) -> anyhow::Result<(Vec<String>, Tail<'_>)> {
    let file = match File::open(&log.path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", log.path.display())),
    };
    let ino = file
        .as_ref()
        .and_then(|f| f.metadata().ok())
        .map_or(0, |m| m.ino());
    let mut tail = Tail {
        log,
        file,
        ino,
        partial: Vec::new(),
    };
    let mut rotated_files: Vec<PathBuf> = (1..=LogsConfig::MAX_KEEP)
        .map(|n| rotated(&log.path, n))
        .take_while(|p| p.exists())
        .collect();
    rotated_files.reverse();
    let mut lines = Vec::new();
    for path in rotated_files {
        let Ok(f) = File::open(&path) else { continue };
        if f.metadata().is_ok_and(|m| m.ino() == ino) {
            continue;
        }
        for line in io::BufReader::new(f).split(b'\n') {
            lines.push(String::from_utf8_lossy(&line?).into_owned());
        }
    }
    tail.read_new(|line| {
        lines.push(line.to_string());
        Ok(())
    })?;
    Ok((lines, tail))
}

impl Tail<'_> {
    /// Reads what was appended since the last read, handing each ended line to `each`.
    fn read_new(&mut self, mut each: impl FnMut(&str) -> io::Result<()>) -> io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        Self::split(&mut self.partial, &buf, &mut each)
    }

    fn split(
        partial: &mut Vec<u8>,
        bytes: &[u8],
        each: &mut impl FnMut(&str) -> io::Result<()>,
    ) -> io::Result<()> {
        partial.extend_from_slice(bytes);
        while let Some(end) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            each(&String::from_utf8_lossy(&line[..line.len() - 1]))?;
        }
        Ok(())
    }

    /// After a rotation: our file is now `log.k`, read to its end; the files written
    /// since are `log.(k-1)` … `log.1` (more than one rotation between two looks), and
    /// then the new `log`, which becomes ours.
    fn catch_up(&mut self, mut each: impl FnMut(&str) -> io::Result<()>) -> io::Result<()> {
        let Ok(meta) = fs::metadata(&self.log.path) else {
            return Ok(());
        };
        if meta.ino() == self.ino {
            return Ok(());
        }
        let rotated_files: Vec<PathBuf> = (1..=LogsConfig::MAX_KEEP)
            .map(|n| rotated(&self.log.path, n))
            .take_while(|p| p.exists())
            .collect();
        let ours = rotated_files
            .iter()
            .position(|p| fs::metadata(p).is_ok_and(|m| m.ino() == self.ino))
            .unwrap_or(rotated_files.len());
        for path in rotated_files[..ours].iter().rev() {
            let mut buf = Vec::new();
            if let Ok(mut file) = File::open(path) {
                file.read_to_end(&mut buf)?;
                Self::split(&mut self.partial, &buf, &mut each)?;
            }
        }
        self.file = File::open(&self.log.path).ok();
        self.ino = meta.ino();
        self.read_new(each)
    }
}

/// Follows each log: new lines as they are written; a rotated file is read to its end
/// before the newer ones, so no line is missed across rotations.
fn follow(
    mut tails: Vec<Tail<'_>>,
    several: bool,
    request: Option<u64>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    loop {
        for tail in &mut tails {
            let name = tail.log.name.clone();
            let mut print = |text: &str| -> io::Result<()> {
                if !about_request(text, request) {
                    return Ok(());
                }
                if several {
                    writeln!(out, "[{name}] {text}")
                } else {
                    writeln!(out, "{text}")
                }
            };
            tail.read_new(&mut print)?;
            tail.catch_up(&mut print)?;
        }
        out.flush()?;
        std::thread::sleep(FOLLOW_EVERY);
    }
}

/// Whether a line is about the request (any line, when no request is asked for): the
/// daemon writes `request=ID`, a worker `request{id=ID}`, JSON `"request":ID`.
fn about_request(line: &str, request: Option<u64>) -> bool {
    let Some(id) = request else { return true };
    let id = id.to_string();
    ["request=", "request{id=", "\"request\":"]
        .iter()
        .any(|key| {
            line.match_indices(key).any(|(at, _)| {
                let rest = &line[at + key.len()..];
                rest.starts_with(&id) && !rest[id.len()..].starts_with(|c: char| c.is_ascii_digit())
            })
        })
}

/// The time a line was written, as seconds since the epoch: the RFC 3339 UTC time the
/// text format starts with, or the JSON format's `time`. `None` for lines without one
/// (Chromium's own output); they belong with the line before.
fn line_time(line: &str) -> Option<f64> {
    let stamp = match line.strip_prefix("{\"time\":\"") {
        Some(rest) => rest.split('"').next()?,
        None => line.split_whitespace().next()?,
    };
    parse_rfc3339(stamp)
}

/// `YYYY-MM-DDTHH:MM:SS[.frac]Z` → seconds since the epoch.
fn parse_rfc3339(s: &str) -> Option<f64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.splitn(3, ':');
    let (h, min) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let sec: f64 = t.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    Some((days_from_civil(y, m, day) * 86_400 + h * 3600 + min * 60) as f64 + sec)
}

/// Days since 1970-01-01 of a date in the proleptic Gregorian calendar.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `30s`, `10m`, `2h`, `7d` (or a plain number of seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => s.split_at(at),
        None => (s, "s"),
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; write e.g. 30s, 10m, 2h or 7d"))?;
    let unit = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => {
            return Err(format!(
                "{s:?} is not a duration; write e.g. 30s, 10m, 2h or 7d"
            ))
        }
    };
    Ok(Duration::from_secs_f64(n * unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_bytes: u64, keep: usize) -> LogsConfig {
        LogsConfig {
            max_bytes,
            keep,
            format: Format::Text,
        }
    }

    /// A line that cannot be written is counted lost, and the file's loss ends with
    /// the first line written again (`/dev/full` fails every write with ENOSPC, as a
    /// full disk does).
    #[test]
    fn lines_that_cannot_be_written_are_counted_and_the_loss_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let sink = Sink::open(&path, &config(1 << 20, 1), false).unwrap();
        let full = OpenOptions::new().append(true).open("/dev/full").unwrap();
        let good = sink.lock().file.replace(full);
        let before = lines_dropped();
        assert!(sink.lock().write_record(b"lost 1\n").is_err());
        assert!(sink.lock().write_record(b"lost 2\n").is_err());
        assert_eq!(sink.lock().lost, Some(2));
        assert_eq!(lines_dropped() - before, 2);
        sink.lock().file = good;
        sink.lock().write_record(b"kept\n").unwrap();
        assert_eq!(sink.lock().lost, None, "the loss ended");
        assert_eq!(fs::read_to_string(&path).unwrap(), "kept\n");
    }

    #[test]
    fn a_file_rotates_between_lines_and_keeps_only_keep_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let sink = Sink::open(&path, &config(100, 2), false).unwrap();
        for n in 0..40 {
            sink.lock()
                .write_record(format!("line {n:03} ......\n").as_bytes())
                .unwrap();
        }
        assert!(rotated(&path, 2).exists() && !rotated(&path, 3).exists());
        let mut all = Vec::new();
        for p in [rotated(&path, 2), rotated(&path, 1), path.clone()] {
            let text = fs::read_to_string(&p).unwrap();
            assert!(
                text.len() as u64 <= 100,
                "{} is {} bytes",
                p.display(),
                text.len()
            );
            assert!(text.ends_with('\n'), "no line is cut");
            all.extend(text.lines().map(str::to_string));
        }
        // What is left is the newest lines, whole and in order.
        let numbers: Vec<u32> = all.iter().map(|l| l[5..8].parse().unwrap()).collect();
        assert_eq!(*numbers.last().unwrap(), 39);
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
        let log = Log {
            name: "x".into(),
            path: path.clone(),
        };
        assert_eq!(read_log(&log).unwrap().0, all);
    }

    #[test]
    fn a_line_longer_than_the_limit_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let sink = Sink::open(&path, &config(10, 1), false).unwrap();
        sink.lock().write_record(b"short\n").unwrap();
        sink.lock()
            .write_record(b"a line of more than ten bytes\n")
            .unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "a line of more than ten bytes\n"
        );
        assert_eq!(fs::read_to_string(rotated(&path, 1)).unwrap(), "short\n");
    }

    #[test]
    fn times_of_both_formats_are_read() {
        let t = line_time("2026-11-30T07:13:20.500000Z  INFO prq::daemon: daemon up").unwrap();
        assert_eq!(t, 1_796_022_800.5);
        let j = line_time(r#"{"time":"2026-11-30T07:13:20.500000Z","level":"INFO"}"#).unwrap();
        assert_eq!(j, t);
        assert_eq!(line_time("[1130/071320:ERROR:gpu] chromium says"), None);
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
    }

    #[test]
    fn a_request_filter_matches_every_form_and_no_longer_id() {
        let q = Some(42);
        assert!(about_request(
            "… INFO prq::runtime: cancelled request=42",
            q
        ));
        assert!(about_request(
            "… lane{id=s#1}:request{id=42}: stream ended",
            q
        ));
        assert!(about_request(
            r#"{"lane":"s#1","request":42,"message":"x"}"#,
            q
        ));
        assert!(!about_request("… cancelled request=420", q));
        assert!(!about_request("… daemon up", q));
        assert!(about_request("… daemon up", None));
    }

    #[test]
    fn durations_read_as_a_person_writes_them() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(
            parse_duration("1.5d").unwrap(),
            Duration::from_secs(129_600)
        );
        assert!(parse_duration("soon").unwrap_err().contains("10m"));
    }

    #[test]
    fn a_lane_is_chosen_by_id_or_prefix_and_an_unknown_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        home.create().unwrap();
        for lane in ["alpha#1", "alpha#2", "alpha-b#1"] {
            fs::write(home.lane_log(lane), "x\n").unwrap();
        }
        let names = |which| {
            choose(&home, Some(which))
                .unwrap()
                .into_iter()
                .map(|l| l.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names("alpha#2"), ["alpha#2"]);
        assert_eq!(names("alpha"), ["alpha#1", "alpha#2"]);
        assert_eq!(names("alpha-b"), ["alpha-b#1"]);
        assert_eq!(names("daemon"), ["daemon"]);
        assert_eq!(names("all").len(), 4);
        let err = choose(&home, Some("gamma")).err().unwrap().to_string();
        assert!(err.contains("alpha#1") && err.contains("gamma"), "{err}");
    }
}
