//! Renders lmcompare results for people (terminal table, Markdown) and programs (JSON).
//!
//! JSON keys are a contract: snake_case, named after scikit-learn's metrics.

mod compare_report;
pub mod doc;
mod explain_report;
mod generate_report;
pub mod html;
mod inspect_report;
mod leaderboard_report;
mod metrics_report;
mod perplexity_report;
mod text;
mod tune_report;

pub use compare_report::{render_compare_markdown, render_compare_table};
pub use explain_report::{render_explain_markdown, render_explain_table};
pub use generate_report::render_generate;
pub use html::{
    render_compare_html, render_explain_html, render_leaderboard_html, render_metrics_html,
    render_tune_html, render_units_html,
};
pub use inspect_report::{
    render_embed_table, render_predict_table, render_profile_table, render_tokenize_table,
};
pub use leaderboard_report::{render_leaderboard_markdown, render_leaderboard_table};
pub use metrics_report::{metrics_json, render_markdown, render_table, verdict};
pub use perplexity_report::render_perplexity;
pub use text::{escape_controls, markdown_escape};
pub use tune_report::{render_tune_markdown, render_tune_table};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Markdown,
    /// One self-contained HTML file with charts.
    Html,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "markdown" | "md" => Ok(Format::Markdown),
            "html" => Ok(Format::Html),
            _ => Err(format!(
                "--format must be table, json, markdown or html, not {s:?}"
            )),
        }
    }
}
