//! Rendering of a generation comparison (exact match and token F1).

use serde_json::Value;

use crate::text::{aligned, interval, markdown_table, num, pval};

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
    let mut out = format!(
        "generate on {} ({} of {} prompts scored; greedy, at most {} tokens), run {}\n\n",
        d["path"].as_str().unwrap_or(""),
        d["scored_prompts"],
        d["prompts"],
        doc["method"]["max_tokens"],
        doc["run"]["id"]
    );
    if markdown {
        out = format!("# lmcompare generate\n\n{out}");
        out.push_str(&markdown_table(&header, &rows));
    } else {
        let mut all = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
        all.extend(rows);
        out.push_str(&aligned(&all));
    }
    out.push('\n');
    for p in doc["pairwise"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{} {} vs {}: Δ F1 {} {}, p_holm {} — {}\n",
            if markdown { "-" } else { "*" },
            p["a"].as_str().unwrap_or(""),
            p["b"].as_str().unwrap_or(""),
            num(f(&p["delta_f1"])),
            interval(f(&p["ci"]["low"]), f(&p["ci"]["high"])),
            pval(f(&p["p_holm"])),
            p["verdict"].as_str().unwrap_or("")
        ));
    }
    if let Some(n) = doc["excluded_examples"]["count"]
        .as_u64()
        .filter(|n| *n > 0)
    {
        out.push_str(&format!(
            "{n} prompt(s) excluded: requests failed past their retries; rerun to retry them\n"
        ));
    }
    out
}
