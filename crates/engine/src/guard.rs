//! Third-party parsers that panic on malformed input (`tokenizers` `expect`s inside its
//! deserialisers) are run through [`no_panic`], which turns the panic into an error and keeps
//! the default hook from printing a backtrace banner for a failure we report ourselves.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    static CATCHING: Cell<bool> = const { Cell::new(false) };
}

static HOOK: Once = Once::new();

fn install_hook() {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !CATCHING.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Runs `f`; a panic inside it becomes `Err` with the panic's message.
pub fn no_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_hook();
    let was = CATCHING.with(|c| c.replace(true));
    let out = panic::catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(was));
    out.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the parser panicked".to_owned())
    })
}

/// Loads a `tokenizer.json`, first as plain JSON (so a syntax error names its line), then
/// through `tokenizers` with its panics caught.
pub fn load_tokenizer_json(path: &std::path::Path) -> crate::Result<tokenizers::Tokenizer> {
    let text = crate::data::read_text_file(path)?;
    serde_json::from_str::<serde_json::Value>(&text)
        .map_err(|e| crate::EngineError::file(path, format!("not valid JSON: {e}")))?;
    match no_panic(|| text.parse::<tokenizers::Tokenizer>()) {
        Ok(Ok(t)) => {
            probe(&t).map_err(|m| {
                crate::EngineError::file(
                    path,
                    format!("malformed tokenizer definition (it fails on a test sentence: {m})"),
                )
            })?;
            Ok(t)
        }
        Ok(Err(e)) => Err(crate::EngineError::file(
            path,
            format!("not a tokenizer the `tokenizers` library can load: {e}"),
        )),
        Err(m) => Err(crate::EngineError::file(
            path,
            format!("malformed tokenizer definition (the `tokenizers` library rejected it: {m})"),
        )),
    }
}

/// `tokenizers` checks parts of a definition only when they run (a post-processor template
/// naming a special token the file lacks panics on every encode): one single and one pair
/// encoding, and a decode, at load time turn that into an error naming the file, before
/// any data is read. Only a panic counts: an ordinary error (a word-level vocabulary
/// without an unknown token) is the real encodes' to report, with the example it hit.
fn probe(t: &tokenizers::Tokenizer) -> Result<(), String> {
    no_panic(|| {
        if let Ok(one) = t.encode("A probe, 12 words: ok.", true) {
            let _ = t.decode(one.get_ids(), true);
        }
        let _ = t.encode(("A probe.", "Another one."), true);
    })
}

/// Bytes of memory the system can give a new allocation without swapping: `MemAvailable`
/// of /proc/meminfo, or `LMCOMPARE_MEMORY_AVAILABLE` (bytes) where set, so the refusal can
/// be tested and a user can tell lmcompare what a container allows. None where unknown.
pub fn memory_available() -> Option<u64> {
    if let Some(v) = std::env::var("LMCOMPARE_MEMORY_AVAILABLE")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        return Some(v);
    }
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Refuses to load what does not fit: `needed` bytes for `what`, against
/// [`memory_available`].
pub fn check_memory(needed: u64, what: &str) -> Result<(), String> {
    match memory_available() {
        Some(available) if needed > available => Err(format!(
            "{what} needs {:.2} GB but only {:.2} GB of memory is available (MemAvailable in /proc/meminfo, or LMCOMPARE_MEMORY_AVAILABLE); free memory or use a smaller model",
            needed as f64 / 1e9,
            available as f64 / 1e9
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_with_its_message() {
        let r: Result<(), String> = no_panic(|| panic!("boom {}", 1));
        assert_eq!(r.unwrap_err(), "boom 1");
        assert_eq!(no_panic(|| 3).unwrap(), 3);
    }
}
