//! Events kept while the cloud is not reachable: a bounded on-disk queue
//! (one JSON object a line) that drops the oldest when full and counts
//! what it dropped; delivered in order once connected again, and removed
//! only when sent. It survives an agent restart.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

/// The queue.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    cap: usize,
    items: VecDeque<serde_json::Value>,
    /// Events dropped because the spool was full (oldest first).
    pub dropped: u64,
    /// Lines of the file that did not parse when it was opened.
    pub corrupt: u64,
}

impl Spool {
    /// Open (or start) the spool at `path`, holding at most `cap` events.
    pub fn open(path: &Path, cap: usize) -> std::io::Result<Spool> {
        let mut s = Spool {
            path: path.to_path_buf(),
            cap: cap.max(1),
            items: VecDeque::new(),
            dropped: 0,
            corrupt: 0,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    match serde_json::from_str(line) {
                        Ok(v) => s.items.push_back(v),
                        Err(_) => s.corrupt += 1,
                    }
                }
                while s.items.len() > s.cap {
                    s.items.pop_front();
                    s.dropped += 1;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(s)
    }

    /// Queue an event (the oldest goes when full).
    pub fn push(&mut self, event: serde_json::Value) -> std::io::Result<()> {
        if self.items.len() == self.cap {
            self.items.pop_front();
            self.dropped += 1;
        }
        self.items.push_back(event);
        self.write()
    }

    /// The events waiting, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &serde_json::Value> {
        self.items.iter()
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The first `n` were delivered: forget them.
    pub fn delivered(&mut self, n: usize) -> std::io::Result<()> {
        let n = n.min(self.items.len());
        self.items.drain(..n);
        self.write()
    }

    fn write(&self) -> std::io::Result<()> {
        let mut text = Vec::new();
        for v in &self.items {
            // A Value always serializes.
            serde_json::to_writer(&mut text, v).map_err(std::io::Error::other)?;
            text.push(b'\n');
        }
        tunterm_control::write_atomically(&self.path, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bounded_drops_the_oldest_counts_and_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("tunterm-agent-spool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        let mut s = Spool::open(&path, 3).unwrap();
        for i in 0..5 {
            s.push(json!({"type": "E", "n": i})).unwrap();
        }
        assert_eq!(s.dropped, 2);
        let n = |s: &Spool| {
            s.pending()
                .map(|v| v["n"].as_i64().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(n(&s), [2, 3, 4]);
        // An agent restart: the same events, in order.
        let mut s = Spool::open(&path, 3).unwrap();
        assert_eq!(n(&s), [2, 3, 4]);
        s.delivered(2).unwrap();
        assert_eq!(n(&Spool::open(&path, 3).unwrap()), [4]);
        // A damaged line is skipped and counted; a smaller cap keeps the newest.
        std::fs::write(&path, "{\"n\":1}\nnot json\n{\"n\":2}\n{\"n\":3}\n").unwrap();
        let s = Spool::open(&path, 2).unwrap();
        assert_eq!((n(&s), s.corrupt, s.dropped), (vec![2, 3], 1, 1));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
