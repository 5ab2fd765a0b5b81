//! Thread files on a real disk: reads, writes and what another writer does meanwhile.

use super::*;
use serde_json::json;

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("threadsync-files-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn symlinks_and_fifos_are_refused_without_blocking() {
    let d = dir("odd");
    std::fs::write(d.join("target.json"), b"{}").unwrap();
    std::os::unix::fs::symlink(d.join("target.json"), d.join("T-link.json")).unwrap();
    let fifo = c_path(&d.join("T-fifo.json"));
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    assert!(
        matches!(open_regular(&d.join("T-link.json"), false), Err(OpenError::NotRegular(e)) if e.contains("symbolic link"))
    );
    assert!(
        matches!(open_regular(&d.join("T-fifo.json"), false), Err(OpenError::NotRegular(e)) if e.contains("not a regular file"))
    );
    assert!(matches!(open_regular(&d.join("T-none.json"), false), Err(OpenError::Gone)));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_json_write_never_replaces_a_version_it_did_not_expect_and_returns_what_it_displaced() {
    let d = dir("json");
    let p = d.join("T-1.json");
    let (w, _) = write_json(&p, b"one", None);
    let Written::Ok(s1) = w else { panic!("{w:?}") };
    // Someone else rewrites it: our write with the old expectation is refused.
    std::fs::write(&p, b"theirs").unwrap();
    assert!(matches!(write_json(&p, b"two", Some(s1)).0, Written::Changed));
    assert_eq!(std::fs::read(&p).unwrap(), b"theirs");
    // Expecting theirs: ours goes in, theirs comes back as displaced.
    let JsonBytes::Read(_, s2) = read_json_bytes(&p) else { panic!() };
    let (w, displaced) = write_json(&p, b"two", Some(s2));
    assert!(matches!(w, Written::Ok(_)));
    let displaced = displaced.unwrap();
    assert_eq!(std::fs::read(&displaced.path).unwrap(), b"theirs");
    assert_eq!(std::fs::read(&p).unwrap(), b"two");
    // Creating refuses to replace a file that appeared meanwhile.
    std::fs::write(d.join("T-2.json"), b"new").unwrap();
    assert!(matches!(write_json(&d.join("T-2.json"), b"x", None).0, Written::Changed));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_log_is_appended_to_only_where_it_was_last_read() {
    let d = dir("log");
    let p = d.join("T-l.jsonl");
    let id = ThreadId::new("T-l").unwrap();
    let header = b"{\"type\":\"thread\",\"id\":\"T-l\"}\n";
    let Written::Ok(s) = create_log(&p, header) else { panic!() };
    assert!(matches!(create_log(&p, header), Written::Changed));
    let line =
        |t: &str| format!("{}\n", json!({"type": "message", "id": t, "role": "user", "content": t})).into_bytes();
    let Written::Ok(s) = append_log(&p, &line("a"), s) else { panic!() };
    // An assistant appends; half a line first.
    let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
    f.write_all(&line("b")[..10]).unwrap();
    assert!(matches!(append_log(&p, &line("c"), s), Written::Busy));
    let none = |_: &MessageId| false;
    assert!(read_log_file(&p, &id, Some(s), &none, &Own, ReadCtx::default()).is_none(), "a torn line is waited for");
    f.write_all(&line("b")[10..]).unwrap();
    assert!(matches!(append_log(&p, &line("c"), s), Written::Changed));
    let Some(FileRead::Appended { records, stamp }) = read_log_file(&p, &id, Some(s), &none, &Own, ReadCtx::default())
    else {
        panic!()
    };
    assert_eq!(records.len(), 1);
    assert!(matches!(append_log(&p, &line("c"), stamp), Written::Ok(_)));
    // A rewrite by someone else is noticed and read whole.
    std::fs::write(&p, [&header[..], &line("z")[..]].concat()).unwrap();
    assert!(matches!(
        read_log_file(&p, &id, Some(stamp), &none, &Own, ReadCtx::default()),
        Some(FileRead::Replayed { .. })
    ));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_compaction_keeps_lines_appended_during_it() {
    let d = dir("compact");
    let p = d.join("T-c.jsonl");
    let header = b"{\"type\":\"thread\",\"id\":\"T-c\"}\n";
    let Written::Ok(s) = create_log(&p, header) else { panic!() };
    // An assistant that opened the log before the swap appends afterwards.
    let mut theirs = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
    theirs.write_all(b"{\"type\":\"title\",\"title\":\"early\"}\n").unwrap();
    let (w, old) = compact_log(&p, b"{\"type\":\"thread\",\"id\":\"T-c\",\"title\":\"compact\"}\n", s);
    assert!(matches!(w, Written::Ok(_)));
    let (old, upto) = old.unwrap();
    theirs.write_all(b"{\"type\":\"title\",\"title\":\"late\"}\n").unwrap();
    drain_into(&old, upto, &p);
    let text = String::from_utf8(std::fs::read(&p).unwrap()).unwrap();
    assert!(text.contains("compact") && text.contains("early") && text.contains("late"), "{text}");
    let _ = std::fs::remove_dir_all(&d);
}
