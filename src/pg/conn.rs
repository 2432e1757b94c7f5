//! How to reach one database: host, port, role, password, name.
//!
//! The password is a [`Secret`]: it never shows in `Debug`, `Display` or
//! logs. Child programs (`pg_dump`, `pg_restore`) get it through `PGPASSWORD`
//! in their environment rather than on the command line, where `ps` shows it.

use std::fmt;
use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;

use super::PgError;

/// A string that must not be printed: passwords, secret keys.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The real value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

/// Connection facts for one database.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnInfo {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Secret,
    pub database: String,
}

impl ConnInfo {
    /// The same server and role, another database.
    pub fn with_database(&self, database: &str) -> Self {
        Self {
            database: database.to_owned(),
            ..self.clone()
        }
    }

    /// `postgres://user:password@host:port/db`, password included: hand it
    /// only to a user who asked for it (`drillbook env up`) or to a driver.
    pub fn url(&self) -> String {
        let mut url = url::Url::parse("postgres://localhost").expect("static URL parses");
        url.set_host(Some(&self.host)).expect("host is valid");
        url.set_port(Some(self.port)).expect("postgres URLs take ports");
        url.set_username(&self.user).expect("postgres URLs take users");
        if !self.password.expose().is_empty() {
            url.set_password(Some(self.password.expose()))
                .expect("postgres URLs take passwords");
        }
        url.set_path(&self.database);
        url.to_string()
    }

    /// The URL with the password replaced by `***`, for logs and errors.
    pub fn redacted_url(&self) -> String {
        let password = if self.password.expose().is_empty() { "" } else { ":***" };
        format!(
            "postgres://{}{password}@{}:{}/{}",
            self.user, self.host, self.port, self.database
        )
    }

    pub fn connect_options(&self) -> PgConnectOptions {
        PgConnectOptions::new()
            .host(&self.host)
            .port(self.port)
            .username(&self.user)
            .password(self.password.expose())
            .database(&self.database)
            .application_name(session_name())
    }

    /// libpq environment for child programs (`PGHOST`, `PGPASSWORD`, ...).
    pub fn libpq_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PGHOST", self.host.clone()),
            ("PGPORT", self.port.to_string()),
            ("PGUSER", self.user.clone()),
            ("PGPASSWORD", self.password.expose().to_owned()),
            ("PGDATABASE", self.database.clone()),
            ("PGCONNECT_TIMEOUT", "10".to_owned()),
            ("PGAPPNAME", session_name().to_owned()),
        ]
    }
}

/// What every drillbook session's `application_name` starts with.
pub(crate) const SESSION_PREFIX: &str = "drillbook/";

/// The `application_name` of this process's sessions, its own and its
/// child programs': `drillbook/<boot>_<pid>_<start>`. Naming the process
/// lets a later reap end the sessions of a drillbook that was stopped
/// while the server still worked for it ([`super::incomplete::reap`]).
pub(crate) fn session_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| match crate::scratch::ProcessTag::current() {
        Some(tag) => format!("{SESSION_PREFIX}{tag}"),
        None => "drillbook".to_owned(),
    })
}

impl fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted_url())
    }
}

impl fmt::Display for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted_url())
    }
}

impl FromStr for ConnInfo {
    type Err = PgError;

    /// Parses `postgres://` / `postgresql://` URLs.
    fn from_str(s: &str) -> Result<Self, PgError> {
        let bad = |reason: &str| PgError::BadUrl {
            reason: reason.to_owned(),
        };
        let url = url::Url::parse(s).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(bad("the scheme must be postgres:// or postgresql://"));
        }
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let database = url.path().trim_start_matches('/');
        Ok(Self {
            host: url.host_str().ok_or_else(|| bad("the URL has no host"))?.to_owned(),
            port: url.port().unwrap_or(5432),
            user: match url.username() {
                "" => return Err(bad("the URL has no user name")),
                user => decode(user),
            },
            password: Secret::new(url.password().map(decode).unwrap_or_default()),
            database: if database.is_empty() {
                "postgres".to_owned()
            } else {
                decode(database)
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_round_trip_and_never_print_the_password() {
        let info: ConnInfo = "postgres://app:s3cr%40t@127.0.0.1:6543/immoflowme".parse().unwrap();
        assert_eq!(info.password.expose(), "s3cr@t");
        assert_eq!(info.port, 6543);
        assert_eq!(info.database, "immoflowme");
        assert_eq!(info.url().parse::<ConnInfo>().unwrap(), info);
        for shown in [format!("{info}"), format!("{info:?}"), info.redacted_url()] {
            assert!(!shown.contains("s3cr"), "{shown}");
            assert!(shown.contains("app:***@127.0.0.1:6543/immoflowme"), "{shown}");
        }
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let err = "mysql://x@h/db".parse::<ConnInfo>().unwrap_err();
        assert!(err.to_string().contains("postgres://"), "{err}");
        let err = "postgres://h/db".parse::<ConnInfo>().unwrap_err();
        assert!(err.to_string().contains("no user name"), "{err}");
    }
}
