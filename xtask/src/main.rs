//! Project automation, run as `cargo xtask <task>`.
//!
//! - `test`: the whole test suite.
//! - `openapi [--check]`: write `openapi/openapi.json` from the code, or fail if it drifted.
//! - `tidy`: the architecture's invariants, from `cargo metadata` and the sources (see `tidy.rs`).
//! - `fuzz [--seconds N]`: Schemathesis against a scratch server (see `fuzz.rs`).
//! - `ci`: tidy, format check, clippy with warnings denied, tests, the fuzzer, and the OpenAPI check.
//! - `bench [--duration 10s] [--rounds N] [--baseline PATH] [--only bare,embedded,postgres] …`:
//!   the hot paths (a cached book, the own account, the first page, a new
//!   book) under `wrk`, on a bare actix-web app and on Waiter, embedded and on
//!   PostgreSQL + Redis, side by side in one run, with the ratios to the bare
//!   app (see `hot_paths.rs`).
//! - `bench --catalog [--books N] [--database NAME] [--reuse] [--keep]`: catalog latency
//!   over HTTP on PostgreSQL with N seeded books (see `bench.rs`).
//! - `bench --streams N [--replies M] [--ramp DURATION] [--delay DURATION] [--database URL] [--redis URL] [--metrics ADDR] [--binary PATH]`:
//!   N assistant replies streaming at once from one scratch server (SQLite and
//!   in-process by default), each stream sending M messages one after another:
//!   first-token and inter-chunk latency percentiles, replies completed, and the
//!   server's memory before and at its peak (see `streams.rs`).
//!   `--streams 1 --replies 100` gives the sequential figures; `--ramp 2s`
//!   spreads the streams' starts over two seconds rather than one burst.
//!
//! It depends on nothing but the standard library and `serde_json`, so it builds in seconds.

mod bench;
mod fuzz;
mod hot_paths;
mod streams;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

type Result<T = ()> = std::result::Result<T, String>;

const USAGE: &str = "usage: cargo xtask <test | openapi [--check] | tidy | fuzz [--seconds N] | ci | bench [--duration 10s] [--threads N] [--connections N] [--rounds N] [--books N] [--postgres URL] [--redis URL] [--only bare,embedded,postgres] [--baseline PATH] [--keep] | bench --catalog [--books N] [--database NAME] [--reuse] [--keep] | bench --streams N [--replies M] [--ramp DURATION] [--delay DURATION] [--database URL] [--redis URL] [--metrics ADDR] [--binary PATH]>";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let outcome = match args.as_slice() {
        ["test", rest @ ..] => test(rest),
        ["openapi"] => openapi(false),
        ["openapi", "--check"] => openapi(true),
        ["tidy"] => tidy::tidy(),
        ["ci"] => ci(),
        ["fuzz", rest @ ..] => fuzz::fuzz(rest),
        ["bench", rest @ ..] if rest.contains(&"--streams") => streams::bench(rest),
        ["bench", "--catalog", rest @ ..] => bench::bench(rest),
        ["bench", rest @ ..] => hot_paths::bench(rest),
        _ => Err(USAGE.to_owned()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs cargo as a developer would from the workspace root.
///
/// `cargo xtask` runs this program through `cargo run`, which describes the
/// xtask package to it in `CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME` and the like.
/// Passed on, they would reach build scripts that watch them (ring's reruns
/// when `CARGO_MANIFEST_DIR` changes), and every build from here would
/// rebuild ring and all that depends on it, and again the next build outside.
fn cargo(args: &[&str]) -> Result {
    eprintln!("$ cargo {}", args.join(" "));
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let describes_xtask = [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_BIN_",
            "CARGO_CRATE_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
            || name == "CARGO_PRIMARY_PACKAGE";
        if describes_xtask {
            command.env_remove(name.as_ref());
        }
    }
    let status = command
        .args(args)
        .current_dir(root())
        .status()
        .map_err(|err| format!("cannot run cargo: {err}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

/// Builds the debug `waiter` binary and returns its path.
///
/// It is built exactly as `cargo test --workspace --all-targets` builds it:
/// dev-dependencies turn on features of shared dependencies (bitflags' `std`,
/// for one), so a plain `cargo build -p waiter` after the tests would compile
/// some 45 crates a second time, with a second copy of them on disk.
fn debug_server() -> Result<PathBuf> {
    cargo(&["build", "--workspace", "--all-targets"])?;
    Ok(root().join("target/debug/waiter"))
}

/// Runs every test of every crate; extra arguments go to `cargo test`.
fn test(extra: &[&str]) -> Result {
    let mut args = vec!["test", "--workspace", "--all-targets"];
    args.extend_from_slice(extra);
    cargo(&args)?;
    cargo(&["test", "--workspace", "--doc"])
}

/// Renders the OpenAPI document from the code, then writes or compares it.
fn openapi(check: bool) -> Result {
    let binary = debug_server()?;
    let output = Command::new(&binary)
        .arg("openapi")
        .output()
        .map_err(|err| format!("cannot run {}: {err}", binary.display()))?;
    if !output.status.success() {
        return Err(format!(
            "`waiter openapi` failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let path = root().join("openapi/openapi.json");
    let rendered = String::from_utf8(output.stdout).map_err(|err| err.to_string())?;
    if check {
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != rendered {
            return Err(format!(
                "{} is out of date with the code; run `cargo xtask openapi` and commit it",
                path.display()
            ));
        }
        eprintln!("{} is up to date", path.display());
    } else {
        std::fs::write(&path, rendered)
            .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn ci() -> Result {
    tidy::tidy()?;
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    test(&[])?;
    fuzz::fuzz(&[])?;
    openapi(true)
}
