//! The tests' toy OpenAI-compatible server as a process: prints its base URL on the first
//! line of stdout and serves until killed (or for `--seconds N`, default 600), on
//! `--port N` of 127.0.0.1 (default: any free port). Used by `scripts/report-diff.sh` to
//! run the remote tasks outside the test harness.

#[path = "../tests/common/toy_server.rs"]
mod toy_server;

fn flag(name: &str) -> Option<u64> {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|s| s.parse().ok())
}

fn main() {
    let seconds = flag("--seconds").unwrap_or(600);
    let port = flag("--port").unwrap_or(0) as u16;
    let server = toy_server::serve_on(port, toy_server::Behaviour::default(), 1);
    println!("{}", server.url);
    std::thread::sleep(std::time::Duration::from_secs(seconds));
}
