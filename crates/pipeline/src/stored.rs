//! Reading finished work back from the store: the list of runs, and a run's report.

use std::path::Path;

use lmcompare_engine::store::{RunSummary, Store};
use serde_json::Value;

use crate::{bad, Result};

fn open_existing(db: &Path) -> Result<Store> {
    if !db.exists() {
        return Err(bad!("{}: no such store", db.display()));
    }
    Ok(Store::open(db)?)
}

pub fn runs(db: &Path) -> Result<Vec<RunSummary>> {
    Ok(open_existing(db)?.runs()?)
}

/// The report a finished run stored, as it was written.
pub fn run_report(db: &Path, run: i64) -> Result<Value> {
    let store = open_existing(db)?;
    let text = store.run_result(run)?.ok_or_else(|| {
        bad!("run {run} did not finish; rerun the same compare command to resume it")
    })?;
    serde_json::from_str(&text).map_err(|e| {
        crate::fail!(
            "{}: the stored report of run {run} is not valid JSON ({e}); rerun the command that made it",
            db.display()
        )
    })
}
