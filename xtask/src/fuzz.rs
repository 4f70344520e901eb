//! `cargo xtask fuzz`: Schemathesis, an outside OpenAPI fuzzer, against a
//! scratch server, with every check and every phase, signed in as an admin.
//!
//! It builds the debug binary, starts `waiter serve` on a free loopback port
//! with an empty data directory (SQLite, in-process cache), installs
//! Schemathesis from PyPI into `target/fuzz-venv` if it is not there yet, and
//! runs it for a bounded time. It fails when Schemathesis reports a failure.
//! The server is stopped and its data removed however the run ends.
//!
//! What the OpenAPI document cannot say (how to sign in, an ISBN's check
//! digit, a date not in the future, a fresh idempotency key per request, a
//! made-up `If-Match` being 412) lives in `xtask/fuzz/`.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::bench::Server;
use crate::{Result, root};

/// The Schemathesis releases the hooks and configuration are written for.
const SCHEMATHESIS: &str = "schemathesis>=4.3,<5";
/// How long the fuzzer runs when `--seconds` is not given.
const DEFAULT_SECONDS: u32 = 150;

pub(crate) fn fuzz(args: &[&str]) -> Result {
    let seconds = match args {
        [] => DEFAULT_SECONDS,
        ["--seconds", n] => n.parse().map_err(|_| "--seconds needs a number")?,
        _ => return Err("usage: cargo xtask fuzz [--seconds N]".to_owned()),
    };
    let binary = crate::debug_server()?;
    let schemathesis = install_schemathesis()?;

    let work = root().join("target/fuzz");
    let data_dir = work.join(format!("data-{}", std::process::id()));
    std::fs::create_dir_all(&work)
        .map_err(|err| format!("cannot create {}: {err}", work.display()))?;
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    // Random per run, so no example in the document can be the admin's password.
    let password = format!("fuzz-{}-{port}", std::process::id());
    let waiter = |command: &mut Command| {
        command
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .env("WAITER_DATA_DIR", &data_dir)
            .env("WAITER_ADDR", format!("127.0.0.1:{port}"))
            .env("WAITER_LOG", "warn")
            // The fuzzer is one client sending thousands of requests: with
            // the production limits it would mostly see 429s.
            .env("WAITER_RATE_LIMIT_CLIENT", "1000000/1m")
            .env("WAITER_RATE_LIMIT_SIGN_IN", "1000000/1m")
            .env("WAITER_RATE_LIMIT_SIGN_IN_ADDRESS", "1000000/1m")
            .env("WAITER_RATE_LIMIT_SIGN_UP", "1000000/1m")
            .env("WAITER_RATE_LIMIT_REFRESH", "1000000/1m")
            .env("WAITER_METRICS_ADDR", "off");
    };

    let log = std::fs::File::create(work.join("server.log")).map_err(|err| err.to_string())?;
    let hook_log = work.join("hook.log");
    let _ = std::fs::remove_file(&hook_log);
    let mut serve = Command::new(&binary);
    waiter(serve.arg("serve").stdout(Stdio::null()).stderr(log));
    let mut server = Server(
        serve
            .spawn()
            .map_err(|err| format!("cannot start {}: {err}", binary.display()))?,
    );
    let outcome = wait_until_listening(&mut server, port).and_then(|()| {
        let mut run = Command::new(&schemathesis);
        waiter(&mut run);
        run.current_dir(root())
            .env("WAITER_FUZZ_URL", &url)
            .env("WAITER_FUZZ_BIN", &binary)
            .env("WAITER_ADMIN_PASSWORD", &password)
            .env("WAITER_FUZZ_HOOK_LOG", &hook_log)
            .args(["--config-file", "xtask/fuzz/schemathesis.toml", "run"])
            .arg(format!("{url}/openapi.json"))
            .args(["--checks", "all"])
            .args(["--phases", "examples,coverage,fuzzing,stateful"])
            .args(["--max-time", &seconds.to_string()])
            .args(["--request-timeout", "10"])
            .arg("--no-color");
        eprintln!("$ schemathesis run {url}/openapi.json --checks all --phases examples,coverage,fuzzing,stateful --max-time {seconds}");
        let status = run
            .status()
            .map_err(|err| format!("cannot run schemathesis: {err}"))?;
        if !status.success() {
            return Err(format!(
                "Schemathesis found failures ({status}); the server's log is {}, the sign-in hook's {}",
                work.join("server.log").display(),
                hook_log.display()
            ));
        }
        Ok(())
    });
    drop(server);
    let _ = std::fs::remove_dir_all(&data_dir);
    outcome
}

/// The `schemathesis` command of `target/fuzz-venv`, installed there first if missing.
fn install_schemathesis() -> Result<std::path::PathBuf> {
    let venv = root().join("target/fuzz-venv");
    let command = venv.join("bin/schemathesis");
    if installed(&command) {
        return Ok(command);
    }
    eprintln!("installing {SCHEMATHESIS} into {}", venv.display());
    crate::bench::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    crate::bench::run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        SCHEMATHESIS,
    ]))?;
    if installed(&command) {
        Ok(command)
    } else {
        Err(format!(
            "{} is not a Schemathesis 4 after installing it",
            command.display()
        ))
    }
}

/// True when `command` is a Schemathesis 4.3 or later, before 5.
fn installed(command: &Path) -> bool {
    let Ok(output) = Command::new(command).arg("--version").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text.trim().rsplit(' ').next().unwrap_or_default();
    let mut parts = version.split('.').map(|part| part.parse::<u32>().ok());
    matches!((parts.next(), parts.next()), (Some(Some(4)), Some(Some(minor))) if minor >= 3)
}

/// A loopback port nothing listens on now.
fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|err| format!("cannot find a free port: {err}"))
}

fn wait_until_listening(server: &mut Server, port: u16) -> Result {
    for _ in 0..300 {
        if let Ok(Some(status)) = server.0.try_wait() {
            return Err(format!(
                "the server exited at start-up ({status}); see target/fuzz/server.log"
            ));
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err("the server did not start listening within 30 s".to_owned())
}
