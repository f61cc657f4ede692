//! The org's persistent state in SQLite: the configuration objects (as the
//! JSON the REST API took), edge tokens (hashed), the latest stats and tunnel
//! rows per edge, events (bounded) and captures.

use std::path::Path;
use std::sync::Mutex;

use anyhow::Result;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The object kinds the REST API manages (the table's `kind` column and the
/// URL path segment).
pub const KINDS: [&str; 4] = ["mxedges", "mxclusters", "mxtunnels", "wlans"];

/// At most this many events are kept per org; older ones are dropped.
pub const MAX_EVENTS: i64 = 10_000;

/// A stored edge token's standing.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenStanding {
    /// The token belongs to this registered edge.
    Valid(String),
    /// The edge this token was issued to was unregistered.
    Unregistered,
    /// Unknown token.
    Unknown,
}

/// The database, behind a mutex: each call is one short statement or
/// transaction.
pub struct Store {
    db: Mutex<Connection>,
}

fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Store {
    /// Opens (and creates) the database at `path`; `:memory:` works too.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Connection::open(path)?;
        db.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS objects(kind TEXT NOT NULL, id TEXT NOT NULL,
                 org_id TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY(kind, id));
             CREATE TABLE IF NOT EXISTS edge_tokens(hash TEXT PRIMARY KEY,
                 mxedge_id TEXT NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE IF NOT EXISTS mxedge_stats(mxedge_id TEXT PRIMARY KEY,
                 body TEXT NOT NULL, tunnels TEXT NOT NULL, received REAL NOT NULL);
             CREATE TABLE IF NOT EXISTS events(seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 org_id TEXT NOT NULL, mxedge_id TEXT NOT NULL, type TEXT NOT NULL,
                 timestamp REAL NOT NULL, body TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS captures(id TEXT PRIMARY KEY, org_id TEXT NOT NULL,
                 timestamp REAL NOT NULL, body TEXT NOT NULL);",
        )?;
        Ok(Self { db: Mutex::new(db) })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a statement half-done
        // (SQLite's own atomicity), so a poisoned lock is still usable.
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A meta value.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .db()
            .query_row("SELECT value FROM meta WHERE key=?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Sets a meta value.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.db().execute(
            "INSERT INTO meta(key, value) VALUES(?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            [key, value],
        )?;
        Ok(())
    }

    /// All objects of `kind` in `org_id`, oldest first.
    pub fn list(&self, kind: &str, org_id: &str) -> Result<Vec<Value>> {
        let db = self.db();
        let mut st =
            db.prepare("SELECT body FROM objects WHERE kind=?1 AND org_id=?2 ORDER BY rowid")?;
        let rows = st.query_map([kind, org_id], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for body in rows {
            out.push(serde_json::from_str(&body?)?);
        }
        Ok(out)
    }

    /// One object, by kind and id, within `org_id`.
    pub fn get(&self, kind: &str, org_id: &str, id: &str) -> Result<Option<Value>> {
        let body: Option<String> = self
            .db()
            .query_row(
                "SELECT body FROM objects WHERE kind=?1 AND org_id=?2 AND id=?3",
                [kind, org_id, id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(body.map(|b| serde_json::from_str(&b)).transpose()?)
    }

    /// Inserts or replaces an object (its `id` and `org_id` fields are the keys).
    pub fn put(&self, kind: &str, obj: &Value) -> Result<()> {
        let id = obj["id"].as_str().unwrap_or_default();
        let org = obj["org_id"].as_str().unwrap_or_default();
        self.db().execute(
            "INSERT INTO objects(kind, id, org_id, body) VALUES(?1, ?2, ?3, ?4)
             ON CONFLICT(kind, id) DO UPDATE SET body=excluded.body",
            params![kind, id, org, obj.to_string()],
        )?;
        Ok(())
    }

    /// Deletes an object; true when it was there.
    pub fn delete(&self, kind: &str, org_id: &str, id: &str) -> Result<bool> {
        let n = self.db().execute(
            "DELETE FROM objects WHERE kind=?1 AND org_id=?2 AND id=?3",
            [kind, org_id, id],
        )?;
        Ok(n > 0)
    }

    /// The mxedge whose claim code (`magic`) is `code`, any org.
    pub fn mxedge_by_magic(&self, code: &str) -> Result<Option<Value>> {
        let db = self.db();
        let mut st = db.prepare("SELECT body FROM objects WHERE kind='mxedges'")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        for body in rows {
            let v: Value = serde_json::from_str(&body?)?;
            if v["magic"].as_str() == Some(code) {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// The mxedge with this id, any org.
    pub fn mxedge(&self, id: &str) -> Result<Option<Value>> {
        let body: Option<String> = self
            .db()
            .query_row(
                "SELECT body FROM objects WHERE kind='mxedges' AND id=?1",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(body.map(|b| serde_json::from_str(&b)).transpose()?)
    }

    /// Records a new token for an edge (only its hash is kept).
    pub fn add_token(&self, token: &str, mxedge_id: &str) -> Result<()> {
        self.db().execute(
            "INSERT INTO edge_tokens(hash, mxedge_id) VALUES(?1, ?2)",
            [token_hash(token), mxedge_id.to_string()],
        )?;
        Ok(())
    }

    /// What a presented edge token is worth.
    pub fn token(&self, token: &str) -> Result<TokenStanding> {
        let row: Option<(String, i64)> = self
            .db()
            .query_row(
                "SELECT mxedge_id, revoked FROM edge_tokens WHERE hash=?1",
                [token_hash(token)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(match row {
            Some((id, 0)) => TokenStanding::Valid(id),
            Some(_) => TokenStanding::Unregistered,
            None => TokenStanding::Unknown,
        })
    }

    /// Revokes every token of an edge (unregister).
    pub fn revoke_tokens(&self, mxedge_id: &str) -> Result<()> {
        self.db().execute(
            "UPDATE edge_tokens SET revoked=1 WHERE mxedge_id=?1",
            [mxedge_id],
        )?;
        Ok(())
    }

    /// Stores the latest stats object and tunnel rows of an edge.
    pub fn put_stats(
        &self,
        mxedge_id: &str,
        stats: &Value,
        tunnels: &Value,
        now: f64,
    ) -> Result<()> {
        self.db().execute(
            "INSERT INTO mxedge_stats(mxedge_id, body, tunnels, received) VALUES(?1, ?2, ?3, ?4)
             ON CONFLICT(mxedge_id) DO UPDATE SET body=excluded.body,
                 tunnels=excluded.tunnels, received=excluded.received",
            params![mxedge_id, stats.to_string(), tunnels.to_string(), now],
        )?;
        Ok(())
    }

    /// The latest stats object, tunnel rows and when they came.
    pub fn stats(&self, mxedge_id: &str) -> Result<Option<(Value, Value, f64)>> {
        let row: Option<(String, String, f64)> = self
            .db()
            .query_row(
                "SELECT body, tunnels, received FROM mxedge_stats WHERE mxedge_id=?1",
                [mxedge_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        Ok(match row {
            Some((b, t, at)) => Some((serde_json::from_str(&b)?, serde_json::from_str(&t)?, at)),
            None => None,
        })
    }

    /// Appends an event; returns how many old events were dropped to stay
    /// within [`MAX_EVENTS`].
    pub fn add_event(&self, org_id: &str, mxedge_id: &str, event: &Value) -> Result<u64> {
        let db = self.db();
        db.execute(
            "INSERT INTO events(org_id, mxedge_id, type, timestamp, body) VALUES(?1, ?2, ?3, ?4, ?5)",
            params![
                org_id,
                mxedge_id,
                event["type"].as_str().unwrap_or_default(),
                event["timestamp"].as_f64().unwrap_or_default(),
                event.to_string()
            ],
        )?;
        let dropped = db.execute(
            "DELETE FROM events WHERE org_id=?1 AND seq <= (SELECT seq FROM events WHERE org_id=?1
                 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
            params![org_id, MAX_EVENTS],
        )?;
        Ok(dropped as u64)
    }

    /// Events of an org, newest first, filtered.
    pub fn events(&self, org_id: &str, filter: &EventFilter) -> Result<Vec<Value>> {
        let db = self.db();
        let mut st = db.prepare(
            "SELECT body FROM events WHERE org_id=?1
               AND (?2 IS NULL OR mxedge_id=?2) AND (?3 IS NULL OR type=?3)
               AND timestamp >= ?4 AND timestamp <= ?5
             ORDER BY seq DESC LIMIT ?6",
        )?;
        let rows = st.query_map(
            params![
                org_id,
                filter.mxedge_id,
                filter.kind,
                filter.start,
                filter.end,
                filter.limit
            ],
            |r| r.get::<_, String>(0),
        )?;
        let mut out = Vec::new();
        for body in rows {
            out.push(serde_json::from_str(&body?)?);
        }
        Ok(out)
    }

    /// Stores a capture record.
    pub fn put_capture(&self, capture: &Value) -> Result<()> {
        self.db().execute(
            "INSERT INTO captures(id, org_id, timestamp, body) VALUES(?1, ?2, ?3, ?4)
             ON CONFLICT(id) DO UPDATE SET body=excluded.body",
            params![
                capture["id"].as_str().unwrap_or_default(),
                capture["org_id"].as_str().unwrap_or_default(),
                capture["timestamp"].as_f64().unwrap_or_default(),
                capture.to_string()
            ],
        )?;
        Ok(())
    }

    /// Captures of an org, newest first.
    pub fn captures(&self, org_id: &str, limit: i64) -> Result<Vec<Value>> {
        let db = self.db();
        let mut st = db.prepare(
            "SELECT body FROM captures WHERE org_id=?1 ORDER BY timestamp DESC LIMIT ?2",
        )?;
        let rows = st.query_map(params![org_id, limit], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for body in rows {
            out.push(serde_json::from_str(&body?)?);
        }
        Ok(out)
    }
}

/// `mxedges/events/search` filters.
#[derive(Debug, Default)]
pub struct EventFilter {
    /// Only this edge's.
    pub mxedge_id: Option<String>,
    /// Only this event type.
    pub kind: Option<String>,
    /// Epoch seconds, inclusive.
    pub start: f64,
    /// Epoch seconds, inclusive.
    pub end: f64,
    /// At most this many.
    pub limit: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_stay_bounded_and_come_newest_first() {
        let store = Store::open(Path::new(":memory:")).unwrap();
        let mut dropped = 0;
        for i in 0..MAX_EVENTS + 5 {
            let e = json!({"type": "ME_CONFIGURED", "timestamp": 1000.0 + i as f64, "n": i});
            dropped += store.add_event("org", "edge", &e).unwrap();
        }
        assert_eq!(dropped, 5);
        let all = EventFilter {
            start: 0.0,
            end: 1e12,
            limit: 2 * MAX_EVENTS,
            ..Default::default()
        };
        let events = store.events("org", &all).unwrap();
        assert_eq!(events.len() as i64, MAX_EVENTS);
        assert_eq!(events[0]["n"], MAX_EVENTS + 4, "newest first");
        assert_eq!(events.last().unwrap()["n"], 5, "the oldest five dropped");
        let other = EventFilter {
            kind: Some("ME_SERVICE_STOPPED".into()),
            ..all
        };
        assert!(store.events("org", &other).unwrap().is_empty());
    }

    #[test]
    fn tokens_are_stored_hashed_and_revocable() {
        let store = Store::open(Path::new(":memory:")).unwrap();
        store.add_token("secret-token", "edge-1").unwrap();
        let raw: i64 = store
            .db()
            .query_row(
                "SELECT count(*) FROM edge_tokens WHERE hash='secret-token'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(raw, 0, "the token itself is not stored");
        assert_eq!(
            store.token("secret-token").unwrap(),
            TokenStanding::Valid("edge-1".into())
        );
        assert_eq!(store.token("other").unwrap(), TokenStanding::Unknown);
        store.revoke_tokens("edge-1").unwrap();
        assert_eq!(
            store.token("secret-token").unwrap(),
            TokenStanding::Unregistered
        );
    }
}
