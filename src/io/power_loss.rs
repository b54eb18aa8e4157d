//! Power-loss simulation (feature `power-loss-sim`, for tests; not an API).
//!
//! A [`Recorder`] watches one log directory. Every file-system operation
//! `io` performs below it is done for real *and* appended to an operation
//! log, in the order it happened (the recorder's lock is held across the
//! real operation and its record):
//!
//! - namespace operations: create, mkdir, rename, unlink (per directory);
//! - data operations: `pwrite`, truncate/`posix_fallocate` (a length
//!   change), and stores into writable memory maps. Maps issue no system
//!   call, so their stores are *discovered*: the file's real contents are
//!   compared with the contents the log implies, and each 4 KiB page that
//!   differs becomes a write of its changed bytes. This happens before every
//!   fsync of the file, before any other recorded operation on it, before it
//!   is unlinked, and at every [`Recorder::mark`];
//! - barriers: `fdatasync` of a file, `fsync` of a directory.
//!
//! [`History::replay`] re-runs the operation log in memory and can stop at
//! any position `p` (a power cut after the first `p` operations) and
//! materialise a *real* post-crash copy of the directory, in one of four
//! [`LossMode`]s. In each, a file's durable contents are its contents at its
//! last fsync, and a directory's durable entries are its entries at its last
//! fsync (a new file or directory is reachable only through durable entries
//! of every directory above it); the *unsynced* operations — those after a
//! file's or directory's last barrier — are then applied:
//!
//! - [`LossMode::DropUnsynced`] — none;
//! - [`LossMode::KeepPrefix`] — the first `k` of them in issue order, `k`
//!   chosen by the seed;
//! - [`LossMode::TearLastWrite`] — a prefix, then one more write cut at a
//!   byte chosen by the seed;
//! - [`LossMode::ReorderBetweenFiles`] — for every file and directory
//!   independently a prefix of its own unsynced operations (so a later
//!   write to one file can survive an earlier one to another, as write-back
//!   and the journal allow).
//!
//! A power loss is also a reboot: the copy's `.lock` names a boot that is
//! not the running one, so recovery treats open batches as torn.
//!
//! What it does not model: the directory lock file itself (rewritten as
//! above), metadata other than names and lengths (mtimes, permissions),
//! renames across directories (brook does none; they are reported),
//! stores into a map that race with a capture (they land in one capture
//! or the next, which is a legal crash state either way), and the real
//! order of map stores between two captures (they are recorded in page
//! order at the capture).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

/// Index of a file or directory in the simulated file system.
pub(crate) type NodeId = usize;

/// Granularity at which map stores are discovered (a page).
const PAGE_BYTES: usize = 4096;

/// Name of the directory lock file (rewritten, never recorded).
const LOCK_FILE: &str = ".lock";

/// One recorded file-system operation.
#[derive(Debug, Clone)]
pub enum Op {
    /// A directory `id` was created as `name` in directory `parent`.
    Mkdir {
        /// Directory holding the new entry.
        parent: NodeId,
        /// Entry name.
        name: String,
        /// The new directory.
        id: NodeId,
    },
    /// An empty file `id` was created as `name` in directory `parent`.
    Create {
        /// Directory holding the new entry.
        parent: NodeId,
        /// Entry name.
        name: String,
        /// The new file.
        id: NodeId,
    },
    /// Entry `from` of `dir` (node `id`) was renamed to `to`, replacing it.
    Rename {
        /// Directory of both names.
        dir: NodeId,
        /// Old name.
        from: String,
        /// New name.
        to: String,
        /// The node renamed.
        id: NodeId,
    },
    /// Entry `name` was removed from `parent`.
    Unlink {
        /// Directory holding the entry.
        parent: NodeId,
        /// Entry name.
        name: String,
    },
    /// `data` was written at `offset` of file `id`.
    Write {
        /// The file.
        id: NodeId,
        /// Byte position.
        offset: u64,
        /// Bytes written.
        data: Vec<u8>,
    },
    /// File `id`'s length was set to `len` (truncate or allocate).
    SetLen {
        /// The file.
        id: NodeId,
        /// New length.
        len: u64,
    },
    /// File `id` was fsynced: its contents are durable.
    Fsync {
        /// The file.
        id: NodeId,
    },
    /// Directory `id` was fsynced: its entries are durable.
    DirSync {
        /// The directory.
        id: NodeId,
    },
    /// A point the test marked (an API call returned).
    Mark,
}

impl Op {
    /// The node whose unsynced operations this one joins, if any.
    fn owner(&self) -> Option<NodeId> {
        match self {
            Op::Mkdir { parent, .. } | Op::Create { parent, .. } | Op::Unlink { parent, .. } => {
                Some(*parent)
            }
            Op::Rename { dir, .. } => Some(*dir),
            Op::Write { id, .. } | Op::SetLen { id, .. } => Some(*id),
            Op::Fsync { .. } | Op::DirSync { .. } | Op::Mark => None,
        }
    }
}

/// A file or directory: what it holds now, and what a power cut keeps.
#[derive(Debug, Clone, Default)]
pub(crate) struct Node {
    dir: bool,
    data: Vec<u8>,
    durable_data: Vec<u8>,
    entries: BTreeMap<String, NodeId>,
    durable_entries: BTreeMap<String, NodeId>,
    /// Positions (in the operation log) of operations after the last barrier.
    unsynced: Vec<usize>,
}

/// The simulated file system: every node ever created (nodes are never
/// freed: a durable entry may still name an unlinked one).
#[derive(Debug, Clone, Default)]
struct Fs {
    nodes: Vec<Node>,
}

const ROOT: NodeId = 0;

impl Fs {
    fn new_node(&mut self, dir: bool) -> NodeId {
        self.nodes.push(Node {
            dir,
            ..Node::default()
        });
        self.nodes.len() - 1
    }

    /// Applies operation `pos` of the log.
    fn apply(&mut self, pos: usize, op: &Op) {
        match op {
            Op::Mkdir { parent, name, id } | Op::Create { parent, name, id } => {
                let dir = matches!(op, Op::Mkdir { .. });
                while self.nodes.len() <= *id {
                    self.nodes.push(Node::default());
                }
                self.nodes[*id].dir = dir;
                self.nodes[*parent].entries.insert(name.clone(), *id);
            }
            Op::Rename { dir, from, to, id } => {
                let d = &mut self.nodes[*dir];
                d.entries.remove(from);
                d.entries.insert(to.clone(), *id);
            }
            Op::Unlink { parent, name } => {
                self.nodes[*parent].entries.remove(name);
            }
            Op::Write { id, offset, data } => write_at(&mut self.nodes[*id].data, *offset, data),
            Op::SetLen { id, len } => self.nodes[*id].data.resize(*len as usize, 0),
            Op::Fsync { id } => {
                let n = &mut self.nodes[*id];
                n.durable_data = n.data.clone();
                n.unsynced.clear();
            }
            Op::DirSync { id } => {
                let n = &mut self.nodes[*id];
                n.durable_entries = n.entries.clone();
                n.unsynced.clear();
            }
            Op::Mark => {}
        }
        if let Some(owner) = op.owner() {
            self.nodes[owner].unsynced.push(pos);
        }
    }

    /// The node at `rel` (relative to the root) in the current namespace.
    fn lookup(&self, rel: &Path) -> Option<NodeId> {
        let mut at = ROOT;
        for c in rel.components() {
            match c {
                Component::Normal(name) => {
                    at = *self.nodes[at].entries.get(name.to_str()?)?;
                }
                Component::CurDir => {}
                _ => return None,
            }
        }
        Some(at)
    }
}

fn write_at(buf: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = offset as usize;
    let end = start + data.len();
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[start..end].copy_from_slice(data);
}

/// What survives a simulated power cut of the unsynced operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossMode {
    /// Everything not covered by a barrier is lost.
    DropUnsynced,
    /// A prefix (in issue order) of the unsynced operations survives.
    KeepPrefix,
    /// A prefix survives, and the next write survives up to some byte.
    TearLastWrite,
    /// Each file and directory keeps its own prefix, independently.
    ReorderBetweenFiles,
}

impl LossMode {
    /// Every mode.
    pub const ALL: [LossMode; 4] = [
        LossMode::DropUnsynced,
        LossMode::KeepPrefix,
        LossMode::TearLastWrite,
        LossMode::ReorderBetweenFiles,
    ];
}

/// A small deterministic generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// The state a [`Recorder`] keeps under its lock.
#[derive(Debug)]
pub(crate) struct Live {
    root: PathBuf,
    initial: Fs,
    fs: Fs,
    ops: Vec<Op>,
    /// Handles on files mapped writable, to discover their stores.
    mapped: BTreeMap<NodeId, File>,
    /// Operations the model could not follow (a bug in the recording, or
    /// file-system access that bypassed `io`).
    errors: Vec<String>,
}

/// The recorder shared by the hooks in `io` and the test's handle.
#[derive(Debug)]
pub(crate) struct Shared {
    root: PathBuf,
    live: Mutex<Live>,
}

static REGISTRY: Mutex<Vec<Arc<Shared>>> = Mutex::new(Vec::new());
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// The recorder watching `path`, if any.
pub(crate) fn find(path: &Path) -> Option<Arc<Shared>> {
    if ACTIVE.load(Ordering::Acquire) == 0 {
        return None;
    }
    REGISTRY
        .lock()
        .iter()
        .find(|s| path.starts_with(&s.root))
        .cloned()
}

/// Records the file-system operations below one directory (see the module
/// docs). Dropping it stops the recording.
#[derive(Debug)]
pub struct Recorder {
    shared: Arc<Shared>,
}

impl Recorder {
    /// Starts recording below `dir` (created if missing); whatever `dir`
    /// holds now counts as durable. Open the log with [`Recorder::dir`].
    pub fn start(dir: &Path) -> std::io::Result<Recorder> {
        fs::create_dir_all(dir)?;
        let root = dir.canonicalize()?;
        let mut fs = Fs::default();
        fs.new_node(true);
        snapshot_tree(&root, &mut fs, ROOT)?;
        let shared = Arc::new(Shared {
            root: root.clone(),
            live: Mutex::new(Live {
                root,
                initial: fs.clone(),
                fs,
                ops: Vec::new(),
                mapped: BTreeMap::new(),
                errors: Vec::new(),
            }),
        });
        let mut reg = REGISTRY.lock();
        if reg
            .iter()
            .any(|s| s.root.starts_with(&shared.root) || shared.root.starts_with(&s.root))
        {
            return Err(std::io::Error::other(
                "a recorder already watches this directory",
            ));
        }
        reg.push(Arc::clone(&shared));
        ACTIVE.fetch_add(1, Ordering::AcqRel);
        Ok(Recorder { shared })
    }

    /// The directory recorded (canonical: open the log here).
    pub fn dir(&self) -> &Path {
        &self.shared.root
    }

    /// Discovers pending map stores and appends a mark; returns the number
    /// of operations before the mark (a power cut at that position is one
    /// just before the mark).
    pub fn mark(&self) -> usize {
        let mut live = self.shared.live.lock();
        live.capture_all();
        live.ops.push(Op::Mark);
        let pos = live.ops.len() - 1;
        live.fs.apply(pos, &Op::Mark);
        pos
    }

    /// Operations recorded so far.
    pub fn len(&self) -> usize {
        self.shared.live.lock().ops.len()
    }

    /// Whether nothing was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Problems the recording met (empty when the model followed every
    /// operation).
    pub fn errors(&self) -> Vec<String> {
        self.shared.live.lock().errors.clone()
    }

    /// Checks that the model's current namespace and contents equal the
    /// real directory (the `.lock` file aside): evidence that every
    /// operation went through `io` and was recorded. Returns the
    /// differences.
    pub fn differences_from_disk(&self) -> Vec<String> {
        let mut live = self.shared.live.lock();
        live.capture_all();
        let mut out = Vec::new();
        compare_tree(&live.fs, ROOT, &live.root, Path::new(""), &mut out);
        out
    }

    /// A frozen copy of everything recorded so far.
    pub fn history(&self) -> History {
        let mut live = self.shared.live.lock();
        live.capture_all();
        History {
            initial: live.initial.clone(),
            ops: live.ops.clone(),
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let mut reg = REGISTRY.lock();
        reg.retain(|s| !Arc::ptr_eq(s, &self.shared));
        ACTIVE.fetch_sub(1, Ordering::AcqRel);
    }
}

fn snapshot_tree(path: &Path, fs: &mut Fs, dir: NodeId) -> std::io::Result<()> {
    for e in fs::read_dir(path)? {
        let e = e?;
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        if dir == ROOT && name == LOCK_FILE {
            continue;
        }
        let is_dir = e.file_type()?.is_dir();
        let id = fs.new_node(is_dir);
        if is_dir {
            snapshot_tree(&e.path(), fs, id)?;
        } else {
            let data = fs::read(e.path())?;
            fs.nodes[id].durable_data = data.clone();
            fs.nodes[id].data = data;
        }
        fs.nodes[dir].entries.insert(name.clone(), id);
        fs.nodes[dir].durable_entries.insert(name, id);
    }
    Ok(())
}

fn compare_tree(fs: &Fs, dir: NodeId, real: &Path, rel: &Path, out: &mut Vec<String>) {
    let mut seen = BTreeMap::new();
    match fs::read_dir(real) {
        Ok(rd) => {
            for e in rd.flatten() {
                if let Ok(name) = e.file_name().into_string() {
                    if !(dir == ROOT && name == LOCK_FILE) {
                        seen.insert(name, e.path());
                    }
                }
            }
        }
        Err(e) => out.push(format!("{}: {e}", rel.display())),
    }
    for (name, &id) in &fs.nodes[dir].entries {
        let r = rel.join(name);
        match seen.remove(name) {
            None => out.push(format!("{}: in the model, not on disk", r.display())),
            Some(path) if fs.nodes[id].dir => compare_tree(fs, id, &path, &r, out),
            Some(path) => match fs::read(&path) {
                Ok(d) if d == fs.nodes[id].data => {}
                Ok(d) => out.push(format!(
                    "{}: {} bytes on disk, {} in the model{}",
                    r.display(),
                    d.len(),
                    fs.nodes[id].data.len(),
                    d.iter()
                        .zip(&fs.nodes[id].data)
                        .position(|(a, b)| a != b)
                        .map(|p| format!(", first difference at byte {p}"))
                        .unwrap_or_default()
                )),
                Err(e) => out.push(format!("{}: {e}", r.display())),
            },
        }
    }
    for name in seen.keys() {
        out.push(format!(
            "{}: on disk, not in the model",
            rel.join(name).display()
        ));
    }
}

impl Live {
    fn rel<'a>(&self, path: &'a Path) -> Option<&'a Path> {
        path.strip_prefix(&self.root).ok()
    }

    fn record(&mut self, op: Op) {
        self.ops.push(op);
        let pos = self.ops.len() - 1;
        let op = &self.ops[pos];
        self.fs.apply(pos, op);
    }

    fn error(&mut self, msg: String) {
        self.errors.push(msg);
    }

    /// The node at `path`, recording an error if the model has none.
    fn node(&mut self, path: &Path) -> Option<NodeId> {
        let found = self.rel(path).and_then(|r| self.fs.lookup(r));
        if found.is_none() {
            self.error(format!("{}: not in the model", path.display()));
        }
        found
    }

    /// Parent directory node and entry name of `path`.
    fn parent_and_name(&mut self, path: &Path) -> Option<(NodeId, String)> {
        let name = path.file_name()?.to_str()?.to_owned();
        let parent = self.node(path.parent()?)?;
        Some((parent, name))
    }

    /// Records the stores made through maps of `id` since the last capture.
    fn capture(&mut self, id: NodeId) {
        let Some(file) = self.mapped.get(&id) else {
            return;
        };
        let real = match read_all(file) {
            Ok(d) => d,
            Err(e) => {
                self.error(format!("capture of node {id}: {e}"));
                return;
            }
        };
        let model = &self.fs.nodes[id].data;
        let mut ops = Vec::new();
        let common = model.len().min(real.len());
        if real.len() != model.len() {
            ops.push(Op::SetLen {
                id,
                len: real.len() as u64,
            });
        }
        let mut page = 0;
        while page < common {
            let end = (page + PAGE_BYTES).min(common);
            let (a, b) = (&model[page..end], &real[page..end]);
            if a != b {
                let first = a.iter().zip(b).position(|(x, y)| x != y).expect("differs");
                let last = a.iter().zip(b).rposition(|(x, y)| x != y).expect("differs");
                ops.push(Op::Write {
                    id,
                    offset: (page + first) as u64,
                    data: b[first..=last].to_vec(),
                });
            }
            page = end;
        }
        if real.len() > model.len() {
            // Bytes past the model's end: the SetLen above zero-filled them.
            let mut page = common;
            while page < real.len() {
                let end = (page + PAGE_BYTES).min(real.len());
                if real[page..end].iter().any(|&x| x != 0) {
                    ops.push(Op::Write {
                        id,
                        offset: page as u64,
                        data: real[page..end].to_vec(),
                    });
                }
                page = end;
            }
        }
        for op in ops {
            self.record(op);
        }
    }

    fn capture_all(&mut self) {
        let ids: Vec<NodeId> = self.mapped.keys().copied().collect();
        for id in ids {
            self.capture(id);
        }
    }

    /// Captures and records the unlink of every node below `dir`
    /// (children first), then forgets their maps.
    fn unlink_tree(&mut self, dir: NodeId) {
        let entries: Vec<(String, NodeId)> = self.fs.nodes[dir]
            .entries
            .iter()
            .map(|(n, &id)| (n.clone(), id))
            .collect();
        for (name, id) in entries {
            if self.fs.nodes[id].dir {
                self.unlink_tree(id);
            } else {
                self.capture(id);
                self.mapped.remove(&id);
            }
            self.record(Op::Unlink { parent: dir, name });
        }
    }
}

fn read_all(file: &File) -> std::io::Result<Vec<u8>> {
    let len = file.metadata()?.len() as usize;
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

/// The hooks `io` calls (each runs the real operation under the lock).
impl Shared {
    pub(crate) fn create_dirs<T>(
        &self,
        path: &Path,
        real: impl FnOnce() -> crate::Result<T>,
    ) -> crate::Result<T> {
        let mut live = self.live.lock();
        // The components that do not exist yet, outermost first.
        let mut missing = Vec::new();
        let mut p = path;
        while live.rel(p).is_some_and(|r| live.fs.lookup(r).is_none()) {
            missing.push(p.to_owned());
            match p.parent() {
                Some(parent) => p = parent,
                None => break,
            }
        }
        let out = real()?;
        for dir in missing.iter().rev() {
            if let Some((parent, name)) = live.parent_and_name(dir) {
                let id = live.fs.nodes.len();
                live.record(Op::Mkdir { parent, name, id });
            }
        }
        Ok(out)
    }

    pub(crate) fn sync_dir<T>(
        &self,
        path: &Path,
        real: impl FnOnce() -> crate::Result<T>,
    ) -> crate::Result<T> {
        let mut live = self.live.lock();
        let out = real()?;
        if let Some(id) = live.node(path) {
            live.record(Op::DirSync { id });
        }
        Ok(out)
    }

    pub(crate) fn remove<T>(
        &self,
        path: &Path,
        real: impl FnOnce() -> crate::Result<T>,
    ) -> crate::Result<T> {
        let mut live = self.live.lock();
        let target = live.rel(path).and_then(|r| live.fs.lookup(r));
        if let Some(id) = target {
            if live.fs.nodes[id].dir {
                live.unlink_tree(id);
            } else {
                live.capture(id);
                live.mapped.remove(&id);
            }
        }
        let out = real()?;
        if target.is_some() {
            if let Some((parent, name)) = live.parent_and_name(path) {
                live.record(Op::Unlink { parent, name });
            }
        }
        Ok(out)
    }

    pub(crate) fn rename<T>(
        &self,
        from: &Path,
        to: &Path,
        real: impl FnOnce() -> crate::Result<T>,
    ) -> crate::Result<T> {
        let mut live = self.live.lock();
        if let Some(id) = live.rel(to).and_then(|r| live.fs.lookup(r)) {
            live.capture(id);
            live.mapped.remove(&id);
        }
        let out = real()?;
        if from.parent() != to.parent() {
            live.error(format!(
                "rename across directories: {} -> {}",
                from.display(),
                to.display()
            ));
            return Ok(out);
        }
        let Some(id) = live.node(from) else {
            return Ok(out);
        };
        if live.fs.nodes[id].dir {
            live.error(format!("rename of a directory: {}", from.display()));
        }
        if let Some((dir, from_name)) = live.parent_and_name(from) {
            let to_name = to
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            live.record(Op::Rename {
                dir,
                from: from_name,
                to: to_name,
                id,
            });
        }
        Ok(out)
    }

    /// Opening (`create`: possibly creating) a file; returns its node.
    pub(crate) fn open<T>(
        &self,
        path: &Path,
        create: bool,
        real: impl FnOnce() -> crate::Result<T>,
    ) -> crate::Result<(T, Option<NodeId>)> {
        let mut live = self.live.lock();
        let existing = live.rel(path).and_then(|r| live.fs.lookup(r));
        let out = real()?;
        let id = match existing {
            Some(id) => Some(id),
            None if create => match live.parent_and_name(path) {
                Some((parent, name)) => {
                    let id = live.fs.nodes.len();
                    live.record(Op::Create { parent, name, id });
                    Some(id)
                }
                None => None,
            },
            None => {
                live.error(format!("{}: opened, but not in the model", path.display()));
                None
            }
        };
        Ok((out, id))
    }

    /// A data operation on file `id`: stores made through its maps are
    /// captured first, then `real` runs and `op` is recorded (if any).
    pub(crate) fn data_op<T>(
        &self,
        id: NodeId,
        op: impl FnOnce(&Node) -> Option<Op>,
        real: impl FnOnce() -> crate::Result<T>,
    ) -> crate::Result<T> {
        let mut live = self.live.lock();
        live.capture(id);
        let out = real()?;
        if let Some(op) = op(&live.fs.nodes[id]) {
            live.record(op);
        }
        Ok(out)
    }

    /// A writable map of file `id` was made: watch `file` for stores.
    pub(crate) fn mapped(&self, id: NodeId, file: &File) {
        let mut live = self.live.lock();
        live.capture(id);
        match file.try_clone() {
            Ok(f) => {
                live.mapped.entry(id).or_insert(f);
            }
            Err(e) => live.error(format!("node {id}: cannot watch its map: {e}")),
        }
    }
}

/// The length of file node `node` as the model knows it.
pub(crate) fn node_len(node: &Node) -> u64 {
    node.data.len() as u64
}

/// A frozen operation log, to replay and cut power in.
#[derive(Debug, Clone)]
pub struct History {
    initial: Fs,
    ops: Vec<Op>,
}

impl History {
    /// The recorded operations.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Starts a replay at position 0 (before any operation).
    pub fn replay(&self) -> Replay<'_> {
        Replay {
            history: self,
            fs: self.initial.clone(),
            at: 0,
        }
    }
}

/// A replay of a [`History`], moving forward only.
#[derive(Debug)]
pub struct Replay<'a> {
    history: &'a History,
    fs: Fs,
    at: usize,
}

impl Replay<'_> {
    /// Applies operations until the first `pos` have happened.
    pub fn advance_to(&mut self, pos: usize) {
        assert!(pos >= self.at, "a replay only moves forward");
        let pos = pos.min(self.history.ops.len());
        while self.at < pos {
            self.fs.apply(self.at, &self.history.ops[self.at]);
            self.at += 1;
        }
    }

    /// The unsynced operations at this point, in issue order.
    fn unsynced(&self) -> Vec<usize> {
        let mut all: Vec<usize> = self
            .fs
            .nodes
            .iter()
            .flat_map(|n| n.unsynced.iter().copied())
            .collect();
        all.sort_unstable();
        all
    }

    /// Cuts power here: writes into `dest` (which must not exist) the
    /// directory a reboot would find, choosing what of the unsynced
    /// operations survives by `mode` and `seed`. Returns a description of
    /// the choice (for failure messages).
    pub fn materialise(&self, mode: LossMode, seed: u64, dest: &Path) -> std::io::Result<String> {
        let ops = &self.history.ops;
        let unsynced = self.unsynced();
        let mut rng = Rng::new(seed);
        // keep[i]: how much of unsynced operation i survives (None: all).
        let mut kept: BTreeMap<usize, Option<usize>> = BTreeMap::new();
        let description = match mode {
            LossMode::DropUnsynced => format!("dropped all {} unsynced operations", unsynced.len()),
            LossMode::KeepPrefix => {
                let k = rng.below(unsynced.len() as u64 + 1) as usize;
                kept.extend(unsynced[..k].iter().map(|&p| (p, None)));
                format!(
                    "kept the first {k} of {} unsynced operations",
                    unsynced.len()
                )
            }
            LossMode::TearLastWrite => {
                let writes: Vec<usize> = (0..unsynced.len())
                    .filter(|&i| matches!(&ops[unsynced[i]], Op::Write { data, .. } if !data.is_empty()))
                    .collect();
                if writes.is_empty() {
                    format!(
                        "no unsynced write to tear; dropped all {} unsynced operations",
                        unsynced.len()
                    )
                } else {
                    let i = writes[rng.below(writes.len() as u64) as usize];
                    let Op::Write { data, .. } = &ops[unsynced[i]] else {
                        unreachable!("chosen among writes")
                    };
                    let cut = rng.below(data.len() as u64) as usize;
                    kept.extend(unsynced[..i].iter().map(|&p| (p, None)));
                    kept.insert(unsynced[i], Some(cut));
                    format!(
                        "kept the first {i} of {} unsynced operations, then {cut} of the {} bytes of write #{} ({:?})",
                        unsynced.len(),
                        data.len(),
                        unsynced[i],
                        short(&ops[unsynced[i]])
                    )
                }
            }
            LossMode::ReorderBetweenFiles => {
                let mut parts = Vec::new();
                for (id, n) in self.fs.nodes.iter().enumerate() {
                    if n.unsynced.is_empty() {
                        continue;
                    }
                    let k = rng.below(n.unsynced.len() as u64 + 1) as usize;
                    kept.extend(n.unsynced[..k].iter().map(|&p| (p, None)));
                    parts.push(format!("node {id}: {k}/{}", n.unsynced.len()));
                }
                format!(
                    "per-node prefixes of unsynced operations: {}",
                    parts.join(", ")
                )
            }
        };
        // The post-crash state of every node with unsynced operations.
        let mut data: BTreeMap<NodeId, Vec<u8>> = BTreeMap::new();
        let mut entries: BTreeMap<NodeId, BTreeMap<String, NodeId>> = BTreeMap::new();
        for (&pos, &cut) in &kept {
            let op = &ops[pos];
            let owner = op.owner().expect("unsynced operations have an owner");
            let n = &self.fs.nodes[owner];
            if n.dir {
                let e = entries
                    .entry(owner)
                    .or_insert_with(|| n.durable_entries.clone());
                match op {
                    Op::Mkdir { name, id, .. } | Op::Create { name, id, .. } => {
                        e.insert(name.clone(), *id);
                    }
                    Op::Rename { from, to, id, .. } => {
                        e.remove(from);
                        e.insert(to.clone(), *id);
                    }
                    Op::Unlink { name, .. } => {
                        e.remove(name);
                    }
                    _ => unreachable!("a directory owns namespace operations only"),
                }
            } else {
                let d = data.entry(owner).or_insert_with(|| n.durable_data.clone());
                match op {
                    Op::Write {
                        offset, data: w, ..
                    } => write_at(d, *offset, &w[..cut.unwrap_or(w.len())]),
                    Op::SetLen { len, .. } => d.resize(*len as usize, 0),
                    _ => unreachable!("a file owns data operations only"),
                }
            }
        }
        fs::create_dir(dest)?;
        self.write_tree(ROOT, dest, &data, &entries)?;
        fs::write(
            dest.join(LOCK_FILE),
            "pid=0\nboot_id=the-boot-before-the-power-loss\n",
        )?;
        Ok(description)
    }

    fn write_tree(
        &self,
        dir: NodeId,
        path: &Path,
        data: &BTreeMap<NodeId, Vec<u8>>,
        entries: &BTreeMap<NodeId, BTreeMap<String, NodeId>>,
    ) -> std::io::Result<()> {
        let list = entries
            .get(&dir)
            .unwrap_or(&self.fs.nodes[dir].durable_entries);
        for (name, &id) in list {
            let p = path.join(name);
            let n = &self.fs.nodes[id];
            if n.dir {
                fs::create_dir(&p)?;
                self.write_tree(id, &p, data, entries)?;
            } else {
                fs::write(&p, data.get(&id).unwrap_or(&n.durable_data))?;
            }
        }
        Ok(())
    }
}

fn short(op: &Op) -> String {
    match op {
        Op::Write { id, offset, data } => {
            format!("write node {id} at {offset}, {} bytes", data.len())
        }
        other => format!("{other:?}"),
    }
}
