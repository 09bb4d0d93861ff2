//! Where documents go: the format (a table on a terminal, JSON otherwise), stdout, and the
//! report files of `--out`. Shared by every command; no command logic here.

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::Result;
use lmcompare_pipeline::bad;
use lmcompare_pipeline::compare::Document;
use lmcompare_report::Format;
use serde_json::Value;

/// The format asked for, else a table on a terminal and JSON otherwise.
pub fn resolve_format(requested: Option<Format>) -> Format {
    requested.unwrap_or(if std::io::stdout().is_terminal() {
        Format::Table
    } else {
        Format::Json
    })
}

/// Writes a document to stdout with data's control characters escaped (JSON escapes, so a
/// JSON document is unchanged in meaning and tables cannot drive the terminal).
pub fn emit(text: &str) -> Result<()> {
    let text = lmcompare_report::escape_controls(text);
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        // A closed pipe (`| head`) is not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

pub fn pretty(doc: &Value) -> Result<String> {
    Ok(serde_json::to_string_pretty(doc)? + "\n")
}

/// Writes `files` (name, contents) into `dir`, creating it.
pub fn write_files(dir: &Path, files: &[(&str, String)]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| bad!("{}: cannot create: {e}", dir.display()))?;
    for (name, text) in files {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

/// `--format html` is for the comparison reports; the inspection commands refuse it rather
/// than print something else.
pub fn refuse_html(format: Option<Format>, command: &str) -> Result<()> {
    if format == Some(Format::Html) {
        return Err(bad!(
            "{command}: --format html is for compare, tune, metrics and report; use table, json or markdown"
        )
        .into());
    }
    Ok(())
}

/// HTML to stdout, or (with `--out`) a note on stderr of where report.html was written.
fn emit_html(html: &str, out: Option<&Path>) -> Result<()> {
    match out {
        Some(dir) => {
            eprintln!(
                "wrote {}",
                lmcompare_report::escape_controls(&dir.join("report.html").display().to_string())
            );
            Ok(())
        }
        None => emit(html),
    }
}

/// A `compare` (or stored) report in `format`; with `out`, report.json, report.md and
/// report.html too.
pub fn render_comparison(doc: &Document, format: Option<Format>, out: Option<&Path>) -> Result<()> {
    let json = doc.to_json()?;
    let markdown = || match doc {
        Document::Compare(r) => lmcompare_report::render_compare_markdown(r),
        Document::Units(v) if v["task"] == "perplexity" => {
            lmcompare_report::render_perplexity(v, true)
        }
        Document::Units(v) => lmcompare_report::render_generate(v, true),
    };
    let html = || match doc {
        Document::Compare(r) => lmcompare_report::render_compare_html(r),
        Document::Units(v) => lmcompare_report::render_units_html(v),
    };
    if let Some(dir) = out {
        write_files(
            dir,
            &[
                ("report.json", pretty(&json)?),
                ("report.md", markdown()),
                ("report.html", html()),
            ],
        )?;
    }
    match resolve_format(format) {
        Format::Json => emit(&pretty(&json)?),
        Format::Markdown => emit(&markdown()),
        Format::Html => emit_html(&html(), out),
        Format::Table => emit(&match doc {
            Document::Compare(r) => lmcompare_report::render_compare_table(r),
            Document::Units(v) if v["task"] == "perplexity" => {
                lmcompare_report::render_perplexity(v, false)
            }
            Document::Units(v) => lmcompare_report::render_generate(v, false),
        }),
    }
}

/// A `tune` report in `format`; with `out`, tune.json, tune.md and report.html too.
pub fn render_tune(doc: &Value, format: Option<Format>, out: Option<&Path>) -> Result<()> {
    if let Some(dir) = out {
        write_files(
            dir,
            &[
                ("tune.json", pretty(doc)?),
                ("tune.md", lmcompare_report::render_tune_markdown(doc)),
                ("report.html", lmcompare_report::render_tune_html(doc)),
            ],
        )?;
    }
    match resolve_format(format) {
        Format::Json => emit(&pretty(doc)?),
        Format::Table => emit(&lmcompare_report::render_tune_table(doc)),
        Format::Markdown => emit(&lmcompare_report::render_tune_markdown(doc)),
        Format::Html => emit_html(&lmcompare_report::render_tune_html(doc), out),
    }
}
