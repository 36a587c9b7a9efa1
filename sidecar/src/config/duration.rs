//! Durations as the config file writes them: a number with a unit (`250ms`, `30s`, `5m`,
//! `1h`, `1d`); a bare number means seconds.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A configuration duration. Serialises back to the shortest exact unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ConfigDuration(pub Duration);

/// What the parser accepts, for error messages.
pub const ACCEPTED: &str = "a duration such as 250ms, 30s, 5m, 1h or a bare number of seconds";

impl ConfigDuration {
    pub const fn from_secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }
    pub const fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }
    pub fn get(self) -> Duration {
        self.0
    }
    /// Seconds with two decimals, as in the QueuePool error message (`30.00`).
    pub fn secs_2dp(self) -> String {
        format!("{:.2}", self.0.as_secs_f64())
    }
}

/// Parse `250ms`, `30s`, `5m`, `1h`, `1d`, `1.5s` or a bare number of seconds.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    if s.is_empty() {
        return Err("empty".into());
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{input:?} is not a number with a unit"))?;
    let scale = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 0.001,
        "us" => 0.000_001,
        "m" | "min" | "mins" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        other => return Err(format!("unknown unit {other:?}")),
    };
    let secs = value * scale;
    if !secs.is_finite() || !(0.0..=1.0e9).contains(&secs) {
        return Err(format!("{input:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return write!(f, "0s");
        }
        for (unit, size) in [
            ("d", 86_400_000u128),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1000),
        ] {
            if ms.is_multiple_of(size) {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl std::str::FromStr for ConfigDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s).map(Self)
    }
}

impl Serialize for ConfigDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Str(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Num(n) => n.to_string(),
            Raw::Str(s) => s,
        };
        parse_duration(&text)
            .map(Self)
            .map_err(|e| serde::de::Error::custom(format!("{e}; expected {ACCEPTED}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        let table = [
            ("250ms", 250),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("1d", 86_400_000),
            ("30", 30_000),
            ("1.5s", 1500),
            (" 2s ", 2000),
        ];
        for (text, ms) in table {
            assert_eq!(
                parse_duration(text).unwrap(),
                Duration::from_millis(ms),
                "{text}"
            );
        }
    }

    #[test]
    fn rejects_garbage() {
        for text in ["", "s", "5x", "-1s", "abc", "1e400s", "5 parsecs"] {
            assert!(parse_duration(text).is_err(), "{text:?} should fail");
        }
    }

    #[test]
    fn displays_shortest_exact_unit_and_round_trips() {
        let table = [
            (30_000, "30s"),
            (3_600_000, "1h"),
            (250, "250ms"),
            (90_000, "90s"),
            (0, "0s"),
        ];
        for (ms, text) in table {
            let d = ConfigDuration::from_millis(ms);
            assert_eq!(d.to_string(), text);
            assert_eq!(text.parse::<ConfigDuration>().unwrap(), d);
        }
        assert_eq!(ConfigDuration::from_secs(30).secs_2dp(), "30.00");
        assert_eq!(ConfigDuration::from_millis(1500).secs_2dp(), "1.50");
    }
}
