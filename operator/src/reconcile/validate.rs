//! Cross-field checks the CRD schema cannot express (the apiserver v1.20 has no CEL).
//!
//! [`validate`] is pure: the referenced database Secrets are fetched by the caller and handed
//! in as [`SecretFacts`], so every rule is table-tested without an apiserver.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use poolwarden_crds::DbPoolPolicySpec;

/// What the operator learned about one referenced database Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretFacts {
    /// The keys present in the Secret's `data`.
    pub keys: BTreeSet<String>,
}

/// The database Secrets referenced by a spec, by name; `None` when the Secret does not exist.
pub type SecretLookup = BTreeMap<String, Option<SecretFacts>>;

/// One violated rule, with the field path (as `kubectl explain` spells it) and a message that
/// names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The field at fault, for example `spec.autoscaling.minPoolSize`.
    pub field: String,
    /// A sentence naming the field and the values, for conditions and Events.
    pub message: String,
}

fn violation(field: impl Into<String>, message: impl Into<String>) -> Violation {
    Violation {
        field: field.into(),
        message: message.into(),
    }
}

/// Check every cross-field rule; an empty result means the spec is valid.
pub fn validate(spec: &DbPoolPolicySpec, secrets: &SecretLookup) -> Vec<Violation> {
    let mut out = Vec::new();
    let a = &spec.autoscaling;
    if a.min_pool_size > a.max_pool_size {
        out.push(violation(
            "spec.autoscaling.minPoolSize",
            format!(
                "spec.autoscaling.minPoolSize ({}) must be <= spec.autoscaling.maxPoolSize ({})",
                a.min_pool_size, a.max_pool_size
            ),
        ));
    }
    if a.scale_down.utilization_below >= a.scale_up.utilization_above {
        out.push(violation(
            "spec.autoscaling.scaleDown.utilizationBelow",
            format!(
                "spec.autoscaling.scaleDown.utilizationBelow ({}) must be < spec.autoscaling.scaleUp.utilizationAbove ({})",
                a.scale_down.utilization_below, a.scale_up.utilization_above
            ),
        ));
    }
    if a.review.utilization_above > a.scale_up.utilization_above {
        out.push(violation(
            "spec.autoscaling.review.utilizationAbove",
            format!(
                "spec.autoscaling.review.utilizationAbove ({}) must be <= spec.autoscaling.scaleUp.utilizationAbove ({})",
                a.review.utilization_above, a.scale_up.utilization_above
            ),
        ));
    }
    let al = &spec.alerting;
    if al.warning.utilization_above > al.critical.utilization_above {
        out.push(violation(
            "spec.alerting.warning.utilizationAbove",
            format!(
                "spec.alerting.warning.utilizationAbove ({}) must be <= spec.alerting.critical.utilizationAbove ({})",
                al.warning.utilization_above, al.critical.utilization_above
            ),
        ));
    }
    let mut seen = HashSet::new();
    for (i, db) in spec.databases.iter().enumerate() {
        if !seen.insert(db.name.as_str()) {
            out.push(violation(
                format!("spec.databases[{i}].name"),
                format!(
                    "spec.databases[{i}].name ({:?}) is used by another database",
                    db.name
                ),
            ));
        }
    }
    for (i, db) in spec.databases.iter().enumerate() {
        let r = &db.credentials_secret_ref;
        let field = format!("spec.databases[{i}].credentialsSecretRef");
        match secrets.get(&r.name) {
            None | Some(None) => out.push(violation(
                format!("{field}.name"),
                format!(
                    "{field}.name: Secret {:?} not found in the policy's namespace",
                    r.name
                ),
            )),
            Some(Some(facts)) => {
                for (key_field, key) in [
                    ("usernameKey", &r.username_key),
                    ("passwordKey", &r.password_key),
                ] {
                    if !facts.keys.contains(key) {
                        out.push(violation(
                            format!("{field}.{key_field}"),
                            format!(
                                "{field}.{key_field}: Secret {:?} has no key {key:?}",
                                r.name
                            ),
                        ));
                    }
                }
            }
        }
    }
    out
}

/// All violations as one condition/Event message.
pub fn summary(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| v.message.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use poolwarden_crds::{CredentialsSecretRef, DatabaseSpec};

    pub(crate) fn spec() -> DbPoolPolicySpec {
        serde_json::from_value(serde_json::json!({
            "databases": [{"name": "clinical", "host": "db", "credentialsSecretRef": {"name": "clinical-db"}}]
        }))
        .unwrap()
    }

    fn good_secrets() -> SecretLookup {
        let keys = ["username", "password"]
            .into_iter()
            .map(String::from)
            .collect();
        BTreeMap::from([("clinical-db".to_string(), Some(SecretFacts { keys }))])
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(validate(&spec(), &good_secrets()), vec![]);
    }

    #[test]
    fn each_rule_names_its_field() {
        type Edit = fn(&mut DbPoolPolicySpec, &mut SecretLookup);
        let table: Vec<(&str, Edit, &str)> = vec![
            (
                "min > max",
                |s, _| {
                    s.autoscaling.min_pool_size = 50;
                    s.autoscaling.max_pool_size = 10;
                },
                "spec.autoscaling.minPoolSize (50) must be <= spec.autoscaling.maxPoolSize (10)",
            ),
            (
                "scale down >= scale up",
                |s, _| s.autoscaling.scale_down.utilization_below = 0.8,
                "spec.autoscaling.scaleDown.utilizationBelow (0.8) must be < spec.autoscaling.scaleUp.utilizationAbove (0.8)",
            ),
            (
                "review > scale up",
                |s, _| s.autoscaling.review.utilization_above = 0.85,
                "spec.autoscaling.review.utilizationAbove (0.85) must be <= spec.autoscaling.scaleUp.utilizationAbove (0.8)",
            ),
            (
                "warning > critical",
                |s, _| s.alerting.warning.utilization_above = 0.95,
                "spec.alerting.warning.utilizationAbove (0.95) must be <= spec.alerting.critical.utilizationAbove (0.9)",
            ),
            (
                "duplicate database",
                |s, _| {
                    let again = s.databases[0].clone();
                    s.databases.push(again);
                },
                "spec.databases[1].name (\"clinical\") is used by another database",
            ),
            (
                "secret missing",
                |_, l| {
                    l.insert("clinical-db".into(), None);
                },
                "spec.databases[0].credentialsSecretRef.name: Secret \"clinical-db\" not found in the policy's namespace",
            ),
            (
                "secret not looked up",
                |_, l| l.clear(),
                "spec.databases[0].credentialsSecretRef.name: Secret \"clinical-db\" not found in the policy's namespace",
            ),
            (
                "password key missing",
                |s, _| s.databases[0].credentials_secret_ref.password_key = "pw".into(),
                "spec.databases[0].credentialsSecretRef.passwordKey: Secret \"clinical-db\" has no key \"pw\"",
            ),
            (
                "username key missing",
                |s, _| s.databases[0].credentials_secret_ref.username_key = "user".into(),
                "spec.databases[0].credentialsSecretRef.usernameKey: Secret \"clinical-db\" has no key \"user\"",
            ),
        ];
        for (name, edit, want) in table {
            let (mut s, mut l) = (spec(), good_secrets());
            edit(&mut s, &mut l);
            let got = validate(&s, &l);
            assert_eq!(got.len(), 1, "{name}: {got:?}");
            assert_eq!(got[0].message, want, "{name}");
            assert!(
                got[0].message.starts_with(&got[0].field),
                "{name}: message names the field"
            );
        }
    }

    #[test]
    fn boundaries_are_allowed() {
        let mut s = spec();
        s.autoscaling.min_pool_size = 10;
        s.autoscaling.max_pool_size = 10;
        s.autoscaling.review.utilization_above = 0.8;
        s.alerting.warning.utilization_above = 0.9;
        assert_eq!(validate(&s, &good_secrets()), vec![]);
    }

    #[test]
    fn several_violations_are_all_reported() {
        let mut s = spec();
        s.autoscaling.min_pool_size = 50;
        s.autoscaling.max_pool_size = 10;
        s.databases.push(DatabaseSpec {
            name: "other".into(),
            host: "db2".into(),
            port: 5432,
            dbname: None,
            credentials_secret_ref: CredentialsSecretRef {
                name: "missing".into(),
                username_key: "username".into(),
                password_key: "password".into(),
            },
            ssl_mode: Default::default(),
        });
        let got = validate(&s, &good_secrets());
        let fields: Vec<_> = got.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.autoscaling.minPoolSize",
                "spec.databases[1].credentialsSecretRef.name"
            ]
        );
        assert!(summary(&got).contains("; "));
    }
}
