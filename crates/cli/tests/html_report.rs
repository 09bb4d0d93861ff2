//! The HTML report in a real browser: headless Chromium opens the reports of `compare`
//! (classification with payload texts, labels and model names; multiple choice; perplexity),
//! `metrics` and `tune`, served from 127.0.0.1 by the test with every other request caught
//! by the test's own proxy. Checked: no console message, no request but the page itself,
//! every chart section present and drawn, the payloads shown as text and never run, the
//! charts there with JavaScript off, a screenshot that is not blank, light and dark.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::{Arc, Mutex};

mod common;
use common::{lmcompare, root, tiny};

const PAYLOAD_SCRIPT: &str = "</script><script>document.title='pwned'</script>";
const PAYLOAD_IMG: &str = "<img src=x onerror=\"document.title='pwned'\">";
/// A model name cannot hold `=` (NAME=SPEC), so its payload does without.
const PAYLOAD_NAME: &str = "</script><script>Object.assign(document,{title:'pwned'})</script>";

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("LMCOMPARE_CHROMIUM") {
        return PathBuf::from(p);
    }
    for name in [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ] {
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "headless Chromium is needed for the HTML report's browser test: `apt-get install chromium` \
         (bash scripts/fetch-assets.sh installs it when it can), or set LMCOMPARE_CHROMIUM"
    );
}

/// Serves `page` at /report.html and records every request it gets, as a web server and as
/// the browser's proxy for every other host.
struct Recorder {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

/// Served with the page when it is to be seen with JavaScript off: a policy header that
/// blocks every script (Chromium's own `scriptEnabled=false` also stops its dump and
/// screenshot).
const NO_SCRIPT: &str = "Content-Security-Policy: script-src 'none'\r\n";

impl Recorder {
    fn start(page: String, header: &'static str) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let page = Arc::new(page);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (seen, page) = (seen.clone(), page.clone());
                std::thread::spawn(move || answer(stream, &seen, &page, header));
            }
        });
        Recorder { port, requests }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/report.html", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn answer(stream: TcpStream, seen: &Mutex<Vec<String>>, page: &str, header: &str) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() || first.is_empty() {
        return;
    }
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
        line.clear();
    }
    let first = first.trim_end().to_owned();
    seen.lock().unwrap().push(first.clone());
    let mut out = stream;
    let path = first.split(' ').nth(1).unwrap_or("");
    let _ = if path == "/report.html" {
        write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n{header}Content-Length: {}\r\nConnection: close\r\n\r\n{page}",
            page.len()
        )
    } else {
        write!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
    };
}

/// What Chromium made of a page: the DOM after scripts ran, its console, and the requests.
struct Visit {
    dom: String,
    console: Vec<String>,
    requests: Vec<String>,
}

fn chromium_command(profile: &Path, proxy_port: u16) -> Process {
    let mut cmd = Process::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--no-pings",
        "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=3000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(format!("--proxy-server=http://127.0.0.1:{proxy_port}"));
    cmd
}

/// Serves `page` (with `header`) and runs Chromium on it with `args`: its output and the
/// requests the server saw.
fn open_in_chromium(
    page: &str,
    header: &'static str,
    args: &[String],
) -> (std::process::Output, Vec<String>) {
    let server = Recorder::start(page.to_owned(), header);
    let profile = tempfile::tempdir().unwrap();
    let out = chromium_command(profile.path(), server.port)
        .args(args)
        .arg(server.url())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out, server.requests())
}

fn visit(page: &str, extra: &[&str]) -> Visit {
    visit_with(page, extra, "")
}

fn visit_with(page: &str, extra: &[&str], header: &'static str) -> Visit {
    let mut args: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
    args.push("--dump-dom".into());
    let (out, requests) = open_in_chromium(page, header, &args);
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("CONSOLE"))
        .map(str::to_owned)
        .collect();
    Visit {
        dom: String::from_utf8_lossy(&out.stdout).into_owned(),
        console,
        requests,
    }
}

/// A screenshot of the top of the page: (width, height, RGB pixels).
fn screenshot(page: &str, extra: &[&str], keep: &Path) -> (u32, u32, Vec<u8>) {
    screenshot_with(page, extra, keep, "")
}

fn screenshot_with(
    page: &str,
    extra: &[&str],
    keep: &Path,
    header: &'static str,
) -> (u32, u32, Vec<u8>) {
    let mut args: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
    args.push("--window-size=1280,1600".into());
    args.push(format!("--screenshot={}", keep.display()));
    open_in_chromium(page, header, &args);
    let decoder = png::Decoder::new(std::fs::File::open(keep).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let rgb: Vec<u8> = buf[..info.buffer_size()]
        .chunks(channels)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    (info.width, info.height, rgb)
}

/// Chromium's own service traffic (clock, sign-in, autofill, ...), which no page asks for.
fn browser_own(request: &str) -> bool {
    let host = request
        .split(' ')
        .nth(1)
        .unwrap_or("")
        .trim_start_matches("http://")
        .split(['/', ':'])
        .next()
        .unwrap_or("");
    ["google.com", "googleapis.com", "gstatic.com", "gvt1.com"]
        .iter()
        .any(|d| host == *d || host.ends_with(&format!(".{d}")))
}

/// The requests the page made (everything but Chromium's own service traffic).
fn page_requests(v: &Visit) -> Vec<String> {
    v.requests
        .iter()
        .filter(|r| !browser_own(r))
        .cloned()
        .collect()
}

/// The report opened with the network caught, no console output, and only itself fetched;
/// nor does the DOM name anything to load (every href an anchor or data:, no src).
fn open_clean(html: &str) -> String {
    let v = visit(html, &[]);
    assert!(v.console.is_empty(), "console: {:#?}", v.console);
    assert_eq!(
        page_requests(&v),
        vec!["GET /report.html HTTP/1.1".to_string()],
        "requests"
    );
    // Every element's attributes (text is escaped, so each `<` starts an element).
    for (at, _) in v.dom.match_indices('<') {
        let tag = &v.dom[at..at + v.dom[at..].find('>').unwrap_or(0)];
        assert!(!tag.contains(" src="), "an element with src: {tag}");
    }
    for (at, _) in v.dom.match_indices(" href=\"") {
        let target = &v.dom[at + 7..];
        assert!(
            target.starts_with('#') || target.starts_with("data:"),
            "href {}",
            &target[..40.min(target.len())]
        );
    }
    v.dom
}

#[test]
fn the_harness_catches_a_page_that_reaches_out_and_a_console_error() {
    let page = "<!DOCTYPE html><html><head><title>t</title></head><body><script>console.error('boom');fetch('http://example.com/x').catch(function(){});</script><img src=\"/x.png\"></body></html>";
    let v = visit(page, &[]);
    let reqs = page_requests(&v);
    assert!(reqs.iter().any(|r| r.contains("example.com")), "{reqs:?}");
    assert!(reqs.iter().any(|r| r.contains("/x.png")), "{reqs:?}");
    assert!(
        v.console.iter().any(|c| c.contains("boom")),
        "{:?}",
        v.console
    );
}

/// The section with `id`, which must hold a drawn chart (or, `chart` false, a table).
fn section<'a>(dom: &'a str, id: &str, chart: bool) -> &'a str {
    let start = dom
        .find(&format!("<section id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no section {id}"));
    let end = start + dom[start..].find("</section>").unwrap();
    let s = &dom[start..end];
    if chart {
        assert!(s.contains("<svg"), "section {id} has no chart");
        let marks = s.matches("<circle").count()
            + s.matches("<rect").count()
            + s.matches("<polyline").count();
        assert!(marks > 0, "section {id}: empty chart");
    } else {
        assert!(
            ["<table", "<svg", "class=\"glance\"", "<dl"]
                .iter()
                .any(|t| s.contains(t)),
            "section {id} is empty"
        );
    }
    s
}

fn write_dataset(dir: &Path) -> PathBuf {
    let labels = ["fresh", PAYLOAD_IMG, PAYLOAD_SCRIPT];
    let texts = [
        PAYLOAD_SCRIPT,
        PAYLOAD_IMG,
        "{{constructor.constructor('document.title=1')()}} and ${document.title='pwned'}",
        "a gripping film, great overall",
        "a dull film, bad overall",
    ];
    let mut s = String::new();
    for i in 0..60 {
        let label = labels[i % 3];
        let split = if i % 4 == 0 { "test" } else { "train" };
        let text = format!(
            "{} review {i} {}",
            texts[i % texts.len()],
            ["great", "bad", "long"][i % 3]
        );
        s.push_str(&serde_json::json!({"id": format!("r{i}<b>"), "text": text, "label": label, "split": split}).to_string());
        s.push('\n');
    }
    let p = dir.join("payload.jsonl");
    std::fs::write(&p, s).unwrap();
    p
}

fn run(args: &[&str]) -> String {
    let out = lmcompare().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn compare_report_opens_offline_escapes_every_payload_and_draws_every_section() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_dataset(dir.path());
    let db = dir.path().join("s.db");
    let out_dir = dir.path().join("out");
    let name_model = format!("{PAYLOAD_NAME}={}", tiny("tiny-roberta-cls"));
    let other = format!("distil={}", tiny("tiny-distilbert-cls"));
    let compare = [
        "compare",
        "--task",
        "probe",
        "--model",
        &name_model,
        "--model",
        &other,
        "--data",
        data.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
        "--bootstrap",
        "200",
        "--permutations",
        "200",
        "--quiet",
        "--format",
        "html",
    ];
    let html = run(&compare);
    assert!(html.starts_with("<!DOCTYPE html>"));
    // --out writes the same report.
    run(&[&compare[..], &["--out", out_dir.to_str().unwrap()]].concat());
    // The rerun resumes the stored run: the same examples table, computed nothing.
    let written = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
    let table = |h: &str| {
        h[h.find("<section id=\"examples\">").unwrap()
            ..h.find("<section id=\"tokenizers\">").unwrap()]
            .to_owned()
    };
    assert_eq!(table(&written), table(&html));
    assert!(out_dir.join("report.json").exists() && out_dir.join("report.md").exists());

    let dom = open_clean(&html);
    // Nothing ran: the title is ours, there is no image, and only our two script elements.
    let title = &dom[dom.find("<title>").unwrap() + 7..dom.find("</title>").unwrap()];
    assert_eq!(title, "lmcompare: probe on payload.jsonl");
    assert!(!dom.contains("<img"), "an <img> element was created");
    assert_eq!(dom.matches("<script").count(), 2);
    // The payloads are on the page, as text.
    assert!(
        dom.contains("&lt;img src=x onerror=\"document.title='pwned'\"&gt;")
            || dom.contains("&lt;img src=x onerror=&quot;")
    );
    assert!(dom.contains("Object.assign(document,{title:'pwned'})"));
    assert!(dom.contains("${document.title='pwned'}"));
    for (id, chart) in [
        ("overview", false),
        ("summary", false),
        ("main-metric", true),
        ("cost", true),
        ("models", true),
        ("examples", false),
        ("tokenizers", true),
        ("provenance", false),
    ] {
        section(&dom, id, chart);
    }
    let models = section(&dom, "models", true);
    assert!(
        models.contains("reliability")
            && models.contains("ROC")
            && models.contains("precision-recall")
    );
    // Three labels: one-vs-rest curves, one line per label.
    assert!(models.contains("one-vs-rest"));
    // The embedded JSON is the document, and reads back.
    let marker = "id=\"lmcompare-report\">";
    let json_start = html.find(marker).unwrap() + marker.len();
    let json_end = json_start + html[json_start..].find("</script>").unwrap();
    let doc: serde_json::Value = serde_json::from_str(&html[json_start..json_end]).unwrap();
    assert_eq!(doc["models"][0]["name"], PAYLOAD_NAME);
    assert_eq!(doc["task"], "probe");

    // JavaScript off: every chart is still there, and the page looks the same (the script
    // only sorts and filters the examples table further down).
    let static_visit = visit_with(&html, &[], NO_SCRIPT);
    assert!(
        static_visit
            .console
            .iter()
            .any(|c| c.contains("Content Security Policy")),
        "the script was blocked"
    );
    assert_eq!(
        static_visit.dom.matches("<svg").count(),
        dom.matches("<svg").count()
    );
    assert!(dom.matches("<svg").count() >= 10);

    // Not blank, light and dark.
    let shots = root().join("target/html-report-test");
    std::fs::create_dir_all(&shots).unwrap();
    let (w, h, light) = screenshot(&html, &[], &shots.join("compare-light.png"));
    assert_eq!((w, h), (1280, 1600));
    assert_not_blank(&light);
    let (_, _, dark) = screenshot(
        &html,
        &[
            "--force-dark-mode",
            "--blink-settings=preferredColorScheme=0",
        ],
        &shots.join("compare-dark.png"),
    );
    assert_not_blank(&dark);
    // It prints: Chromium's PDF of the page.
    let pdf = shots.join("compare.pdf");
    open_in_chromium(
        &html,
        "",
        &[
            format!("--print-to-pdf={}", pdf.display()),
            "--no-pdf-header-footer".into(),
        ],
    );
    let pdf = std::fs::read(&pdf).unwrap();
    assert!(
        pdf.starts_with(b"%PDF") && pdf.len() > 20_000,
        "{} bytes",
        pdf.len()
    );
    let (_, _, no_js) = screenshot_with(&html, &[], &shots.join("compare-no-js.png"), NO_SCRIPT);
    let same = light
        .chunks(3)
        .zip(no_js.chunks(3))
        .filter(|(a, b)| a == b)
        .count();
    assert!(
        same * 100 > 97 * light.len() / 3,
        "without JS the top of the page differs: {same} equal pixels"
    );
    let mean = |px: &[u8]| px.iter().map(|&v| v as f64).sum::<f64>() / px.len() as f64;
    assert!(
        mean(&light) > 180.0,
        "light page is light: {}",
        mean(&light)
    );
    assert!(mean(&dark) < 90.0, "dark page is dark: {}", mean(&dark));
}

fn assert_not_blank(rgb: &[u8]) {
    let bg = [rgb[0], rgb[1], rgb[2]];
    let pixels = rgb.len() / 3;
    let differ = rgb.chunks(3).filter(|p| p != &bg).count();
    let mut colours: Vec<[u8; 3]> = rgb
        .chunks(3)
        .map(|p| [p[0] >> 4, p[1] >> 4, p[2] >> 4])
        .collect();
    colours.sort_unstable();
    colours.dedup();
    assert!(
        differ * 20 > pixels,
        "{differ} of {pixels} pixels differ from the background"
    );
    assert!(colours.len() > 30, "only {} colours", colours.len());
}

#[test]
fn metrics_tune_multiple_choice_and_perplexity_reports_open_offline_with_their_charts() {
    let dir = tempfile::tempdir().unwrap();
    let examples = root().join("examples");
    let metrics = run(&[
        "metrics",
        "--pred",
        examples.join("sentiment-large.jsonl").to_str().unwrap(),
        "--pred",
        examples.join("sentiment-small.jsonl").to_str().unwrap(),
        "--bootstrap",
        "200",
        "--permutations",
        "200",
        "--format",
        "html",
    ]);
    let dom = open_clean(&metrics);
    for id in ["summary", "main-metric", "models"] {
        section(&dom, id, id != "summary");
    }
    assert!(section(&dom, "models", true).contains("ROC"));

    // Multiple choice, circular, on two tiny decoders: the accuracies and position bias.
    let db = dir.path().join("runs.db");
    let mc = dir.path().join("mc.jsonl");
    std::fs::write(
        &mc,
        [
            r#"{"id": "q1", "question": "The film is", "choices": ["great", "bad", "long"], "answer": 0}"#,
            r#"{"id": "q2", "question": "The cast was", "choices": ["superb", "a waste"], "answer": 1}"#,
            r#"{"id": "q3", "question": "A gripping", "choices": ["thriller", "bore", "film"], "answer": 2}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let llama = format!("llama={}", tiny("tiny-llama"));
    let gpt2 = format!("gpt2={}", tiny("tiny-gpt2"));
    let mc_html = run(&[
        "compare",
        "--model",
        &llama,
        "--model",
        &gpt2,
        "--data",
        mc.to_str().unwrap(),
        "--task",
        "multiple-choice",
        "--circular",
        "--template",
        "Q: {text}\n{choices}\nAnswer:",
        "--db",
        db.to_str().unwrap(),
        "--bootstrap",
        "100",
        "--permutations",
        "100",
        "--format",
        "html",
        "--quiet",
    ]);
    let dom = open_clean(&mc_html);
    let mc_section = section(&dom, "multiple-choice", true);
    assert!(mc_section.contains("acc_circular") && mc_section.contains("position A"));

    // Perplexity: bits per byte with intervals and the paired difference.
    let text = dir.path().join("text.txt");
    std::fs::write(&text, "A gorgeous, witty movie.\n\nDull, lifeless and far too long.\n\nThe cast shines in every scene.").unwrap();
    let qwen = format!("qwen={}", tiny("tiny-qwen2"));
    let gemma3 = format!("gemma3={}", tiny("tiny-gemma3"));
    let ppl = run(&[
        "compare",
        "--model",
        &qwen,
        "--model",
        &gemma3,
        "--data",
        text.to_str().unwrap(),
        "--task",
        "perplexity",
        "--db",
        db.to_str().unwrap(),
        "--bootstrap",
        "100",
        "--format",
        "html",
        "--quiet",
    ]);
    let dom = open_clean(&ppl);
    assert!(section(&dom, "main-metric", true).contains("bits_per_byte"));

    // Tune: trials, learning curves, hyperparameters against the metric, the comparison;
    // and `report --run` renders the stored run the same way.
    let data = dir.path().join("reviews.jsonl");
    let mut s = String::new();
    for i in 0..60 {
        let label = ["fresh", "rotten"][i % 2];
        let split = match i % 5 {
            0 => "test",
            1 => "validation",
            _ => "train",
        };
        s.push_str(&serde_json::json!({"id": format!("r{i}"), "text": format!("review {i}: {label} overall"), "label": label, "split": split}).to_string());
        s.push('\n');
    }
    std::fs::write(&data, s).unwrap();
    let bert = format!("bert={}", tiny("tiny-bert-cls"));
    let out_dir = dir.path().join("tune-out");
    run(&[
        "tune",
        "--model",
        &bert,
        "--data",
        data.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
        "--save",
        dir.path().join("tuned").to_str().unwrap(),
        "--search",
        "grid",
        "--space",
        "lr=[0.01,0.1];optimizer=[adam,sgd];epochs=3;batch_size=8",
        "--metric",
        "accuracy",
        "--bootstrap",
        "100",
        "--permutations",
        "100",
        "--quiet",
        "--format",
        "json",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let tune = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
    let dom = open_clean(&tune);
    for (id, chart) in [
        ("trials", false),
        ("learning-curves", true),
        ("hyperparameters", true),
        ("summary", false),
        ("main-metric", true),
        ("models", true),
    ] {
        section(&dom, id, chart);
    }
    let runs: serde_json::Value = serde_json::from_str(&run(&[
        "runs",
        "--db",
        db.to_str().unwrap(),
        "--format",
        "json",
    ]))
    .unwrap();
    let tune_run = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["task"] == "tune")
        .unwrap();
    let stored = run(&[
        "report",
        "--db",
        db.to_str().unwrap(),
        "--run",
        &tune_run["id"].to_string(),
        "--format",
        "html",
    ]);
    if stored != tune {
        let at = stored
            .bytes()
            .zip(tune.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        panic!(
            "report --run differs from tune's report at byte {at}: {:?} vs {:?}",
            &stored[at.saturating_sub(80)..(at + 80).min(stored.len())],
            &tune[at.saturating_sub(80)..(at + 80).min(tune.len())]
        );
    }
}
