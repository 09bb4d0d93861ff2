//! The tests' toy OpenAI-compatible server as a process: prints its base URL on the first
//! line of stdout and serves until killed (or for `--seconds N`, default 600). Used by
//! `scripts/report-diff.sh` to run the remote tasks outside the test harness.

#[path = "../tests/common/toy_server.rs"]
mod toy_server;

fn main() {
    let seconds: u64 = std::env::args()
        .skip_while(|a| a != "--seconds")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let server = toy_server::serve(toy_server::Behaviour::default(), 1);
    println!("{}", server.url);
    std::thread::sleep(std::time::Duration::from_secs(seconds));
}
