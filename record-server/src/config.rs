//! The server's settings: the seed's eight `.env` keys and ours, with their defaults, where each
//! value came from, and the checks that stop a bad value at start-up.
//!
//! Precedence, lowest first: built-in defaults, the `.env` file, real environment variables,
//! command-line flags ([`Overrides`]). Relative paths in the `.env` file are resolved against the
//! file's folder (the seed kept `.env` beside `server.py` and meant paths from there); relative
//! paths from the environment, from flags, or with no file at all, against the current folder.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

/// The default `.env` file name, looked up in the current folder.
pub const DEFAULT_ENV_FILE: &str = ".env";
/// Where data goes when no path is configured: `record-data/data/<id>.txt` and
/// `record-data/records.json`.
pub const DEFAULT_DATA_DIR: &str = "record-data";
/// The largest `MAX_MESSAGE_BYTES` accepted.
pub const MAX_MESSAGE_BYTES_CEILING: usize = 64 * 1024 * 1024;

/// Every key the server reads, in the order the README lists them.
pub const KEYS: [&str; 11] = [
    "SERVER_PORT",
    "SERVER_HOST",
    "MAX_CONNECTION",
    "UPDATE_TIMER",
    "UPDATE_TRESH",
    "FILE_PATH",
    "RECORD_PATH",
    "RECORD_FILE",
    "CLIENT_TIMEOUT",
    "MAX_MESSAGE_BYTES",
    "REQUIRE_AUTH",
];

/// Why the settings could not be loaded. Each names the file or key at fault.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// `--env-file` names a file that cannot be read.
    #[error("cannot read the settings file {path}: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What the system said.
        reason: String,
    },
    /// The `.env` file is not `KEY=value` lines.
    #[error("{path}: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What dotenvy said, with the line.
        reason: String,
    },
    /// A value that does not parse or is out of range.
    #[error("{key}={value:?} ({origin}): expected {expected}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// The value as given.
        value: String,
        /// Where it came from.
        origin: Origin,
        /// What would have been accepted.
        expected: &'static str,
    },
}

/// Where a setting came from, for error messages and the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// A line of this `.env` file.
    File(PathBuf),
    /// A real environment variable.
    Environment,
    /// A command-line flag.
    Flag,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(path) => write!(f, "from {}", path.display()),
            Origin::Environment => f.write_str("from the environment"),
            Origin::Flag => f.write_str("from the command line"),
        }
    }
}

/// Command-line flags that override the file and the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--env-file`: read this file instead of `./.env` (it must exist).
    pub env_file: Option<PathBuf>,
    /// `--host`.
    pub host: Option<String>,
    /// `--port`.
    pub port: Option<u16>,
    /// `--data-dir D`: records in `D/data`, the record file in `D`.
    pub data_dir: Option<PathBuf>,
}

/// The record server's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// SERVER_HOST: the address or host name to listen on (default 127.0.0.1).
    pub host: String,
    /// SERVER_PORT (default 12000; 0 picks a free port).
    pub port: u16,
    /// MAX_CONNECTION: connections served at once; one more is told the server is full.
    pub max_connections: usize,
    /// UPDATE_TIMER: how often the updater runs.
    pub update_timer: Duration,
    /// UPDATE_TRESH: records older than this get a fresh timestamp from the updater.
    pub update_threshold: Duration,
    /// FILE_PATH: the folder of `<id>.txt` files.
    pub file_path: PathBuf,
    /// RECORD_PATH: the folder of the record file (and of the password file).
    pub record_path: PathBuf,
    /// RECORD_FILE: the record file's name (default records.json).
    pub record_file: String,
    /// CLIENT_TIMEOUT: a connection idle this long is closed (default 300 s).
    pub client_timeout: Duration,
    /// MAX_MESSAGE_BYTES: the longest request accepted (default 65536).
    pub max_message_bytes: usize,
    /// REQUIRE_AUTH: reads and writes need a password per id (default false).
    pub require_auth: bool,
    /// The `.env` file that was read, if any.
    pub env_file: Option<PathBuf>,
}

impl Settings {
    /// The settings with nothing configured, paths relative to `base`.
    pub fn defaults(base: &Path) -> Settings {
        let data = base.join(DEFAULT_DATA_DIR);
        Settings {
            host: "127.0.0.1".into(),
            port: 12000,
            max_connections: 64,
            update_timer: Duration::from_secs(60),
            update_threshold: Duration::from_secs(900),
            file_path: data.join("data"),
            record_path: data,
            record_file: "records.json".into(),
            client_timeout: Duration::from_secs(300),
            max_message_bytes: protocol::record::DEFAULT_MAX_MESSAGE_BYTES,
            require_auth: false,
            env_file: None,
        }
    }

    /// Loads the settings the way `cli record-server` does: the `.env` file (`--env-file`, else
    /// `./.env` if there is one), then the process environment, then `overrides`; relative paths
    /// against `cwd` unless they come from the file.
    pub fn load(overrides: &Overrides, cwd: &Path) -> Result<Settings, ConfigError> {
        let environment: HashMap<String, String> = KEYS
            .iter()
            .filter_map(|key| {
                std::env::var(key)
                    .ok()
                    .map(|value| (key.to_string(), value))
            })
            .collect();
        Settings::load_from(overrides, cwd, &environment)
    }

    /// [`Settings::load`] with the environment given explicitly (for tests).
    pub fn load_from(
        overrides: &Overrides,
        cwd: &Path,
        environment: &HashMap<String, String>,
    ) -> Result<Settings, ConfigError> {
        let env_file = match &overrides.env_file {
            Some(path) => Some(resolve(cwd, path)),
            None => Some(cwd.join(DEFAULT_ENV_FILE)).filter(|path| path.is_file()),
        };
        let mut values = match &env_file {
            Some(path) => read_env_file(path)?,
            None => HashMap::new(),
        };
        for (key, value) in environment {
            if let Some(key) = KEYS.iter().find(|known| **known == key.as_str()) {
                values.insert(key, (value.clone(), Origin::Environment));
            }
        }
        let mut settings = Settings::defaults(cwd);
        settings.env_file = env_file;
        settings.apply(&values, cwd)?;
        settings.apply_overrides(overrides, cwd);
        Ok(settings)
    }

    /// The record file's full path.
    pub fn record_file_path(&self) -> PathBuf {
        self.record_path.join(&self.record_file)
    }

    fn apply(
        &mut self,
        values: &HashMap<&'static str, (String, Origin)>,
        cwd: &Path,
    ) -> Result<(), ConfigError> {
        for (&key, (raw, origin)) in values {
            let value = Value { key, raw, origin };
            match key {
                "SERVER_PORT" => self.port = value.parse("a port number 0..65535")?,
                "SERVER_HOST" => self.host = value.non_empty("a host name or address")?,
                "MAX_CONNECTION" => self.max_connections = value.positive("a whole number >= 1")?,
                "UPDATE_TIMER" => self.update_timer = value.seconds(1)?,
                "UPDATE_TRESH" => self.update_threshold = value.seconds(0)?,
                "FILE_PATH" => self.file_path = value.path(cwd)?,
                "RECORD_PATH" => self.record_path = value.path(cwd)?,
                "RECORD_FILE" => self.record_file = value.file_name()?,
                "CLIENT_TIMEOUT" => self.client_timeout = value.seconds(1)?,
                "MAX_MESSAGE_BYTES" => self.max_message_bytes = value.message_limit()?,
                "REQUIRE_AUTH" => self.require_auth = value.boolean()?,
                _ => unreachable!("only known keys are collected"),
            }
        }
        Ok(())
    }

    fn apply_overrides(&mut self, overrides: &Overrides, cwd: &Path) {
        if let Some(host) = &overrides.host {
            self.host.clone_from(host);
        }
        if let Some(port) = overrides.port {
            self.port = port;
        }
        if let Some(dir) = &overrides.data_dir {
            let dir = resolve(cwd, dir);
            self.file_path = dir.join("data");
            self.record_path = dir;
        }
    }
}

/// `path` against `base`, without the `.` components that joining leaves (`/srv/./data`).
fn resolve(base: &Path, path: &Path) -> PathBuf {
    base.join(path)
        .components()
        .filter(|part| *part != std::path::Component::CurDir)
        .collect()
}

/// The known keys of a `.env` file, each with the file as its origin. Unknown keys are ignored
/// (a `.env` is often shared with other tools).
fn read_env_file(path: &Path) -> Result<HashMap<&'static str, (String, Origin)>, ConfigError> {
    let lines = dotenvy::from_path_iter(path).map_err(|err| ConfigError::Unreadable {
        path: path.to_owned(),
        reason: err.to_string(),
    })?;
    let mut values = HashMap::new();
    for line in lines {
        let (key, value) = line.map_err(|err| ConfigError::Syntax {
            path: path.to_owned(),
            reason: err.to_string(),
        })?;
        if let Some(key) = KEYS.iter().find(|known| **known == key) {
            values.insert(*key, (value, Origin::File(path.to_owned())));
        }
    }
    Ok(values)
}

/// One configured value on its way to being parsed.
struct Value<'a> {
    key: &'static str,
    raw: &'a str,
    origin: &'a Origin,
}

impl Value<'_> {
    fn invalid(&self, expected: &'static str) -> ConfigError {
        ConfigError::Invalid {
            key: self.key,
            value: self.raw.to_owned(),
            origin: self.origin.clone(),
            expected,
        }
    }

    fn parse<T: std::str::FromStr>(&self, expected: &'static str) -> Result<T, ConfigError> {
        self.raw.trim().parse().map_err(|_| self.invalid(expected))
    }

    fn non_empty(&self, expected: &'static str) -> Result<String, ConfigError> {
        let value = self.raw.trim();
        if value.is_empty() {
            return Err(self.invalid(expected));
        }
        Ok(value.to_owned())
    }

    fn positive(&self, expected: &'static str) -> Result<usize, ConfigError> {
        match self.parse::<usize>(expected)? {
            0 => Err(self.invalid(expected)),
            n => Ok(n),
        }
    }

    fn seconds(&self, min: u64) -> Result<Duration, ConfigError> {
        let expected = if min == 0 {
            "a whole number of seconds >= 0"
        } else {
            "a whole number of seconds >= 1"
        };
        match self.parse::<u64>(expected)? {
            secs if secs < min => Err(self.invalid(expected)),
            secs => Ok(Duration::from_secs(secs)),
        }
    }

    fn message_limit(&self) -> Result<usize, ConfigError> {
        const EXPECTED: &str = "a number of bytes from 1024 to 67108864";
        match self.parse::<usize>(EXPECTED)? {
            n if (1024..=MAX_MESSAGE_BYTES_CEILING).contains(&n) => Ok(n),
            _ => Err(self.invalid(EXPECTED)),
        }
    }

    fn boolean(&self) -> Result<bool, ConfigError> {
        match self.raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(self.invalid("true or false")),
        }
    }

    fn path(&self, cwd: &Path) -> Result<PathBuf, ConfigError> {
        let path = Path::new(self.non_empty("a folder path")?.as_str()).to_owned();
        let base = match self.origin {
            Origin::File(file) => file.parent().unwrap_or(cwd).to_owned(),
            _ => cwd.to_owned(),
        };
        Ok(resolve(&base, &path))
    }

    fn file_name(&self) -> Result<String, ConfigError> {
        const EXPECTED: &str = "a file name without a folder, such as records.json";
        let name = self.non_empty(EXPECTED)?;
        let plain = Path::new(&name)
            .file_name()
            .is_some_and(|f| f == name.as_str());
        if !plain || name.starts_with('.') {
            return Err(self.invalid(EXPECTED));
        }
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn load(
        dir: &Path,
        env: &[(&str, &str)],
        overrides: Overrides,
    ) -> Result<Settings, ConfigError> {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::load_from(&overrides, dir, &env)
    }

    #[test]
    fn no_env_file_means_defaults_under_the_current_folder() {
        let dir = tempfile::tempdir().unwrap();
        let settings = load(dir.path(), &[], Overrides::default()).unwrap();
        assert_eq!(settings, Settings::defaults(dir.path()));
        assert_eq!(settings.port, 12000);
        assert_eq!(settings.host, "127.0.0.1");
        assert_eq!(settings.file_path, dir.path().join("record-data/data"));
        assert_eq!(
            settings.record_file_path(),
            dir.path().join("record-data/records.json")
        );
    }

    #[test]
    fn the_seeds_env_file_is_read_with_quotes_and_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("conf");
        fs::create_dir(&conf).unwrap();
        fs::write(
            conf.join("server.env"),
            "SERVER_PORT=12001\nSERVER_HOST=\"localhost\"\nMAX_CONNECTION=10\nUPDATE_TIMER=60\n\
             UPDATE_TRESH=900\nFILE_PATH='data'\nRECORD_PATH=.\nRECORD_FILE=records.json\n\
             # ours\nCLIENT_TIMEOUT=30\nMAX_MESSAGE_BYTES=2048\nREQUIRE_AUTH=true\nOTHER_TOOL=x\n",
        )
        .unwrap();
        let overrides = Overrides {
            env_file: Some("conf/server.env".into()),
            ..Overrides::default()
        };
        let s = load(dir.path(), &[], overrides).unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.max_connections),
            ("localhost", 12001, 10)
        );
        assert_eq!(s.update_timer, Duration::from_secs(60));
        assert_eq!(s.update_threshold, Duration::from_secs(900));
        assert_eq!(
            s.file_path,
            conf.join("data"),
            "relative to the .env folder"
        );
        assert_eq!(s.record_file_path(), conf.join("records.json"));
        assert_eq!(s.client_timeout, Duration::from_secs(30));
        assert_eq!(s.max_message_bytes, 2048);
        assert!(s.require_auth);
    }

    #[test]
    fn the_environment_overrides_the_file_and_flags_override_both() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(".env"),
            "SERVER_PORT=1\nSERVER_HOST=a\nFILE_PATH=/x\n",
        )
        .unwrap();
        let overrides = Overrides {
            port: Some(3),
            data_dir: Some("d".into()),
            ..Overrides::default()
        };
        let s = load(
            dir.path(),
            &[
                ("SERVER_PORT", "2"),
                ("SERVER_HOST", "b"),
                ("FILE_PATH", "envdata"),
            ],
            overrides,
        )
        .unwrap();
        assert_eq!(s.port, 3);
        assert_eq!(s.host, "b");
        assert_eq!(s.file_path, dir.path().join("d/data"));
        assert_eq!(s.record_path, dir.path().join("d"));
    }

    #[test]
    fn a_malformed_value_names_the_key_the_value_and_what_is_expected() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("SERVER_PORT", "70000", "a port number"),
            ("MAX_CONNECTION", "0", ">= 1"),
            ("MAX_CONNECTION", "ten", ">= 1"),
            ("UPDATE_TIMER", "0", "seconds >= 1"),
            ("UPDATE_TRESH", "-5", "seconds >= 0"),
            ("CLIENT_TIMEOUT", "1.5", "seconds >= 1"),
            ("MAX_MESSAGE_BYTES", "10", "from 1024"),
            ("REQUIRE_AUTH", "maybe", "true or false"),
            ("RECORD_FILE", "../records.json", "without a folder"),
            ("SERVER_HOST", "", "host name"),
        ];
        for (key, value, expected) in cases {
            fs::write(dir.path().join(".env"), format!("{key}=\"{value}\"\n")).unwrap();
            let err = load(dir.path(), &[], Overrides::default()).unwrap_err();
            let message = err.to_string();
            assert!(
                message.starts_with(&format!("{key}={value:?}")),
                "{message}"
            );
            assert!(message.contains(expected), "{message}");
            assert!(message.contains(".env"), "names the file: {message}");
        }
    }

    #[test]
    fn a_missing_env_file_given_explicitly_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let overrides = Overrides {
            env_file: Some("nope.env".into()),
            ..Overrides::default()
        };
        let err = load(dir.path(), &[], overrides).unwrap_err();
        assert!(err.to_string().contains("nope.env"), "{err}");
    }

    #[test]
    fn a_line_that_is_not_key_value_is_a_syntax_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(".env"),
            "SERVER_PORT=1\nthis is not a setting\n",
        )
        .unwrap();
        let err = load(dir.path(), &[], Overrides::default()).unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
        assert!(err.to_string().contains(".env"), "{err}");
    }
}
