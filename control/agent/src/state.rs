//! The agent's identity with the cloud: the cloud's URL, this edge's ids
//! and its token, kept in a private (0600) file.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// What registration gave.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// `https://host:port` of the cloud.
    pub cloud: String,
    /// This edge's id.
    pub mxedge_id: String,
    /// Its org.
    pub org_id: String,
    /// The token for the websocket (a secret: never logged).
    pub token: String,
}

impl State {
    /// Read the state file; `None` when there is none yet. A file others
    /// may read is refused (the token is a secret).
    pub fn load(path: &Path) -> anyhow::Result<Option<State>> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(anyhow::anyhow!("{}: {e}", path.display())),
        };
        let mode = meta.permissions().mode() & 0o777;
        anyhow::ensure!(
            mode & 0o077 == 0,
            "{}: mode {mode:o} lets others read the token; chmod 600 it",
            path.display()
        );
        let text = std::fs::read_to_string(path)?;
        Ok(Some(serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!("{}: not a tunterm-agent state file: {e}", path.display())
        })?))
    }

    /// Write it (atomically, mode 0600 whatever the umask).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
        let text = serde_json::to_vec_pretty(self)?;
        tunterm_control::write_atomically(path, &text)?;
        Ok(())
    }

    /// Forget it (the edge was unregistered).
    pub fn remove(path: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_file_is_private_and_round_trips() {
        let dir = std::env::temp_dir().join(format!("tunterm-agent-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        assert_eq!(State::load(&path).unwrap(), None);
        let s = State {
            cloud: "https://127.0.0.1:8443".into(),
            mxedge_id: "e".into(),
            org_id: "o".into(),
            token: "ab".repeat(32),
        };
        s.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(State::load(&path).unwrap(), Some(s.clone()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = State::load(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        s.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "saving makes it private again");
        State::remove(&path).unwrap();
        State::remove(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
