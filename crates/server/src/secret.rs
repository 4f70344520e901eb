//! The access-token signing key when none is configured: generated on first
//! start and kept in the data dir with mode 0600, so tokens survive restarts.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::Path;

use anyhow::Context as _;
use waiter_services::JwtSecret;

/// The file, inside the data dir, that holds a generated key.
const FILE_NAME: &str = "jwt-secret";

/// Reads the key kept in `data_dir`, creating it first if there is none.
pub(crate) fn load_or_generate(data_dir: &Path) -> anyhow::Result<JwtSecret> {
    let path = data_dir.join(FILE_NAME);
    match fs::read(&path) {
        Ok(bytes) => JwtSecret::new(bytes)
            .with_context(|| format!("the signing key in {} is unusable", path.display())),
        Err(err) if err.kind() == ErrorKind::NotFound => {
            let secret = JwtSecret::generate();
            match publish_private(data_dir, &path, secret.expose()) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "generated a new access-token signing key");
                    Ok(secret)
                }
                // Another instance sharing the data dir published its key first: use that one.
                Err(err) if err.kind() == ErrorKind::AlreadyExists => load_or_generate(data_dir),
                Err(err) => Err(err)
                    .with_context(|| format!("cannot write the signing key to {}", path.display())),
            }
        }
        Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes `bytes` to a private temporary file, then links it into place:
/// `path` either does not exist or holds the whole key, even after a crash,
/// and an existing key is never replaced.
fn publish_private(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = dir.join(format!(".{FILE_NAME}.{}.tmp", std::process::id()));
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&temporary).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    let published = written.and_then(|()| fs::hard_link(&temporary, path));
    let _ = fs::remove_file(&temporary);
    published
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_is_kept_private_and_reused() {
        let dir = std::env::temp_dir().join(format!("waiter-secret-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let first = load_or_generate(&dir).unwrap();
        let second = load_or_generate(&dir).unwrap();
        assert_eq!(first.expose(), second.expose());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join(FILE_NAME))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_short_kept_key_is_refused() {
        let dir = std::env::temp_dir().join(format!("waiter-short-secret-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(FILE_NAME), b"too short").unwrap();
        let err = load_or_generate(&dir).unwrap_err();
        assert!(format!("{err:#}").contains("at least 32 bytes"), "{err:#}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
