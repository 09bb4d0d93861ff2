//! The `lmcompare` command line: argument parsing, output and exit codes only.
//! Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad input.

mod compare_cmd;
mod decoder_task;
mod encoder_cmds;
mod generate_task;
mod metrics_cmd;
mod paired_means;
mod perplexity_task;
mod prediction_files;
mod profile_cmd;
mod texts;
mod tune_cmd;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// Many short-lived allocations (parsed rows, per-model buffers): mimalloc is markedly
// faster than glibc malloc at this pattern.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use lmcompare_report::Format;

#[derive(Parser)]
#[command(
    name = "lmcompare",
    version,
    about = "Compare language models side by side, with evidence",
    long_about = "Compare language models side by side, with evidence.\n\nExit codes: 0 success, 1 runtime failure, 2 bad usage or bad input."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compare two or more models on the same labelled data: the ten key metrics with
    /// confidence intervals, efficiency, paired tests, verdicts; resumable from the store.
    Compare(compare_cmd::CompareArgs),
    /// The shipped comparison: three MiniLM encoders on Rotten Tomatoes reviews (probe task).
    Demo(compare_cmd::DemoArgs),
    /// Tune the fine-tuning hyperparameters of a classification head (optimiser, learning
    /// rate and schedule, batch size, epochs, ...) by grid, random, TPE or successive-halving
    /// search, then compare the tuned models with their untuned baselines on the test split.
    Tune(tune_cmd::TuneArgs),
    /// List the runs in the store.
    Runs(compare_cmd::RunsArgs),
    /// Re-render a finished run from the store alone.
    Report(compare_cmd::ReportArgs),
    /// Score prediction files (JSONL/CSV/TSV) from any model: every metric with bootstrap
    /// confidence intervals, and paired significance tests between files.
    Metrics(metrics_cmd::MetricsArgs),
    /// Sentence embeddings from an encoder (pooling as the model folder says).
    Embed(encoder_cmds::EmbedArgs),
    /// Class probabilities from a classifier (a model with a classification head).
    Predict(encoder_cmds::PredictArgs),
    /// Tokenize texts with one or more models' tokenizers and compare them side by side.
    Tokenize(encoder_cmds::TokenizeArgs),
    /// Parameters, size, FLOPs per example, latency, throughput and peak memory of a model.
    Profile(profile_cmd::ProfileArgs),
}

/// An error the user can fix (exit 2), as opposed to a runtime failure (exit 1).
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// Where the rendered report goes and in which format.
pub fn resolve_format(requested: Option<Format>) -> Format {
    requested.unwrap_or(if std::io::stdout().is_terminal() {
        Format::Table
    } else {
        Format::Json
    })
}

pub fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        // A closed pipe (`| head`) is not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Metrics(args) => metrics_cmd::run(args),
        Command::Compare(args) => compare_cmd::run(args),
        Command::Demo(args) => compare_cmd::demo(args),
        Command::Tune(args) => tune_cmd::run(args),
        Command::Runs(args) => compare_cmd::runs(args),
        Command::Report(args) => compare_cmd::report(args),
        Command::Embed(args) => encoder_cmds::embed(args),
        Command::Predict(args) => encoder_cmds::predict(args),
        Command::Tokenize(args) => encoder_cmds::tokenize(args),
        Command::Profile(args) => profile_cmd::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = if e.downcast_ref::<BadInput>().is_some() {
                2
            } else {
                1
            };
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}
