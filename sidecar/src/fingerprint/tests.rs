use std::io::Write;
use std::sync::{Arc, Mutex};

use super::*;

#[test]
fn fingerprint_table() {
    let table = [
        ("SELECT 1", "SELECT ?"),
        (
            "select * from t where id = 42",
            "select * from t where id = ?",
        ),
        (
            "SELECT 3.14, .5, 1e-3, 6.02E+23, 0x1F, 1_000",
            "SELECT ?, ?, ?, ?, ?, ?",
        ),
        ("SELECT 'it''s', 'plain'", "SELECT ?, ?"),
        (r"SELECT E'it\'s \\ fine', e'x'", "SELECT ?, ?"),
        (
            "SELECT B'1010', X'1F', N'nat', U&'d\\0061t'",
            "SELECT ?, ?, ?, ?",
        ),
        (
            "SELECT $$dollar 'quoted'$$, $fn$ body $$ nested $fn$",
            "SELECT ?, ?",
        ),
        (
            "SELECT * FROM t WHERE a = $1 AND b = $12",
            "SELECT * FROM t WHERE a = $1 AND b = $12",
        ),
        (
            r#"SELECT "Weird ""Col""", "x1" FROM "T""able""#,
            r#"SELECT "Weird ""Col""", "x1" FROM "T""able""#,
        ),
        ("SELECT t1.c2, col$1 FROM t1", "SELECT t1.c2, col$1 FROM t1"),
        ("SELECT TRUE, false, NULL", "SELECT TRUE, false, NULL"),
        ("WHERE id IN (1, 2, 3)", "WHERE id IN (?)"),
        ("WHERE id in ('a','b' , 'c')", "WHERE id in (?)"),
        ("WHERE id IN (-1, +2)", "WHERE id IN (?)"),
        ("WHERE id IN ($1, $2)", "WHERE id IN ($1, $2)"),
        ("WHERE id IN (SELECT 1)", "WHERE id IN (SELECT ?)"),
        ("WHERE id NOT IN (7)", "WHERE id NOT IN (?)"),
        ("SELECT 1 -- trailing 'secret'\n, 2", "SELECT ? , ?"),
        ("SELECT /* a /* nested */ 'secret' */ 1", "SELECT ?"),
        ("  SELECT\n\t 1 \r\n ", "SELECT ?"),
        (
            "ALTER ROLE app PASSWORD 'hunter2'",
            "ALTER ROLE app PASSWORD ?",
        ),
        (
            "CREATE USER u WITH PASSWORD 'p''w' VALID UNTIL '2030-01-01'",
            "CREATE USER u WITH PASSWORD ? VALID UNTIL ?",
        ),
        (
            "SELECT '{1,2}'::int[], DATE '2020-01-01'",
            "SELECT ?::int[], DATE ?",
        ),
        (
            "INSERT INTO t VALUES (1, 'x'), (2, 'y')",
            "INSERT INTO t VALUES (?, ?), (?, ?)",
        ),
        ("SELECT 'unterminated secret", "SELECT ?"),
        ("SELECT $tag$ unterminated secret", "SELECT ?"),
        (
            "SELECT 'ünïcödé', \"ß\" FROM täble",
            "SELECT ?, \"ß\" FROM täble",
        ),
        ("SELECT a-1, b+2.5", "SELECT a-?, b+?"),
        ("", ""),
        ("-- only a comment 'x'", ""),
    ];
    for (sql, want) in table {
        assert_eq!(fingerprint(sql), want, "{sql:?}");
    }
}

#[test]
fn secrets_never_survive() {
    let secrets = ["hunter2", "s3cr3t", "4111111111111111", "o''brien"];
    let queries = [
        "ALTER ROLE app PASSWORD 'hunter2'",
        "ALTER USER app WITH ENCRYPTED PASSWORD E'hunter2\\''",
        "UPDATE t SET v = $$s3cr3t$$",
        "UPDATE t SET card = 4111111111111111",
        "SELECT * FROM p WHERE name = 'o''brien'",
        "SELECT 1 /* s3cr3t */",
    ];
    for q in queries {
        let fp = fingerprint(q);
        for s in secrets {
            assert!(!fp.contains(s), "{q:?} -> {fp:?}");
        }
    }
}

#[test]
fn long_fingerprints_are_cut() {
    let sql = format!("SELECT {}", "col, ".repeat(1000));
    let fp = fingerprint(&sql);
    assert!(fp.len() <= MAX_FINGERPRINT + '…'.len_utf8());
    assert!(fp.ends_with('…'));
}

/// A tracing writer into a shared buffer.
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

#[test]
fn slow_query_logs_one_structured_line_without_values() {
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        slow_query(
            "clinical",
            Duration::from_millis(5250),
            "SELECT * FROM patients WHERE nhs_number = '943 476 5919' AND ward IN (3, 4)",
        );
    });
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["level"], "WARN");
    assert_eq!(v["target"], "poolwarden::slow_query");
    assert_eq!(v["fields"]["duration_ms"], 5250);
    assert_eq!(v["fields"]["database"], "clinical");
    assert_eq!(
        v["fields"]["fingerprint"],
        "SELECT * FROM patients WHERE nhs_number = ? AND ward IN (?)"
    );
    assert!(!text.contains("943"), "{text}");
}

proptest::proptest! {
    #[test]
    fn never_panics(sql in "\\PC*") {
        let _ = fingerprint(&sql);
    }

    #[test]
    fn any_string_literal_is_hidden(value in "\\PC*") {
        let quoted = value.replace('\'', "''");
        proptest::prop_assert_eq!(fingerprint(&format!("SELECT '{quoted}' AS v")), "SELECT ? AS v");
        let dollar = value.replace('$', "");
        proptest::prop_assert_eq!(fingerprint(&format!("SELECT $q${dollar}$q$")), "SELECT ?");
    }
}

#[test]
fn record_query_counts_and_logs_only_slow_queries() {
    let metrics = crate::metrics::Metrics::new();
    let pool = metrics.pool("clinical");
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .finish();
    let threshold = Duration::from_secs(5);
    tracing::subscriber::with_default(subscriber, || {
        record_query(&pool, threshold, Duration::from_millis(30), "SELECT 'fast'");
        record_query(&pool, threshold, Duration::from_secs(5), "SELECT 'edge'");
        record_query(&pool, threshold, Duration::from_secs(9), "SELECT 'slow'");
    });
    let text = metrics.encode();
    assert!(
        text.contains(r#"poolwarden_slow_queries_total{database="clinical"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"poolwarden_query_duration_seconds_count{database="clinical"} 3"#),
        "{text}"
    );
    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert_eq!(logs.lines().count(), 2, "{logs}");
    assert!(
        !logs.contains("fast") && !logs.contains("edge") && !logs.contains("'slow'"),
        "{logs}"
    );
}
