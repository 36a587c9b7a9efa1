//! The controller against the real kube-apiserver (and kube-controller-manager for garbage
//! collection): create, update, invalidate, fix and delete a DbPoolPolicy.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use poolwarden_crds::conditions::{reasons, types};
use poolwarden_crds::{Condition, DbPoolPolicy};
use poolwarden_tests::kube_env;
use poolwarden_tests::operator::{create_db_secret, policy, start_controller, wait_for};

/// The parsed `poolwarden.yaml` of a ConfigMap, as loose YAML (read as a user would).
fn config_of(cm: &ConfigMap) -> serde_yaml_ng::Value {
    let text = cm
        .data
        .as_ref()
        .unwrap()
        .get("poolwarden.yaml")
        .expect("poolwarden.yaml key");
    serde_yaml_ng::from_str(text).unwrap()
}

const LIMIT: Duration = Duration::from_secs(30);

fn cond(p: &DbPoolPolicy, t: &str) -> Option<Condition> {
    p.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .cloned()
}

async fn token(secrets: &Api<Secret>, policy: &str) -> String {
    let s = secrets
        .get(&format!("{policy}-poolwarden-admin"))
        .await
        .unwrap();
    String::from_utf8(s.data.unwrap()["token"].0.clone()).unwrap()
}

async fn events(api: &Api<Event>, policy: &str, reason: &str) -> Vec<Event> {
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(policy)
        })
        .collect()
}

#[tokio::test]
async fn operator_reconciles_create_update_invalid_and_delete() {
    let client = kube_env::client().await;
    kube_env::install_crd(&client).await;
    let ns = kube_env::namespace(&client, "op-reconcile").await;
    let policies: Api<DbPoolPolicy> = Api::namespaced(client.clone(), &ns);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let evs: Api<Event> = Api::namespaced(client.clone(), &ns);
    create_db_secret(&client, &ns, "clinical-db", "clinical_app").await;
    let controller = start_controller(&client, &ns);

    // --- create ---
    policies
        .create(
            &PostParams::default(),
            &policy("clinical", "clinical-db", serde_json::json!({})),
        )
        .await
        .unwrap();
    let p = wait_for("Ready=True after create", LIMIT, || async {
        let p = policies.get("clinical").await.unwrap();
        (cond(&p, types::READY)?.status == "True").then_some(p)
    })
    .await;
    let st = p.status.clone().unwrap();
    assert_eq!(st.observed_generation, p.metadata.generation);
    assert_eq!((st.pool_size, st.max_overflow), (Some(20), Some(10)));
    assert_eq!(st.pods.as_ref().unwrap().matched, 0);
    let ready_since = cond(&p, types::READY).unwrap().last_transition_time;
    let valid = cond(&p, types::SPEC_VALID).unwrap();
    assert_eq!(
        (valid.status.as_str(), valid.reason.as_str()),
        ("True", reasons::VALID)
    );
    assert_eq!(valid.observed_generation, p.metadata.generation);

    let cm = cms.get("clinical-poolwarden").await.unwrap();
    let cfg = config_of(&cm);
    assert_eq!(cfg["pool"]["pool_size"], 20);
    assert_eq!(cfg["pool"]["max_overflow"], 10);
    assert_eq!(cfg["databases"][0]["user"], "clinical_app");
    assert_eq!(cfg["databases"][0]["host"], "db.clinical.svc");
    assert_eq!(cfg["databases"][0]["sslmode"], "require");
    assert_eq!(
        cfg["databases"][0]["password_file"],
        "/var/run/poolwarden/db/clinical/password"
    );
    assert_eq!(cfg["listen"], "127.0.0.1:6432");
    assert_eq!(cfg["admin_listen"], "0.0.0.0:9930");
    assert_eq!(
        cfg["admin"]["tokens_file"],
        "/var/run/poolwarden/admin/tokens"
    );
    let text = &cm.data.as_ref().unwrap()["poolwarden.yaml"];
    assert!(
        !text.contains("s3cret-pw") && !text.contains("password:"),
        "no secret in the ConfigMap:\n{text}"
    );

    let uid = p.metadata.uid.clone().unwrap();
    for (kind, refs) in [
        ("ConfigMap", cm.metadata.owner_references.clone()),
        (
            "Secret",
            secrets
                .get("clinical-poolwarden-admin")
                .await
                .unwrap()
                .metadata
                .owner_references,
        ),
    ] {
        let refs = refs.unwrap_or_default();
        assert_eq!(refs.len(), 1, "{kind}");
        assert_eq!(
            (
                refs[0].uid.as_str(),
                refs[0].kind.as_str(),
                refs[0].controller
            ),
            (uid.as_str(), "DbPoolPolicy", Some(true)),
            "{kind}"
        );
    }
    let managers: Vec<String> = cm
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert_eq!(managers, ["poolwarden-operator"], "one field manager");
    let token0 = token(&secrets, "clinical").await;
    assert_eq!(token0.len(), 64);
    let admin = secrets.get("clinical-poolwarden-admin").await.unwrap();
    assert_eq!(
        admin.data.unwrap()["tokens"].0,
        format!("admin {token0}\n").into_bytes()
    );

    // --- update: the ConfigMap follows, observedGeneration moves, a resize Event ---
    let patch = serde_json::json!({"spec": {"pool": {"poolSize": 30, "maxOverflow": 15, "poolTimeoutSeconds": 45}}});
    policies
        .patch("clinical", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let p = wait_for("status for generation 2", LIMIT, || async {
        let p = policies.get("clinical").await.unwrap();
        (p.status.as_ref()?.observed_generation == p.metadata.generation
            && p.metadata.generation == Some(2))
        .then_some(p)
    })
    .await;
    let st = p.status.clone().unwrap();
    assert_eq!((st.pool_size, st.max_overflow), (Some(30), Some(15)));
    assert_eq!(
        st.history
            .last()
            .map(|h| (h.from_pool_size, h.to_pool_size)),
        Some((20, 30))
    );
    let cfg = config_of(&cms.get("clinical-poolwarden").await.unwrap());
    assert_eq!(
        (
            cfg["pool"]["pool_size"].as_u64(),
            cfg["pool"]["max_overflow"].as_u64()
        ),
        (Some(30), Some(15))
    );
    assert_eq!(cfg["pool"]["pool_timeout"], "45s");
    // Ready follows the generation but keeps its transition time: it never left True.
    let ready = cond(&p, types::READY).unwrap();
    assert_eq!(
        (ready.observed_generation, ready.last_transition_time),
        (Some(2), ready_since)
    );
    wait_for("a SpecChanged Event", LIMIT, || async {
        (events(&evs, "clinical", reasons::SPEC_CHANGED).await.len() == 1).then_some(())
    })
    .await;
    assert_eq!(
        token(&secrets, "clinical").await,
        token0,
        "the admin token is kept across reconciles"
    );

    // --- invalid: min > max ---
    let patch =
        serde_json::json!({"spec": {"autoscaling": {"minPoolSize": 50, "maxPoolSize": 10}}});
    policies
        .patch("clinical", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let p = wait_for("SpecValid=False", LIMIT, || async {
        let p = policies.get("clinical").await.unwrap();
        (cond(&p, types::SPEC_VALID)?.status == "False").then_some(p)
    })
    .await;
    let want = "spec.autoscaling.minPoolSize (50) must be <= spec.autoscaling.maxPoolSize (10)";
    for t in [types::SPEC_VALID, types::READY] {
        let c = cond(&p, t).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str(), c.message.as_str()),
            ("False", reasons::INVALID_SPEC, want),
            "{t}"
        );
    }
    let invalid_since = cond(&p, types::SPEC_VALID).unwrap().last_transition_time;
    assert_eq!(p.status.as_ref().unwrap().observed_generation, Some(3));
    assert_eq!(
        p.status.as_ref().unwrap().pool_size,
        Some(30),
        "the last good size stays"
    );
    // More reconciles while still invalid (metadata-only changes trigger them): no new Event,
    // no new transition time.
    for i in 0..3 {
        let patch = serde_json::json!({"metadata": {"annotations": {"test/poke": i.to_string()}}});
        policies
            .patch("clinical", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let warned = events(&evs, "clinical", reasons::INVALID_SPEC).await;
    assert_eq!(warned.len(), 1, "one Event per transition: {warned:?}");
    assert_eq!(warned[0].type_.as_deref(), Some("Warning"));
    assert_eq!(warned[0].note.as_deref(), Some(want));
    assert!(
        warned[0].series.is_none(),
        "the Event was published once, not repeated"
    );
    let p = policies.get("clinical").await.unwrap();
    assert_eq!(
        cond(&p, types::SPEC_VALID).unwrap().last_transition_time,
        invalid_since
    );

    // --- a missing database Secret is named too ---
    let patch = serde_json::json!({"spec": {"autoscaling": {"minPoolSize": 5, "maxPoolSize": 100},
        "databases": [{"name": "clinical", "host": "db", "credentialsSecretRef": {"name": "nope"}}]}});
    policies
        .patch("clinical", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for("SpecValid names the missing Secret", LIMIT, || async {
        let p = policies.get("clinical").await.unwrap();
        cond(&p, types::SPEC_VALID)?
            .message
            .contains("spec.databases[0].credentialsSecretRef.name: Secret \"nope\" not found")
            .then_some(())
    })
    .await;

    // --- fixed: SpecValid=True again with one Valid Event ---
    let patch = serde_json::json!({"spec": {"databases": [{"name": "clinical", "host": "db", "credentialsSecretRef": {"name": "clinical-db"}}]}});
    policies
        .patch("clinical", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for("Ready=True again", LIMIT, || async {
        let p = policies.get("clinical").await.unwrap();
        (cond(&p, types::READY)?.status == "True" && cond(&p, types::SPEC_VALID)?.status == "True")
            .then_some(())
    })
    .await;
    wait_for("one Valid Event", LIMIT, || async {
        (events(&evs, "clinical", reasons::VALID).await.len() == 1).then_some(())
    })
    .await;
    assert_eq!(
        token(&secrets, "clinical").await,
        token0,
        "the admin token is kept across reconciles"
    );
    let text = controller.metrics.render();
    assert!(
        text.contains("poolwarden_operator_reconciles_total"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "poolwarden_operator_scale_decisions_total{{namespace=\"{ns}\",policy=\"clinical\",reason=\"SpecChanged\"}} 1"
        )),
        "{text}"
    );

    // --- delete: garbage collection removes the owned objects ---
    policies
        .delete("clinical", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        "GC of the ConfigMap and the admin Secret",
        Duration::from_secs(90),
        || async {
            let cm = cms.get_opt("clinical-poolwarden").await.unwrap();
            let s = secrets.get_opt("clinical-poolwarden-admin").await.unwrap();
            (cm.is_none() && s.is_none()).then_some(())
        },
    )
    .await;
    assert!(
        secrets.get_opt("clinical-db").await.unwrap().is_some(),
        "the user's Secret is not touched"
    );
}
