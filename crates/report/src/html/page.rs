//! The page around the sections: inline CSS (light, dark, print), a content security policy
//! that allows no network request and only the page's own script (by its hash), the
//! report's JSON in a `<script type="application/json">` block, and a little vanilla JS for
//! sorting tables and filtering examples. Everything reads without JS.

use std::fmt::Write;

use base64::Engine;
use sha2::{Digest, Sha256};

use super::escape::{esc, script_json};

/// One titled section; `id` is ours (never from the data).
pub struct Section {
    pub id: &'static str,
    pub heading: String,
    pub html: String,
}

pub struct Page {
    pub title: String,
    pub subtitle: String,
    pub sections: Vec<Section>,
    pub data: serde_json::Value,
}

impl Page {
    pub fn push(&mut self, id: &'static str, heading: &str, html: String) {
        if !html.is_empty() {
            self.sections.push(Section {
                id,
                heading: heading.to_owned(),
                html,
            });
        }
    }

    pub fn finish(self) -> String {
        let hash =
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(SCRIPT.as_bytes()));
        let mut out = String::with_capacity(64 * 1024);
        let _ = write!(
            out,
            r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'sha256-{hash}'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="lmcompare {version}">
<link rel="icon" href="data:,">
<title>{title}</title>
<style>{CSS}</style>
</head><body>
<header class="top"><h1>{title}</h1><p class="subtitle">{subtitle}</p><nav>"#,
            version = env!("CARGO_PKG_VERSION"),
            title = esc(&self.title),
            subtitle = esc(&self.subtitle),
        );
        for s in &self.sections {
            let _ = write!(out, r##"<a href="#{}">{}</a>"##, s.id, esc(&s.heading));
        }
        out.push_str("</nav></header>\n<main>\n");
        for s in &self.sections {
            let _ = write!(
                out,
                "<section id=\"{}\"><h2>{}</h2>\n{}\n</section>\n",
                s.id,
                esc(&s.heading),
                s.html
            );
        }
        let _ = write!(
            out,
            "</main>\n<footer>Made by lmcompare {}. The report's data: the JSON block <code>#lmcompare-report</code> in this file.</footer>\n<script type=\"application/json\" id=\"lmcompare-report\">{}</script>\n<script>{SCRIPT}</script>\n</body></html>\n",
            env!("CARGO_PKG_VERSION"),
            script_json(&self.data)
        );
        out
    }
}

const CSS: &str = r#"
:root{--bg:#ffffff;--fg:#1b1f24;--muted:#5c6670;--line:#d5dae0;--grid:#eceff3;--panel:#f6f8fa;--accent:#0b62d6;--good:#1a7f37;--bad:#c62828;--cell:#0b62d6;
--c0:#0072b2;--c1:#d55e00;--c2:#009e73;--c3:#cc79a7;--c4:#e69f00;--c5:#56b4e9;--c6:#7f7f7f;--c7:#8c564b;color-scheme:light dark}
@media (prefers-color-scheme: dark){:root{--bg:#111417;--fg:#e6e9ec;--muted:#9aa4ae;--line:#3a4149;--grid:#242a30;--panel:#1a1e23;--accent:#5ea2ff;--good:#56d364;--bad:#ff7b72;--cell:#5ea2ff;
--c0:#56b4e9;--c1:#ff8c42;--c2:#3fd0a0;--c3:#e39ac8;--c4:#f0c040;--c5:#9ad4f5;--c6:#b0b0b0;--c7:#c49c94}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
header.top{padding:20px 28px 8px;border-bottom:1px solid var(--line)}
h1{margin:0 0 2px;font-size:24px}h2{font-size:19px;margin:30px 0 10px;padding-top:8px;border-top:1px solid var(--line)}h3{font-size:16px;margin:18px 0 6px}
.subtitle{margin:0 0 8px;color:var(--muted)}
nav a{margin-right:14px;color:var(--accent);text-decoration:none;font-size:14px}
main{padding:0 28px 28px;max-width:1500px}
footer{padding:16px 28px;color:var(--muted);font-size:13px;border-top:1px solid var(--line)}
.glance{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:12px;margin:14px 0}
.glance div{overflow-wrap:anywhere;background:var(--panel);border:1px solid var(--line);border-radius:8px;padding:10px 14px}
.glance b{display:block;font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted)}
ul.verdicts li{margin:2px 0}
table{border-collapse:collapse;margin:8px 0 14px;font-size:13.5px}
th,td{border-bottom:1px solid var(--line);padding:4px 10px;text-align:left;vertical-align:top}
th{background:var(--panel);position:sticky;top:0}
table.sortable th{cursor:pointer;user-select:none}table.sortable th.sorted-asc::after{content:" ▲"}table.sortable th.sorted-desc::after{content:" ▼"}
tbody td:first-child{white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.best{font-weight:700;color:var(--good)}td.best::after{content:" ★"}
.ci{color:var(--muted);font-size:12px;font-weight:400}
td.text{max-width:560px;white-space:pre-wrap;word-break:break-word}
td.right{color:var(--good)}td.wrong{color:var(--bad)}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;font-size:14px}dl.meta dt{color:var(--muted)}dl.meta dd{margin:0;word-break:break-all}
.charts{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
figure{margin:6px 0 12px}figcaption{font-size:13px;color:var(--muted);max-width:680px}
svg.chart{max-width:100%;height:auto;font-size:12px}
svg .axis{stroke:var(--fg);stroke-width:1}svg .grid{stroke:var(--grid);stroke-width:1}
svg .tick,svg .note,svg .count{fill:var(--muted)}svg .count{font-size:10px}svg .axis-title{fill:var(--fg);font-weight:600}
svg .label{fill:var(--fg)}svg .strong{font-weight:700}
svg .whisker{stroke:var(--fg);stroke-width:1.6}svg .dot{fill:var(--accent);stroke:var(--bg);stroke-width:1}svg .dot.strong{fill:var(--good)}
svg .zero{stroke:var(--bad);stroke-width:1.4;stroke-dasharray:4 3}svg .diagonal{stroke:var(--muted);stroke-dasharray:4 3}
svg .front{fill:none;stroke:var(--good);stroke-width:2;stroke-opacity:.6}
svg .cell{fill:var(--cell)}svg .cell-text{fill:var(--fg);font-size:11px}svg .cell-text.on{fill:#fff}
svg .bar{fill:var(--accent);fill-opacity:.55;stroke:var(--accent)}svg .gapdot{fill:var(--bad)}
svg .series{fill:none;stroke-width:1.8}svg .dashed{stroke-dasharray:5 4}
svg .c0{stroke:var(--c0)}svg .c1{stroke:var(--c1)}svg .c2{stroke:var(--c2)}svg .c3{stroke:var(--c3)}svg .c4{stroke:var(--c4)}svg .c5{stroke:var(--c5)}svg .c6{stroke:var(--c6)}svg .c7{stroke:var(--c7)}
svg .dot.c0{fill:var(--c0)}svg .dot.c1{fill:var(--c1)}svg .dot.c2{fill:var(--c2)}svg .dot.c3{fill:var(--c3)}svg .dot.c4{fill:var(--c4)}svg .dot.c5{fill:var(--c5)}svg .dot.c6{fill:var(--c6)}svg .dot.c7{fill:var(--c7)}
details.model{border:1px solid var(--line);border-radius:8px;padding:4px 14px;margin:10px 0}details.model>summary{cursor:pointer;font-weight:600;padding:6px 0}
.controls{margin:6px 0;display:flex;gap:10px;align-items:center;flex-wrap:wrap}
.controls select,.controls input{font:inherit;padding:3px 6px;background:var(--bg);color:var(--fg);border:1px solid var(--line);border-radius:4px}
.warn{color:var(--bad)}.muted{color:var(--muted)}code{font-size:12.5px}
@media print{nav,.controls,footer{display:none}body{font-size:11pt}main{max-width:none}section{break-inside:avoid-page}th{position:static}details.model{break-inside:avoid}}
"#;

/// Sorting, example filtering, opening every model section for printing. It touches only
/// existing elements and text (no innerHTML), so the data cannot become code.
const SCRIPT: &str = r#"
(function(){
function val(td){var v=td.getAttribute('data-v');if(v!==null&&v!==''&&!isNaN(+v))return +v;return (td.textContent||'').toLowerCase();}
document.querySelectorAll('table.sortable').forEach(function(t){
 var ths=t.querySelectorAll('thead th');
 ths.forEach(function(th,i){th.addEventListener('click',function(){
  var asc=!th.classList.contains('sorted-asc');
  ths.forEach(function(o){o.classList.remove('sorted-asc','sorted-desc');});
  th.classList.add(asc?'sorted-asc':'sorted-desc');
  var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);
  rows.sort(function(a,b){var x=val(a.cells[i]),y=val(b.cells[i]);if(typeof x!==typeof y){x=String(x);y=String(y);}return (x<y?-1:x>y?1:0)*(asc?1:-1);});
  rows.forEach(function(r){body.appendChild(r);});
 });});
});
var f=document.getElementById('ex-filter'),q=document.getElementById('ex-search'),n=document.getElementById('ex-count');
function apply(){var t=document.getElementById('examples-table');if(!t)return;var mode=f?f.value:'all',s=q?q.value.toLowerCase():'',shown=0;
 Array.prototype.forEach.call(t.tBodies[0].rows,function(r){var ok=(mode==='all'||(mode==='disagree'&&r.getAttribute('data-disagree')==='1')||(mode==='wrong'&&r.getAttribute('data-wrong')==='1'))&&(!s||(r.textContent||'').toLowerCase().indexOf(s)>=0);r.hidden=!ok;if(ok)shown++;});
 if(n)n.textContent=shown+' shown';}
if(f)f.addEventListener('change',apply);if(q)q.addEventListener('input',apply);apply();
window.addEventListener('beforeprint',function(){document.querySelectorAll('details').forEach(function(d){d.open=true;});});
})();
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_only_the_pages_own_script() {
        let page = Page {
            title: "t</title><script>x</script>".into(),
            subtitle: String::new(),
            sections: Vec::new(),
            data: serde_json::json!({"x": "</script><script>alert(1)</script>"}),
        };
        let html = page.finish();
        let hash =
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(SCRIPT.as_bytes()));
        assert!(html.contains(&format!("script-src 'sha256-{hash}'")));
        assert_eq!(
            html.matches("<script").count(),
            2,
            "the JSON block and our script"
        );
        assert_eq!(html.matches("</script>").count(), 2);
        assert!(html.contains("default-src 'none'"));
    }
}
