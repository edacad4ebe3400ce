//! The fuzz targets' corpus in the ordinary test suite: every input kept in `fuzz/corpus/TARGET`
//! (minimised by `cargo fuzz cmin`) replayed through the same target function `cargo fuzz`
//! runs, plus a bounded number of seeded mutations of each (a short fuzzing run on stable
//! Rust, without libFuzzer's instrumentation).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The committed corpus of `target`.
pub fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// Mutations tried per corpus input.
const MUTATIONS: usize = 16;
/// Time the mutations of one target may take (the corpus itself always runs whole).
const MUTATION_BUDGET: Duration = Duration::from_secs(3);

/// Runs `f` on every input of `target`'s corpus, then on seeded mutations of them (byte flips,
/// insertions, deletions, truncations, splices of two inputs) until [`MUTATION_BUDGET`] is
/// spent. A panic names the input. Returns how many inputs ran; panics when the corpus is
/// missing or empty (a test that cannot fail is no test).
pub fn replay(target: &str, f: impl Fn(&[u8])) -> usize {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/fuzz to create the corpus)", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let inputs: Vec<(PathBuf, Vec<u8>)> = files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect();
    assert!(!inputs.is_empty(), "{}: an empty corpus", dir.display());
    for (path, bytes) in &inputs {
        run_named(&f, bytes, || format!("corpus input {}", path.display()));
    }
    let mut rng = StdRng::seed_from_u64(24);
    let start = Instant::now();
    let mut ran = inputs.len();
    'outer: for (path, bytes) in &inputs {
        for k in 0..MUTATIONS {
            if start.elapsed() > MUTATION_BUDGET {
                break 'outer;
            }
            let other = &inputs[rng.random_range(0..inputs.len())].1;
            let m = mutate(&mut rng, bytes, other);
            run_named(&f, &m, || format!("mutation {k} of {} ({m:?})", path.display()));
            ran += 1;
        }
    }
    ran
}

fn run_named(f: &impl Fn(&[u8]), input: &[u8], name: impl Fn() -> String) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(input))).is_err() {
        panic!("the fuzz target panicked on {}", name());
    }
}

/// One libFuzzer-like mutation of `input` (`other` for splices).
fn mutate(rng: &mut StdRng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    let at = |rng: &mut StdRng, len: usize| rng.random_range(0..=len);
    match rng.random_range(0..5) {
        0 if !v.is_empty() => {
            let i = rng.random_range(0..v.len());
            v[i] ^= 1 << rng.random_range(0..8);
        }
        1 => {
            let i = at(rng, v.len());
            v.insert(i, rng.random());
        }
        2 if !v.is_empty() => {
            let i = rng.random_range(0..v.len());
            let n = rng.random_range(1..=(v.len() - i).min(8));
            v.drain(i..i + n);
        }
        3 => v.truncate(at(rng, v.len())),
        _ => {
            let i = at(rng, v.len());
            let j = at(rng, other.len());
            v.truncate(i);
            v.extend_from_slice(&other[j..]);
        }
    }
    v
}
