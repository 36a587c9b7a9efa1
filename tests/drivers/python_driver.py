"""One cell of the driver matrix: a Python driver through the poolwarden sidecar.

Usage: python3 python_driver.py --driver NAME --host H --port P --dbname D --user U --table T

NAME is one of psycopg3_sync, psycopg3_async, psycopg2, sqlalchemy_psycopg3,
sqlalchemy_psycopg2, asyncpg. Every driver runs in its default configuration (psycopg 3
prepares a query after 5 runs, asyncpg prepares everything, psycopg2 never prepares).

The work (the same in every language of tests/drivers/ and in driver_matrix.rs), on a table
T (id int PRIMARY KEY, note text NOT NULL) that the caller created:
  1. prepared: 10 transactions each INSERT (i, 'c'), then 10 SELECT note, pg_backend_pid()
     WHERE id = i: both statements run 10 times, past every prepare threshold;
  2. switch: a second connection holds a transaction while the first runs the SELECT 6 more
     times, so in transaction mode it must run on another server connection;
  3. rollback: INSERT 101..103 ('r') in a transaction, see them, ROLLBACK: they are gone;
  4. error: INSERT 201 then a duplicate id 1 in one transaction (23505), ROLLBACK; SELECT
     1 / 0 (22012), ROLLBACK; then INSERT (202, 'after-error') commits on that connection;
  5. concurrent: 6 connections, each 8 transactions of INSERT (1000 + 100 w + i, 'w') and
     SELECT note, pg_backend_pid() of that row.
Afterwards T holds 10 'c' rows, 202 and 48 'w' rows (59), no 'r' row and no 201.
Prints one JSON line (backend pids seen, SQLSTATEs, prepared statements seen) and exits 0,
or prints the failing step to stderr and exits 1.
"""
import argparse
import asyncio
import concurrent.futures
import json
import re
import sys

WORKERS = 6
WORKER_TX = 8
REPEAT = 10

INSERT = "INSERT INTO {t} (id, note) VALUES ($1, $2)"
SELECT = "SELECT note, pg_backend_pid() FROM {t} WHERE id = $1"
COUNT_RANGE = "SELECT count(*) FROM {t} WHERE id BETWEEN $1 AND $2"
DIVIDE = "SELECT 1 / CAST($1 AS int)"
PREPARED = "SELECT count(*) FROM pg_prepared_statements"


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


def positional_to(sql, style):
    if style == "format":
        return re.sub(r"\$\d+", "%s", sql)
    if style == "named":
        return re.sub(r"\$(\d+)", r":p\1", sql)
    return sql


class Sync:
    """A sync DB-API driver (psycopg 3, psycopg2): implicit BEGIN, commit()/rollback(); calls
    run in worker threads so the six connections of step 5 are really concurrent."""

    def __init__(self, module, dsn):
        self.module, self.dsn = module, dsn

    async def connect(self):
        return await asyncio.to_thread(self.module.connect, self.dsn)

    async def begin(self, c):
        pass  # both drivers open a transaction at the first statement

    async def execute(self, c, sql, params):
        def run():
            cur = c.cursor()
            cur.execute(positional_to(sql, "format"), params)
            rows = cur.fetchall() if cur.description else []
            cur.close()
            return [tuple(r) for r in rows]

        return await asyncio.to_thread(run)

    async def commit(self, c):
        await asyncio.to_thread(c.commit)

    async def rollback(self, c):
        await asyncio.to_thread(c.rollback)

    async def close(self, c):
        await asyncio.to_thread(c.close)

    @staticmethod
    def sqlstate(e):
        return getattr(e, "sqlstate", None) or getattr(e, "pgcode", None)


class PsycopgAsync:
    """psycopg 3's AsyncConnection: implicit BEGIN as the sync one."""

    def __init__(self, dsn):
        import psycopg

        self.psycopg, self.dsn = psycopg, dsn

    async def connect(self):
        return await self.psycopg.AsyncConnection.connect(self.dsn)

    async def begin(self, c):
        pass

    async def execute(self, c, sql, params):
        cur = await c.execute(positional_to(sql, "format"), params)
        return [tuple(r) for r in await cur.fetchall()] if cur.description else []

    async def commit(self, c):
        await c.commit()

    async def rollback(self, c):
        await c.rollback()

    async def close(self, c):
        await c.close()

    @staticmethod
    def sqlstate(e):
        return getattr(e, "sqlstate", None)


class Asyncpg:
    """asyncpg: explicit Transaction objects; every query is a prepared statement."""

    def __init__(self, host, port, dbname, user):
        import asyncpg

        self.asyncpg = asyncpg
        self.kw = dict(host=host, port=port, database=dbname, user=user)
        self.tx = {}

    async def connect(self):
        return await self.asyncpg.connect(**self.kw)

    async def begin(self, c):
        tr = c.transaction()
        await tr.start()
        self.tx[id(c)] = tr

    async def execute(self, c, sql, params):
        return [tuple(r) for r in await c.fetch(sql, *params)]

    async def commit(self, c):
        await self.tx.pop(id(c)).commit()

    async def rollback(self, c):
        await self.tx.pop(id(c)).rollback()

    async def close(self, c):
        await c.close()

    @staticmethod
    def sqlstate(e):
        return getattr(e, "sqlstate", None)


class SqlAlchemy:
    """SQLAlchemy 2 ORM: a mapped class for T, one Session per "connection" from the engine's
    own pool (defaults: pool_size 5, max_overflow 10). The INSERT and SELECT of the work go
    through the ORM (Session.add + flush, select(Row)); the rest is text()."""

    def __init__(self, url, table):
        from sqlalchemy import create_engine, func, select, text
        from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

        class Base(DeclarativeBase):
            pass

        class Row(Base):
            __tablename__ = table
            id: Mapped[int] = mapped_column(primary_key=True)
            note: Mapped[str]

        self.engine = create_engine(url)
        self.text, self.Session, self.Row = text, Session, Row
        self.select_row = lambda i: select(Row.note, func.pg_backend_pid()).where(Row.id == i)
        self.insert_sql, self.select_sql = INSERT.format(t=table), SELECT.format(t=table)

    async def connect(self):
        def run():
            s = self.Session(self.engine)
            s.connection()  # check out now, as the other drivers connect now
            return s

        return await asyncio.to_thread(run)

    async def begin(self, c):
        pass  # the Session autobegins

    async def execute(self, c, sql, params):
        def run():
            if sql == self.insert_sql:
                c.add(self.Row(id=params[0], note=params[1]))
                c.flush()
                return []
            if sql == self.select_sql:
                return [tuple(row) for row in c.execute(self.select_row(params[0]))]
            bound = {f"p{i + 1}": v for i, v in enumerate(params)}
            r = c.execute(self.text(positional_to(sql, "named")), bound)
            return [tuple(row) for row in r] if r.returns_rows else []

        return await asyncio.to_thread(run)

    async def commit(self, c):
        await asyncio.to_thread(c.commit)

    async def rollback(self, c):
        await asyncio.to_thread(c.rollback)

    async def close(self, c):
        await asyncio.to_thread(c.close)

    @staticmethod
    def sqlstate(e):
        orig = getattr(e, "orig", None)
        return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def make(args):
    dsn = f"host={args.host} port={args.port} dbname={args.dbname} user={args.user} application_name=pw_{args.driver}"
    url_tail = f"{args.user}@{args.host}:{args.port}/{args.dbname}?application_name=pw_{args.driver}"
    if args.driver == "psycopg3_sync":
        import psycopg

        return Sync(psycopg, dsn)
    if args.driver == "psycopg2":
        import psycopg2

        return Sync(psycopg2, dsn)
    if args.driver == "psycopg3_async":
        return PsycopgAsync(dsn)
    if args.driver == "asyncpg":
        return Asyncpg(args.host, int(args.port), args.dbname, args.user)
    if args.driver == "sqlalchemy_psycopg3":
        return SqlAlchemy("postgresql+psycopg://" + url_tail, args.table)
    if args.driver == "sqlalchemy_psycopg2":
        return SqlAlchemy("postgresql+psycopg2://" + url_tail, args.table)
    raise SystemExit(f"unknown driver {args.driver}")


async def expect_error(d, c, statements, code):
    """Run `statements` in one transaction; the last must fail with SQLSTATE `code`."""
    await d.begin(c)
    try:
        for sql, params in statements:
            await d.execute(c, sql, params)
    except Exception as e:  # noqa: BLE001 - the driver's own error type
        state = d.sqlstate(e)
        check(state == code, f"expected SQLSTATE {code}, got {state}: {e!r}")
        await d.rollback(c)
        return state
    raise Failure(f"expected SQLSTATE {code}, the statements succeeded")


async def work(d, t):
    ins, sel = INSERT.format(t=t), SELECT.format(t=t)
    main = await d.connect()
    main_pids = []
    step = "prepared"
    try:
        for i in range(1, REPEAT + 1):
            await d.begin(main)
            await d.execute(main, ins, (i, "c"))
            await d.commit(main)
        for i in range(1, REPEAT + 1):
            await d.begin(main)
            rows = await d.execute(main, sel, (i,))
            await d.commit(main)
            check(rows and rows[0][0] == "c", f"row {i} reads {rows}")
            main_pids.append(rows[0][1])
        await d.begin(main)
        prepared = (await d.execute(main, PREPARED, ()))[0][0]
        await d.commit(main)

        step = "switch"
        holder = await d.connect()
        for _ in range(3):
            await d.begin(holder)
            await d.execute(holder, "SELECT pg_backend_pid()", ())
            for i in range(1, 7):
                await d.begin(main)
                rows = await d.execute(main, sel, (i,))
                await d.commit(main)
                check(rows and rows[0][0] == "c", f"row {i} reads {rows}")
                main_pids.append(rows[0][1])
            await d.commit(holder)
            if len(set(main_pids)) > 1:
                break
        await d.close(holder)

        step = "rollback"
        await d.begin(main)
        for i in (101, 102, 103):
            await d.execute(main, ins, (i, "r"))
        seen = (await d.execute(main, COUNT_RANGE.format(t=t), (101, 103)))[0][0]
        check(seen == 3, f"inside the transaction {seen} of 3 rows")
        await d.rollback(main)
        await d.begin(main)
        after = (await d.execute(main, COUNT_RANGE.format(t=t), (101, 103)))[0][0]
        await d.commit(main)
        check(after == 0, f"{after} rolled-back rows are still there")

        step = "error"
        unique = await expect_error(d, main, [(ins, (201, "e")), (ins, (1, "dup"))], "23505")
        divide = await expect_error(d, main, [(DIVIDE, (0,))], "22012")
        await d.begin(main)
        await d.execute(main, ins, (202, "after-error"))
        await d.commit(main)

        step = "concurrent"

        async def worker(w):
            c = await d.connect()
            pids = []
            for i in range(1, WORKER_TX + 1):
                rid = 1000 + 100 * w + i
                await d.begin(c)
                await d.execute(c, ins, (rid, "w"))
                rows = await d.execute(c, sel, (rid,))
                await d.commit(c)
                check(rows and rows[0][0] == "w", f"worker {w} row {rid} reads {rows}")
                pids.append(rows[0][1])
            await d.close(c)
            return pids

        worker_pids = await asyncio.gather(*(worker(w) for w in range(WORKERS)))
    except Exception as e:  # noqa: BLE001 - reported with the step
        raise Failure(f"step {step}: {type(e).__name__}: {e}") from e
    await d.close(main)
    return {
        "main_backends": main_pids,
        "worker_backends": worker_pids,
        "prepared_statements": prepared,
        "unique_violation": unique,
        "division_by_zero": divide,
    }


def main():
    p = argparse.ArgumentParser()
    for a in ("--driver", "--host", "--port", "--dbname", "--user", "--table"):
        p.add_argument(a, required=True)
    args = p.parse_args()
    try:
        d = make(args)
    except ImportError as e:
        print(f"{args.driver}: cannot import the driver ({e}); run ensure_driver_clients from scripts/lib.sh", file=sys.stderr)
        sys.exit(2)
    loop = asyncio.new_event_loop()
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS + 2))
    try:
        summary = loop.run_until_complete(work(d, args.table))
    except Failure as e:
        print(f"{args.driver}: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        if isinstance(d, SqlAlchemy):
            d.engine.dispose()
    summary["driver"] = args.driver
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
