#!/usr/bin/env bash
# The test command (README "Run the tests"): installs the Python stand-ins the
# integration tests start (moto for RDS, kmock for Kubernetes, aiosmtpd for
# stakeholder email) into a virtualenv, then
# runs every test. Set KLAXON_TEST_DATABASE_URL to run the store suites on PostgreSQL
# too; when it is set, an unreachable database fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${KLAXON_STANDIN_VENV:-$HOME/.cache/klaxon-venv}"
requirements=tests/standins/requirements.txt
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "installing test stand-ins into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    echo "$want" > "$stamp"
fi
export KLAXON_STANDIN_VENV="$venv"

# Benchmarks are built by `cargo build --all-targets` but not run here: they print
# figures and take minutes (`cargo bench`).
exec cargo test --locked --lib --bins --tests "$@"
