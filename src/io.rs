//! The only code that touches the file system.
//!
//! Everything brook does to files goes through this module: creating and
//! fsyncing directories, atomic replacement of metadata files, the
//! directory lock, segment data files (allocate, truncate, sync, map). Keeping
//! it in one place keeps the durability rules in one place:
//!
//! - A new file or directory is durable only once its parent directory is
//!   fsynced; callers that create entries say so with [`sync_dir`].
//! - Metadata files are replaced atomically: write a temporary file, fsync
//!   it, rename it over the old one, fsync the directory ([`write_atomic`]).
//!   A crash leaves the old or the new contents, never a mix.
//! - Segment files grow by `posix_fallocate` before they are written through
//!   a memory map, so running out of disk is an `Err`, never a `SIGBUS`.
//!   (Durable appends also have their fsyncs write zeros ahead of the writer
//!   so later fsyncs find written blocks: `Active::harden_ahead` in
//!   `storage/partition_log.rs`. That is a page-cache write through the
//!   map, not a file operation of its own.)
//!
//! Errors name the operation and the path.
//!
//! With the `power-loss-sim` feature (tests only), every operation below a
//! directory watched by a `power_loss::Recorder` is also recorded, so a
//! test can cut power at any point and reopen what a reboot would find.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapOptions, MmapRaw};

use crate::error::{Error, Result};

#[cfg(feature = "power-loss-sim")]
pub(crate) mod power_loss;

/// Runs `real` through the power-loss recorder watching `path`, if any
/// (`$hook` is the recorder method; the recorder holds its lock across
/// `real` and records what it did).
macro_rules! recorded {
    ($path:expr, $real:expr, |$sim:ident| $hook:expr) => {{
        #[cfg(feature = "power-loss-sim")]
        if let Some($sim) = power_loss::find($path) {
            return $hook;
        }
        $real
    }};
}

/// Creates `path` and any missing parents, then fsyncs the parent of `path`
/// so the new entry is durable.
pub(crate) fn create_dir_durable(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|e| Error::io("create directory", path, e))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Creates `path` (and missing parents) without fsyncing its parent: the
/// caller does that once after creating several.
pub(crate) fn create_dir(path: &Path) -> Result<()> {
    let real = || fs::create_dir_all(path).map_err(|e| Error::io("create directory", path, e));
    recorded!(path, real(), |sim| sim.create_dirs(path, real))
}

/// Fsyncs a directory, making the entries created or removed in it durable.
pub(crate) fn sync_dir(path: &Path) -> Result<()> {
    recorded!(path, sync_dir_raw(path), |sim| sim
        .sync_dir(path, || sync_dir_raw(path)))
}

fn sync_dir_raw(path: &Path) -> Result<()> {
    let dir = File::open(path).map_err(|e| Error::io("open directory", path, e))?;
    dir.sync_all()
        .map_err(|e| Error::io("fsync directory", path, e))
}

/// Replaces `path` with `data` atomically and durably.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    {
        let f = DataFile::open(&tmp, true)?;
        f.truncate(0)?;
        f.write_all_at(data, 0)?;
        f.sync_all()?;
    }
    rename(&tmp, path)?;
    sync_dir(parent_of(path))
}

/// The temporary name [`write_atomic`] writes through; leftovers of a crash
/// carry this suffix and can be removed.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(TMP_SUFFIX);
    PathBuf::from(s)
}

fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Reads a whole file, or `None` if it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// Removes a file; a missing file is not an error.
pub(crate) fn remove_file(path: &Path) -> Result<()> {
    let real = || match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    };
    recorded!(path, real(), |sim| sim.remove(path, real))
}

/// Removes a directory tree; a missing one is not an error.
pub(crate) fn remove_dir_all(path: &Path) -> Result<()> {
    let real = || match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove directory", path, e)),
    };
    recorded!(path, real(), |sim| sim.remove(path, real))
}

/// An entry of a directory listing.
pub(crate) struct DirEntry {
    pub name: String,
    pub is_dir: bool,
}

/// Lists a directory (names that are not UTF-8 are skipped: brook never
/// creates them).
pub(crate) fn list_dir(path: &Path) -> Result<Vec<DirEntry>> {
    let mut out = Vec::new();
    let rd = fs::read_dir(path).map_err(|e| Error::io("list directory", path, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("list directory", path, e))?;
        let is_dir = entry
            .file_type()
            .map_err(|e| Error::io("stat", entry.path(), e))?
            .is_dir();
        if let Ok(name) = entry.file_name().into_string() {
            out.push(DirEntry { name, is_dir });
        }
    }
    Ok(out)
}

/// Renames a file (replacing `to`); the caller fsyncs the directory.
pub(crate) fn rename(from: &Path, to: &Path) -> Result<()> {
    let real = || fs::rename(from, to).map_err(|e| Error::io("rename", from, e));
    recorded!(from, real(), |sim| sim.rename(from, to, real))
}

/// Modification time of a file in milliseconds since the Unix epoch.
pub(crate) fn modified_ms(path: &Path) -> Option<i64> {
    let m = fs::metadata(path).ok()?.modified().ok()?;
    Some(m.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64)
}

/// Length of a file, or `None` if it does not exist.
pub(crate) fn file_len(path: &Path) -> Result<Option<u64>> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(m.len())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

/// The exclusive lock on a log directory: an OS file lock (`flock`) on
/// `<dir>/.lock`, released when this value is dropped or the process dies.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
    /// The boot id the previous owner of the directory wrote, if any.
    pub previous_boot_id: Option<String>,
}

/// Takes the directory lock or fails with [`Error::Locked`].
pub(crate) fn lock_dir(dir: &Path) -> Result<DirLock> {
    let path = dir.join(".lock");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => return Err(Error::Locked { path }),
        Err(fs::TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
    }
    let previous = fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?;
    let previous_boot_id = previous
        .lines()
        .find_map(|l| l.strip_prefix("boot_id="))
        .map(str::to_owned);
    let content = format!(
        "pid={}\nboot_id={}\n",
        std::process::id(),
        boot_id().unwrap_or_default()
    );
    file.set_len(0)
        .map_err(|e| Error::io("truncate", &path, e))?;
    std::io::Seek::rewind(&mut file).map_err(|e| Error::io("seek", &path, e))?;
    file.write_all(content.as_bytes())
        .map_err(|e| Error::io("write", &path, e))?;
    Ok(DirLock {
        _file: file,
        previous_boot_id,
    })
}

/// A shared lock on `<dir>/.lock` for tools that only read a log's files
/// (`brook::inspect`): while it is held no `Log` can open the directory,
/// and it fails with [`Error::Locked`] while one has it open. Unlike
/// [`lock_dir`] it creates nothing and leaves the owner's boot id alone,
/// which the next open needs to decide how to recover.
#[cfg(feature = "cli")]
pub(crate) fn lock_dir_shared(dir: &Path) -> Result<File> {
    let path = dir.join(".lock");
    let file = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
    match file.try_lock_shared() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(Error::Locked { path }),
        Err(fs::TryLockError::Error(e)) => Err(Error::io("lock", &path, e)),
    }
}

/// An identifier of the running kernel boot (Linux:
/// `/proc/sys/kernel/random/boot_id`). The page cache survives a process
/// crash but not a reboot, so a directory last written in this same boot
/// still holds every byte its previous owner wrote.
pub(crate) fn boot_id() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// A segment data or index file opened for reading and writing.
#[derive(Debug)]
pub(crate) struct DataFile {
    file: File,
    path: PathBuf,
    /// The power-loss recorder watching this file, and its node there.
    #[cfg(feature = "power-loss-sim")]
    sim: Option<(std::sync::Arc<power_loss::Shared>, power_loss::NodeId)>,
}

/// Runs a data operation on `$file` through its power-loss recorder, if
/// any: `$op` (given the model's node) says what to record.
macro_rules! recorded_data {
    ($file:expr, $real:expr, |$node:ident, $id:ident| $op:expr) => {{
        #[cfg(feature = "power-loss-sim")]
        if let Some((sim, id)) = &$file.sim {
            let $id = *id;
            #[allow(unused_variables)]
            return sim.data_op($id, |$node| $op, || $real);
        }
        $real
    }};
}

impl DataFile {
    /// Creates a new, empty file (fails if it exists).
    pub(crate) fn create_new(path: &Path) -> Result<DataFile> {
        #[cfg(test)]
        if let Some(e) = faults::take_open_failure(path) {
            return Err(Error::io("create", path, e));
        }
        let real = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(|e| Error::io("create", path, e))
        };
        DataFile::recorded_open(path, true, real)
    }

    /// Opens an existing file, or creates it when `create` is set.
    pub(crate) fn open(path: &Path, create: bool) -> Result<DataFile> {
        #[cfg(test)]
        if let Some(e) = faults::take_open_failure(path) {
            return Err(Error::io("open", path, e));
        }
        let real = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(create)
                .truncate(false)
                .open(path)
                .map_err(|e| Error::io("open", path, e))
        };
        DataFile::recorded_open(path, create, real)
    }

    fn recorded_open(
        path: &Path,
        create: bool,
        real: impl FnOnce() -> Result<File>,
    ) -> Result<DataFile> {
        #[cfg(feature = "power-loss-sim")]
        if let Some(sim) = power_loss::find(path) {
            let (file, id) = sim.open(path, create, real)?;
            return Ok(DataFile {
                file,
                path: path.to_owned(),
                sim: id.map(|id| (sim, id)),
            });
        }
        let _ = create;
        Ok(DataFile {
            file: real()?,
            path: path.to_owned(),
            #[cfg(feature = "power-loss-sim")]
            sim: None,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn len(&self) -> Result<u64> {
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(|e| Error::io("stat", &self.path, e))
    }

    /// Reserves disk blocks for bytes `0..len` (growing the file to `len` if
    /// shorter), so writes through a map into that range cannot hit ENOSPC.
    pub(crate) fn allocate(&self, len: u64) -> Result<()> {
        use std::os::fd::AsRawFd;
        let len = libc::off_t::try_from(len).map_err(|_| {
            Error::io(
                "allocate",
                &self.path,
                std::io::Error::new(ErrorKind::InvalidInput, "length overflows off_t"),
            )
        })?;
        let real = || {
            // SAFETY: the descriptor is open for writing and owned by
            // `self.file` for the duration of the call; posix_fallocate only
            // reads its integer arguments.
            let rc = unsafe { libc::posix_fallocate(self.file.as_raw_fd(), 0, len) };
            if rc != 0 {
                return Err(Error::io(
                    "allocate",
                    &self.path,
                    std::io::Error::from_raw_os_error(rc),
                ));
            }
            Ok(())
        };
        recorded_data!(self, real(), |node, id| (power_loss::node_len(node)
            < len as u64)
            .then_some(power_loss::Op::SetLen {
                id,
                len: len as u64
            }))
    }

    /// Cuts the file to `len` bytes.
    pub(crate) fn truncate(&self, len: u64) -> Result<()> {
        let real = || {
            self.file
                .set_len(len)
                .map_err(|e| Error::io("truncate", &self.path, e))
        };
        recorded_data!(self, real(), |node, id| Some(power_loss::Op::SetLen {
            id,
            len
        }))
    }

    /// fdatasync: the file's data (and the size needed to read it) is on
    /// stable storage.
    pub(crate) fn sync_data(&self) -> Result<()> {
        #[cfg(test)]
        if let Some(e) = faults::take_fsync_failure(&self.path) {
            return Err(Error::io("fsync", &self.path, e));
        }
        let real = || {
            self.file
                .sync_data()
                .map_err(|e| Error::io("fsync", &self.path, e))
        };
        recorded_data!(self, real(), |node, id| Some(power_loss::Op::Fsync { id }))
    }

    /// fsync: data and metadata on stable storage (for [`write_atomic`]).
    fn sync_all(&self) -> Result<()> {
        let real = || {
            self.file
                .sync_all()
                .map_err(|e| Error::io("fsync", &self.path, e))
        };
        recorded_data!(self, real(), |node, id| Some(power_loss::Op::Fsync { id }))
    }

    /// Writes `data` at `pos` (used for index files, never for segment data).
    pub(crate) fn write_all_at(&self, data: &[u8], pos: u64) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let real = || {
            self.file
                .write_all_at(data, pos)
                .map_err(|e| Error::io("write", &self.path, e))
        };
        recorded_data!(self, real(), |node, id| Some(power_loss::Op::Write {
            id,
            offset: pos,
            data: data.to_vec()
        }))
    }

    /// Writes `len` zero bytes at `pos`, from a static buffer (no
    /// allocation): the pager's zeroing ahead of an active segment's
    /// writer (see `storage::pager`).
    pub(crate) fn write_zeros(&self, pos: u64, len: u64) -> Result<()> {
        use std::os::unix::fs::FileExt;
        const CHUNK: usize = 256 * 1024;
        static ZEROS: [u8; CHUNK] = [0; CHUNK];
        let real = || {
            let mut at = pos;
            while at < pos + len {
                let n = (pos + len - at).min(CHUNK as u64) as usize;
                self.file
                    .write_all_at(&ZEROS[..n], at)
                    .map_err(|e| Error::io("write", &self.path, e))?;
                at += n as u64;
            }
            Ok(())
        };
        recorded_data!(self, real(), |node, id| Some(power_loss::Op::Write {
            id,
            offset: pos,
            data: vec![0; len as usize]
        }))
    }

    /// Maps `capacity` bytes of the file for reading and writing. The file
    /// may be shorter: the caller must only touch bytes below the file's
    /// length (see [`allocate`](Self::allocate)).
    pub(crate) fn map_raw(&self, capacity: u64) -> Result<MmapRaw> {
        let map = MmapOptions::new()
            .len(capacity as usize)
            .map_raw(&self.file)
            .map_err(|e| Error::io("mmap", &self.path, e))?;
        #[cfg(feature = "power-loss-sim")]
        if let Some((sim, id)) = &self.sim {
            sim.mapped(*id, &self.file);
        }
        Ok(map)
    }
}

/// The size of a memory page.
pub(crate) fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf only reads its integer argument.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
    })
}

/// Maps a whole file read-only; `None` if it is empty or missing.
pub(crate) fn map_read(path: &Path) -> Result<Option<Mmap>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    if len == 0 {
        return Ok(None);
    }
    // SAFETY: brook never truncates or rewrites a file below the length it
    // has published to readers (segments only grow until they are closed,
    // and replaced files are renamed over, leaving this inode intact), so the
    // mapped bytes stay valid and unchanged while the map lives. Another
    // process modifying the directory breaks that; the directory lock keeps
    // other brook processes out.
    let map = unsafe { MmapOptions::new().len(len as usize).map(&file) }
        .map_err(|e| Error::io("mmap", path, e))?;
    Ok(Some(map))
}

/// Fault injection for the crate's own tests: the next fsync of a file
/// whose path ends with a given suffix fails (per thread, so parallel tests
/// do not interfere).
#[cfg(test)]
pub(crate) mod faults {
    use std::cell::RefCell;
    use std::path::Path;

    thread_local! {
        static FAIL_FSYNC: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }

    /// Makes the next fsync of a file ending in `suffix` on this thread fail
    /// with EIO.
    pub(crate) fn fail_next_fsync(suffix: &str) {
        FAIL_FSYNC.with(|f| f.borrow_mut().push(suffix.to_owned()));
    }

    thread_local! {
        static CRASH_COMPACTION: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }

    /// Makes the next compaction on this thread stop after swap step `step`
    /// (1 = files written, 2 = committed, 3 = swapped in memory, 4 = old
    /// segments deleted), as a crash there would.
    pub(crate) fn crash_compaction_after(step: u32) {
        CRASH_COMPACTION.with(|c| c.set(step));
    }

    pub(crate) fn compaction_crash_due(step: u32) -> bool {
        CRASH_COMPACTION.with(|c| {
            if c.get() == step {
                c.set(0);
                true
            } else {
                false
            }
        })
    }

    /// Something a test runs once, at a point of a call on its thread.
    type Hook = RefCell<Option<Box<dyn FnOnce()>>>;

    fn set_hook(hook: &'static std::thread::LocalKey<Hook>, f: impl FnOnce() + 'static) {
        hook.with(|h| *h.borrow_mut() = Some(Box::new(f)));
    }

    fn run_hook(hook: &'static std::thread::LocalKey<Hook>) {
        if let Some(f) = hook.with(|h| h.borrow_mut().take()) {
            f();
        }
    }

    thread_local! {
        static AFTER_RETENTION_SCAN: Hook = const { RefCell::new(None) };
        static IN_TOPIC_DELETION: Hook = const { RefCell::new(None) };
    }

    /// Runs `f` once, in the next retention pass on this thread, between
    /// learning which segments expired and removing them.
    pub(crate) fn after_next_retention_scan(f: impl FnOnce() + 'static) {
        set_hook(&AFTER_RETENTION_SCAN, f);
    }

    pub(crate) fn run_after_retention_scan() {
        run_hook(&AFTER_RETENTION_SCAN);
    }

    /// Runs `f` once, in the next `delete_topic` on this thread, after the
    /// topic left the topic table and before its files go.
    pub(crate) fn in_next_topic_deletion(f: impl FnOnce() + 'static) {
        set_hook(&IN_TOPIC_DELETION, f);
    }

    pub(crate) fn run_in_topic_deletion() {
        run_hook(&IN_TOPIC_DELETION);
    }

    /// A step of the swap and what to run after it.
    type StepHook = (u32, Box<dyn FnOnce()>);

    thread_local! {
        static AT_COMPACTION_STEP: RefCell<Option<StepHook>> = const { RefCell::new(None) };
    }

    /// Runs `f` once, in the next compaction on this thread, after swap
    /// step `step` (see [`crash_compaction_after`]), to race other calls
    /// with it.
    pub(crate) fn at_compaction_step(step: u32, f: impl FnOnce() + 'static) {
        AT_COMPACTION_STEP.with(|h| *h.borrow_mut() = Some((step, Box::new(f))));
    }

    pub(crate) fn run_at_compaction_step(step: u32) {
        let due = AT_COMPACTION_STEP.with(|h| {
            let mut h = h.borrow_mut();
            match h.take() {
                Some((s, f)) if s == step => Some(f),
                other => {
                    *h = other;
                    None
                }
            }
        });
        if let Some(f) = due {
            f();
        }
    }

    thread_local! {
        static CRASH_COMPRESSION: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Makes the next in-place compression of a sealed batch on this thread
    /// stop halfway through overwriting the batch, as a kill there would.
    pub(crate) fn crash_next_compression() {
        CRASH_COMPRESSION.with(|c| c.set(true));
    }

    pub(crate) fn compression_crash_due() -> bool {
        CRASH_COMPRESSION.with(|c| c.replace(false))
    }

    thread_local! {
        static CRASH_LARGE_WRITE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Makes the next record written alone (over 64 KiB) on this thread
    /// stop after its value and headers, before its batch header, as a
    /// process killed there would.
    pub(crate) fn crash_next_large_write() {
        CRASH_LARGE_WRITE.with(|c| c.set(true));
    }

    pub(crate) fn large_write_crash_due() -> bool {
        CRASH_LARGE_WRITE.with(|c| c.replace(false))
    }

    thread_local! {
        static CRASH_STAGED_WRITE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Makes the next write of staged batches (a large call, see
    /// `partition_log/staged.rs`) on this thread stop before the first
    /// batch's header, as a process killed there would.
    pub(crate) fn crash_next_staged_write() {
        CRASH_STAGED_WRITE.with(|c| c.set(true));
    }

    pub(crate) fn staged_write_crash_due() -> bool {
        CRASH_STAGED_WRITE.with(|c| c.replace(false))
    }

    thread_local! {
        static FAIL_OPEN: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }

    /// Makes the next open of a segment or index file ending in `suffix` on
    /// this thread fail with EMFILE (no file descriptor left).
    pub(crate) fn fail_next_open(suffix: &str) {
        FAIL_OPEN.with(|f| f.borrow_mut().push(suffix.to_owned()));
    }

    pub(crate) fn take_open_failure(path: &Path) -> Option<std::io::Error> {
        FAIL_OPEN.with(|f| {
            let mut f = f.borrow_mut();
            let i = f
                .iter()
                .position(|s| path.to_string_lossy().ends_with(s.as_str()))?;
            f.remove(i);
            Some(std::io::Error::from_raw_os_error(libc::EMFILE))
        })
    }

    thread_local! {
        static AFTER_READ_PLAN: Hook = const { RefCell::new(None) };
    }

    /// Runs `f` once, in the next read on this thread, between planning
    /// which segment to read and reading it (to race retention with it).
    pub(crate) fn after_next_read_plan(f: impl FnOnce() + 'static) {
        set_hook(&AFTER_READ_PLAN, f);
    }

    pub(crate) fn run_after_read_plan() {
        run_hook(&AFTER_READ_PLAN);
    }

    pub(super) fn take_fsync_failure(path: &Path) -> Option<std::io::Error> {
        FAIL_FSYNC.with(|f| {
            let mut f = f.borrow_mut();
            let i = f
                .iter()
                .position(|s| path.to_string_lossy().ends_with(s.as_str()))?;
            f.remove(i);
            Some(std::io::Error::from_raw_os_error(libc::EIO))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("meta.json");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second, longer").unwrap();
        assert_eq!(read_optional(&p).unwrap().unwrap(), b"second, longer");
        assert!(!dir.path().join("meta.json.tmp").exists());
        assert_eq!(read_optional(&dir.path().join("nope")).unwrap(), None);
    }

    #[test]
    fn second_lock_is_refused_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_dir(dir.path()).unwrap();
        assert!(matches!(lock_dir(dir.path()), Err(Error::Locked { .. })));
        drop(first);
        let again = lock_dir(dir.path()).unwrap();
        assert_eq!(again.previous_boot_id, boot_id());
    }

    #[test]
    fn allocate_grows_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = DataFile::create_new(&dir.path().join("x.log")).unwrap();
        f.allocate(8192).unwrap();
        assert_eq!(f.len().unwrap(), 8192);
        f.truncate(100).unwrap();
        assert_eq!(f.len().unwrap(), 100);
        assert!(map_read(&dir.path().join("x.log")).unwrap().is_some());
    }
}
