//! Load phases: `name:duration:clinicians`, e.g. `ward-round:40s:25`.

use std::time::Duration;

/// One phase of the demo load.
#[derive(Clone, Debug, PartialEq)]
pub struct Phase {
    pub name: String,
    pub duration: Duration,
    pub clinicians: usize,
}

/// Parse a comma-separated list of `name:duration:clinicians`.
pub fn parse_phases(text: &str) -> Result<Vec<Phase>, String> {
    text.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let parts: Vec<&str> = p.trim().split(':').collect();
            let [name, dur, n] = parts.as_slice() else {
                return Err(format!("phase {p:?}: expected name:duration:clinicians"));
            };
            let secs = dur
                .trim_end_matches('s')
                .parse::<u64>()
                .map_err(|_| format!("phase {p:?}: duration {dur:?} is not like 30s"))?;
            let clinicians = n
                .parse()
                .map_err(|_| format!("phase {p:?}: clinicians {n:?} is not a number"))?;
            Ok(Phase {
                name: name.to_string(),
                duration: Duration::from_secs(secs),
                clinicians,
            })
        })
        .collect()
}

/// The phase running at `elapsed`, if any.
pub fn phase_at(phases: &[Phase], elapsed: Duration) -> Option<(usize, &Phase)> {
    let mut start = Duration::ZERO;
    for (i, p) in phases.iter().enumerate() {
        if elapsed < start + p.duration {
            return Some((i, p));
        }
        start += p.duration;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_locates_phases() {
        let phases = parse_phases("quiet:10s:2, ward-round:20s:25").unwrap();
        assert_eq!(phases.len(), 2);
        assert_eq!(phases[1].clinicians, 25);
        assert_eq!(phase_at(&phases, Duration::from_secs(5)).unwrap().0, 0);
        assert_eq!(phase_at(&phases, Duration::from_secs(10)).unwrap().0, 1);
        assert!(phase_at(&phases, Duration::from_secs(30)).is_none());
        assert!(parse_phases("quiet:10:x").is_err());
        assert!(parse_phases("quiet").is_err());
    }
}
