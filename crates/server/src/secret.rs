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
            write_private(&path, secret.expose())
                .with_context(|| format!("cannot write the signing key to {}", path.display()))?;
            tracing::info!(path = %path.display(), "generated a new access-token signing key");
            Ok(secret)
        }
        Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Creates `path` readable by its owner only; never overwrites an existing file.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
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
