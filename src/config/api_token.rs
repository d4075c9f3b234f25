//! A generated API token (no `API_TOKEN` set) never goes to stdout or stderr, which
//! are the platform's log on Docker and Railway. It is kept in a file only its
//! owner can read, `<data folder>/api-token` (the SQLite database's folder, else
//! `data/`), reused at the next start, and only that path and a fingerprint are
//! printed.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{Config, Secret};

/// The folder the token file lives in.
pub fn data_dir(config: &Config) -> PathBuf {
    let url = config.database_url.expose();
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .map(|path| path.split('?').next().unwrap_or(path))
        .and_then(|path| Path::new(path).parent())
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("data"))
}

/// The first 12 hex digits of the token's SHA-256: enough to tell tokens apart,
/// useless to an attacker.
pub fn fingerprint(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Replaces a generated token by the one kept in `dir/api-token`, or keeps the
/// generated one there (mode 0600). Returns the file's path.
pub fn keep_generated(config: &mut Config, dir: &Path) -> std::io::Result<PathBuf> {
    let path = dir.join("api-token");
    if let Ok(kept) = std::fs::read_to_string(&path) {
        let kept = kept.trim();
        if kept.len() >= 16 {
            config.api_token = Secret::new(kept);
            return Ok(path);
        }
    }
    std::fs::create_dir_all(dir)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path)?;
    file.write_all(config.api_token.expose().as_bytes())?;
    file.write_all(b"\n")?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_is_kept_private_and_reused() {
        let dir = std::env::temp_dir().join(format!("voxrelay-token-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut first = Config::from_vars(Default::default()).unwrap();
        let path = keep_generated(&mut first, &dir).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let mut second = Config::from_vars(Default::default()).unwrap();
        assert_ne!(first.api_token.expose(), second.api_token.expose());
        keep_generated(&mut second, &dir).unwrap();
        assert_eq!(first.api_token.expose(), second.api_token.expose());
        let print = fingerprint(first.api_token.expose());
        assert_eq!(print.len(), 12);
        assert!(!first.api_token.expose().contains(&print));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_data_folder_follows_the_sqlite_database() {
        let c = Config::from_vars(Default::default()).unwrap();
        assert_eq!(data_dir(&c), PathBuf::from("data"));
        let c = Config::from_vars(
            [(
                "DATABASE_URL".to_string(),
                "sqlite:///var/lib/vox/calls.db?mode=rwc".to_string(),
            )]
            .into_iter()
            .collect(),
        )
        .unwrap();
        assert_eq!(data_dir(&c), PathBuf::from("/var/lib/vox"));
    }
}
