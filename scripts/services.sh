#!/usr/bin/env bash
# Starts what Momentum needs and is not running yet: PostgreSQL, Redis and the local S3 server.
# Idempotent: a service that answers is left alone. Where PostgreSQL or Redis are not installed and
# we are root on Debian, they are installed from Debian's packages, and so is OpenBLAS
# (libopenblas0-pthread: the trainer's matrix products on wasm; without it the trainer uses its
# wasm kernels, so its absence is not an error). Prints one line per service.
# Usage: scripts/services.sh [--no-s3]
set -euo pipefail
cd "$(dirname "$0")/.."

PGHOST_=${PGHOST:-127.0.0.1}; PGPORT_=${PGPORT:-5432}
REDIS_PORT=${REDIS_PORT:-6379}
S3_PORT=${S3_PORT:-4568}
VAR=${MOMENTUM_VAR:-$PWD/var}
mkdir -p "$VAR/log"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { for _ in $(seq 1 "${2:-100}"); do port_open "$1" && return 0; sleep 0.1; done; return 1; }
apt_install() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "services: $1 is missing and cannot be installed here (need root and apt-get); install it and retry" >&2; exit 1
  fi
  echo "services: installing $* from Debian's packages"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@") >"$VAR/log/apt.log" 2>&1 \
    || { echo "services: apt-get install $* failed; see $VAR/log/apt.log" >&2; exit 1; }
}

# --- PostgreSQL -------------------------------------------------------------------------------
if pg_isready -q -h "$PGHOST_" -p "$PGPORT_" 2>/dev/null || port_open "$PGPORT_"; then
  echo "services: postgres already running on $PGHOST_:$PGPORT_"
else
  command -v pg_ctlcluster >/dev/null || apt_install postgresql
  ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)
  [ -n "$ver" ] || { echo "services: no PostgreSQL cluster found under /etc/postgresql" >&2; exit 1; }
  # Trust auth on loopback for the local development cluster, as the CI machines have it.
  hba=/etc/postgresql/$ver/main/pg_hba.conf
  if [ -w "$hba" ] && ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\nlocal all all trust' "$hba"
  fi
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start
  wait_port "$PGPORT_" 100 || { echo "services: postgres did not start" >&2; exit 1; }
  echo "services: started postgres $ver on $PGHOST_:$PGPORT_"
fi

# --- Redis ------------------------------------------------------------------------------------
if port_open "$REDIS_PORT"; then
  echo "services: redis already running on 127.0.0.1:$REDIS_PORT"
else
  command -v redis-server >/dev/null || apt_install redis-server
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$VAR" --logfile "$VAR/log/redis.log"
  wait_port "$REDIS_PORT" 50 || { echo "services: redis did not start" >&2; exit 1; }
  echo "services: started redis on 127.0.0.1:$REDIS_PORT"
fi

# --- Native BLAS for the trainer (optional) --------------------------------------------------
blas_present() { ldconfig -p 2>/dev/null | grep -q 'libopenblas\.so\.0' || ls /usr/lib/*-linux-gnu/openblas-pthread/libopenblas.so.0 >/dev/null 2>&1; }
if [ "${MOMENTUM_NO_BLAS_INSTALL:-}" = 1 ] || blas_present; then
  blas_present && echo "services: native BLAS (OpenBLAS) present" || echo "services: native BLAS absent; the trainer uses its wasm kernels"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "services: installing libopenblas0-pthread from Debian's packages (the trainer's native matrix products)"
  if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread) >"$VAR/log/apt-blas.log" 2>&1; then
    echo "services: native BLAS installed"
  else
    echo "services: could not install libopenblas0-pthread (see $VAR/log/apt-blas.log); the trainer uses its wasm kernels" >&2
  fi
else
  echo "services: native BLAS absent (apt-get install libopenblas0-pthread as root for faster training); the trainer uses its wasm kernels"
fi
# The trainer compiles its native elementwise kernels with the C compiler on first use
# (runner/moco/kernels/native-kernels.ts); without one it keeps its wasm kernels. Reported, not installed.
if command -v cc >/dev/null || command -v gcc >/dev/null || command -v clang >/dev/null; then
  echo "services: C compiler present (the trainer builds its native kernels on first use)"
else
  echo "services: no C compiler (apt-get install gcc for the trainer's native kernels); the trainer uses its wasm kernels"
fi

# --- S3 (s3rver) ------------------------------------------------------------------------------
if [ "${1:-}" != "--no-s3" ]; then
  if port_open "$S3_PORT"; then
    echo "services: s3 server already running on 127.0.0.1:$S3_PORT"
  else
    nohup node --import tsx scripts/s3-server.ts --port "$S3_PORT" --dir "$VAR/s3" >"$VAR/log/s3.log" 2>&1 &
    echo $! >"$VAR/s3.pid"
    wait_port "$S3_PORT" 150 || { echo "services: s3 server did not start; see $VAR/log/s3.log" >&2; exit 1; }
    echo "services: started s3 server on 127.0.0.1:$S3_PORT (data in $VAR/s3)"
  fi
fi

# --- Database schema --------------------------------------------------------------------------
node --import tsx scripts/migrate.ts | sed 's/^/services: /'
