//! Rendering of a perplexity comparison.

use serde_json::Value;

use crate::text::{aligned, interval, markdown_table, num, pval};

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
    let mut out = format!(
        "perplexity on {} ({} of {} documents scored, {} windows), run {}\n\n",
        d["path"].as_str().unwrap_or(""),
        d["scored_documents"],
        d["documents"],
        d["windows"],
        doc["run"]["id"]
    );
    if markdown {
        out = format!("# lmcompare perplexity\n\n{out}");
        out.push_str(&markdown_table(&header, &rows));
    } else {
        let mut all = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
        all.extend(rows);
        out.push_str(&aligned(&all));
    }
    out.push('\n');
    for p in doc["pairwise"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{} {} vs {}: Δ bits/byte {} {}, p_holm {} — {}\n",
            if markdown { "-" } else { "*" },
            p["a"].as_str().unwrap_or(""),
            p["b"].as_str().unwrap_or(""),
            num(f(&p["delta_bits_per_byte"])),
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
            "{n} document(s) excluded: requests failed past their retries; rerun to retry them\n"
        ));
    }
    out
}
