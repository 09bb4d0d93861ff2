//! The `lmcompare` command line: arguments → a config → the pipeline library → an exporter.
//! Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad input.

mod compare_cmd;
mod encoder_cmds;
mod explain_cmd;
mod metrics_cmd;
mod numbers;
mod output;
mod shared_args;
mod store_cmds;
mod tune_cmd;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

// Many short-lived allocations (parsed rows, per-model buffers): mimalloc is markedly
// faster than glibc malloc at this pattern.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc commits its arenas eagerly by default, which on a `compare` of the Gemma GGUF
/// kept ~20 MB more resident at the peak, for no speed. (Purging freed memory at once
/// would save ~90 MB more, but costs 25% in time: every batch's buffers are decommitted
/// and faulted back in.) The arena option must be set before the first allocation, so this
/// runs as a constructor, before the Rust runtime allocates anything. The number is
/// `mi_option_e`'s in mimalloc.h (the same in its v2 and v3).
#[cfg(target_os = "linux")]
extern "C" fn commit_arenas_on_demand() {
    const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    // SAFETY: setting an option is allowed at any time, before initialisation included.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
    }
}

// ELF constructors; elsewhere mimalloc keeps its defaults.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static SET_ALLOCATOR_OPTIONS: extern "C" fn() = commit_arenas_on_demand;

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
    /// Evaluate one model, or compare several on the same labelled data: the ten key
    /// metrics with confidence intervals, efficiency, paired tests, verdicts; resumable
    /// from the store.
    Compare(compare_cmd::CompareArgs),
    /// The shipped comparison: three MiniLM encoders (probe task) and Gemma 3 270M
    /// (zero-shot, by label log-likelihood) on Rotten Tomatoes reviews.
    Demo(compare_cmd::DemoArgs),
    /// Tune the fine-tuning hyperparameters of a classification head (optimiser, learning
    /// rate and schedule, batch size, epochs, ...) by grid, random, TPE or successive-halving
    /// search, then compare the tuned models with their untuned baselines on the test split.
    Tune(tune_cmd::TuneArgs),
    /// List the runs in the store (by data file or model), or delete one.
    Runs(store_cmds::RunsArgs),
    /// Re-render a finished run from the store alone.
    Report(store_cmds::ReportArgs),
    /// Rank every model the store has scored on a dataset, with the paired tests of
    /// compare across all of them, grouped by the settings that change predictions; no
    /// model is run.
    Leaderboard(store_cmds::LeaderboardArgs),
    /// Write a run's per-example predictions (the input of `metrics`) and per-sample logs
    /// (prompts, continuations' log-likelihoods, generated text, truncation) with its
    /// provenance.
    Export(store_cmds::ExportArgs),
    /// Score prediction files (JSONL/CSV/TSV) from any model: every metric with bootstrap
    /// confidence intervals, and paired significance tests between files.
    Metrics(metrics_cmd::MetricsArgs),
    /// Sentence embeddings from an encoder (pooling as the model folder says).
    Embed(encoder_cmds::EmbedArgs),
    /// Token and word attributions of classifiers' predictions (integrated gradients,
    /// input x gradient, saliency, occlusion, Shapley sampling), equal to Captum's, side by
    /// side per model.
    Explain(explain_cmd::ExplainArgs),
    /// Class probabilities from a classifier (a model with a classification head).
    Predict(encoder_cmds::PredictArgs),
    /// Tokenize texts with one or more models' tokenizers and compare them side by side.
    Tokenize(encoder_cmds::TokenizeArgs),
    /// Parameters, size, FLOPs per example, latency, throughput and peak memory of a model.
    Profile(encoder_cmds::ProfileArgs),
}

fn main() -> ExitCode {
    let matches = numbers::allow_negative_values(Cli::command()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Metrics(args) => metrics_cmd::run(args),
        Command::Compare(args) => compare_cmd::run(args),
        Command::Demo(args) => compare_cmd::demo(args),
        Command::Tune(args) => tune_cmd::run(args),
        Command::Runs(args) => store_cmds::runs(args),
        Command::Report(args) => store_cmds::report(args),
        Command::Leaderboard(args) => store_cmds::leaderboard(args),
        Command::Export(args) => store_cmds::export(args),
        Command::Embed(args) => encoder_cmds::embed(args),
        Command::Predict(args) => encoder_cmds::predict(args),
        Command::Explain(args) => explain_cmd::run(args),
        Command::Tokenize(args) => encoder_cmds::tokenize(args),
        Command::Profile(args) => encoder_cmds::profile(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let bad_input = e
                .downcast_ref::<lmcompare_pipeline::Error>()
                .is_some_and(lmcompare_pipeline::Error::is_bad_input);
            // Messages quote data (labels, ids, paths): no control character reaches the terminal.
            eprintln!(
                "error: {}",
                lmcompare_report::escape_controls(&format!("{e:#}"))
            );
            ExitCode::from(if bad_input { 2 } else { 1 })
        }
    }
}
