//! The `[store]` part of the configuration: the database URL, and its form fit
//! for a log line. May import `vars`.

use super::{Secret, Vars};

pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/voxrelay.db";

/// `DATABASE_URL`: `sqlite://path` (the default) or `postgres://…`.
pub(super) fn read(env: &mut Vars) -> Secret {
    let url = env
        .get("DATABASE_URL")
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string());
    if !["sqlite:", "postgres://", "postgresql://"]
        .iter()
        .any(|p| url.starts_with(p))
    {
        env.errors.push(format!(
            "DATABASE_URL must start with sqlite: or postgres://, got {:?}",
            redact_database_url(&url)
        ));
    }
    Secret::new(url)
}

/// A database URL fit for a log line: the password (if any) becomes `***`.
pub fn redact_database_url(url: &str) -> String {
    let url = match url.split_once('?') {
        Some((base, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                        format!("{key}=***")
                    }
                    _ => pair.to_string(),
                })
                .collect();
            format!("{base}?{}", query.join("&"))
        }
        None => url.to_string(),
    };
    let Some(scheme_end) = url.find("://") else {
        return url;
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.clone();
    };
    let user_info = &rest[..at];
    let user = match user_info.find(':') {
        Some(colon) => format!("{}:***", &user_info[..colon]),
        None => user_info.to_string(),
    };
    format!("{}{}{}", &url[..scheme_end + 3], user, &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_defaults_to_sqlite_and_is_checked() {
        assert_eq!(
            read(&mut Vars::of(&[])).expose(),
            "sqlite://data/voxrelay.db"
        );
        let mut env = Vars::of(&[("DATABASE_URL", "postgresql://u:pw@db:5432/x")]);
        assert!(!format!("{:?}", read(&mut env)).contains("pw@"));
        assert!(env.errors.is_empty());
        let mut env = Vars::of(&[("DATABASE_URL", "mysql://u:hunter2@db/x")]);
        read(&mut env);
        let err = env.errors.join("");
        assert!(
            err.contains("DATABASE_URL") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn database_urls_are_redacted() {
        assert_eq!(
            redact_database_url("postgres://user:p%40ss@host:5432/db?sslmode=require"),
            "postgres://user:***@host:5432/db?sslmode=require"
        );
        assert_eq!(
            redact_database_url("postgres://user@host/db"),
            "postgres://user@host/db"
        );
        assert_eq!(
            redact_database_url("postgres://host/db?user=a@b"),
            "postgres://host/db?user=a@b"
        );
        assert_eq!(
            redact_database_url("postgres://h/db?user=u&password=secret&sslmode=require"),
            "postgres://h/db?user=u&password=***&sslmode=require"
        );
        assert_eq!(
            redact_database_url("sqlite://data/voxrelay.db"),
            "sqlite://data/voxrelay.db"
        );
    }
}
