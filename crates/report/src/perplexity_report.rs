//! Rendering of a perplexity comparison.

use serde_json::Value;

use crate::text::{interval, num};

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// Terminal table (`markdown = false`) or Markdown.
pub fn render_perplexity(doc: &Value, markdown: bool) -> String {
    let header = [
        "model",
        "bits/byte",
        "95% CI",
        "token ppl",
        "95% CI",
        "tokens",
        "bytes",
        "sent",
    ];
    let rows: Vec<Vec<String>> = doc["models"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let p = &m["perplexity"];
            let c = &p["ci"];
            vec![
                m["name"].as_str().unwrap_or("").to_owned(),
                num(f(&p["bits_per_byte"])),
                interval(
                    f(&c["bits_per_byte"]["low"]),
                    f(&c["bits_per_byte"]["high"]),
                ),
                num(f(&p["token_perplexity"])),
                interval(
                    f(&c["token_perplexity"]["low"]),
                    f(&c["token_perplexity"]["high"]),
                ),
                p["tokens"].to_string(),
                p["bytes"].to_string(),
                format!(
                    "{}/{}",
                    m["efficiency"]["requests_sent"], m["efficiency"]["requests"]
                ),
            ]
        })
        .collect();
    let d = &doc["dataset"];
    let intro = format!(
        "perplexity on {} ({} of {} documents scored, {} windows), run {}\n\n",
        d["path"].as_str().unwrap_or(""),
        d["scored_documents"],
        d["documents"],
        d["windows"],
        doc["run"]["id"]
    );
    crate::text::unit_task_body(
        doc,
        markdown,
        "perplexity",
        &intro,
        &header,
        &rows,
        ("delta_bits_per_byte", "Δ bits/byte"),
        "document(s)",
    )
}
