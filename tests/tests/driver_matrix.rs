//! The driver matrix: every driver in its default configuration through a real sidecar, in
//! transaction mode and in session mode, one test per cell (see `poolwarden_tests::drivers`
//! and `tests/drivers/`). The README records the results.

use poolwarden_tests::drivers::{Driver, Mode, run_cell, run_pgbench};

macro_rules! cells {
    ($($transaction:ident, $session:ident => $driver:expr;)*) => {$(
        #[tokio::test]
        async fn $transaction() {
            run_cell(Mode::Transaction, $driver).await;
        }

        #[tokio::test]
        async fn $session() {
            run_cell(Mode::Session, $driver).await;
        }
    )*};
}

cells! {
    transaction_psycopg3_sync, session_psycopg3_sync => Driver::Psycopg3Sync;
    transaction_psycopg3_async, session_psycopg3_async => Driver::Psycopg3Async;
    transaction_psycopg2, session_psycopg2 => Driver::Psycopg2;
    transaction_sqlalchemy_psycopg3, session_sqlalchemy_psycopg3 => Driver::SqlalchemyPsycopg3;
    transaction_sqlalchemy_psycopg2, session_sqlalchemy_psycopg2 => Driver::SqlalchemyPsycopg2;
    transaction_asyncpg, session_asyncpg => Driver::Asyncpg;
    transaction_node_postgres, session_node_postgres => Driver::NodePostgres;
    transaction_jdbc, session_jdbc => Driver::Jdbc;
    transaction_tokio_postgres, session_tokio_postgres => Driver::TokioPostgres;
    transaction_sqlx, session_sqlx => Driver::Sqlx;
}

#[tokio::test]
async fn transaction_pgbench_prepared() {
    run_pgbench(Mode::Transaction).await;
}

#[tokio::test]
async fn session_pgbench_prepared() {
    run_pgbench(Mode::Session).await;
}
