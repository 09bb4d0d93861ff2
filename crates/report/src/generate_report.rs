//! Rendering of a generation comparison (exact match and token F1).

use serde_json::Value;

use crate::text::{interval, num};

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// Terminal table (`markdown = false`) or Markdown.
pub fn render_generate(doc: &Value, markdown: bool) -> String {
    let header = [
        "model",
        "exact match",
        "95% CI",
        "token F1",
        "95% CI",
        "generated now",
    ];
    let rows: Vec<Vec<String>> = doc["models"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let g = &m["generate"];
            let c = &g["ci"];
            vec![
                m["name"].as_str().unwrap_or("").to_owned(),
                num(f(&g["exact_match"])),
                interval(f(&c["exact_match"]["low"]), f(&c["exact_match"]["high"])),
                num(f(&g["f1"])),
                interval(f(&c["f1"]["low"]), f(&c["f1"]["high"])),
                format!(
                    "{}/{}",
                    m["efficiency"]["generated_now"], m["efficiency"]["prompts"]
                ),
            ]
        })
        .collect();
    let d = &doc["dataset"];
    let intro = format!(
        "generate on {} ({} of {} prompts scored; greedy, at most {} tokens), run {}\n\n",
        d["path"].as_str().unwrap_or(""),
        d["scored_prompts"],
        d["prompts"],
        doc["method"]["max_tokens"],
        doc["run"]["id"]
    );
    crate::text::unit_task_body(
        doc,
        markdown,
        "generate",
        &intro,
        &header,
        &rows,
        ("delta_f1", "Δ F1"),
        "prompt(s)",
    )
}
