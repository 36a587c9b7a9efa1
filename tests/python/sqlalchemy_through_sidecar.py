"""SQLAlchemy 2 + psycopg 3 through the poolwarden sidecar (transaction mode).

Usage: python3 sqlalchemy_through_sidecar.py PORT TABLE
Prints "ok" and exits 0 when every check passes.
"""
import sys
import threading

from sqlalchemy import create_engine, text

port, table = sys.argv[1], sys.argv[2]
# psycopg's defaults: after 5 runs a query becomes a *named* prepared statement, which the
# sidecar carries across transactions and server connections.
engine = create_engine(
    f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres?application_name=pw_sqlalchemy",
    pool_size=4,
    max_overflow=0,
    pool_pre_ping=True,
)

with engine.begin() as conn:
    conn.execute(text(f"CREATE TABLE {table} (id int PRIMARY KEY, note text)"))

errors = []


def worker(n):
    try:
        for i in range(10):
            with engine.begin() as conn:
                conn.execute(text(f"INSERT INTO {table} VALUES (:id, :note)"), {"id": n * 100 + i, "note": f"n{n}"})
                got = conn.execute(text(f"SELECT note FROM {table} WHERE id = :id"), {"id": n * 100 + i}).scalar_one()
                assert got == f"n{n}", got
    except Exception as e:  # noqa: BLE001 - reported below
        errors.append(repr(e))


threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert not errors, errors

# A rolled-back transaction leaves nothing behind.
try:
    with engine.begin() as conn:
        conn.execute(text(f"INSERT INTO {table} VALUES (9999, 'rollback')"))
        raise RuntimeError("roll back")
except RuntimeError:
    pass

with engine.connect() as conn:
    count = conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
    assert count == 40, count
    conn.execute(text(f"DROP TABLE {table}"))
    conn.commit()
engine.dispose()
print("ok")
