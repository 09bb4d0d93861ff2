//! Terminal views of `embed`, `predict`, `tokenize` and `profile` documents.

use serde_json::Value;

fn ellipsis(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let cut: String = s.chars().take(n - 1).collect();
        format!("{cut}…")
    }
}

/// The first six dimensions of each text's embedding.
pub fn render_embed_table(texts: &[String], d: &Value) -> String {
    let mut s = format!(
        "{} ({}, {} pooling, normalized: {}), dim {}\n",
        d["model"].as_str().unwrap_or(""),
        d["backend"].as_str().unwrap_or(""),
        d["pooling"].as_str().unwrap_or(""),
        d["normalized"],
        d["dim"]
    );
    let empty = Vec::new();
    for (t, e) in texts
        .iter()
        .zip(d["embeddings"].as_array().unwrap_or(&empty))
    {
        let head: Vec<String> = e
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .take(6)
            .map(|v| format!("{:+.5}", v.as_f64().unwrap_or(f64::NAN)))
            .collect();
        s.push_str(&format!(
            "{:<40}  [{} ...]\n",
            ellipsis(t, 40),
            head.join(", ")
        ));
    }
    s
}

/// Each text's predicted label and its probability.
pub fn render_predict_table(texts: &[String], d: &Value) -> String {
    let mut s = String::new();
    let empty = Vec::new();
    for (t, p) in texts
        .iter()
        .zip(d["predictions"].as_array().unwrap_or(&empty))
    {
        let label = p["label"].as_str().unwrap_or_default();
        let conf = p["probabilities"][label].as_f64().unwrap_or(f64::NAN);
        s.push_str(&format!("{:<50}  {label} ({conf:.3})\n", ellipsis(t, 50)));
    }
    s
}

/// Every text's tokens under each model, then the tokenizers' statistics.
pub fn render_tokenize_table(d: &Value) -> String {
    let empty = Vec::new();
    let texts: Vec<&str> = d["texts"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let models = d["models"].as_array().unwrap_or(&empty);
    let mut s = String::new();
    for (i, t) in texts.iter().enumerate() {
        s.push_str(&format!("text {}: {}\n", i + 1, ellipsis(t, 100)));
        for m in models {
            let toks: Vec<&str> = m["tokens"][i]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
                .unwrap_or_default();
            s.push_str(&format!(
                "  {:<30} {:>4} tokens  {}\n",
                ellipsis(m["name"].as_str().unwrap_or(""), 30),
                toks.len(),
                toks.join(" ")
            ));
        }
    }
    s.push_str(
        "\nmodel                           vocab  tokens/word  unk rate  truncated  mean tokens\n",
    );
    for m in models {
        let st = &m["stats"];
        s.push_str(&format!(
            "{:<30} {:>6}  {:>11.3}  {:>8.4}  {:>9.3}  {:>11.2}\n",
            ellipsis(m["name"].as_str().unwrap_or(""), 30),
            m["vocab_size"],
            st["tokens_per_word"].as_f64().unwrap_or(f64::NAN),
            st["unk_rate"].as_f64().unwrap_or(f64::NAN),
            st["truncated_fraction"].as_f64().unwrap_or(f64::NAN),
            st["mean_tokens"].as_f64().unwrap_or(f64::NAN),
        ));
    }
    s
}

/// The cost profile of one model.
pub fn render_profile_table(d: &Value) -> String {
    let f = |k: &str| d[k].as_f64().unwrap_or(f64::NAN);
    let mut s = format!(
        "{} ({}, {} threads)\n",
        d["model"].as_str().unwrap_or(""),
        d["backend"].as_str().unwrap_or(""),
        d["threads"]
    );
    s.push_str(&format!(
        "parameters          {:>14}  ({})\n",
        d["parameters"],
        d["parameter_source"].as_str().unwrap_or("")
    ));
    if let Some(c) = d["components"].as_object() {
        for (name, v) in c {
            s.push_str(&format!("  {name:<18}{:>14}\n", v["parameters"]));
        }
    }
    s.push_str(&format!(
        "size                {:>14} bytes\n",
        d["size_bytes"]
    ));
    s.push_str(&format!(
        "FLOPs / example     {:>14.3e}\n",
        f("flops_per_example")
    ));
    s.push_str(&format!(
        "tokens / example    {:>14.1}\n",
        f("tokens_per_example")
    ));
    s.push_str(&format!(
        "latency p50/p95/p99 {:>8.2} / {:.2} / {:.2} ms per batch ({} timed, {} warm-up)\n",
        f("latency_ms_p50"),
        f("latency_ms_p95"),
        f("latency_ms_p99"),
        d["timed_batches"],
        d["warmup_batches"]
    ));
    s.push_str(&format!(
        "throughput          {:>14.1} examples/s, {:.0} tokens/s\n",
        f("throughput_per_s"),
        f("tokens_per_s")
    ));
    s.push_str(&format!(
        "peak RSS            {:>14.1} MiB\n",
        f("peak_rss_bytes") / 1048576.0
    ));
    s
}
