//! `explain`: arguments → ExplainConfig → the pipeline's attributions → an exporter.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use lmcompare_engine::attribution::TargetScale;
use lmcompare_pipeline::explain::{explain, ExplainConfig, ExplainSettings, IgRule, Method};
use lmcompare_report::Format;

use crate::output::{emit, pretty, resolve_format, write_files};
use crate::shared_args::ColumnArgs;

#[derive(Args)]
pub struct ExplainArgs {
    /// NAME=SPEC: an encoder (a folder with config.json and weights, hf:org/name, or an
    /// ONNX graph), a local decoder (a .gguf file or a causal-LM folder) or a remote model
    /// (openai:URL#MODEL). Repeat to put models side by side.
    #[arg(long = "model", required = true, value_name = "NAME=SPEC")]
    models: Vec<String>,
    /// A text to explain (repeatable).
    #[arg(long = "text", value_name = "TEXT")]
    texts: Vec<String>,
    /// Labelled data: its test split (or --ids) is explained.
    #[arg(long)]
    data: Option<PathBuf>,
    #[command(flatten)]
    cols: ColumnArgs,
    /// Only these example ids (comma-separated, any split).
    #[arg(long, value_delimiter = ',')]
    ids: Vec<String>,
    #[arg(long, value_parser = crate::numbers::positive)]
    limit: Option<usize>,
    #[arg(long, value_parser = crate::numbers::fraction, default_value_t = 0.2)]
    test_size: f64,
    #[arg(long, default_value = "integrated-gradients")]
    method: Method,
    /// predicted, gold (with --data) or a label of the model.
    #[arg(long, default_value = "predicted")]
    target: lmcompare_pipeline::explain::TargetChoice,
    /// Explain the target's log-probability instead of its probability.
    #[arg(long)]
    log_prob: bool,
    /// Integrated gradients: integration steps.
    #[arg(long, value_parser = crate::numbers::positive, default_value_t = 50)]
    n_steps: usize,
    /// Integrated gradients: Captum's integration rule.
    #[arg(long, default_value = "gausslegendre")]
    ig_rule: IgRule,
    /// Interpolated inputs per forward/backward pass (bounds memory on long texts).
    #[arg(long, value_parser = crate::numbers::positive, default_value_t = 16)]
    internal_batch_size: usize,
    /// Shapley value sampling: permutations (Captum's default 25).
    #[arg(long, value_parser = crate::numbers::positive, default_value_t = 25)]
    samples: usize,
    #[arg(long, value_parser = crate::numbers::seed, default_value_t = 0)]
    seed: u64,
    #[arg(long, value_parser = crate::numbers::max_length)]
    max_length: Option<usize>,
    /// The head that explains an encoder: its own classification head (auto; a probe for
    /// encoders without one), a linear probe fitted on --data's train split, or zero-shot
    /// similarity to the labels' descriptions (as compare --task probe / zero-shot).
    #[arg(long, default_value = "auto")]
    head: lmcompare_pipeline::explain::heads::HeadChoice,
    /// LABEL=DESCRIPTION for --head zero-shot (repeatable; default: the label itself).
    #[arg(long = "label-desc", value_name = "LABEL=TEXT")]
    label_desc: Vec<String>,
    /// The store whose answer cache generative models' scoring calls go through (a text
    /// `compare` already scored costs no new request).
    #[arg(long, default_value = "lmcompare.db")]
    db: PathBuf,
    /// table (coloured words on a terminal), json, markdown or html.
    #[arg(long)]
    format: Option<Format>,
    /// Also write explain.json, explain.md and explain.html into this folder.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The coloured view as it is: the renderer escaped every piece of data in it.
fn emit_coloured(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

pub fn run(args: ExplainArgs) -> Result<()> {
    let cfg = ExplainConfig {
        models: args.models,
        texts: args.texts,
        data: args.data,
        cols: args.cols.config(),
        ids: args.ids,
        limit: args.limit,
        test_size: args.test_size,
        target: args.target,
        max_length: args.max_length,
        db: args.db,
        head: args.head,
        label_desc: args.label_desc,
        settings: ExplainSettings {
            method: args.method,
            n_steps: args.n_steps,
            rule: args.ig_rule,
            internal_batch_size: args.internal_batch_size,
            samples: args.samples,
            seed: args.seed,
            scale: if args.log_prob {
                TargetScale::LogProbability
            } else {
                TargetScale::Probability
            },
        },
    };
    let report = explain(&cfg)?;
    for w in &report.warnings {
        eprintln!("warning: {}", lmcompare_report::escape_controls(w));
    }
    for n in &report.notes {
        eprintln!("note: {}", lmcompare_report::escape_controls(n));
    }
    let doc = serde_json::to_value(&report)?;
    if let Some(dir) = &args.out {
        write_files(
            dir,
            &[
                ("explain.json", pretty(&doc)?),
                (
                    "explain.md",
                    lmcompare_report::render_explain_markdown(&doc),
                ),
                ("explain.html", lmcompare_report::render_explain_html(&doc)),
            ],
        )?;
    }
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    match resolve_format(args.format) {
        Format::Json => emit(&pretty(&doc)?),
        Format::Markdown => emit(&lmcompare_report::render_explain_markdown(&doc)),
        Format::Html => emit(&lmcompare_report::render_explain_html(&doc)),
        Format::Table if color => {
            emit_coloured(&lmcompare_report::render_explain_table(&doc, true))
        }
        Format::Table => emit(&lmcompare_report::render_explain_table(&doc, false)),
    }
}
