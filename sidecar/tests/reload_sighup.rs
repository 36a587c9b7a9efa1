//! SIGHUP reloads the config. A test binary of its own: the signal goes to this whole process.

use std::sync::Arc;
use std::time::Duration;

use poolwarden_sidecar::config::env::from_pairs;
use poolwarden_sidecar::config::{Overrides, ReloadOptions, ReloadSource, ReloadTrigger, Reloader};
use poolwarden_sidecar::metrics::Metrics;

fn yaml(pool_size: u32) -> String {
    format!(
        "databases:\n  - name: clinical\n    host: 127.0.0.1\n    user: app\npool:\n  pool_size: {pool_size}\n"
    )
}

fn hup_myself() {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill(1)");
    assert!(status.success());
}

#[tokio::test]
async fn sighup_reloads_and_refuses_an_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("poolwarden.yaml");
    std::fs::write(&file, yaml(20)).unwrap();
    let source = ReloadSource {
        file: Some(file.clone()),
        env: Arc::new(from_pairs(&[])),
        flags: Overrides {
            max_overflow: Some("4".into()),
            ..Default::default()
        },
    };
    let initial = Arc::new(source.load().unwrap());
    let metrics = Metrics::new();
    metrics.pool("clinical");
    let (tx, mut applied) = tokio::sync::mpsc::unbounded_channel();
    // Poll the file so rarely that only the signal can cause the reloads below.
    let reloader = Reloader::new(source, initial, move |cfg, trigger| {
        let _ = tx.send((cfg, trigger));
    })
    .with_metrics(metrics.clone())
    .with_options(ReloadOptions {
        poll_interval: Duration::from_secs(3600),
        sighup: true,
    });
    let (handle, _task) = reloader.spawn().unwrap();

    std::fs::write(&file, yaml(12)).unwrap();
    hup_myself();
    let (cfg, trigger) = tokio::time::timeout(Duration::from_secs(10), applied.recv())
        .await
        .expect("a reload within 10 s of SIGHUP")
        .unwrap();
    assert_eq!(trigger, ReloadTrigger::Signal);
    assert_eq!(cfg.pool.pool_size, 12);
    assert_eq!(cfg.pool.max_overflow, 4, "the flags apply at every reload");

    // An invalid file: SIGHUP is refused and counted; the running config stays.
    std::fs::write(&file, "pool:\n  pool_size: nine\n").unwrap();
    hup_myself();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics.encode();
        if text.lines().any(|l| {
            l == r#"poolwarden_config_reloads_total{database="clinical",result="failure"} 1"#
        }) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed reload counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(applied.try_recv().is_err());
    let running = handle.reload().await;
    assert!(running.is_err(), "the file is still invalid");
}
