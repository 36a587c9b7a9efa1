use thiserror::Error;

/// A configuration problem. The message names the key, the bad value and what is accepted.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("invalid {key}: {value} (accepted: {accepted})")]
    Invalid {
        key: String,
        value: String,
        accepted: String,
    },
    #[error("missing {key}: {hint}")]
    Missing { key: String, hint: String },
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: String, message: String },
}

impl ConfigError {
    pub fn invalid(
        key: impl Into<String>,
        value: impl std::fmt::Display,
        accepted: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            value: value.to_string(),
            accepted: accepted.into(),
        }
    }
}
