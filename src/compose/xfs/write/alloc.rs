//! The block allocator: the free space mkfs.xfs left in each allocation group, handed out in
//! ascending disk order from one cursor, so that what is allocated first lies first on disk.
//!
//! Metadata is allocated first (inode chunks, then per inode its directory, attribute and
//! symlink blocks), then file data in content order, each file as one run that is split only
//! where free space ends (an AG boundary, the log, an extent's length limit), then the extent
//! btree blocks of files that need one. Space an aligned or contiguous request skips stays free
//! behind the cursor. Blocks of an AG's own btrees are taken inside that AG.

use anyhow::{bail, Result};

/// Longest extent a data fork record can describe (21-bit length).
pub(crate) const MAX_EXTENT: u64 = (1 << 21) - 1;

/// A run of filesystem blocks: `(fsb, blocks)`.
pub(crate) type Run = (u64, u64);

/// Free space per AG and the cursor.
pub(crate) struct Alloc {
    agblklog: u8,
    /// Free extents of each AG, `(agbno, len)`, sorted and disjoint.
    free: Vec<Vec<(u32, u32)>>,
    /// AG and AG block below which nothing more is handed out by the cursor.
    cur: (u32, u32),
}

impl Alloc {
    /// The allocator over these free extents (per AG, as the bnobt lists them).
    pub(crate) fn new(agblklog: u8, free: Vec<Vec<(u32, u32)>>) -> Alloc {
        Alloc {
            agblklog,
            free,
            cur: (0, 0),
        }
    }

    /// Filesystem block number of AG block `agbno` of AG `agno`.
    pub(crate) fn fsb(&self, agno: u32, agbno: u32) -> u64 {
        (u64::from(agno) << self.agblklog) | u64::from(agbno)
    }

    /// AG number and AG block of a filesystem block.
    pub(crate) fn split(&self, fsb: u64) -> (u32, u32) {
        (
            (fsb >> self.agblklog) as u32,
            (fsb & ((1 << self.agblklog) - 1)) as u32,
        )
    }

    /// The AG the cursor is in.
    pub(crate) fn cursor_ag(&self) -> u32 {
        self.cur.0
    }

    /// Free extents of AG `agno`.
    pub(crate) fn free(&self, agno: u32) -> &[(u32, u32)] {
        &self.free[agno as usize]
    }

    /// Free blocks of AG `agno` at or after the cursor.
    pub(crate) fn free_ahead(&self, agno: u32) -> u64 {
        self.free[agno as usize]
            .iter()
            .filter(|&&(s, l)| (agno, s + l) > self.cur)
            .map(|&(s, l)| {
                let from = if agno == self.cur.0 {
                    s.max(self.cur.1)
                } else {
                    s
                };
                u64::from(s + l - from)
            })
            .sum()
    }

    /// Removes `[agbno, agbno + len)` from AG `agno`'s free extents (it must be free).
    pub(crate) fn take(&mut self, agno: u32, agbno: u32, len: u32) {
        let v = &mut self.free[agno as usize];
        let Some(i) = v
            .iter()
            .position(|&(s, l)| s <= agbno && agbno + len <= s + l)
        else {
            return;
        };
        let (s, l) = v[i];
        let mut repl = Vec::with_capacity(2);
        if agbno > s {
            repl.push((s, agbno - s));
        }
        if agbno + len < s + l {
            repl.push((agbno + len, s + l - agbno - len));
        }
        v.splice(i..=i, repl);
    }

    /// Moves the cursor to the start of AG `agno` (when it is not already past it).
    pub(crate) fn skip_to_ag(&mut self, agno: u32) {
        if self.cur.0 < agno {
            self.cur = (agno, 0);
        }
    }

    /// `n` contiguous blocks whose AG block is a multiple of `align`, at or after the cursor,
    /// in the first free extent that holds them.
    pub(crate) fn contig(&mut self, n: u32, align: u32) -> Result<u64> {
        let align = align.max(1);
        for agno in self.cur.0..self.free.len() as u32 {
            let from = if agno == self.cur.0 { self.cur.1 } else { 0 };
            let found = self.free[agno as usize].iter().find_map(|&(s, l)| {
                let start = s.max(from).div_ceil(align) * align;
                (start >= s && u64::from(start) + u64::from(n) <= u64::from(s) + u64::from(l))
                    .then_some(start)
            });
            if let Some(start) = found {
                self.take(agno, start, n);
                self.cur = (agno, start + n);
                return Ok(self.fsb(agno, start));
            }
        }
        bail!("no room left for {n} contiguous blocks: the partition is too small")
    }

    /// `n` blocks from the cursor on, as runs split only where free space is interrupted or an
    /// extent would exceed [`MAX_EXTENT`].
    pub(crate) fn stream(&mut self, mut n: u64) -> Result<Vec<Run>> {
        let mut out: Vec<Run> = Vec::new();
        while n > 0 {
            let mut got = None;
            for agno in self.cur.0..self.free.len() as u32 {
                let from = if agno == self.cur.0 { self.cur.1 } else { 0 };
                if let Some(&(s, l)) = self.free[agno as usize]
                    .iter()
                    .find(|&&(s, l)| s + l > from)
                {
                    let start = s.max(from);
                    let len = u64::from(s + l - start).min(n).min(MAX_EXTENT) as u32;
                    got = Some((agno, start, len));
                    break;
                }
            }
            let Some((agno, start, len)) = got else {
                bail!("no room left for {n} more blocks: the partition is too small");
            };
            self.take(agno, start, len);
            self.cur = (agno, start + len);
            let fsb = self.fsb(agno, start);
            let agblklog = self.agblklog;
            match out.last_mut() {
                // An extent never crosses an AG boundary.
                Some((f, l))
                    if *f + *l == fsb
                        && *f >> agblklog == u64::from(agno)
                        && *l + u64::from(len) <= MAX_EXTENT =>
                {
                    *l += u64::from(len)
                }
                _ => out.push((fsb, u64::from(len))),
            }
            n -= u64::from(len);
        }
        Ok(out)
    }

    /// `n` blocks inside AG `agno`, lowest first (for the AG's own btrees).
    pub(crate) fn in_ag(&mut self, agno: u32, n: usize) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let Some(&(s, _)) = self.free[agno as usize].first() else {
                bail!(
                    "AG {agno} has no free block left for its btrees: the partition is too small"
                );
            };
            self.take(agno, s, 1);
            out.push(s);
        }
        Ok(out)
    }

    /// Takes up to `n` blocks from the end of AG `agno`'s free space out of the allocator's reach
    /// (see [`Alloc::give_back`]); returns the extents held.
    pub(crate) fn hold_back(&mut self, agno: u32, mut n: u64) -> Vec<(u32, u32)> {
        let v = &mut self.free[agno as usize];
        let mut held = Vec::new();
        while n > 0 {
            let Some(last) = v.last_mut() else { break };
            let take = u64::from(last.1).min(n) as u32;
            last.1 -= take;
            held.push((last.0 + last.1, take));
            if last.1 == 0 {
                v.pop();
            }
            n -= u64::from(take);
        }
        held
    }

    /// Returns extents [`Alloc::hold_back`] held to AG `agno`'s free space.
    pub(crate) fn give_back(&mut self, agno: u32, held: &[(u32, u32)]) {
        for &(s, l) in held {
            for b in s..s + l {
                self.release(agno, b);
            }
        }
    }

    /// Gives block `agbno` of AG `agno` back to the free space.
    pub(crate) fn release(&mut self, agno: u32, agbno: u32) {
        let v = &mut self.free[agno as usize];
        let i = v.partition_point(|&(s, _)| s < agbno);
        v.insert(i, (agbno, 1));
        if i + 1 < v.len() && v[i].0 + v[i].1 == v[i + 1].0 {
            v[i].1 += v[i + 1].1;
            v.remove(i + 1);
        }
        if i > 0 && v[i - 1].0 + v[i - 1].1 == v[i].0 {
            v[i - 1].1 += v[i].1;
            v.remove(i);
        }
    }

    /// `n` blocks at the end of AG `agno`'s free space (for its free space btrees, which must
    /// not change the shape of the free space they describe more than necessary).
    pub(crate) fn take_ag_end(&mut self, agno: u32, n: usize) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let Some(&(s, l)) = self.free[agno as usize].last() else {
                bail!(
                    "AG {agno} has no free block left for its btrees: the partition is too small"
                );
            };
            self.take(agno, s + l - 1, 1);
            out.push(s + l - 1);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_in_ascending_order() {
        let mut a = Alloc::new(10, vec![vec![(9, 7), (24, 1000)], vec![(5, 1019)]]);
        // Aligned chunk skips the small extent.
        assert_eq!(a.contig(8, 8).unwrap(), 24);
        // Contiguous request behind the cursor is not served from the skipped gap.
        assert_eq!(a.contig(2, 1).unwrap(), 32);
        let runs = a.stream(1000).unwrap();
        assert_eq!(runs, vec![(34, 990), ((1 << 10) | 5, 10)]);
        assert_eq!(a.free(0), &[(9, 7)]);
        assert_eq!(a.in_ag(0, 2).unwrap(), vec![9, 10]);
        assert_eq!(a.take_ag_end(1, 1).unwrap(), vec![1023]);
        a.release(1, 1023);
        assert_eq!(a.free(1).last(), Some(&(15, 1009)));
        assert!(a.stream(5000).is_err());
    }

    #[test]
    fn held_space_is_not_allocated_and_comes_back() {
        let mut a = Alloc::new(10, vec![vec![(5, 10), (100, 20)]]);
        let held = a.hold_back(0, 25);
        assert_eq!(held, vec![(100, 20), (10, 5)]);
        assert_eq!(a.free(0), &[(5, 5)]);
        assert_eq!(a.free_ahead(0), 5);
        a.give_back(0, &held);
        assert_eq!(a.free(0), &[(5, 10), (100, 20)]);
    }

    #[test]
    fn extents_stop_at_the_length_limit() {
        let mut a = Alloc::new(23, vec![vec![(10, 5_000_000)]]);
        let runs = a.stream(3_000_000).unwrap();
        assert_eq!(
            runs,
            vec![(10, MAX_EXTENT), (10 + MAX_EXTENT, 3_000_000 - MAX_EXTENT)]
        );
    }
}
