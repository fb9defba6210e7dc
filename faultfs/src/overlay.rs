//! The unsynced state of one regular file: what a page cache holds between
//! two `fsync`s.
//!
//! The backing file is the disk: it holds what the last `fsync` made
//! durable. An [`Overlay`] holds everything written since, as whole pages,
//! plus the file's current size and the lowest size it was truncated to.
//! Reads merge the two, so a reader sees its own unsynced writes; [`Overlay::apply`]
//! writes the pages to the backing file (the `fsync`), and dropping the
//! overlay is the power failure.
//!
//! Invariants the code below relies on:
//!
//! - bytes of a held page at or beyond `size` are zero;
//! - backing bytes at or beyond `zero_from` are hidden (the file was
//!   truncated below them since the last sync, so they read as zeros);
//! - a page that straddles `zero_from` or `size` after a shrinking truncate
//!   is held, so every page that is *not* held can be read straight from
//!   the backing file, masked by `zero_from`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Page size of the overlay. Writes are tracked per page; 4 KiB matches
/// the kernel's page cache, so a small append costs one page, not more.
pub const PAGE: usize = 4096;
const PAGE_U64: u64 = PAGE as u64;

/// Pending (unsynced) state of one file; see the module docs.
#[derive(Debug)]
pub struct Overlay {
    pages: BTreeMap<u64, Box<[u8]>>,
    size: u64,
    zero_from: Option<u64>,
}

impl Overlay {
    /// No pending state over a backing file of `durable_len` bytes.
    pub fn new(durable_len: u64) -> Overlay {
        Overlay { pages: BTreeMap::new(), size: durable_len, zero_from: None }
    }

    /// The file's size as readers see it.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether anything would be lost by a crash now.
    pub fn is_dirty(&self, durable_len: u64) -> bool {
        !self.pages.is_empty() || self.zero_from.is_some() || self.size != durable_len
    }

    /// Memory held for unsynced data.
    pub fn pending_bytes(&self) -> u64 {
        self.pages.len() as u64 * PAGE_U64
    }

    /// Reads up to `len` bytes at `offset`, stopping at the end of the file.
    pub fn read(&self, backing: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        if offset >= self.size {
            return Ok(Vec::new());
        }
        let end = self.size.min(offset.saturating_add(len as u64));
        let mut out = vec![0u8; (end - offset) as usize];
        let mut pos = offset;
        while pos < end {
            let page = pos / PAGE_U64;
            let in_page = (pos % PAGE_U64) as usize;
            if let Some(p) = self.pages.get(&page) {
                let n = (PAGE - in_page).min((end - pos) as usize);
                let at = (pos - offset) as usize;
                out[at..at + n].copy_from_slice(&p[in_page..in_page + n]);
                pos += n as u64;
                continue;
            }
            // A run of pages that are not held: one read from the backing file.
            let run_end = match self.pages.range(page + 1..).next() {
                Some((next, _)) => (next * PAGE_U64).min(end),
                None => end,
            };
            let at = (pos - offset) as usize;
            self.read_backing(backing, pos, &mut out[at..at + (run_end - pos) as usize])?;
            pos = run_end;
        }
        Ok(out)
    }

    /// Fills `buf` with the backing file's bytes at `offset`, zeros past its
    /// end and past `zero_from`.
    fn read_backing(&self, backing: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        buf.fill(0);
        let visible = match self.zero_from {
            Some(z) if z <= offset => 0,
            Some(z) => ((z - offset) as usize).min(buf.len()),
            None => buf.len(),
        };
        let mut done = 0;
        while done < visible {
            match backing.read_at(&mut buf[done..visible], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The held page `page`, loaded from the backing file first if needed.
    fn page_mut(&mut self, backing: &File, page: u64) -> io::Result<&mut [u8]> {
        if !self.pages.contains_key(&page) {
            let mut buf = vec![0u8; PAGE].into_boxed_slice();
            let start = page * PAGE_U64;
            if start < self.size {
                self.read_backing(backing, start, &mut buf)?;
                // Keep the invariant: nothing at or past `size` in a page.
                let valid = (self.size - start).min(PAGE_U64) as usize;
                buf[valid..].fill(0);
            }
            self.pages.insert(page, buf);
        }
        Ok(self.pages.get_mut(&page).expect("inserted above"))
    }

    /// Writes `data` at `offset`, growing the file if it ends past the end.
    pub fn write(&mut self, backing: &File, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = offset.checked_add(data.len() as u64).ok_or_else(|| io::Error::from_raw_os_error(libc::EFBIG))?;
        let mut pos = offset;
        while pos < end {
            let page = pos / PAGE_U64;
            let in_page = (pos % PAGE_U64) as usize;
            let n = (PAGE - in_page).min((end - pos) as usize);
            let src = &data[(pos - offset) as usize..(pos - offset) as usize + n];
            // A page written in full need not be read from the backing file.
            if in_page == 0 && n == PAGE {
                self.pages.insert(page, src.to_vec().into_boxed_slice());
            } else {
                self.page_mut(backing, page)?[in_page..in_page + n].copy_from_slice(src);
            }
            pos += n as u64;
        }
        self.size = self.size.max(end);
        Ok(())
    }

    /// Sets the size to `len`: shrinking drops the bytes past it (they read
    /// as zeros if the file grows again), growing adds zeros.
    pub fn truncate(&mut self, backing: &File, len: u64) -> io::Result<()> {
        if len < self.size {
            let first_dropped = len.div_ceil(PAGE_U64);
            self.pages.split_off(&first_dropped);
            if !len.is_multiple_of(PAGE_U64) {
                let page = len / PAGE_U64;
                let cut = (len % PAGE_U64) as usize;
                self.page_mut(backing, page)?[cut..].fill(0);
            }
            self.zero_from = Some(self.zero_from.map_or(len, |z| z.min(len)));
        }
        self.size = len;
        Ok(())
    }

    /// Makes the pending state durable: writes it to the backing file and
    /// forgets it. Returns the bytes written.
    ///
    /// The backing file is not fsync'd: it plays the disk, and a crash of
    /// this filesystem never loses what the backing file holds.
    pub fn apply(&mut self, backing: &File) -> io::Result<u64> {
        if let Some(z) = self.zero_from {
            backing.set_len(z)?;
        }
        let mut written = 0u64;
        let mut run: Vec<u8> = Vec::new();
        let mut run_start = 0u64;
        let pages = std::mem::take(&mut self.pages);
        for (page, data) in &pages {
            let start = page * PAGE_U64;
            if start >= self.size {
                break;
            }
            let valid = (self.size - start).min(PAGE_U64) as usize;
            if !run.is_empty() && run_start + run.len() as u64 != start {
                backing.write_all_at(&run, run_start)?;
                written += run.len() as u64;
                run.clear();
            }
            if run.is_empty() {
                run_start = start;
            }
            run.extend_from_slice(&data[..valid]);
            // Bounded buffer: long runs go out in 1 MiB writes.
            if run.len() >= 1 << 20 {
                backing.write_all_at(&run, run_start)?;
                written += run.len() as u64;
                run_start += run.len() as u64;
                run.clear();
            }
        }
        if !run.is_empty() {
            backing.write_all_at(&run, run_start)?;
            written += run.len() as u64;
        }
        backing.set_len(self.size)?;
        self.zero_from = None;
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backing(content: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, content).unwrap();
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        (dir, f)
    }

    fn on_disk(f: &File) -> Vec<u8> {
        let len = f.metadata().unwrap().len() as usize;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, 0).unwrap();
        buf
    }

    #[test]
    fn given_unsynced_writes_then_reads_see_them_and_the_backing_file_does_not() {
        let (_d, f) = backing(b"hello world");
        let mut o = Overlay::new(11);
        o.write(&f, 6, b"WORLD, and more").unwrap();
        assert_eq!(o.read(&f, 0, 100).unwrap(), b"hello WORLD, and more");
        assert_eq!(o.size(), 21);
        assert_eq!(on_disk(&f), b"hello world");
        assert!(o.is_dirty(11));
    }

    #[test]
    fn given_writes_across_pages_when_applied_then_the_backing_file_matches_what_was_read() {
        let (_d, f) = backing(&vec![b'a'; PAGE * 3]);
        let mut o = Overlay::new(PAGE_U64 * 3);
        o.write(&f, PAGE_U64 - 2, b"xxxx").unwrap();
        o.write(&f, PAGE_U64 * 5 + 10, b"tail").unwrap();
        let seen = o.read(&f, 0, PAGE * 10).unwrap();
        assert_eq!(seen.len(), PAGE * 5 + 14);
        assert_eq!(&seen[PAGE - 2..PAGE + 2], b"xxxx");
        assert!(seen[PAGE * 3..PAGE * 5 + 10].iter().all(|b| *b == 0), "a gap reads as zeros");
        o.apply(&f).unwrap();
        assert_eq!(on_disk(&f), seen);
        assert!(!o.is_dirty(seen.len() as u64));
        assert_eq!(o.read(&f, 0, PAGE * 10).unwrap(), seen);
    }

    #[test]
    fn given_truncate_then_regrow_when_read_then_old_bytes_do_not_come_back() {
        let (_d, f) = backing(&vec![b'a'; PAGE * 2]);
        let mut o = Overlay::new(PAGE_U64 * 2);
        o.truncate(&f, 100).unwrap();
        o.truncate(&f, PAGE_U64 * 2).unwrap();
        let seen = o.read(&f, 0, PAGE * 2).unwrap();
        assert!(seen[..100].iter().all(|b| *b == b'a'));
        assert!(seen[100..].iter().all(|b| *b == 0), "bytes past the truncation read as zeros");
        o.write(&f, PAGE_U64 + 5, b"z").unwrap();
        let seen = o.read(&f, 0, PAGE * 2).unwrap();
        o.apply(&f).unwrap();
        assert_eq!(on_disk(&f), seen);
    }

    #[test]
    fn given_truncate_to_page_boundary_when_applied_then_backing_is_cut() {
        let (_d, f) = backing(&vec![b'a'; PAGE * 3]);
        let mut o = Overlay::new(PAGE_U64 * 3);
        o.truncate(&f, PAGE_U64).unwrap();
        assert_eq!(o.read(&f, 0, PAGE * 3).unwrap().len(), PAGE);
        o.apply(&f).unwrap();
        assert_eq!(on_disk(&f), vec![b'a'; PAGE]);
    }

    #[test]
    fn given_overlay_dropped_then_backing_file_is_what_was_synced() {
        let (_d, f) = backing(b"");
        let mut o = Overlay::new(0);
        o.write(&f, 0, b"synced").unwrap();
        o.apply(&f).unwrap();
        o.write(&f, 6, b" and lost").unwrap();
        drop(o);
        assert_eq!(on_disk(&f), b"synced");
    }
}
