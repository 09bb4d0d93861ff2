//! `runs` and `report`: what the store holds, read back without running anything.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use lmcompare_pipeline::compare::Document;
use lmcompare_pipeline::stored;
use lmcompare_report::Format;
use serde_json::json;

use crate::output::{emit, pretty, render_comparison, render_tune, resolve_format};

#[derive(Args)]
pub struct RunsArgs {
    #[arg(long, default_value = "lmcompare.db")]
    db: PathBuf,
    #[arg(long)]
    format: Option<Format>,
}

pub fn runs(args: RunsArgs) -> Result<()> {
    let runs = stored::runs(&args.db)?;
    match resolve_format(args.format) {
        Format::Json => emit(&pretty(&json!(runs.iter().map(|r| json!({"id": r.id, "started": r.started, "finished": r.finished, "task": r.task, "dataset": r.dataset, "models": r.models.split(',').collect::<Vec<_>>()})).collect::<Vec<_>>()))?),
        _ => {
            let mut s = format!("{:>4}  {:<20}  {:<9}  {:<9}  {:<40}  models\n", "id", "started", "status", "task", "dataset");
            for r in runs {
                s.push_str(&format!("{:>4}  {:<20}  {:<9}  {:<9}  {:<40}  {}\n", r.id, r.started, if r.finished.is_some() { "finished" } else { "partial" }, r.task, r.dataset, r.models));
            }
            emit(&s)
        }
    }
}

#[derive(Args)]
pub struct ReportArgs {
    #[arg(long)]
    run: i64,
    #[arg(long, default_value = "lmcompare.db")]
    db: PathBuf,
    /// table, json, markdown or html.
    #[arg(long)]
    format: Option<Format>,
    /// Also write the report files (report.json, report.md, report.html) into this folder.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn report(args: ReportArgs) -> Result<()> {
    let doc = stored::run_report(&args.db, args.run)?;
    if doc.get("trials").is_some() {
        return render_tune(&doc, args.format, args.out.as_deref());
    }
    render_comparison(&Document::from_json(doc)?, args.format, args.out.as_deref())
}
