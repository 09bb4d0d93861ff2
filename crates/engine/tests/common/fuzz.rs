//! A small seeded mutation fuzzer for the file loaders: byte flips, random bytes,
//! truncations, insertions (random bytes or tokens that break parsers: quotes, brackets,
//! huge numbers, a BOM, invalid UTF-8, escape sequences), deletions, duplications and
//! length-field corruption (1/2/4/8-byte integers overwritten with boundary values, mostly
//! near the start where formats keep their headers).
//!
//! Each mutant is written to a file and given to the loader in-process under
//! `catch_unwind`; the test binary's allocator refuses any single allocation above
//! [`ALLOCATION_LIMIT`] and prints where it came from, so an unbounded length field shows up
//! as a named failure instead of a machine that swaps. A loader may return Ok or Err for any
//! mutant; it must never panic or abort.
//!
//! `FUZZ_ITERS` sets the mutants per target (default: the count the test names, a few
//! thousand, which keeps the suite under a minute); `FUZZ_SEED` changes the seed. Mutants
//! that panicked are written under `target/fuzz-failures/` for replay.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// No loader needs this much for the tiny fixtures: a request above it is a length field
/// trusted without a check.
pub const ALLOCATION_LIMIT: usize = 1 << 30;

static REPORTING: AtomicBool = AtomicBool::new(false);

/// The allocator of a fuzz test binary: the system allocator with a per-allocation limit.
pub struct LimitedAlloc;

unsafe impl GlobalAlloc for LimitedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOCATION_LIMIT && !REPORTING.swap(true, Ordering::SeqCst) {
            eprintln!(
                "fuzz: a loader asked for {} bytes in one allocation (limit {ALLOCATION_LIMIT}):\n{}",
                layout.size(),
                std::backtrace::Backtrace::force_capture()
            );
            return std::ptr::null_mut();
        }
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOCATION_LIMIT && !REPORTING.swap(true, Ordering::SeqCst) {
            eprintln!(
                "fuzz: a loader grew an allocation to {new_size} bytes (limit {ALLOCATION_LIMIT}):\n{}",
                std::backtrace::Backtrace::force_capture()
            );
            return std::ptr::null_mut();
        }
        System.realloc(ptr, layout, new_size)
    }
}

const TOKENS: &[&[u8]] = &[
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\n",
    b"\r\n",
    b"\\",
    b"-1",
    b"0",
    b"1.5",
    b"1e999",
    b"-0",
    b"NaN",
    b"null",
    b"true",
    b"\"\"",
    b"{}",
    b"[]",
    b"99999999999999999999",
    b"18446744073709551615",
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b"\xc3",
    b"\x00",
    b"\x1b[2J",
    b"\x1b]0;x\x07",
    b"\t",
];

/// Numbers that stand in for a count, id or size in text formats.
const NUMBERS: &[&[u8]] = &[
    b"-1",
    b"0",
    b"1.5",
    b"1e999",
    b"-0",
    b"NaN",
    b"99999999999999999999",
    b"18446744073709551615",
];

const BOUNDARIES: &[u64] = &[
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 40,
    1 << 50,
    i64::MAX as u64,
    u64::MAX,
];

pub fn iterations(default: usize) -> usize {
    std::env::var("FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn seed_for(target: &str) -> u64 {
    let base: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    target
        .bytes()
        .fold(base, |h, b| h.rotate_left(7) ^ u64::from(b))
}

/// A position, half the time within the first 1 KiB where headers and length fields live.
fn position(rng: &mut Xoshiro256PlusPlus, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    if rng.gen_bool(0.5) {
        rng.gen_range(0..len.min(1024))
    } else {
        rng.gen_range(0..len)
    }
}

pub fn mutate(rng: &mut Xoshiro256PlusPlus, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..rng.gen_range(1..=3) {
        let len = b.len();
        match rng.gen_range(0..8) {
            0 if len > 0 => {
                let i = position(rng, len);
                b[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = position(rng, len);
                b[i] = rng.gen();
            }
            2 => b.truncate(rng.gen_range(0..=len)),
            3 => {
                let i = position(rng, len + 1).min(len);
                let ins: Vec<u8> = if rng.gen_bool(0.6) {
                    TOKENS[rng.gen_range(0..TOKENS.len())].to_vec()
                } else {
                    (0..rng.gen_range(1..=8)).map(|_| rng.gen()).collect()
                };
                b.splice(i..i, ins);
            }
            4 if len > 0 => {
                let i = position(rng, len);
                let n = rng.gen_range(1..=16.min(len - i));
                b.drain(i..i + n);
            }
            5 if len > 0 => {
                let i = position(rng, len);
                let n = rng.gen_range(1..=64.min(len - i));
                let copy = b[i..i + n].to_vec();
                let at = rng.gen_range(0..=len);
                b.splice(at..at, copy);
            }
            6 if len > 0 => {
                let width = [1usize, 2, 4, 8][rng.gen_range(0..4)];
                let values = [BOUNDARIES, &[len as u64, len as u64 + 1, len as u64 - 1]].concat();
                let v = values[rng.gen_range(0..values.len())];
                let i = position(rng, len);
                let bytes = v.to_le_bytes();
                for (k, byte) in bytes.iter().take(width).enumerate() {
                    if let Some(slot) = b.get_mut(i + k) {
                        *slot = *byte;
                    }
                }
            }
            7 if len > 0 => {
                // Digits replaced by a boundary number: counts, ids and sizes in text formats.
                let i = position(rng, len);
                if let Some(start) = (i..len).find(|&k| b[k].is_ascii_digit()) {
                    let end = (start..len)
                        .find(|&k| !b[k].is_ascii_digit())
                        .unwrap_or(len);
                    let v = NUMBERS[rng.gen_range(0..NUMBERS.len())].to_vec();
                    b.splice(start..end, v);
                }
            }
            _ => b.push(rng.gen()),
        }
    }
    b
}

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
    static LOADING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn install_recording_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !LOADING.with(std::cell::Cell::get) {
                return previous(info);
            }
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let at = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{msg} at {at}")));
        }));
    });
}

pub struct Report {
    pub mutants: usize,
    pub ok: usize,
    pub errors: usize,
}

/// Fuzzes one loader: `seed` mutated `iters` times (or `FUZZ_ITERS`), each written to
/// `dir/file_name` (`setup` fills `dir` with the loader's other files first) and passed to
/// `load`. Panics at the end, naming every mutant that panicked, if any did.
pub fn run(
    target: &str,
    seed: &[u8],
    file_name: &str,
    default_iters: usize,
    setup: impl Fn(&Path),
    load: impl Fn(&Path) -> Result<(), String>,
) -> Report {
    install_recording_hook();
    let dir = tempfile::tempdir().expect("temp dir");
    setup(dir.path());
    let path = dir.path().join(file_name);
    let iters = iterations(default_iters);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed_for(target));
    let (mut ok, mut errors) = (0, 0);
    let mut panics: Vec<(usize, String, Vec<u8>)> = Vec::new();
    let mut sample_errors: Vec<String> = Vec::new();
    for i in 0..iters {
        let bytes = mutate(&mut rng, seed);
        std::fs::write(&path, &bytes).expect("write mutant");
        LOADING.with(|l| l.set(true));
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load(&path)));
        LOADING.with(|l| l.set(false));
        match outcome {
            Ok(Ok(())) => ok += 1,
            Ok(Err(e)) => {
                assert!(
                    !e.trim().is_empty(),
                    "{target}: mutant {i} gave an empty error"
                );
                if sample_errors.len() < 3 && !sample_errors.contains(&e) {
                    sample_errors.push(e);
                }
                errors += 1;
            }
            Err(_) => {
                let msg = LAST_PANIC
                    .with(|p| p.borrow_mut().take())
                    .unwrap_or_default();
                panics.push((i, msg, bytes));
            }
        }
    }
    eprintln!(
        "fuzz {target}: {iters} mutants, {ok} loaded, {errors} refused with an error, {} panicked",
        panics.len()
    );
    for e in &sample_errors {
        eprintln!("  e.g. {e}");
    }
    if !panics.is_empty() {
        let out = failures_dir().join(target);
        let _ = std::fs::create_dir_all(&out);
        for (i, _, bytes) in panics.iter().take(20) {
            let _ = std::fs::write(out.join(format!("{i}-{file_name}")), bytes);
        }
        let list: Vec<String> = panics
            .iter()
            .take(10)
            .map(|(i, m, _)| format!("  mutant {i}: {m}"))
            .collect();
        panic!(
            "{target}: {} of {iters} mutants panicked (saved under {}):\n{}",
            panics.len(),
            out.display(),
            list.join("\n")
        );
    }
    Report {
        mutants: iters,
        ok,
        errors,
    }
}

fn failures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/fuzz-failures")
}

/// Copies every file of a fixture folder into `dir`.
pub fn copy_folder(from: &Path, dir: &Path) {
    for entry in std::fs::read_dir(from).expect("fixture folder") {
        let entry = entry.expect("fixture entry");
        if entry.path().is_file() {
            std::fs::copy(entry.path(), dir.join(entry.file_name())).expect("copy fixture");
        }
    }
}
