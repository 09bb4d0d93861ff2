//! `runs`, `report`, `export` and `leaderboard`: what the store holds, read back (or
//! removed) without running any model.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use lmcompare_metrics::Metric;
use lmcompare_pipeline::compare::Document;
use lmcompare_pipeline::config::Task;
use lmcompare_pipeline::leaderboard::{leaderboard as build_leaderboard, LeaderboardConfig};
use lmcompare_pipeline::stored::{self, Exported, RunFilter};
use lmcompare_report::Format;
use serde_json::json;

use crate::output::{emit, pretty, render_comparison, render_tune, resolve_format, write_files};
use crate::shared_args::StatsArgs;

#[derive(Args)]
pub struct RunsArgs {
    #[arg(long, default_value = "lmcompare.db")]
    db: PathBuf,
    /// Only runs on this data file (matched by content hash, wherever it lives now).
    #[arg(long, value_name = "FILE")]
    data: Option<PathBuf>,
    /// Only runs with this model: its name in the run, the spec it was given as, or a
    /// prefix (6+ characters) of its content hash.
    #[arg(long, value_name = "SPEC")]
    model: Option<String>,
    /// Remove run ID (its predictions and sample logs; caches shared by runs stay).
    #[arg(long, value_name = "ID", conflicts_with_all = ["data", "model"])]
    delete: Option<i64>,
    /// table or json.
    #[arg(long)]
    format: Option<Format>,
}

pub fn runs(args: RunsArgs) -> Result<()> {
    crate::output::refuse_html(args.format, "runs")?;
    if let Some(id) = args.delete {
        let d = stored::delete_run(&args.db, id)?;
        let v = json!({"deleted_run": id, "predictions": d.predictions, "sample_logs": d.samples});
        return match resolve_format(args.format) {
            Format::Json => emit(&pretty(&v)?),
            _ => emit(&format!(
                "deleted run {id}: {} prediction(s) and {} sample log(s); cached embeddings and model answers stay\n",
                d.predictions, d.samples
            )),
        };
    }
    let filter = RunFilter {
        data: args.data,
        model: args.model,
    };
    let runs = stored::runs(&args.db, &filter)?;
    match resolve_format(args.format) {
        Format::Json => emit(&pretty(&json!(runs
            .iter()
            .map(|r| {
                let rec = &r.record;
                json!({
                    "id": rec.id, "started": rec.started, "finished": rec.finished,
                    "status": if rec.finished.is_some() { "finished" } else { "partial" },
                    "task": rec.task,
                    "dataset": {"path": rec.dataset_path, "sha256": rec.dataset_sha256},
                    "models": r.models.iter().map(|(n, h)| json!({"name": n, "content_hash": h})).collect::<Vec<_>>(),
                    "predictions": r.predictions,
                })
            })
            .collect::<Vec<_>>()))?),
        _ => {
            let mut s = format!(
                "{:>4}  {:<20}  {:<9}  {:<15}  {:>11}  {:<40}  models\n",
                "id", "started", "status", "task", "predictions", "dataset"
            );
            for r in runs {
                let rec = &r.record;
                let names: Vec<&str> = r.models.iter().map(|(n, _)| n.as_str()).collect();
                s.push_str(&format!(
                    "{:>4}  {:<20}  {:<9}  {:<15}  {:>11}  {:<40}  {}\n",
                    rec.id,
                    rec.started,
                    if rec.finished.is_some() { "finished" } else { "partial" },
                    rec.task,
                    r.predictions,
                    if rec.dataset_path.is_empty() { &rec.dataset_sha256 } else { &rec.dataset_path },
                    names.join(",")
                ));
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

#[derive(Args)]
pub struct ExportArgs {
    #[arg(long)]
    run: i64,
    /// Only this model (its name in the run).
    #[arg(long)]
    model: Option<String>,
    /// Where the files go (created).
    #[arg(long, default_value = "lmcompare-export")]
    out: PathBuf,
    /// The run's data file, when a run from before sample logs were kept (whose gold
    /// labels are only in its dataset) no longer finds it where it was read.
    #[arg(long, value_name = "FILE")]
    data: Option<PathBuf>,
    #[arg(long, default_value = "lmcompare.db")]
    db: PathBuf,
}

/// Says on stderr what an export wrote.
pub fn say_exported(done: &Exported) {
    for (model, preds, logs) in &done.models {
        eprintln!(
            "{}",
            lmcompare_report::escape_controls(&format!(
                "exported {model}: {preds} prediction(s), {logs} sample log(s) into {}",
                done.dir.display()
            ))
        );
    }
}

pub fn export(args: ExportArgs) -> Result<()> {
    let done = stored::export(
        &args.db,
        args.run,
        args.model.as_deref(),
        args.data.as_deref(),
        &args.out,
    )?;
    say_exported(&done);
    Ok(())
}

#[derive(Args)]
pub struct LeaderboardArgs {
    /// The dataset (matched by content hash).
    #[arg(long)]
    data: PathBuf,
    /// Only runs of this task.
    #[arg(long)]
    task: Option<Task>,
    /// The metric models are ranked and tested on.
    #[arg(long, default_value = "f1_macro")]
    metric: Metric,
    #[arg(long, default_value = "lmcompare.db")]
    db: PathBuf,
    /// Only group N of settings (1-based, as listed).
    #[arg(long, value_parser = crate::numbers::positive)]
    group: Option<usize>,
    /// Refuse, naming the settings that differ, when the models fall into several groups.
    #[arg(long)]
    one_group: bool,
    #[command(flatten)]
    stats: StatsArgs,
    /// Test examples kept for the HTML report's examples table.
    #[arg(long, value_parser = crate::numbers::count, default_value_t = 500)]
    html_examples: usize,
    /// table, json, markdown or html.
    #[arg(long)]
    format: Option<Format>,
    /// Also write leaderboard.json, leaderboard.md and leaderboard.html into this folder.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn leaderboard(args: LeaderboardArgs) -> Result<()> {
    let lb = build_leaderboard(&LeaderboardConfig {
        data: args.data,
        task: args.task,
        metric: args.metric,
        db: args.db,
        stats: args.stats.config(),
        group: args.group,
        one_group: args.one_group,
        html_examples: args.html_examples,
    })?;
    let json = serde_json::to_value(&lb)?;
    if let Some(dir) = &args.out {
        write_files(
            dir,
            &[
                ("leaderboard.json", pretty(&json)?),
                (
                    "leaderboard.md",
                    lmcompare_report::render_leaderboard_markdown(&lb),
                ),
                (
                    "leaderboard.html",
                    lmcompare_report::render_leaderboard_html(&lb),
                ),
            ],
        )?;
    }
    match resolve_format(args.format) {
        Format::Json => emit(&pretty(&json)?),
        Format::Table => emit(&lmcompare_report::render_leaderboard_table(&lb)),
        Format::Markdown => emit(&lmcompare_report::render_leaderboard_markdown(&lb)),
        Format::Html => match &args.out {
            Some(dir) => {
                eprintln!(
                    "wrote {}",
                    lmcompare_report::escape_controls(
                        &dir.join("leaderboard.html").display().to_string()
                    )
                );
                Ok(())
            }
            None => emit(&lmcompare_report::render_leaderboard_html(&lb)),
        },
    }
}
