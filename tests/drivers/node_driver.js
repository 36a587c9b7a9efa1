// One cell of the driver matrix: node-postgres (`pg`) through the poolwarden sidecar.
//
// Usage: NODE_PATH=<dir>/node_modules node node_driver.js HOST PORT DBNAME USER TABLE
//
// The work is the one described in python_driver.py (steps prepared, switch, rollback,
// error, concurrent). node-postgres prepares a *named* query ({name, text, values}) on its
// first use on a connection and reuses it by name afterwards; the INSERT and SELECT of the
// work are named queries. Prints one JSON line, or the failing step on stderr and exit 1.
'use strict';

let pg;
try {
  pg = require('pg');
} catch (e) {
  console.error(`node-postgres: cannot load 'pg' (${e.message}); run ensure_driver_clients from scripts/lib.sh`);
  process.exit(2);
}

const [host, port, database, user, table] = process.argv.slice(2);
const WORKERS = 6;
const WORKER_TX = 8;
const REPEAT = 10;

// Statement names are numbered in order of first use, as psycopg and JDBC do: the odd
// workers of step 5 count their rows first, so their 'pw_s1' is another statement than the
// other clients' 'pw_s1' on the same server connections.
const insert = (id, note, name = 'pw_s1') => ({
  name,
  text: `INSERT INTO ${table} (id, note) VALUES ($1, $2)`,
  values: [id, note],
});
const select = (id, name = 'pw_s2') => ({
  name,
  text: `SELECT note, pg_backend_pid() AS pid FROM ${table} WHERE id = $1`,
  values: [id],
});

function check(cond, what) {
  if (!cond) throw new Error(what);
}

async function connect() {
  const c = new pg.Client({ host, port: Number(port), database, user, application_name: 'pw_node_postgres' });
  await c.connect();
  return c;
}

async function readRow(c, id, note, name) {
  const r = await c.query(select(id, name));
  check(r.rows.length === 1 && r.rows[0].note === note, `row ${id} reads ${JSON.stringify(r.rows)}`);
  return r.rows[0].pid;
}

async function expectError(c, queries, code) {
  await c.query('BEGIN');
  try {
    for (const q of queries) await c.query(q);
  } catch (e) {
    check(e.code === code, `expected SQLSTATE ${code}, got ${e.code}: ${e.message}`);
    await c.query('ROLLBACK');
    return e.code;
  }
  throw new Error(`expected SQLSTATE ${code}, the statements succeeded`);
}

async function work() {
  const out = {};
  let step = 'prepared';
  try {
    const main = await connect();
    const mainPids = [];
    for (let i = 1; i <= REPEAT; i++) {
      await main.query('BEGIN');
      await main.query(insert(i, 'c'));
      await main.query('COMMIT');
    }
    for (let i = 1; i <= REPEAT; i++) mainPids.push(await readRow(main, i, 'c'));
    out.prepared_statements = Number((await main.query('SELECT count(*) AS n FROM pg_prepared_statements')).rows[0].n);

    step = 'switch';
    const holder = await connect();
    for (let round = 0; round < 3; round++) {
      await holder.query('BEGIN');
      await holder.query('SELECT pg_backend_pid()');
      for (let i = 1; i <= 6; i++) mainPids.push(await readRow(main, i, 'c'));
      await holder.query('COMMIT');
      if (new Set(mainPids).size > 1) break;
    }
    await holder.end();
    out.main_backends = mainPids;

    step = 'rollback';
    await main.query('BEGIN');
    for (const id of [101, 102, 103]) await main.query(insert(id, 'r'));
    const count = `SELECT count(*) AS n FROM ${table} WHERE id BETWEEN 101 AND 103`;
    const seen = Number((await main.query(count)).rows[0].n);
    check(seen === 3, `inside the transaction ${seen} of 3 rows`);
    await main.query('ROLLBACK');
    const after = Number((await main.query(count)).rows[0].n);
    check(after === 0, `${after} rolled-back rows are still there`);

    step = 'error';
    out.unique_violation = await expectError(main, [insert(201, 'e'), insert(1, 'dup')], '23505');
    out.division_by_zero = await expectError(main, [{ text: 'SELECT 1 / $1::int', values: [0] }], '22012');
    await main.query('BEGIN');
    await main.query(insert(202, 'after-error'));
    await main.query('COMMIT');

    step = 'concurrent';
    const worker = async (w) => {
      const c = await connect();
      const pids = [];
      const base = 1000 + 100 * w;
      const odd = w % 2 === 1;
      for (let i = 1; i <= WORKER_TX; i++) {
        const id = base + i;
        await c.query('BEGIN');
        if (odd) {
          const r = await c.query({
            name: 'pw_s1',
            text: `SELECT count(*) AS n FROM ${table} WHERE id BETWEEN $1 AND $2`,
            values: [base + 1, base + WORKER_TX],
          });
          const own = Number(r.rows[0].n);
          check(own === i - 1, `worker ${w} sees ${own} of its rows before row ${i}`);
        }
        await c.query(insert(id, 'w', odd ? 'pw_s2' : 'pw_s1'));
        pids.push(await readRow(c, id, 'w', odd ? 'pw_s3' : 'pw_s2'));
        await c.query('COMMIT');
      }
      await c.end();
      return pids;
    };
    out.worker_backends = await Promise.all([...Array(WORKERS).keys()].map(worker));
    await main.end();
  } catch (e) {
    console.error(`node-postgres: step ${step}: ${e.code ? e.code + ' ' : ''}${e.message}`);
    process.exit(1);
  }
  out.driver = 'node_postgres';
  console.log(JSON.stringify(out));
}

work();
