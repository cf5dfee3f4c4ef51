//! Instance logs: every line an instance writes, with a timestamp and its instance id, appended as JSON lines
//! to one file per service (`logs/PROJECT/SERVICE.log`), rotated by size so a chatty instance cannot fill
//! the disk. `pier logs` reads them back through the admin API; followers get new lines as they arrive.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use pier_model::api::{LogEntry, LogStream};
use pier_model::{InstanceId, ProjectName, RevisionName, ServiceName};
use tokio::sync::broadcast;

/// Longest line kept; longer lines are split.
pub const MAX_LINE: usize = 16 * 1024;
/// Rotate a service's log file past this size.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// Rotated files kept per service (`.log.1` .. `.log.N`).
pub const DEFAULT_KEEP: usize = 2;

/// The current time as RFC 3339 with microseconds, UTC.
pub fn timestamp() -> String {
    format_time(std::time::SystemTime::now())
}

/// A time as RFC 3339 with microseconds, UTC (the form every log entry's `timestamp` has, so that
/// they sort as text).
pub fn format_time(at: std::time::SystemTime) -> String {
    let mut out = Vec::with_capacity(27);
    write_time(&mut out, at);
    String::from_utf8(out).unwrap_or_default()
}

/// [`format_time`], written into `out` (no allocation of its own).
pub fn write_time(out: &mut Vec<u8>, at: std::time::SystemTime) {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    let _ = time::OffsetDateTime::from(at).format_into(out, &fmt);
}

type ServiceKey = (ProjectName, ServiceName);

/// A line as followers receive it: project, service, entry.
pub type LiveLine = Arc<(ProjectName, ServiceName, LogEntry)>;

/// Where the logs of every service go.
pub struct LogStore {
    dir: PathBuf,
    max_file_bytes: u64,
    keep: usize,
    files: Mutex<HashMap<ServiceKey, Arc<Mutex<ServiceFile>>>>,
    live: broadcast::Sender<LiveLine>,
    /// Lines are being dropped because writes fail (a full disk): said once when it starts and once
    /// when it ends, never per line, and never blocking the instance or serving.
    dropping: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").field("dir", &self.dir).finish()
    }
}

struct ServiceFile {
    path: PathBuf,
    file: Option<File>,
    size: u64,
}

/// Which lines to read back.
#[derive(Clone, Debug, Default)]
pub struct LogQuery {
    /// Only this revision.
    pub revision: Option<RevisionName>,
    /// Only this instance.
    pub instance: Option<String>,
    /// At most this many lines (the newest).
    pub limit: usize,
    /// Only entries at or after this time (RFC 3339 as [`format_time`] writes it).
    pub since: Option<String>,
    /// Only entries of this severity or above.
    pub severity: Option<pier_model::logs::Severity>,
}

impl LogQuery {
    /// Whether `e` is wanted.
    pub fn matches(&self, e: &LogEntry) -> bool {
        self.revision
            .as_ref()
            .is_none_or(|r| r.as_str() == e.revision)
            && self.instance.as_ref().is_none_or(|i| *i == e.instance)
            && self.since.as_ref().is_none_or(|s| e.timestamp >= *s)
            && self.severity.is_none_or(|min| e.severity() >= min)
    }
}

impl LogStore {
    /// Logs under `dir`, with the default rotation.
    pub fn new(dir: &Path) -> Self {
        Self::with_rotation(dir, DEFAULT_MAX_FILE_BYTES, DEFAULT_KEEP)
    }

    /// Logs under `dir`, rotating past `max_file_bytes` and keeping `keep` old files.
    pub fn with_rotation(dir: &Path, max_file_bytes: u64, keep: usize) -> Self {
        Self {
            dir: dir.to_owned(),
            max_file_bytes,
            keep,
            files: Mutex::new(HashMap::new()),
            live: broadcast::channel(4096).0,
            dropping: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn path(&self, project: &ProjectName, service: &ServiceName) -> PathBuf {
        self.dir
            .join(project.as_str())
            .join(format!("{service}.log"))
    }

    fn service_file(
        &self,
        project: &ProjectName,
        service: &ServiceName,
    ) -> Arc<Mutex<ServiceFile>> {
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        files
            .entry((project.clone(), service.clone()))
            .or_insert_with(|| {
                Arc::new(Mutex::new(ServiceFile {
                    path: self.path(project, service),
                    file: None,
                    size: 0,
                }))
            })
            .clone()
    }

    /// A writer for one instance's lines.
    pub fn instance_writer(
        self: &Arc<Self>,
        project: &ProjectName,
        service: &ServiceName,
        revision: &RevisionName,
        instance: &InstanceId,
    ) -> InstanceLog {
        InstanceLog {
            store: self.clone(),
            file: self.service_file(project, service),
            project: project.clone(),
            service: service.clone(),
            revision: revision.to_string(),
            instance: instance.to_string(),
            tail: Arc::new(Mutex::new(VecDeque::new())),
        }
    }

    /// Subscribes to lines as they are written (all services; filter on the receiving side).
    pub fn subscribe(&self) -> broadcast::Receiver<LiveLine> {
        self.live.subscribe()
    }

    /// Reads a service's newest lines, oldest first.
    pub fn read(
        &self,
        project: &ProjectName,
        service: &ServiceName,
        query: &LogQuery,
    ) -> std::io::Result<Vec<LogEntry>> {
        let base = self.path(project, service);
        let mut paths: Vec<PathBuf> = (1..=self.keep).rev().map(|i| rotated(&base, i)).collect();
        paths.push(base);
        let limit = if query.limit == 0 {
            usize::MAX
        } else {
            query.limit
        };
        let mut out: VecDeque<LogEntry> = VecDeque::new();
        for p in paths {
            let f = match File::open(&p) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for line in BufReader::new(f).lines() {
                let line = line?;
                // A torn last line (the server was killed mid-write) is skipped, not fatal.
                if let Ok(e) = serde_json::from_str::<LogEntry>(&line)
                    && query.matches(&e)
                {
                    if out.len() == limit {
                        out.pop_front();
                    }
                    out.push_back(e);
                }
            }
        }
        Ok(out.into())
    }

    /// Appends entries another writer made (the gateway's request log) to a service's file in one
    /// write, and tells followers (if any). Blocking file I/O: call it off the request path.
    pub fn append_entries(
        &self,
        project: &ProjectName,
        service: &ServiceName,
        entries: Vec<LogEntry>,
    ) {
        let mut lines = Vec::with_capacity(entries.len() * 512);
        for e in &entries {
            if serde_json::to_writer(&mut lines, e).is_ok() {
                lines.push(b'\n');
            }
        }
        self.append_lines(project, service, &lines, || entries);
    }

    /// Whether anyone follows the logs now (a writer can skip making entries for them).
    pub fn followed(&self) -> bool {
        self.live.receiver_count() > 0
    }

    /// Appends lines already serialized (JSON, one entry per line) to a service's file in one write,
    /// and tells followers the entries `entries` makes, called only when someone follows.
    pub fn append_lines(
        &self,
        project: &ProjectName,
        service: &ServiceName,
        lines: &[u8],
        entries: impl FnOnce() -> Vec<LogEntry>,
    ) {
        let file = self.service_file(project, service);
        self.write_lines(&file, lines);
        if self.followed() {
            for e in entries() {
                let _ = self
                    .live
                    .send(Arc::new((project.clone(), service.clone(), e)));
            }
        }
    }

    /// Deletes a service's logs (when the service is deleted).
    pub fn remove(&self, project: &ProjectName, service: &ServiceName) {
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(project.clone(), service.clone()));
        let base = self.path(project, service);
        let _ = fs::remove_file(&base);
        for i in 1..=self.keep {
            let _ = fs::remove_file(rotated(&base, i));
        }
    }

    fn append(&self, file: &Mutex<ServiceFile>, entry: &LogEntry) {
        let mut line = match serde_json::to_vec(entry) {
            Ok(l) => l,
            Err(_) => return,
        };
        line.push(b'\n');
        self.write_lines(file, &line);
    }

    /// Writes whole lines (each ending in a newline) to a service's file.
    fn write_lines(&self, file: &Mutex<ServiceFile>, line: &[u8]) {
        if line.is_empty() {
            return;
        }
        let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
        use std::sync::atomic::Ordering;
        match self.write_line(&mut f, line) {
            Err(e) => {
                f.file = None;
                if !self.dropping.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        path = %f.path.display(),
                        error = %e,
                        "cannot write instance logs: dropping lines until writes work again (`pier logs` and followers still see new lines)"
                    );
                }
            }
            Ok(()) => {
                if self.dropping.swap(false, Ordering::Relaxed) {
                    tracing::info!("instance logs are written again");
                }
            }
        }
    }

    fn write_line(&self, f: &mut ServiceFile, line: &[u8]) -> std::io::Result<()> {
        if f.file.is_none() {
            if let Some(parent) = f.path.parent() {
                fs::create_dir_all(parent)?;
            }
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .open(&f.path)?;
            f.size = file.metadata()?.len();
            if f.size > 0 && !ends_with_newline(&mut file)? {
                // A line torn by a crash: end it so the next entry starts on its own line.
                file.write_all(b"\n")?;
                f.size += 1;
            }
            f.file = Some(file);
        }
        if f.size + line.len() as u64 > self.max_file_bytes && f.size > 0 {
            f.file = None;
            for i in (1..self.keep).rev() {
                let _ = fs::rename(rotated(&f.path, i), rotated(&f.path, i + 1));
            }
            if self.keep > 0 {
                fs::rename(&f.path, rotated(&f.path, 1))?;
            } else {
                fs::remove_file(&f.path)?;
            }
            let file = OpenOptions::new().create(true).append(true).open(&f.path)?;
            f.size = 0;
            f.file = Some(file);
        }
        if let Some(file) = f.file.as_mut() {
            file.write_all(line)?;
            f.size += line.len() as u64;
        }
        Ok(())
    }
}

fn ends_with_newline(file: &mut File) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::End(-1))?;
    let mut b = [0u8; 1];
    file.read_exact(&mut b)?;
    Ok(b[0] == b'\n')
}

fn rotated(base: &Path, i: usize) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}

/// Writes one instance's lines and remembers its last few for failure reports.
#[derive(Clone)]
pub struct InstanceLog {
    store: Arc<LogStore>,
    file: Arc<Mutex<ServiceFile>>,
    project: ProjectName,
    service: ServiceName,
    revision: String,
    instance: String,
    tail: Arc<Mutex<VecDeque<String>>>,
}

const TAIL_LINES: usize = 50;

impl InstanceLog {
    /// Records one line.
    pub fn line(&self, stream: LogStream, message: &str) {
        let mut rest = message;
        loop {
            let cut = if rest.len() > MAX_LINE {
                let mut c = MAX_LINE;
                while !rest.is_char_boundary(c) {
                    c -= 1;
                }
                c
            } else {
                rest.len()
            };
            let (part, more) = rest.split_at(cut);
            self.record(stream, part);
            if more.is_empty() {
                break;
            }
            rest = more;
        }
    }

    fn record(&self, stream: LogStream, message: &str) {
        let entry = LogEntry {
            timestamp: timestamp(),
            instance: self.instance.clone(),
            revision: self.revision.clone(),
            stream,
            message: message.to_owned(),
            http_request: None,
            trace: None,
            severity: None,
        };
        {
            let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(message.to_owned());
        }
        self.store.append(&self.file, &entry);
        let _ = self.store.live.send(Arc::new((
            self.project.clone(),
            self.service.clone(),
            entry,
        )));
    }

    /// Pier's own note about the instance.
    pub fn system(&self, message: &str) {
        self.record(LogStream::System, message);
    }

    /// The last `n` lines.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        tail.iter()
            .skip(tail.len().saturating_sub(n))
            .cloned()
            .collect()
    }
}

/// Copies a stream into the log line by line; lines longer than [`MAX_LINE`] are split.
pub async fn pump(mut r: impl tokio::io::AsyncRead + Unpin, log: InstanceLog, stream: LogStream) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        let n = match tokio::io::AsyncReadExt::read(&mut r, &mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]);
            log.line(stream, text.trim_end_matches('\r'));
        }
        if buf.len() > MAX_LINE {
            let text = String::from_utf8_lossy(&buf).into_owned();
            log.line(stream, &text);
            buf.clear();
        }
    }
    if !buf.is_empty() {
        log.line(stream, &String::from_utf8_lossy(&buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (ProjectName, ServiceName, RevisionName, InstanceId) {
        (
            ProjectName::default(),
            "svc".parse().unwrap(),
            "svc-00001-abc".parse().unwrap(),
            "svc-00001-abc-x1".parse().unwrap(),
        )
    }

    #[test]
    fn lines_are_read_back_with_filters_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LogStore::new(dir.path()));
        let (p, s, r, i) = ids();
        let w = store.instance_writer(&p, &s, &r, &i);
        for n in 0..10 {
            w.line(LogStream::Stdout, &format!("line {n}"));
        }
        w.system("stopped");
        let all = store.read(&p, &s, &LogQuery::default()).unwrap();
        assert_eq!(all.len(), 11);
        assert_eq!(all[0].message, "line 0");
        assert_eq!(all[10].stream, LogStream::System);
        assert_eq!(all[0].instance, "svc-00001-abc-x1");
        let last3 = store
            .read(
                &p,
                &s,
                &LogQuery {
                    limit: 3,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(last3.len(), 3);
        assert_eq!(last3[2].message, "stopped");
        let other = store
            .read(
                &p,
                &s,
                &LogQuery {
                    revision: Some("svc-00002-abc".parse().unwrap()),
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(other.is_empty());
        assert_eq!(w.tail(2), vec!["line 9".to_owned(), "stopped".to_owned()]);
    }

    #[test]
    fn files_rotate_and_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LogStore::with_rotation(dir.path(), 4096, 2));
        let (p, s, r, i) = ids();
        let w = store.instance_writer(&p, &s, &r, &i);
        for n in 0..1000 {
            w.line(LogStream::Stderr, &format!("{n:04} {}", "x".repeat(100)));
        }
        let mut total = 0;
        for entry in fs::read_dir(dir.path().join("default")).unwrap() {
            total += entry.unwrap().metadata().unwrap().len();
        }
        assert!(total <= 3 * 4096, "logs use {total} bytes");
        let back = store.read(&p, &s, &LogQuery::default()).unwrap();
        assert_eq!(back.last().unwrap().message[..4], *"0999");
        // Order survives rotation.
        let nums: Vec<u32> = back
            .iter()
            .map(|e| e.message[..4].parse().unwrap())
            .collect();
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1));
    }

    #[test]
    fn long_lines_are_split_and_torn_lines_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LogStore::new(dir.path()));
        let (p, s, r, i) = ids();
        let w = store.instance_writer(&p, &s, &r, &i);
        w.line(LogStream::Stdout, &"é".repeat(MAX_LINE));
        let path = dir.path().join("default/svc.log");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"timestamp\":\"torn").unwrap();
        // A new writer (as after a restart) starts on a fresh line.
        let store = Arc::new(LogStore::new(dir.path()));
        store
            .instance_writer(&p, &s, &r, &i)
            .line(LogStream::Stdout, "after");
        let back = store.read(&p, &s, &LogQuery::default()).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back[2].message, "after");
        assert!(back.iter().all(|e| e.message.len() <= MAX_LINE));
    }
}
