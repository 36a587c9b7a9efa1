// One cell of the driver matrix: the PostgreSQL JDBC driver through the poolwarden sidecar.
//
// Usage: java -cp /usr/share/java/postgresql.jar Driver.java HOST PORT DBNAME USER TABLE
//
// The work is the one described in python_driver.py (steps prepared, switch, rollback,
// error, concurrent), with the driver's defaults: a PreparedStatement becomes a named
// server-side statement after prepareThreshold (5) executions. Prints one JSON line, or the
// failing step on stderr and exit 1.

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

public class Driver {
    static final int WORKERS = 6;
    static final int WORKER_TX = 8;
    static final int REPEAT = 10;

    static String url;
    static Properties props = new Properties();
    static String table;

    static void check(boolean cond, String what) {
        if (!cond) throw new IllegalStateException(what);
    }

    static Connection connect() throws SQLException {
        return DriverManager.getConnection(url, props);
    }

    /** A connection with its two statements, prepared once and executed many times. */
    static final class Client implements AutoCloseable {
        final Connection c;
        final PreparedStatement insert;
        final PreparedStatement select;
        final PreparedStatement countRange;

        Client() throws SQLException {
            c = connect();
            countRange = c.prepareStatement("SELECT count(*) FROM " + table + " WHERE id BETWEEN ? AND ?");
            insert = c.prepareStatement("INSERT INTO " + table + " (id, note) VALUES (?, ?)");
            select = c.prepareStatement("SELECT note, pg_backend_pid() FROM " + table + " WHERE id = ?");
        }

        void insert(int id, String note) throws SQLException {
            insert.setInt(1, id);
            insert.setString(2, note);
            check(insert.executeUpdate() == 1, "insert " + id);
        }

        int read(int id, String note) throws SQLException {
            select.setInt(1, id);
            try (ResultSet r = select.executeQuery()) {
                check(r.next(), "row " + id + " is missing");
                check(note.equals(r.getString(1)), "row " + id + " reads " + r.getString(1));
                return r.getInt(2);
            }
        }

        long countRange(int lo, int hi) throws SQLException {
            countRange.setInt(1, lo);
            countRange.setInt(2, hi);
            try (ResultSet r = countRange.executeQuery()) {
                r.next();
                return r.getLong(1);
            }
        }

        long scalar(String sql) throws SQLException {
            try (Statement s = c.createStatement(); ResultSet r = s.executeQuery(sql)) {
                r.next();
                return r.getLong(1);
            }
        }

        @Override
        public void close() throws SQLException {
            c.close();
        }
    }

    static String expectError(Client m, String code, Work body) throws SQLException {
        m.c.setAutoCommit(false);
        try {
            body.run();
        } catch (SQLException e) {
            check(code.equals(e.getSQLState()), "expected SQLSTATE " + code + ", got " + e.getSQLState() + ": " + e.getMessage());
            m.c.rollback();
            m.c.setAutoCommit(true);
            return e.getSQLState();
        }
        throw new IllegalStateException("expected SQLSTATE " + code + ", the statements succeeded");
    }

    interface Work {
        void run() throws SQLException;
    }

    static String list(List<Integer> xs) {
        StringBuilder b = new StringBuilder("[");
        for (int i = 0; i < xs.size(); i++) b.append(i == 0 ? "" : ",").append(xs.get(i));
        return b.append("]").toString();
    }

    public static void main(String[] args) throws Exception {
        try {
            Class.forName("org.postgresql.Driver");
        } catch (ClassNotFoundException e) {
            System.err.println("jdbc: org.postgresql.Driver is not on the class path; run ensure_driver_clients from scripts/lib.sh");
            System.exit(2);
        }
        url = "jdbc:postgresql://" + args[0] + ":" + args[1] + "/" + args[2];
        props.setProperty("user", args[3]);
        props.setProperty("ApplicationName", "pw_jdbc");
        table = args[4];
        String step = "prepared";
        StringBuilder out = new StringBuilder("{\"driver\":\"jdbc\"");
        try (Client main = new Client()) {
            List<Integer> mainPids = new ArrayList<>();
            for (int i = 1; i <= REPEAT; i++) {
                main.c.setAutoCommit(false);
                main.insert(i, "c");
                main.c.commit();
                main.c.setAutoCommit(true);
            }
            for (int i = 1; i <= REPEAT; i++) mainPids.add(main.read(i, "c"));
            out.append(",\"prepared_statements\":").append(main.scalar("SELECT count(*) FROM pg_prepared_statements"));

            step = "switch";
            try (Client holder = new Client()) {
                for (int round = 0; round < 3; round++) {
                    holder.c.setAutoCommit(false);
                    holder.scalar("SELECT pg_backend_pid()");
                    for (int i = 1; i <= 6; i++) mainPids.add(main.read(i, "c"));
                    holder.c.commit();
                    holder.c.setAutoCommit(true);
                    if (new HashSet<>(mainPids).size() > 1) break;
                }
            }
            out.append(",\"main_backends\":").append(list(mainPids));

            step = "rollback";
            main.c.setAutoCommit(false);
            for (int id = 101; id <= 103; id++) main.insert(id, "r");
            String count = "SELECT count(*) FROM " + table + " WHERE id BETWEEN 101 AND 103";
            long seen = main.scalar(count);
            check(seen == 3, "inside the transaction " + seen + " of 3 rows");
            main.c.rollback();
            main.c.setAutoCommit(true);
            long after = main.scalar(count);
            check(after == 0, after + " rolled-back rows are still there");

            step = "error";
            String unique = expectError(main, "23505", () -> {
                main.insert(201, "e");
                main.insert(1, "dup");
            });
            String divide = expectError(main, "22012", () -> {
                try (PreparedStatement d = main.c.prepareStatement("SELECT 1 / ?::int")) {
                    d.setInt(1, 0);
                    d.executeQuery().close();
                }
            });
            out.append(",\"unique_violation\":\"").append(unique).append("\"");
            out.append(",\"division_by_zero\":\"").append(divide).append("\"");
            main.c.setAutoCommit(false);
            main.insert(202, "after-error");
            main.c.commit();
            main.c.setAutoCommit(true);

            step = "concurrent";
            ExecutorService pool = Executors.newFixedThreadPool(WORKERS);
            List<Future<List<Integer>>> futures = new ArrayList<>();
            for (int w = 0; w < WORKERS; w++) {
                final int worker = w;
                futures.add(pool.submit(() -> {
                    List<Integer> pids = new ArrayList<>();
                    try (Client c = new Client()) {
                        int base = 1000 + 100 * worker;
                        for (int i = 1; i <= WORKER_TX; i++) {
                            int id = base + i;
                            c.c.setAutoCommit(false);
                            if (worker % 2 == 1) {
                                long own = c.countRange(base + 1, base + WORKER_TX);
                                check(own == i - 1, "worker " + worker + " sees " + own + " of its rows before row " + i);
                            }
                            c.insert(id, "w");
                            pids.add(c.read(id, "w"));
                            c.c.commit();
                        }
                    }
                    return pids;
                }));
            }
            out.append(",\"worker_backends\":[");
            for (int w = 0; w < WORKERS; w++) {
                out.append(w == 0 ? "" : ",").append(list(futures.get(w).get()));
            }
            out.append("]");
            pool.shutdown();
        } catch (Exception e) {
            Throwable t = e.getCause() != null && !(e instanceof SQLException) ? e.getCause() : e;
            String state = t instanceof SQLException s ? s.getSQLState() + " " : "";
            System.err.println("jdbc: step " + step + ": " + state + t);
            System.exit(1);
        }
        System.out.println(out.append("}"));
    }
}
