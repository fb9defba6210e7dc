//! Namespace operations that are not durable yet, and how to undo them.
//!
//! Namespace changes (create, mkdir, link, symlink, unlink, rmdir, rename)
//! are applied to the backing directory at once, so that every later
//! operation sees a real tree, and recorded here with what it takes to undo
//! them: an unlinked or replaced entry is moved into the trash rather than
//! deleted. An operation becomes durable when a directory it touched is
//! fsync'd ([`Journal::make_durable`]); a crash undoes the rest, newest
//! first ([`Journal::take_all`]).
//!
//! "Any directory it touched": a journaling filesystem commits a rename as
//! one transaction, so fsync of either side of a cross-directory rename
//! makes both sides durable. fsync of a *file* does not make its directory
//! entry durable (POSIX asks for an fsync of the directory), which is
//! stricter than ext4 or XFS in practice, and so catches a missing
//! directory fsync.
//!
//! Directories are named by this filesystem's inode numbers, not by path,
//! so an undo lands in the right place even after its directory was
//! renamed.

use std::ffi::OsString;

/// One undoable namespace operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `dir/name` was created (file, directory, symlink, node or hard link).
    /// Undo: remove it.
    Created { dir: u64, name: OsString },
    /// `dir/name` was unlinked or removed; the entry waits in the trash as
    /// `trash`. Undo: move it back.
    Removed { dir: u64, name: OsString, trash: OsString },
    /// `from_dir/from_name` was renamed to `to_dir/to_name`, replacing the
    /// entry now in the trash as `replaced` if there was one. `node` is the
    /// moved entry's inode, whose recorded name the undo restores. Undo:
    /// move it back, then restore what it replaced.
    Renamed {
        from_dir: u64,
        from_name: OsString,
        to_dir: u64,
        to_name: OsString,
        node: Option<u64>,
        replaced: Option<OsString>,
    },
}

impl Op {
    /// The directories whose fsync makes this operation durable.
    pub fn dirs(&self) -> Vec<u64> {
        match self {
            Op::Created { dir, .. } | Op::Removed { dir, .. } => vec![*dir],
            Op::Renamed { from_dir, to_dir, .. } if from_dir == to_dir => vec![*from_dir],
            Op::Renamed { from_dir, to_dir, .. } => vec![*from_dir, *to_dir],
        }
    }

    /// The inodes this operation refers to (directories and the moved
    /// node), which must stay known until it is durable or undone.
    pub fn inodes(&self) -> Vec<u64> {
        let mut v = self.dirs();
        if let Op::Renamed { node: Some(n), .. } = self {
            v.push(*n);
        }
        v
    }

    /// The trash entry this operation keeps alive, if any.
    pub fn trash(&self) -> Option<&OsString> {
        match self {
            Op::Created { .. } => None,
            Op::Removed { trash, .. } => Some(trash),
            Op::Renamed { replaced, .. } => replaced.as_ref(),
        }
    }
}

/// The operations not yet durable, oldest first.
#[derive(Debug, Default)]
pub struct Journal {
    ops: Vec<Op>,
}

impl Journal {
    pub fn record(&mut self, op: Op) {
        self.ops.push(op);
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// An fsync of directory `dir`: every operation that touched it is now
    /// durable. Returns them, so that their trash can be emptied.
    pub fn make_durable(&mut self, dir: u64) -> Vec<Op> {
        let (durable, pending): (Vec<Op>, Vec<Op>) =
            std::mem::take(&mut self.ops).into_iter().partition(|op| op.dirs().contains(&dir));
        self.ops = pending;
        durable
    }

    /// A crash: every pending operation, newest first (the order to undo
    /// them in).
    pub fn take_all(&mut self) -> Vec<Op> {
        let mut ops = std::mem::take(&mut self.ops);
        ops.reverse();
        ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created(dir: u64, name: &str) -> Op {
        Op::Created { dir, name: name.into() }
    }

    #[test]
    fn given_ops_in_two_dirs_when_one_dir_is_synced_then_only_its_ops_become_durable() {
        let mut j = Journal::default();
        j.record(created(1, "a"));
        j.record(created(2, "b"));
        j.record(Op::Renamed {
            from_dir: 2,
            from_name: "b".into(),
            to_dir: 1,
            to_name: "c".into(),
            node: Some(9),
            replaced: None,
        });
        let durable = j.make_durable(1);
        assert_eq!(durable.len(), 2, "the create in 1 and the rename into 1: {durable:?}");
        assert_eq!(j.len(), 1);
        assert_eq!(j.take_all(), vec![created(2, "b")]);
        assert!(j.is_empty());
    }

    #[test]
    fn given_pending_ops_when_crashed_then_they_come_back_newest_first() {
        let mut j = Journal::default();
        j.record(created(1, "a"));
        j.record(Op::Removed { dir: 1, name: "a".into(), trash: "t1".into() });
        let ops = j.take_all();
        assert!(matches!(ops[0], Op::Removed { .. }));
        assert_eq!(ops[0].trash().map(|t| t.to_str().unwrap()), Some("t1"));
        assert_eq!(ops[1], created(1, "a"));
    }
}
