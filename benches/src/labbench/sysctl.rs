//! A machine-wide sysctl raised for a moment and put back.
//!
//! trafgen's socket takes its send buffer from `net.core.wmem_default` when
//! it is created, and that sysctl is the root namespace's for the whole
//! machine: on this kernel a network namespace shows it but cannot set it
//! (`sysctl -w` inside `ip netns exec` fails with EINVAL). So the harness
//! raises it only while a generator starts, and puts the old value back as
//! soon as the generator's socket exists ([`Raised`] is a guard: dropped on
//! every path, panics included). The old value is written to a record in
//! /run/lock first, so a run that was killed in between has it put back by
//! the next one ([`restore_leftover`], under the run lock).

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Where the value to put back waits while a sysctl is raised.
const RECORD: &str = "/run/lock/tunterm-labbench.sysctl";

/// A sysctl raised; the old value goes back on drop (unless someone else
/// changed it in between, which is then left alone).
#[derive(Debug)]
pub struct Raised {
    path: PathBuf,
    old: u64,
    set: u64,
    record: PathBuf,
}

fn proc_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

fn read(path: &Path) -> anyhow::Result<u64> {
    let s = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    s.trim()
        .parse()
        .with_context(|| format!("{}: not a number: {s:?}", path.display()))
}

fn write(path: &Path, value: u64) -> anyhow::Result<()> {
    std::fs::write(path, format!("{value}\n"))
        .with_context(|| format!("writing {value} to {}", path.display()))
}

impl Raised {
    /// Raises `key` (e.g. `net.core.wmem_default`, in the namespace of the
    /// calling process) to `value`. None when it is already at least that
    /// (nothing to put back).
    pub fn at_least(key: &str, value: u64) -> anyhow::Result<Option<Raised>> {
        Raised::at_least_with_record(key, value, Path::new(RECORD))
    }

    fn at_least_with_record(
        key: &str,
        value: u64,
        record: &Path,
    ) -> anyhow::Result<Option<Raised>> {
        let path = proc_path(key);
        let old = read(&path)?;
        if old >= value {
            return Ok(None);
        }
        std::fs::write(record, format!("{} {old}\n", path.display()))
            .with_context(|| format!("writing {}", record.display()))?;
        if let Err(e) = write(&path, value) {
            let _ = std::fs::remove_file(record);
            return Err(e);
        }
        Ok(Some(Raised {
            path,
            old,
            set: value,
            record: record.to_owned(),
        }))
    }
}

impl Drop for Raised {
    fn drop(&mut self) {
        match read(&self.path) {
            Ok(now) if now == self.set => {
                if let Err(e) = write(&self.path, self.old) {
                    eprintln!(
                        "labbench: could not put {} back: {e:#}",
                        self.path.display()
                    );
                    return;
                }
            }
            Ok(now) => eprintln!(
                "labbench: {} is {now}, not the {} set here: someone else changed it; left alone",
                self.path.display(),
                self.set
            ),
            Err(e) => eprintln!("labbench: {e:#}"),
        }
        let _ = std::fs::remove_file(&self.record);
    }
}

/// Puts back a value a killed run left raised (call with the run lock
/// held: then any record is a leftover).
pub fn restore_leftover() {
    restore_leftover_from(Path::new(RECORD));
}

fn restore_leftover_from(record: &Path) {
    let Ok(text) = std::fs::read_to_string(record) else {
        return;
    };
    let mut parts = text.split_whitespace();
    if let (Some(path), Some(old)) = (parts.next(), parts.next().and_then(|v| v.parse().ok()))
        && path.starts_with("/proc/sys/")
    {
        match write(Path::new(path), old) {
            Ok(()) => eprintln!("labbench: put {path} back to {old} (left by a killed run)"),
            Err(e) => eprintln!("labbench: {e:#}"),
        }
    }
    let _ = std::fs::remove_file(record);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sysctl of the calling namespace that nothing here depends on, in
    /// a namespace of the test's own (a thread moved into it), so the
    /// machine's values are never touched.
    #[test]
    fn raised_goes_back_on_drop_and_after_a_kill() -> anyhow::Result<()> {
        tunterm_lab::require_root()?;
        let prefix = tunterm_lab::unique_prefix("sysctl");
        tunterm_lab::cleanup_prefix(&prefix);
        let ns = tunterm_lab::Netns::new(&format!("{prefix}a"))?;
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir)?;
        let record = dir.join("record");
        let key = "net.core.somaxconn";
        let result = ns.enter(|| -> anyhow::Result<()> {
            let path = proc_path(key);
            let before = read(&path)?;
            {
                let r = Raised::at_least_with_record(key, before + 7, &record)?;
                assert!(r.is_some());
                assert_eq!(read(&path)?, before + 7);
                assert!(record.exists(), "the old value is recorded first");
            }
            assert_eq!(read(&path)?, before, "put back on drop");
            assert!(!record.exists());
            assert!(Raised::at_least_with_record(key, before, &record)?.is_none());

            // Killed while raised: the record remains, the next run puts
            // the value back.
            let r = Raised::at_least_with_record(key, before + 9, &record)?;
            std::mem::forget(r);
            assert_eq!(read(&path)?, before + 9);
            restore_leftover_from(&record);
            assert_eq!(read(&path)?, before);
            assert!(!record.exists());

            // Changed by someone else meanwhile: left alone.
            let r = Raised::at_least_with_record(key, before + 3, &record)?;
            write(&path, before + 5)?;
            drop(r);
            assert_eq!(read(&path)?, before + 5);
            write(&path, before)?;
            Ok(())
        })?;
        drop(ns);
        let _ = std::fs::remove_dir_all(&dir);
        result
    }
}
