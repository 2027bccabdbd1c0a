//! The fuzz corpus replayed in the ordinary `cargo test --workspace`: every file of
//! `fuzz/corpus/<target>/` (the seeds and what fuzzing found worth keeping) and of
//! `fuzz/regressions/<target>/` (each input that once crashed a parser) runs through the same
//! target function the fuzzer runs (`fuzz/src/lib.rs`, included here by path), and must return.
//!
//! `cargo test -p sluice-actors --test fuzz_corpus -- --ignored write_generated_seeds` rewrites
//! the generated seeds (`fuzz/make-seeds.sh` runs it, after the ffmpeg-made ones).

#[allow(dead_code)]
#[path = "../../fuzz/src/lib.rs"]
mod targets;

use std::path::{Path, PathBuf};
use std::time::Instant;

/// Longest one input may take.
const SLOW: std::time::Duration = std::time::Duration::from_secs(5);

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
    v.sort();
    v
}

#[test]
fn corpus_and_regressions_replay_without_panics() {
    targets::quiet_caught_panics();
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut total = 0;
    for (name, target) in targets::TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name}/ has no seeds");
        let regressions = files(&fuzz_dir().join("regressions").join(name));
        for path in corpus.iter().chain(&regressions) {
            let data = std::fs::read(path).expect("a corpus file is readable");
            total += 1;
            let t = Instant::now();
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                failures.push(path.display().to_string());
            }
            // A hang or a runaway allocation (seconds of filling memory) is a finding too; the
            // slowest input takes milliseconds even in a debug build.
            if t.elapsed() > SLOW {
                failures.push(format!("{} took {:?}", path.display(), t.elapsed()));
            }
        }
    }
    eprintln!("replayed {total} inputs of {} targets in {:?}", targets::TARGETS.len(), started.elapsed());
    assert!(failures.is_empty(), "inputs that panic: {failures:#?}");
}

#[test]
fn every_target_has_a_fuzz_binary() {
    for (name, _) in targets::TARGETS {
        let bin = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        assert!(bin.is_file(), "{} is missing", bin.display());
    }
}

#[test]
#[ignore = "writes files: run by fuzz/make-seeds.sh"]
fn write_generated_seeds() {
    for (target, name, bytes) in targets::seeds() {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).expect("the corpus folder can be made");
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("a seed can be written");
    }
}

/// The generated seeds get deep: the RTMP publish reaches media, signed TURN requests pass
/// authentication (else the fuzzer would spend its time on the first refusals).
#[test]
fn generated_seeds_reach_past_the_first_checks() {
    let seeds = targets::seeds();
    let seed = |target: &str, name: &str| {
        seeds.iter().find(|(t, n, _)| *t == target && n == name).map(|(_, _, b)| b.clone()).expect("a seed")
    };
    for name in ["publish-session", "publish-session-9-byte-reads"] {
        let reached = targets::rtmp_session(&seed("rtmp_ingest", name));
        assert!(
            reached.published && reached.video_frames > 0 && reached.audio_tags > 0,
            "{name}: {reached:?}"
        );
    }
    for name in ["allocate-signed", "refresh-signed", "create-permission-signed", "channel-bind-signed"] {
        assert!(targets::turn_request(&seed("turn_message", name)), "{name} is not authenticated");
    }
    assert!(!targets::turn_request(&seed("turn_message", "allocate")), "an unsigned Allocate is challenged");
}
