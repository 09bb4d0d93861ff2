//! The run store: one SQLite file (WAL mode) holding runs, models, datasets, every finished
//! prediction and cached embeddings. Every batch is committed in its own transaction, so an
//! interrupted run loses at most the batch in flight, and a rerun with the same settings
//! reuses what is there instead of recomputing or duplicating it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{EngineError, Result};

/// 2: the answer cache is `model_answers`, keyed by request kind, model identity and
/// request (it was `http_cache`, keyed by server URL and request body).
/// 3: `samples` keeps each prediction's log (prompt as sent, continuations' scores,
/// generated text, truncation) for `export` and `--log-samples`.
pub const SCHEMA_VERSION: i64 = 3;

/// Who computes a run now (see [`Store::claim_run`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunClaim {
    Acquired,
    HeldBy {
        pid: u32,
        host: String,
        since: String,
    },
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// Whether process `pid` runs on this machine. Without `/proc` (not Linux) a claim is
/// assumed live: waiting on a dead claim is then ended by deleting the store's claim row.
fn process_alive(pid: u32) -> bool {
    let proc_root = std::path::Path::new("/proc");
    if !proc_root.join("self").exists() {
        return true;
    }
    // A zombie (exited, not yet reaped) holds its pid but does no work.
    match std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct StoredPrediction {
    pub example_id: String,
    pub label: String,
    pub probabilities: Vec<f64>,
    pub tokens: usize,
    pub batch_latency_ms: f64,
    pub batch_size: usize,
}

/// What identifies and describes a run when it starts.
#[derive(Debug, Clone, Copy)]
pub struct NewRun<'a> {
    /// Hash of everything that changes results: the same key resumes the same run.
    pub key: &'a str,
    pub task: &'a str,
    pub dataset_sha: &'a str,
    pub dataset_path: &'a str,
    pub rows: usize,
    pub models: &'a str,
    pub settings: &'a str,
}

/// A cached sentence embedding with the cost of computing it.
/// A finished hyperparameter-search trial.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTrial {
    pub trial: usize,
    pub model: String,
    /// The sampled configuration, JSON.
    pub config: String,
    /// done | pruned | diverged
    pub status: String,
    pub metric: Option<f64>,
    pub best_epoch: usize,
    /// Per-epoch records, JSON.
    pub epochs: String,
    pub wall_seconds: f64,
}

#[derive(Debug, Clone)]
pub struct CachedEmbedding {
    pub vector: Vec<f32>,
    pub tokens: usize,
    pub batch_latency_ms: f64,
    pub batch_size: usize,
}

/// Everything the store knows of a run, for the leaderboard and the filters of `runs`.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub id: i64,
    pub started: String,
    pub finished: Option<String>,
    pub task: String,
    pub dataset_sha256: String,
    /// The path the dataset was first scored under (empty when unknown).
    pub dataset_path: String,
    pub models: String,
    /// The JSON of everything that changes the run's results (the run key's source).
    pub settings: String,
}

/// A dataset the store has scored.
#[derive(Debug, Clone)]
pub struct StoredDataset {
    pub sha256: String,
    pub path: String,
    pub rows: usize,
}

/// What `delete_run` removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeletedRun {
    pub predictions: usize,
    pub samples: usize,
}

#[derive(Debug, Clone)]
pub struct RunSummary {
    pub id: i64,
    pub started: String,
    pub finished: Option<String>,
    pub task: String,
    pub dataset: String,
    pub models: String,
}

fn now() -> String {
    // Seconds since the epoch, written as RFC 3339 UTC without pulling in a date crate.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub fn timestamp() -> String {
    now()
}

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        let err =
            |e: rusqlite::Error| EngineError::file(path, format!("cannot use the store: {e}"));
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        let wal: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(err)?;
        let _ = wal;
        // In WAL mode, NORMAL keeps every committed batch through a killed process (only an
        // OS crash can lose the last commits) and skips an fsync per batch.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS datasets(sha256 TEXT PRIMARY KEY, path TEXT NOT NULL, rows INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS models(hash TEXT PRIMARY KEY, spec TEXT NOT NULL, backend TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS runs(
                id INTEGER PRIMARY KEY, key TEXT UNIQUE NOT NULL, started TEXT NOT NULL, finished TEXT,
                task TEXT NOT NULL, dataset_sha256 TEXT NOT NULL, models TEXT NOT NULL,
                settings TEXT NOT NULL, result TEXT);
             CREATE TABLE IF NOT EXISTS predictions(
                run_id INTEGER NOT NULL, model TEXT NOT NULL, example_id TEXT NOT NULL,
                label TEXT NOT NULL, probabilities TEXT NOT NULL, tokens INTEGER NOT NULL,
                batch_latency_ms REAL NOT NULL, batch_size INTEGER NOT NULL,
                PRIMARY KEY(run_id, model, example_id));
             CREATE TABLE IF NOT EXISTS file_hashes(
                path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS embeddings(
                model_hash TEXT NOT NULL, text_sha256 TEXT NOT NULL, settings TEXT NOT NULL,
                vector BLOB NOT NULL, tokens INTEGER NOT NULL, batch_latency_ms REAL NOT NULL,
                batch_size INTEGER NOT NULL,
                PRIMARY KEY(model_hash, text_sha256, settings));
             CREATE TABLE IF NOT EXISTS tune_trials(
                search_key TEXT NOT NULL, trial INTEGER NOT NULL, model TEXT NOT NULL,
                config TEXT NOT NULL, status TEXT NOT NULL, metric REAL, best_epoch INTEGER NOT NULL,
                epochs TEXT NOT NULL, wall_seconds REAL NOT NULL, finished TEXT NOT NULL,
                PRIMARY KEY(search_key, trial));
             CREATE TABLE IF NOT EXISTS model_answers(
                key TEXT PRIMARY KEY, answer TEXT NOT NULL, latency_ms REAL NOT NULL);
             CREATE TABLE IF NOT EXISTS samples(
                run_id INTEGER NOT NULL, model TEXT NOT NULL, example_id TEXT NOT NULL,
                log TEXT NOT NULL, PRIMARY KEY(run_id, model, example_id));
             CREATE TABLE IF NOT EXISTS run_claims(
                run_id INTEGER PRIMARY KEY, pid INTEGER NOT NULL, host TEXT NOT NULL,
                claimed TEXT NOT NULL);",
        )
        .map_err(|e| {
            let msg = e.to_string();
            if msg.contains("readonly") || msg.contains("read-only") {
                EngineError::file(path, "the store is read-only: give a writable --db path")
            } else {
                err(e)
            }
        })?;
        let version: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key='schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?;
        match version.and_then(|v| v.parse::<i64>().ok()) {
            Some(v) if v > SCHEMA_VERSION => {
                return Err(EngineError::file(
                    path,
                    format!("the store was written by a newer lmcompare (schema {v}, this one reads up to {SCHEMA_VERSION}); upgrade lmcompare or use another --db"),
                ))
            }
            Some(v) if v < SCHEMA_VERSION => {
                // Schema 1 kept server answers raw, under keys of URL and body; those keys are
                // never asked again, so the old cache goes. Schema 3 only adds `samples`
                // (created above): runs from before have predictions but no sample logs.
                // Runs, predictions, embeddings, trials and file hashes are kept as they are.
                let drop = if v < 2 { "DROP TABLE IF EXISTS http_cache;" } else { "" };
                conn.execute_batch(&format!(
                    "{drop} UPDATE meta SET value='{SCHEMA_VERSION}' WHERE key='schema_version';"
                ))
                .map_err(err)?;
                eprintln!(
                    "note: {}: store schema {v} upgraded to {SCHEMA_VERSION} (runs and predictions kept{}; runs from before have no per-sample logs)",
                    path.display(),
                    if v < 2 { "; cached model answers from before are recomputed when asked" } else { "" }
                );
            }
            Some(_) => {}
            None => {
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES('schema_version', ?1)",
                    params![SCHEMA_VERSION.to_string()],
                )
                .map_err(|e| {
                    if e.to_string().contains("readonly") {
                        EngineError::file(path, "the store is read-only: give a writable --db path")
                    } else {
                        err(e)
                    }
                })?;
            }
        }
        Ok(Store {
            conn,
            path: path.to_owned(),
        })
    }

    fn err(&self, e: rusqlite::Error) -> EngineError {
        if e.to_string().contains("readonly") {
            EngineError::file(
                &self.path,
                "the store is read-only: give a writable --db path",
            )
        } else {
            EngineError::Runtime(format!("{}: store error: {e}", self.path.display()))
        }
    }

    /// The run with this key (resumed) or a new one. Returns (id, resumed).
    pub fn begin_run(&self, run: &NewRun<'_>) -> Result<(i64, bool)> {
        let NewRun {
            key,
            task,
            dataset_sha,
            dataset_path,
            rows,
            models,
            settings,
        } = *run;
        self.conn
            .execute(
                "INSERT OR IGNORE INTO datasets(sha256, path, rows) VALUES(?1, ?2, ?3)",
                params![dataset_sha, dataset_path, rows as i64],
            )
            .map_err(|e| self.err(e))?;
        if let Some(id) = self
            .conn
            .query_row("SELECT id FROM runs WHERE key=?1", params![key], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map_err(|e| self.err(e))?
        {
            return Ok((id, true));
        }
        self.conn
            .execute(
                "INSERT INTO runs(key, started, task, dataset_sha256, models, settings) VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
                params![key, now(), task, dataset_sha, models, settings],
            )
            .map_err(|e| self.err(e))?;
        Ok((self.conn.last_insert_rowid(), false))
    }

    pub fn register_model(&self, hash: &str, spec: &str, backend: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO models(hash, spec, backend) VALUES(?1, ?2, ?3)",
                params![hash, spec, backend],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn predictions(&self, run: i64, model: &str) -> Result<HashMap<String, StoredPrediction>> {
        let mut stmt = self
            .conn
            .prepare("SELECT example_id, label, probabilities, tokens, batch_latency_ms, batch_size FROM predictions WHERE run_id=?1 AND model=?2")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![run, model], |r| {
                let probs: String = r.get(2)?;
                Ok((
                    probs,
                    StoredPrediction {
                        example_id: r.get(0)?,
                        label: r.get(1)?,
                        probabilities: Vec::new(),
                        tokens: r.get::<_, i64>(3)? as usize,
                        batch_latency_ms: r.get(4)?,
                        batch_size: r.get::<_, i64>(5)? as usize,
                    },
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = HashMap::new();
        for p in rows {
            let (probs, mut p) = p.map_err(|e| self.err(e))?;
            // A damaged row is an error, never an empty probability vector.
            p.probabilities = serde_json::from_str(&probs).map_err(|e| {
                EngineError::file(
                    &self.path,
                    format!(
                        "the stored probabilities of example {:?} (run {run}, model {model}) are not a JSON list of numbers ({e}); the store is damaged: delete the run (or the file) and rerun",
                        p.example_id
                    ),
                )
            })?;
            out.insert(p.example_id.clone(), p);
        }
        Ok(out)
    }

    /// Commits one batch of predictions atomically; a row already present is kept as is.
    pub fn save_predictions(
        &mut self,
        run: i64,
        model: &str,
        rows: &[StoredPrediction],
    ) -> Result<()> {
        let tx = self
            .conn
            .transaction()
            .map_err(|e| EngineError::Runtime(e.to_string()))?;
        {
            let mut stmt = tx
                .prepare_cached("INSERT OR IGNORE INTO predictions(run_id, model, example_id, label, probabilities, tokens, batch_latency_ms, batch_size) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")
                .map_err(|e| EngineError::Runtime(e.to_string()))?;
            for p in rows {
                let probs = serde_json::to_string(&p.probabilities).unwrap_or_else(|_| "[]".into());
                stmt.execute(params![
                    run,
                    model,
                    p.example_id,
                    p.label,
                    probs,
                    p.tokens as i64,
                    p.batch_latency_ms,
                    p.batch_size as i64
                ])
                .map_err(|e| EngineError::Runtime(e.to_string()))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Cached embeddings by text hash.
    pub fn embeddings(
        &self,
        model_hash: &str,
        settings: &str,
    ) -> Result<HashMap<String, CachedEmbedding>> {
        let mut stmt = self
            .conn
            .prepare("SELECT text_sha256, vector, tokens, batch_latency_ms, batch_size FROM embeddings WHERE model_hash=?1 AND settings=?2")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![model_hash, settings], |r| {
                let blob: Vec<u8> = r.get(1)?;
                let v: Vec<f32> = blob
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                Ok((
                    r.get::<_, String>(0)?,
                    CachedEmbedding {
                        vector: v,
                        tokens: r.get::<_, i64>(2)? as usize,
                        batch_latency_ms: r.get(3)?,
                        batch_size: r.get::<_, i64>(4)? as usize,
                    },
                ))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<HashMap<_, _>, _>>()
            .map_err(|e| self.err(e))
    }

    pub fn save_embeddings(
        &mut self,
        model_hash: &str,
        settings: &str,
        rows: &[(String, Vec<f32>, usize)],
        batch_latency_ms: f64,
    ) -> Result<()> {
        let tx = self
            .conn
            .transaction()
            .map_err(|e| EngineError::Runtime(e.to_string()))?;
        {
            let mut stmt = tx
                .prepare_cached("INSERT OR IGNORE INTO embeddings(model_hash, text_sha256, settings, vector, tokens, batch_latency_ms, batch_size) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)")
                .map_err(|e| EngineError::Runtime(e.to_string()))?;
            for (key, v, tokens) in rows {
                let blob: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                stmt.execute(params![
                    model_hash,
                    key,
                    settings,
                    blob,
                    *tokens as i64,
                    batch_latency_ms,
                    rows.len() as i64
                ])
                .map_err(|e| EngineError::Runtime(e.to_string()))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// sha256 of a file, reused while its size and modification time are unchanged (hashing
    /// a model's weights on every run would cost more than the rest of the pipeline).
    pub fn file_sha256(&self, path: &Path) -> Result<String> {
        use sha2::{Digest, Sha256};
        use std::io::Read;
        let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let meta = std::fs::metadata(&canon)
            .map_err(|e| EngineError::file(path, format!("cannot read: {e}")))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i64);
        let key = canon.display().to_string();
        let cached: Option<String> = self
            .conn
            .query_row(
                "SELECT sha256 FROM file_hashes WHERE path=?1 AND size=?2 AND mtime_ns=?3",
                params![key, meta.len() as i64, mtime],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        if let Some(h) = cached {
            return Ok(h);
        }
        let mut file = std::fs::File::open(&canon)
            .map_err(|e| EngineError::file(path, format!("cannot read: {e}")))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| EngineError::file(path, format!("cannot read: {e}")))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let digest = format!("{:x}", h.finalize());
        self.conn
            .execute(
                "INSERT OR REPLACE INTO file_hashes(path, size, mtime_ns, sha256) VALUES(?1, ?2, ?3, ?4)",
                params![key, meta.len() as i64, mtime, digest],
            )
            .map_err(|e| self.err(e))?;
        Ok(digest)
    }

    pub fn finish_run(&self, run: i64, result: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE runs SET finished=?1, result=?2 WHERE id=?3",
                params![now(), result, run],
            )
            .map_err(|e| self.err(e))?;
        self.release_run(run)
    }

    /// Claims `run` for this process, so that a second identical command on the same store
    /// waits for this one's work instead of computing it too. A claim held by a process
    /// that no longer runs (killed, crashed) is taken over; this process's own claim is
    /// re-entrant.
    pub fn claim_run(&self, run: i64) -> Result<RunClaim> {
        let me = std::process::id();
        let host = host_name();
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        let held: Option<(u32, String, String)> = tx
            .query_row(
                "SELECT pid, host, claimed FROM run_claims WHERE run_id=?1",
                params![run],
                |r| Ok((r.get::<_, i64>(0)? as u32, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        if let Some((pid, h, since)) = held {
            if pid != me && (h != host || process_alive(pid)) {
                return Ok(RunClaim::HeldBy {
                    pid,
                    host: h,
                    since,
                });
            }
        }
        tx.execute(
            "INSERT OR REPLACE INTO run_claims(run_id, pid, host, claimed) VALUES(?1, ?2, ?3, ?4)",
            params![run, me as i64, host, now()],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(RunClaim::Acquired)
    }

    /// Gives up this process's claim on `run` (done, or failed).
    pub fn release_run(&self, run: i64) -> Result<()> {
        self.conn
            .execute(
                "DELETE FROM run_claims WHERE run_id=?1 AND pid=?2",
                params![run, std::process::id() as i64],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn run_started(&self, run: i64) -> Result<String> {
        self.conn
            .query_row("SELECT started FROM runs WHERE id=?1", params![run], |r| {
                r.get(0)
            })
            .map_err(|e| self.err(e))
    }

    pub fn runs(&self) -> Result<Vec<RunSummary>> {
        let mut stmt = self
            .conn
            .prepare("SELECT r.id, r.started, r.finished, r.task, COALESCE(d.path, r.dataset_sha256), r.models FROM runs r LEFT JOIN datasets d ON d.sha256 = r.dataset_sha256 ORDER BY r.id")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(RunSummary {
                    id: r.get(0)?,
                    started: r.get(1)?,
                    finished: r.get(2)?,
                    task: r.get(3)?,
                    dataset: r.get(4)?,
                    models: r.get(5)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))
    }

    pub fn run_result(&self, run: i64) -> Result<Option<String>> {
        let r: Option<Option<String>> = self
            .conn
            .query_row("SELECT result FROM runs WHERE id=?1", params![run], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))?;
        match r {
            None => Err(EngineError::BadInput(format!(
                "no run {run} in {}",
                self.path.display()
            ))),
            Some(x) => Ok(x),
        }
    }

    /// Finished trials of a search, in trial order.
    pub fn trials(&self, search_key: &str) -> Result<Vec<StoredTrial>> {
        let mut stmt = self
            .conn
            .prepare("SELECT trial, model, config, status, metric, best_epoch, epochs, wall_seconds FROM tune_trials WHERE search_key=?1 ORDER BY trial")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![search_key], |r| {
                Ok(StoredTrial {
                    trial: r.get::<_, i64>(0)? as usize,
                    model: r.get(1)?,
                    config: r.get(2)?,
                    status: r.get(3)?,
                    metric: r.get(4)?,
                    best_epoch: r.get::<_, i64>(5)? as usize,
                    epochs: r.get(6)?,
                    wall_seconds: r.get(7)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))
    }

    /// Records a finished trial (one transaction: a killed search keeps every trial that
    /// finished before it).
    pub fn save_trial(&self, search_key: &str, t: &StoredTrial) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO tune_trials(search_key, trial, model, config, status, metric, best_epoch, epochs, wall_seconds, finished) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    search_key,
                    t.trial as i64,
                    t.model,
                    t.config,
                    t.status,
                    t.metric,
                    t.best_epoch as i64,
                    t.epochs,
                    t.wall_seconds,
                    now()
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// A cached model answer (and how long it took) by request key.
    pub fn cached_answer(&self, key: &str) -> Result<Option<(String, f64)>> {
        self.conn
            .query_row(
                "SELECT answer, latency_ms FROM model_answers WHERE key=?1",
                params![key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Caches model answers: (key, answer, milliseconds), one transaction.
    pub fn save_answers(&mut self, rows: &[(String, String, f64)]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction()
            .map_err(|e| EngineError::Runtime(e.to_string()))?;
        {
            let mut stmt = tx
                .prepare_cached("INSERT OR REPLACE INTO model_answers(key, answer, latency_ms) VALUES(?1, ?2, ?3)")
                .map_err(|e| EngineError::Runtime(e.to_string()))?;
            for (k, r, l) in rows {
                stmt.execute(params![k, r, l])
                    .map_err(|e| EngineError::Runtime(e.to_string()))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Every run with its settings, in id order.
    pub fn run_records(&self) -> Result<Vec<RunRecord>> {
        let mut stmt = self
            .conn
            .prepare("SELECT r.id, r.started, r.finished, r.task, r.dataset_sha256, COALESCE(d.path, ''), r.models, r.settings FROM runs r LEFT JOIN datasets d ON d.sha256 = r.dataset_sha256 ORDER BY r.id")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(RunRecord {
                    id: r.get(0)?,
                    started: r.get(1)?,
                    finished: r.get(2)?,
                    task: r.get(3)?,
                    dataset_sha256: r.get(4)?,
                    dataset_path: r.get(5)?,
                    models: r.get(6)?,
                    settings: r.get(7)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))
    }

    /// The datasets runs were scored on, by path.
    pub fn datasets(&self) -> Result<Vec<StoredDataset>> {
        let mut stmt = self
            .conn
            .prepare("SELECT sha256, path, rows FROM datasets ORDER BY path")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(StoredDataset {
                    sha256: r.get(0)?,
                    path: r.get(1)?,
                    rows: r.get::<_, i64>(2)? as usize,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))
    }

    /// Copies model `from_model`'s predictions (and sample logs) of run `from_run` into
    /// run `to_run` under `to_model`, keeping rows already there. Returns the rows added.
    pub fn copy_predictions(
        &mut self,
        from_run: i64,
        from_model: &str,
        to_run: i64,
        to_model: &str,
    ) -> Result<usize> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        let added = tx
            .execute(
                "INSERT OR IGNORE INTO predictions(run_id, model, example_id, label, probabilities, tokens, batch_latency_ms, batch_size)
                 SELECT ?3, ?4, example_id, label, probabilities, tokens, batch_latency_ms, batch_size FROM predictions WHERE run_id=?1 AND model=?2",
                params![from_run, from_model, to_run, to_model],
            )
            .map_err(|e| self.err(e))?;
        tx.execute(
            "INSERT OR IGNORE INTO samples(run_id, model, example_id, log)
             SELECT ?3, ?4, example_id, log FROM samples WHERE run_id=?1 AND model=?2",
            params![from_run, from_model, to_run, to_model],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(added)
    }

    /// Commits per-example sample logs (JSON) of one batch; a log already there is kept.
    pub fn save_samples(&mut self, run: i64, model: &str, rows: &[(String, String)]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        {
            let mut stmt = tx
                .prepare_cached("INSERT OR IGNORE INTO samples(run_id, model, example_id, log) VALUES(?1, ?2, ?3, ?4)")
                .map_err(|e| self.err(e))?;
            for (id, log) in rows {
                stmt.execute(params![run, model, id, log])
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Sample logs of a run's model by example id (JSON text).
    pub fn samples(&self, run: i64, model: &str) -> Result<HashMap<String, String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT example_id, log FROM samples WHERE run_id=?1 AND model=?2")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![run, model], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<HashMap<_, _>, _>>()
            .map_err(|e| self.err(e))
    }

    /// Removes a run and its predictions, sample logs and claim in one transaction. Caches
    /// shared across runs (embeddings, model answers, file hashes) stay.
    pub fn delete_run(&mut self, run: i64) -> Result<DeletedRun> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        let predictions = tx
            .execute("DELETE FROM predictions WHERE run_id=?1", params![run])
            .map_err(|e| self.err(e))?;
        let samples = tx
            .execute("DELETE FROM samples WHERE run_id=?1", params![run])
            .map_err(|e| self.err(e))?;
        tx.execute("DELETE FROM run_claims WHERE run_id=?1", params![run])
            .map_err(|e| self.err(e))?;
        let runs = tx
            .execute("DELETE FROM runs WHERE id=?1", params![run])
            .map_err(|e| self.err(e))?;
        if runs == 0 {
            return Err(EngineError::BadInput(format!(
                "no run {run} in {}",
                self.path.display()
            )));
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(DeletedRun {
            predictions,
            samples,
        })
    }

    /// Every registered model: (content hash, spec it was first given as, backend).
    pub fn model_specs(&self) -> Result<Vec<(String, String, String)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT hash, spec, backend FROM models")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))
    }
}
