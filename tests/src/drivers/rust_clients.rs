//! The driver-matrix work (see `tests/drivers/python_driver.py`) done by the two Rust
//! drivers in their default configuration: tokio-postgres with `Client::prepare` (a named
//! statement, reused by every later execution) and sqlx (`sqlx::query` is a named, cached
//! prepared statement by default).

use std::collections::HashSet;

use anyhow::{Context, Result, bail, ensure};
use futures::future::try_join_all;
use sqlx::{Connection, Row};

use super::{REPEAT, Summary, WORKER_TX, WORKERS};

/// The operations of the work, each one whole transaction (or one autocommit statement).
trait WorkConn: Sized {
    /// `BEGIN; INSERT (id, note); COMMIT`.
    async fn insert_committed(&mut self, id: i32, note: &str) -> Result<()>;
    /// `SELECT note, pg_backend_pid() … WHERE id = $1`, autocommit.
    async fn read(&mut self, id: i32) -> Result<Option<(String, i32)>>;
    /// `BEGIN; INSERT ids (note); count them; ROLLBACK`: the count seen inside.
    async fn insert_rolled_back(&mut self, ids: &[i32], note: &str) -> Result<i64>;
    /// Rows with `lo <= id <= hi`.
    async fn count_range(&mut self, lo: i32, hi: i32) -> Result<i64>;
    /// `BEGIN; INSERT (id); INSERT (dup)` → the SQLSTATE of the failure; `ROLLBACK`.
    async fn unique_violation(&mut self, id: i32, dup: i32) -> Result<String>;
    /// `BEGIN; SELECT 1 / $1` with 0 → the SQLSTATE; `ROLLBACK`.
    async fn divide_by_zero(&mut self) -> Result<String>;
    /// `BEGIN; [count rows in range;] INSERT (id, note); SELECT it; COMMIT` → the backend
    /// pid and the count.
    async fn worker_tx(
        &mut self,
        range: Option<(i32, i32)>,
        id: i32,
        note: &str,
    ) -> Result<(i32, Option<i64>)>;
    /// `BEGIN; SELECT pg_backend_pid()` left open (simple query, the holder of step 2).
    async fn hold(&mut self) -> Result<()>;
    /// `COMMIT` what `hold` opened.
    async fn release(&mut self) -> Result<()>;
    /// Rows of pg_prepared_statements on this session's server connection.
    async fn prepared_count(&mut self) -> Result<i64>;
}

async fn read_expect<C: WorkConn>(c: &mut C, id: i32, note: &str) -> Result<i32> {
    match c.read(id).await? {
        Some((n, pid)) if n == note => Ok(pid),
        other => bail!("row {id} reads {other:?}, expected {note}"),
    }
}

/// Steps 1-5 on connections from `connect`.
async fn work<C, F, Fut>(driver: &str, connect: F) -> Result<Summary>
where
    C: WorkConn,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<C>>,
{
    let mut main = connect().await.context("connect")?;
    let mut main_pids = Vec::new();
    for i in 1..=REPEAT {
        main.insert_committed(i, "c")
            .await
            .with_context(|| format!("step prepared: insert {i}"))?;
    }
    for i in 1..=REPEAT {
        main_pids.push(
            read_expect(&mut main, i, "c")
                .await
                .with_context(|| format!("step prepared: read {i}"))?,
        );
    }
    let prepared_statements = main.prepared_count().await.context("step prepared")?;

    let mut holder = connect().await.context("step switch: connect")?;
    for _ in 0..3 {
        holder.hold().await.context("step switch: hold")?;
        for i in 1..=6 {
            main_pids.push(
                read_expect(&mut main, i, "c")
                    .await
                    .with_context(|| format!("step switch: read {i}"))?,
            );
        }
        holder.release().await.context("step switch: release")?;
        if main_pids.iter().collect::<HashSet<_>>().len() > 1 {
            break;
        }
    }
    drop(holder);

    let seen = main
        .insert_rolled_back(&[101, 102, 103], "r")
        .await
        .context("step rollback")?;
    ensure!(
        seen == 3,
        "step rollback: inside the transaction {seen} of 3 rows"
    );
    let after = main.count_range(101, 103).await.context("step rollback")?;
    ensure!(
        after == 0,
        "step rollback: {after} rolled-back rows are still there"
    );

    let unique_violation = main.unique_violation(201, 1).await.context("step error")?;
    let division_by_zero = main.divide_by_zero().await.context("step error")?;
    main.insert_committed(202, "after-error")
        .await
        .context("step error: the connection after the errors")?;

    // Every worker is logged in before any works: in session mode each then holds a server
    // connection of its own. Without it, a worker that finished before a slow one logged
    // in handed its connection on (as a pool should), and the check that concurrent clients
    // get distinct backends failed on a loaded machine.
    let all_connected = tokio::sync::Barrier::new(WORKERS as usize);
    let workers = (0..WORKERS).map(|w| {
        let connect = &connect;
        let all_connected = &all_connected;
        async move {
            let mut c = connect().await?;
            all_connected.wait().await;
            let mut pids = Vec::new();
            let base = 1000 + 100 * w;
            // The odd workers count their rows first: sqlx numbers its statements in order
            // of first use, so one name means different SQL on clients sharing server
            // connections.
            let range = (w % 2 == 1).then_some((base + 1, base + WORKER_TX));
            for i in 1..=WORKER_TX {
                let id = base + i;
                let (pid, own) = c
                    .worker_tx(range, id, "w")
                    .await
                    .with_context(|| format!("worker {w} row {id}"))?;
                ensure!(
                    own.is_none_or(|n| n == i64::from(i - 1)),
                    "worker {w} sees {own:?} of its rows before row {i}"
                );
                pids.push(pid);
            }
            anyhow::Ok(pids)
        }
    });
    let worker_backends = try_join_all(workers).await.context("step concurrent")?;
    Ok(Summary {
        driver: driver.to_string(),
        main_backends: main_pids,
        worker_backends,
        prepared_statements,
        unique_violation,
        division_by_zero,
    })
}

// ---- tokio-postgres

struct Tp {
    client: tokio_postgres::Client,
    insert: tokio_postgres::Statement,
    select: tokio_postgres::Statement,
    count: tokio_postgres::Statement,
    table: String,
}

fn tp_state(e: tokio_postgres::Error) -> Result<String> {
    match e.code() {
        Some(code) => Ok(code.code().to_string()),
        None => Err(e.into()),
    }
}

impl WorkConn for Tp {
    async fn insert_committed(&mut self, id: i32, note: &str) -> Result<()> {
        let tx = self.client.transaction().await?;
        tx.execute(&self.insert, &[&id, &note]).await?;
        Ok(tx.commit().await?)
    }
    async fn read(&mut self, id: i32) -> Result<Option<(String, i32)>> {
        let row = self.client.query_opt(&self.select, &[&id]).await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }
    async fn insert_rolled_back(&mut self, ids: &[i32], note: &str) -> Result<i64> {
        let tx = self.client.transaction().await?;
        for id in ids {
            tx.execute(&self.insert, &[id, &note]).await?;
        }
        let sql = format!("SELECT count(*) FROM {} WHERE id = ANY($1)", self.table);
        let seen: i64 = tx.query_one(&sql, &[&ids]).await?.get(0);
        tx.rollback().await?;
        Ok(seen)
    }
    async fn count_range(&mut self, lo: i32, hi: i32) -> Result<i64> {
        let sql = format!(
            "SELECT count(*) FROM {} WHERE id BETWEEN $1 AND $2",
            self.table
        );
        Ok(self.client.query_one(&sql, &[&lo, &hi]).await?.get(0))
    }
    async fn unique_violation(&mut self, id: i32, dup: i32) -> Result<String> {
        let tx = self.client.transaction().await?;
        tx.execute(&self.insert, &[&id, &"e"]).await?;
        let e = match tx.execute(&self.insert, &[&dup, &"dup"]).await {
            Ok(_) => bail!("the duplicate insert succeeded"),
            Err(e) => e,
        };
        let state = tp_state(e)?;
        tx.rollback().await?;
        Ok(state)
    }
    async fn divide_by_zero(&mut self) -> Result<String> {
        let tx = self.client.transaction().await?;
        let e = match tx.query_one("SELECT 1 / $1::int", &[&0i32]).await {
            Ok(_) => bail!("1 / 0 succeeded"),
            Err(e) => e,
        };
        let state = tp_state(e)?;
        tx.rollback().await?;
        Ok(state)
    }
    async fn worker_tx(
        &mut self,
        range: Option<(i32, i32)>,
        id: i32,
        note: &str,
    ) -> Result<(i32, Option<i64>)> {
        let tx = self.client.transaction().await?;
        let own = match range {
            Some((lo, hi)) => Some(tx.query_one(&self.count, &[&lo, &hi]).await?.get(0)),
            None => None,
        };
        tx.execute(&self.insert, &[&id, &note]).await?;
        let row = tx.query_one(&self.select, &[&id]).await?;
        let (got, pid): (String, i32) = (row.get(0), row.get(1));
        ensure!(got == note, "row {id} reads {got}");
        tx.commit().await?;
        Ok((pid, own))
    }
    async fn hold(&mut self) -> Result<()> {
        Ok(self
            .client
            .batch_execute("BEGIN; SELECT pg_backend_pid()")
            .await?)
    }
    async fn release(&mut self) -> Result<()> {
        Ok(self.client.batch_execute("COMMIT").await?)
    }
    async fn prepared_count(&mut self) -> Result<i64> {
        let row = self
            .client
            .query_one("SELECT count(*) FROM pg_prepared_statements", &[])
            .await?;
        Ok(row.get(0))
    }
}

/// The work with tokio-postgres through `host:port`.
pub async fn tokio_postgres(host: &str, port: u16, dbname: &str, table: &str) -> Result<Summary> {
    let conninfo = format!(
        "host={host} port={port} user=postgres dbname={dbname} application_name=pw_tokio_postgres"
    );
    work("tokio_postgres", || async {
        let (client, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        let insert = client
            .prepare(&format!("INSERT INTO {table} (id, note) VALUES ($1, $2)"))
            .await?;
        let select = client
            .prepare(&format!(
                "SELECT note, pg_backend_pid() FROM {table} WHERE id = $1"
            ))
            .await?;
        let count = client
            .prepare(&format!(
                "SELECT count(*) FROM {table} WHERE id BETWEEN $1 AND $2"
            ))
            .await?;
        Ok(Tp {
            client,
            insert,
            select,
            count,
            table: table.to_string(),
        })
    })
    .await
}

// ---- sqlx

struct Sx {
    conn: sqlx::PgConnection,
    insert: String,
    select: String,
    table: String,
}

fn sx_state(e: sqlx::Error) -> Result<String> {
    match e.as_database_error().and_then(|d| d.code()) {
        Some(code) => Ok(code.into_owned()),
        None => Err(e.into()),
    }
}

impl WorkConn for Sx {
    async fn insert_committed(&mut self, id: i32, note: &str) -> Result<()> {
        let mut tx = self.conn.begin().await?;
        sqlx::query(&self.insert)
            .bind(id)
            .bind(note)
            .execute(&mut *tx)
            .await?;
        Ok(tx.commit().await?)
    }
    async fn read(&mut self, id: i32) -> Result<Option<(String, i32)>> {
        Ok(sqlx::query_as(&self.select)
            .bind(id)
            .fetch_optional(&mut self.conn)
            .await?)
    }
    async fn insert_rolled_back(&mut self, ids: &[i32], note: &str) -> Result<i64> {
        let mut tx = self.conn.begin().await?;
        for id in ids {
            sqlx::query(&self.insert)
                .bind(id)
                .bind(note)
                .execute(&mut *tx)
                .await?;
        }
        let sql = format!("SELECT count(*) FROM {} WHERE id = ANY($1)", self.table);
        let seen: i64 = sqlx::query(&sql)
            .bind(ids)
            .fetch_one(&mut *tx)
            .await?
            .get(0);
        tx.rollback().await?;
        Ok(seen)
    }
    async fn count_range(&mut self, lo: i32, hi: i32) -> Result<i64> {
        let sql = format!(
            "SELECT count(*) FROM {} WHERE id BETWEEN $1 AND $2",
            self.table
        );
        Ok(sqlx::query(&sql)
            .bind(lo)
            .bind(hi)
            .fetch_one(&mut self.conn)
            .await?
            .get(0))
    }
    async fn unique_violation(&mut self, id: i32, dup: i32) -> Result<String> {
        let mut tx = self.conn.begin().await?;
        sqlx::query(&self.insert)
            .bind(id)
            .bind("e")
            .execute(&mut *tx)
            .await?;
        let dup = sqlx::query(&self.insert)
            .bind(dup)
            .bind("dup")
            .execute(&mut *tx)
            .await;
        let state = match dup {
            Ok(_) => bail!("the duplicate insert succeeded"),
            Err(e) => sx_state(e)?,
        };
        tx.rollback().await?;
        Ok(state)
    }
    async fn divide_by_zero(&mut self) -> Result<String> {
        let mut tx = self.conn.begin().await?;
        let r = sqlx::query("SELECT 1 / $1::int")
            .bind(0i32)
            .fetch_one(&mut *tx)
            .await;
        let state = match r {
            Ok(_) => bail!("1 / 0 succeeded"),
            Err(e) => sx_state(e)?,
        };
        tx.rollback().await?;
        Ok(state)
    }
    async fn worker_tx(
        &mut self,
        range: Option<(i32, i32)>,
        id: i32,
        note: &str,
    ) -> Result<(i32, Option<i64>)> {
        let mut tx = self.conn.begin().await?;
        let own = match range {
            Some((lo, hi)) => {
                let sql = format!(
                    "SELECT count(*) FROM {} WHERE id BETWEEN $1 AND $2",
                    self.table
                );
                let n: i64 = sqlx::query(&sql)
                    .bind(lo)
                    .bind(hi)
                    .fetch_one(&mut *tx)
                    .await?
                    .get(0);
                Some(n)
            }
            None => None,
        };
        sqlx::query(&self.insert)
            .bind(id)
            .bind(note)
            .execute(&mut *tx)
            .await?;
        let (got, pid): (String, i32) = sqlx::query_as(&self.select)
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        ensure!(got == note, "row {id} reads {got}");
        tx.commit().await?;
        Ok((pid, own))
    }
    async fn hold(&mut self) -> Result<()> {
        sqlx::raw_sql("BEGIN; SELECT pg_backend_pid()")
            .execute(&mut self.conn)
            .await?;
        Ok(())
    }
    async fn release(&mut self) -> Result<()> {
        sqlx::raw_sql("COMMIT").execute(&mut self.conn).await?;
        Ok(())
    }
    async fn prepared_count(&mut self) -> Result<i64> {
        Ok(sqlx::query("SELECT count(*) FROM pg_prepared_statements")
            .fetch_one(&mut self.conn)
            .await?
            .get(0))
    }
}

/// The work with sqlx through `host:port`.
pub async fn sqlx(host: &str, port: u16, dbname: &str, table: &str) -> Result<Summary> {
    let options = sqlx::postgres::PgConnectOptions::new()
        .host(host)
        .port(port)
        .username("postgres")
        .database(dbname)
        .application_name("pw_sqlx");
    work("sqlx", || async {
        Ok(Sx {
            conn: sqlx::PgConnection::connect_with(&options).await?,
            insert: format!("INSERT INTO {table} (id, note) VALUES ($1, $2)"),
            select: format!("SELECT note, pg_backend_pid() FROM {table} WHERE id = $1"),
            table: table.to_string(),
        })
    })
    .await
}
