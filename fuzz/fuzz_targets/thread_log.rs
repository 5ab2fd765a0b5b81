//! `.jsonl` thread logs: `threadlog::replay` on any bytes, and a read in
//! two pieces (`client::read_log`, as the sidecar reads a growing log).
//! Never panics; the thread a log replays to, compacted (`render` of
//! `compacted`), replays to the same thread; a torn last line is never
//! consumed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use threadsync::client::{read_log, tail_hash};
use threadsync::engine::file::{FileRead, Stamp};
use threadsync::model::{MessageId, Thread, ThreadId};
use threadsync::threadlog::{Own, ReadCtx, compacted, complete_lines, render, replay};
use threadsync_fuzz::has_float;

/// A log in memory, as `client::read_log` reads files.
struct Bytes<'a>(&'a [u8]);

impl threadsync::client::LogSource for Bytes<'_> {
    fn ino(&self) -> u64 {
        1
    }
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn mtime_ns(&self) -> i64 {
        0
    }
    fn read_at(&mut self, start: u64, len: u64) -> std::io::Result<Vec<u8>> {
        Ok(self.0[start as usize..(start + len) as usize].to_vec())
    }
}

fn ids(t: &Thread) -> Vec<MessageId> {
    t.messages.iter().map(|m| m.id.clone()).collect()
}

fuzz_target!(|data: &[u8]| {
    // The first byte says where a first read stops (a line boundary).
    let Some((&split, data)) = data.split_first() else { return };
    let id = ThreadId::new("T-log").unwrap();
    let Ok((r, _errors, used)) = replay(data, &id) else { return };
    assert!(used <= data.len());
    assert!(used == 0 || data[used - 1] == b'\n', "a torn line was consumed");
    let t = r.thread();
    assert_eq!(t.id, id);

    // Compacted and replayed: the same thread.
    let bytes = render(&compacted(&t)).expect("a replayed thread renders");
    let (again, errors, n) = replay(&bytes, &id).unwrap_or_else(|e| panic!("a compacted log does not replay: {e}"));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(n, bytes.len());
    let again = again.thread();
    if has_float(&serde_json::to_value(&t).unwrap()) {
        assert_eq!(ids(&again), ids(&t));
    } else {
        assert_eq!(again, t, "compaction changed the thread");
    }

    // Read in two pieces, as the sidecar reads a log that grows: the
    // first lines, then the rest, knowing what the first read holds. The
    // records appended, applied to the first read, give the whole thread.
    let (lines, _) = complete_lines(&data[..used], 0);
    if lines.len() < 2 {
        return;
    }
    let cut = lines[1 + split as usize % (lines.len() - 1)].0;
    let (mut head, _, head_used) = replay(&data[..cut as usize], &id).expect("the first lines of a log that replays");
    assert_eq!(head_used as u64, cut);
    let mut src = Bytes(&data[..used]);
    let stamp = Stamp { ino: 1, len: cut, mtime_ns: 0, hash: tail_hash(&mut src, cut).unwrap() };
    let known = |m: &MessageId| head.contains(m);
    let rest = read_log(&mut src, &id, Some(stamp), &known, &Own, ReadCtx::default());
    let Some(FileRead::Appended { records, stamp }) = rest else { panic!("reading on at byte {cut}: {rest:?}") };
    assert_eq!(stamp.len, used as u64);
    for rec in records {
        head.apply(rec).expect("the header came first");
    }
    let pieces = head.thread();
    if has_float(&serde_json::to_value(&t).unwrap()) {
        assert_eq!(ids(&pieces), ids(&t));
    } else {
        assert_eq!(pieces, t, "read in two pieces (at byte {cut}), the log is another thread");
    }
});
