//! Logging set-up: `tracing` to stderr, JSON when `POOLWARDEN_LOG_FORMAT=json` (one object per
//! line, for log pipelines), compact text otherwise; the level filter comes from `RUST_LOG`
//! (default `info`).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::env::{self, Env};

/// The filter used when `RUST_LOG` is unset or invalid.
pub const DEFAULT_FILTER: &str = "info";
/// The variable holding the filter.
pub const RUST_LOG: &str = "RUST_LOG";

/// How log lines look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Compact human-readable text.
    Text,
}

impl LogFormat {
    /// From `POOLWARDEN_LOG_FORMAT`: `json` (any case) is JSON, anything else text.
    pub fn from_env(env: &dyn Env) -> Self {
        match env.var(env::LOG_FORMAT) {
            Some(v) if v.trim().eq_ignore_ascii_case("json") => LogFormat::Json,
            _ => LogFormat::Text,
        }
    }
}

/// The level filter from `RUST_LOG`; an invalid one falls back to `info`, with the reason.
pub fn filter_from_env(env: &dyn Env) -> (EnvFilter, Option<String>) {
    match env.var(RUST_LOG) {
        Some(spec) => match EnvFilter::try_new(&spec) {
            Ok(f) => (f, None),
            Err(e) => (
                EnvFilter::new(DEFAULT_FILTER),
                Some(format!("invalid {RUST_LOG}: {e}")),
            ),
        },
        None => (EnvFilter::new(DEFAULT_FILTER), None),
    }
}

/// A subscriber writing to `writer` (tests hand in a buffer; [`init`] uses stderr).
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .finish(),
        ),
        LogFormat::Text => Box::new(builder.compact().with_ansi(false).finish()),
    }
}

/// Install the global subscriber for the process (call once, first thing in `main`).
pub fn init(env: &dyn Env) -> Result<(), tracing::subscriber::SetGlobalDefaultError> {
    let (filter, problem) = filter_from_env(env);
    tracing::subscriber::set_global_default(subscriber(
        LogFormat::from_env(env),
        filter,
        std::io::stderr,
    ))?;
    if let Some(problem) = problem {
        tracing::warn!("{problem}; using {DEFAULT_FILTER}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::config::env::from_pairs;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buf {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn capture(pairs: &[(&str, &str)], emit: impl FnOnce()) -> String {
        let env = from_pairs(pairs);
        let buf = Buf::default();
        let writer = buf.clone();
        let (filter, _) = filter_from_env(&env);
        let sub = subscriber(LogFormat::from_env(&env), filter, move || writer.clone());
        tracing::subscriber::with_default(sub, emit);
        buf.text()
    }

    #[test]
    fn format_table() {
        let table = [
            (vec![], LogFormat::Text),
            (vec![("POOLWARDEN_LOG_FORMAT", "json")], LogFormat::Json),
            (vec![("POOLWARDEN_LOG_FORMAT", " JSON ")], LogFormat::Json),
            (vec![("POOLWARDEN_LOG_FORMAT", "text")], LogFormat::Text),
            (vec![("POOLWARDEN_LOG_FORMAT", "yaml")], LogFormat::Text),
        ];
        for (pairs, want) in table {
            assert_eq!(LogFormat::from_env(&from_pairs(&pairs)), want, "{pairs:?}");
        }
    }

    #[test]
    fn json_lines_with_default_info_filter() {
        let text = capture(&[("POOLWARDEN_LOG_FORMAT", "json")], || {
            tracing::debug!("hidden by default");
            tracing::info!(pool_size = 20, "pool ready");
        });
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "pool ready");
        assert_eq!(v["pool_size"], 20);
    }

    #[test]
    fn rust_log_filters_and_text_is_plain() {
        let text = capture(&[("RUST_LOG", "debug")], || {
            tracing::debug!(n = 1, "shown");
        });
        assert!(text.contains("shown") && text.contains("n=1"), "{text}");
        assert!(serde_json::from_str::<serde_json::Value>(text.trim()).is_err());
        assert!(!text.contains('\u{1b}'), "no colour codes: {text:?}");
        let text = capture(&[("RUST_LOG", "warn")], || tracing::info!("quiet"));
        assert!(text.is_empty(), "{text}");
    }

    #[test]
    fn invalid_rust_log_falls_back_to_info() {
        let (_, problem) = filter_from_env(&from_pairs(&[("RUST_LOG", "foo=notalevel")]));
        assert!(problem.unwrap().contains("RUST_LOG"));
        let text = capture(&[("RUST_LOG", "foo=notalevel")], || {
            tracing::info!("info passes");
            tracing::debug!("debug does not");
        });
        assert!(
            text.contains("info passes") && !text.contains("debug does not"),
            "{text}"
        );
    }
}
