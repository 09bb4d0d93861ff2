//! The terminal table and Markdown exporters of a `leaderboard` document: per group of
//! settings, the ranking with its uncertainty, then the group's full comparison.

use crate::doc::{Leaderboard, LeaderboardGroup};
use crate::text::{aligned, interval, markdown_escape, markdown_table, num};

fn opt(v: Option<f64>) -> f64 {
    v.unwrap_or(f64::NAN)
}

fn ranking_rows(lb: &Leaderboard, g: &LeaderboardGroup) -> (Vec<String>, Vec<Vec<String>>) {
    let header = vec![
        "rank".to_owned(),
        "model".to_owned(),
        format!("{} [95% CI]", lb.metric),
        "P(best)".to_owned(),
        "mean rank [95%]".to_owned(),
        "examples".to_owned(),
        "runs".to_owned(),
        "also run as".to_owned(),
        "hash".to_owned(),
    ];
    let rows = g
        .ranking
        .iter()
        .map(|r| {
            let runs: Vec<String> = r.runs.iter().map(i64::to_string).collect();
            let other: Vec<&str> = r
                .names
                .iter()
                .map(String::as_str)
                .filter(|n| *n != r.model)
                .collect();
            vec![
                format!("{}{}", r.rank, if r.pareto { "*" } else { "" }),
                r.model.clone(),
                format!(
                    "{} {}",
                    num(opt(r.metric)),
                    interval(opt(r.ci_low), opt(r.ci_high))
                ),
                r.p_best.map_or("n/a".to_owned(), |p| format!("{p:.3}")),
                match (r.mean_rank, r.rank_low, r.rank_high) {
                    (Some(m), Some(l), Some(h)) => format!("{m:.2} [{l}, {h}]"),
                    _ => "n/a".to_owned(),
                },
                r.stored_examples.to_string(),
                runs.join(","),
                other.join(", "),
                r.content_hash.chars().take(12).collect(),
            ]
        })
        .collect();
    (header, rows)
}

fn group_title(lb: &Leaderboard, g: &LeaderboardGroup) -> String {
    let differs: Vec<String> = g.differs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let runs: Vec<String> = g.runs.iter().map(i64::to_string).collect();
    format!(
        "group {}: {} on {} · {} model(s) · {} common test examples · runs {}{}",
        g.group,
        g.task,
        lb.dataset.path.display(),
        g.ranking.len(),
        g.comparison.dataset.evaluated_test_examples,
        runs.join(","),
        if differs.is_empty() {
            String::new()
        } else {
            format!(
                " · settings unlike the other groups: {}",
                differs.join(", ")
            )
        }
    )
}

const LEGEND: &str = "P(best): share of paired bootstrap resamples in which the model is best; * the Pareto set (quality vs FLOPs per example). Nothing was run: every number comes from the store.";

pub fn render_leaderboard_table(lb: &Leaderboard) -> String {
    let mut s = format!(
        "leaderboard of {} (sha256 {}…) on {}, {} group(s) of settings\n{LEGEND}\n",
        lb.dataset.path.display(),
        lb.dataset.sha256.chars().take(12).collect::<String>(),
        lb.metric,
        lb.groups.len()
    );
    for g in &lb.groups {
        s.push_str(&format!("\n== {} ==\n", group_title(lb, g)));
        let (h, r) = ranking_rows(lb, g);
        let mut rows = vec![h];
        rows.extend(r);
        s.push_str(&aligned(&rows));
        for n in &g.notes {
            s.push_str(&format!("note: {n}\n"));
        }
        s.push('\n');
        s.push_str(&crate::render_compare_table(&g.comparison));
    }
    s
}

pub fn render_leaderboard_markdown(lb: &Leaderboard) -> String {
    let mut s = format!(
        "# lmcompare leaderboard: {}\n\nsha256 `{}` · ranked on {} · {} group(s) of settings\n\n{}\n",
        markdown_escape(&lb.dataset.path.display().to_string()),
        lb.dataset.sha256,
        lb.metric,
        lb.groups.len(),
        markdown_escape(LEGEND)
    );
    for g in &lb.groups {
        s.push_str(&format!(
            "\n## {}\n\n",
            markdown_escape(&group_title(lb, g))
        ));
        let (h, r) = ranking_rows(lb, g);
        let hr: Vec<&str> = h.iter().map(String::as_str).collect();
        s.push_str(&markdown_table(&hr, &r));
        for n in &g.notes {
            s.push_str(&format!("\n- {}", markdown_escape(n)));
        }
        s.push('\n');
        // The group's comparison, its headings one level down.
        let body = crate::render_compare_markdown(&g.comparison);
        for line in body.lines() {
            if line.starts_with('#') {
                s.push_str(&format!("##{line}\n"));
            } else {
                s.push_str(line);
                s.push('\n');
            }
        }
    }
    s
}
