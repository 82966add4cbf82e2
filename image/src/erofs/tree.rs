//! The image's file tree as the layers build it, metadata only (file data goes straight to the
//! image's data area as it streams by): OCI's layer rules applied in memory — whiteouts and
//! opaque directories hide lower layers' entries only, hard links share a node, a later entry
//! replaces an earlier one of another type, directories re-declared keep their contents.
//!
//! Paths resolve like the old in-guest unpacker's chroot did: a symlink met in a parent
//! directory is followed (bounded), inside the image's root; `..` never climbs above it.

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use super::entries::{Kind, Meta};
use super::format::NAME_MAX;
use super::ErofsError;
use crate::tarpath::{self, Entry};

pub type NodeId = usize;
/// The root directory's node.
pub const ROOT: NodeId = 0;
/// How many symlinks one path may pass through (the kernel's limit).
const MAX_SYMLINKS: u32 = 40;
/// The most files (nodes, living or deleted) an image may make: the tree is the writer's
/// memory (about 200 bytes a node).
const MAX_NODES: usize = 4 << 20;
/// The longest symlink target (the kernel's `PATH_MAX` less its NUL).
const MAX_TARGET: usize = 4095;

/// What a node is.
#[derive(Debug)]
pub enum NodeKind {
    Directory(BTreeMap<Vec<u8>, NodeId>),
    /// Data in the image's blocks from `blkaddr` on.
    Regular {
        blkaddr: u32,
        size: u64,
    },
    Symlink(Vec<u8>),
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
}

/// One inode of the tree.
#[derive(Debug)]
pub struct Node {
    pub kind: NodeKind,
    /// Permission bits (with set-id and sticky bits).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, u32),
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// The layer that made or last declared it: whiteouts and opaque markers of that layer
    /// leave it alone.
    layer: u32,
}

/// Where a regular file's data goes; returns its first block.
pub trait DataSink {
    fn append(&mut self, data: &mut dyn Read, size: u64) -> Result<u32, ErofsError>;
    /// Bytes of data no longer referenced (files replaced or deleted by a later layer).
    fn forget(&mut self, size: u64);
}

/// The tree, with the layer being applied.
pub struct Tree {
    nodes: Vec<Node>,
    layer: u32,
}

fn bad(msg: impl Into<String>) -> ErofsError {
    ErofsError::Layer(msg.into())
}

/// A name a directory entry can hold: at most [`NAME_MAX`] bytes.
fn check_name(name: &[u8]) -> Result<(), ErofsError> {
    if name.len() > NAME_MAX {
        return Err(bad(format!("a name is longer than {NAME_MAX} bytes")));
    }
    Ok(())
}

impl Default for Tree {
    fn default() -> Self {
        Tree::new()
    }
}

impl Tree {
    /// An empty root directory (mode 0755, root's).
    pub fn new() -> Tree {
        Tree {
            nodes: vec![Node {
                kind: NodeKind::Directory(BTreeMap::new()),
                perm: 0o755,
                uid: 0,
                gid: 0,
                mtime: (0, 0),
                xattrs: Vec::new(),
                layer: 0,
            }],
            layer: 0,
        }
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    /// Starts the next layer (the first is layer 1).
    pub fn next_layer(&mut self) {
        self.layer += 1;
    }

    fn child(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        match &self.nodes[dir].kind {
            NodeKind::Directory(children) => children.get(name).copied(),
            _ => None,
        }
    }

    fn children_mut(&mut self, dir: NodeId) -> &mut BTreeMap<Vec<u8>, NodeId> {
        match &mut self.nodes[dir].kind {
            NodeKind::Directory(children) => children,
            _ => unreachable!("only directories are resolved as parents"),
        }
    }

    fn add(&mut self, node: Node) -> Result<NodeId, ErofsError> {
        if self.nodes.len() >= MAX_NODES {
            return Err(bad(format!("the image has more than {MAX_NODES} files")));
        }
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    fn new_dir(&mut self, mtime: (i64, u32)) -> Result<NodeId, ErofsError> {
        let layer = self.layer;
        self.add(Node {
            kind: NodeKind::Directory(BTreeMap::new()),
            perm: 0o755,
            uid: 0,
            gid: 0,
            mtime,
            xattrs: Vec::new(),
            layer,
        })
    }

    /// Resolves the directory `components` name, following symlinks; with `create`, missing
    /// directories are made (and everything passed marked as this layer's), else `None`.
    fn resolve_dir(
        &mut self,
        components: &[&[u8]],
        create: Option<(i64, u32)>,
    ) -> Result<Option<NodeId>, ErofsError> {
        let mut stack = vec![ROOT];
        let mut todo: VecDeque<Vec<u8>> = components.iter().map(|c| c.to_vec()).collect();
        let mut hops = 0;
        while let Some(name) = todo.pop_front() {
            let cur = *stack.last().unwrap_or(&ROOT);
            match name.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    if stack.len() > 1 {
                        stack.pop();
                    }
                    continue;
                }
                _ => {}
            }
            let next = match self.child(cur, &name) {
                Some(id) => id,
                None => match create {
                    Some(mtime) => {
                        check_name(&name)?;
                        let id = self.new_dir(mtime)?;
                        self.children_mut(cur).insert(name.clone(), id);
                        id
                    }
                    None => return Ok(None),
                },
            };
            match &self.nodes[next].kind {
                NodeKind::Directory(_) => stack.push(next),
                NodeKind::Symlink(target) => {
                    hops += 1;
                    if hops > MAX_SYMLINKS {
                        return Err(bad("too many levels of symbolic links"));
                    }
                    if target.first() == Some(&b'/') {
                        stack.truncate(1);
                    }
                    for part in target.split(|&b| b == b'/').rev() {
                        todo.push_front(part.to_vec());
                    }
                }
                _ => {
                    return Err(bad(format!(
                        "{} is not a directory",
                        String::from_utf8_lossy(&name)
                    )))
                }
            }
        }
        if create.is_some() {
            let layer = self.layer;
            for &id in &stack[1..] {
                self.nodes[id].layer = layer;
            }
        }
        Ok(stack.last().copied())
    }

    /// The parent directory and the last name of a cleaned path (not the root).
    fn split(path: &Path) -> (Vec<&[u8]>, &[u8]) {
        let mut parts: Vec<&[u8]> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.as_bytes()),
                _ => None,
            })
            .collect();
        let last = parts.pop().unwrap_or_default();
        (parts, last)
    }

    /// Unlinks `name` from `dir`, telling `sink` about data no longer referenced.
    fn unlink(&mut self, dir: NodeId, name: &[u8], sink: &mut dyn DataSink) {
        if let Some(id) = self.children_mut(dir).remove(name) {
            self.forget(id, sink);
        }
    }

    /// Reports the data of a removed subtree (an approximation for hard-linked files: the
    /// waste figure is for the log only). Iterative: a hostile tree may be very deep.
    fn forget(&self, id: NodeId, sink: &mut dyn DataSink) {
        let mut todo = vec![id];
        while let Some(id) = todo.pop() {
            match &self.nodes[id].kind {
                NodeKind::Regular { size, .. } => sink.forget(*size),
                NodeKind::Directory(children) => todo.extend(children.values()),
                _ => {}
            }
        }
    }

    /// Applies one entry of the current layer.
    pub fn apply(
        &mut self,
        meta: Meta,
        data: &mut dyn Read,
        sink: &mut dyn DataSink,
    ) -> Result<(), ErofsError> {
        let path = tarpath::clean(&meta.path).map_err(|e| bad(e.to_string()))?;
        match tarpath::classify(&path).map_err(|e| bad(e.to_string()))? {
            Entry::Ignored => Ok(()),
            Entry::Whiteout(target) => {
                let (parent, name) = Tree::split(&target);
                if let Some(dir) = self.resolve_dir(&parent, None)? {
                    let layer = self.layer;
                    if self
                        .child(dir, name)
                        .is_some_and(|id| self.nodes[id].layer != layer)
                    {
                        self.unlink(dir, name, sink);
                    }
                }
                Ok(())
            }
            Entry::Opaque(dir) => {
                let (parent, name) = Tree::split(&dir);
                let dir = if name.is_empty() {
                    ROOT
                } else {
                    let parent = self.resolve_dir(&parent, Some(meta.mtime))?.unwrap_or(ROOT);
                    match self.child(parent, name) {
                        Some(id) if matches!(self.nodes[id].kind, NodeKind::Directory(_)) => id,
                        _ => {
                            check_name(name)?;
                            self.unlink(parent, name, sink);
                            let id = self.new_dir(meta.mtime)?;
                            self.children_mut(parent).insert(name.to_vec(), id);
                            id
                        }
                    }
                };
                self.prune(dir, sink);
                Ok(())
            }
            Entry::Plain if path.as_os_str().is_empty() => {
                if meta.kind != Kind::Directory {
                    return Err(bad("only a directory may replace the root"));
                }
                self.set_attrs(ROOT, meta);
                Ok(())
            }
            Entry::Plain => self.create(&path, meta, data, sink),
        }
    }

    fn set_attrs(&mut self, id: NodeId, meta: Meta) {
        let layer = self.layer;
        let node = &mut self.nodes[id];
        node.perm = meta.mode;
        node.uid = meta.uid;
        node.gid = meta.gid;
        node.mtime = meta.mtime;
        node.xattrs = meta.xattrs;
        node.layer = layer;
    }

    fn create(
        &mut self,
        path: &Path,
        meta: Meta,
        data: &mut dyn Read,
        sink: &mut dyn DataSink,
    ) -> Result<(), ErofsError> {
        let (parent, name) = Tree::split(path);
        check_name(name)?;
        let dir = self.resolve_dir(&parent, Some(meta.mtime))?.unwrap_or(ROOT);
        let existing = self.child(dir, name);
        if let Some(id) = existing {
            if meta.kind == Kind::Directory && matches!(self.nodes[id].kind, NodeKind::Directory(_))
            {
                self.set_attrs(id, meta);
                return Ok(());
            }
        }
        let kind = match meta.kind {
            Kind::HardLink => {
                let target = self.link_target(&meta)?;
                if existing != Some(target) {
                    self.unlink(dir, name, sink);
                    self.children_mut(dir).insert(name.to_vec(), target);
                }
                self.nodes[target].layer = self.layer;
                return Ok(());
            }
            Kind::Regular => NodeKind::Regular {
                blkaddr: sink.append(data, meta.size)?,
                size: meta.size,
            },
            Kind::Directory => NodeKind::Directory(BTreeMap::new()),
            Kind::Symlink => {
                let target = meta
                    .link
                    .clone()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| bad("symlink without a target"))?;
                if target.len() > MAX_TARGET || target.contains(&0) {
                    return Err(bad("symlink target too long or with a NUL byte"));
                }
                NodeKind::Symlink(target)
            }
            Kind::CharDevice | Kind::BlockDevice
                if meta.device.0 > 0xfff || meta.device.1 > 0xf_ffff =>
            {
                return Err(bad(format!(
                    "device number {}:{} out of range",
                    meta.device.0, meta.device.1
                )))
            }
            Kind::CharDevice => NodeKind::CharDevice {
                major: meta.device.0,
                minor: meta.device.1,
            },
            Kind::BlockDevice => NodeKind::BlockDevice {
                major: meta.device.0,
                minor: meta.device.1,
            },
            Kind::Fifo => NodeKind::Fifo,
        };
        if existing.is_some() {
            self.unlink(dir, name, sink);
        }
        let layer = self.layer;
        let id = self.add(Node {
            kind,
            perm: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            mtime: meta.mtime,
            xattrs: meta.xattrs,
            layer,
        })?;
        self.children_mut(dir).insert(name.to_vec(), id);
        Ok(())
    }

    /// The node a hard link entry names: an existing non-directory, its last component not
    /// followed.
    fn link_target(&mut self, meta: &Meta) -> Result<NodeId, ErofsError> {
        let link = meta.link.as_deref().unwrap_or_default();
        let target = tarpath::clean(link).map_err(|e| bad(format!("hard link target: {e}")))?;
        let (parent, name) = Tree::split(&target);
        let shown = || String::from_utf8_lossy(link).into_owned();
        if name.is_empty() {
            return Err(bad("hard link to the root"));
        }
        let id = self
            .resolve_dir(&parent, None)?
            .and_then(|dir| self.child(dir, name))
            .ok_or_else(|| bad(format!("hard link to {:?}, which does not exist", shown())))?;
        if matches!(self.nodes[id].kind, NodeKind::Directory(_)) {
            return Err(bad(format!("hard link to the directory {:?}", shown())));
        }
        Ok(id)
    }

    /// Removes everything below `dir` that the current layer did not make. Iterative: a
    /// hostile tree may be very deep.
    fn prune(&mut self, dir: NodeId, sink: &mut dyn DataSink) {
        let layer = self.layer;
        let mut todo = vec![dir];
        while let Some(dir) = todo.pop() {
            let names: Vec<(Vec<u8>, NodeId)> = match &self.nodes[dir].kind {
                NodeKind::Directory(children) => {
                    children.iter().map(|(n, &id)| (n.clone(), id)).collect()
                }
                _ => continue,
            };
            for (name, id) in names {
                if self.nodes[id].layer != layer {
                    self.unlink(dir, &name, sink);
                } else if matches!(self.nodes[id].kind, NodeKind::Directory(_)) {
                    todo.push(id);
                }
            }
        }
    }
}
