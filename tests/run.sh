#!/usr/bin/env bash
# The one test command (README, "Test everything"; .ci/run calls it):
# installs what is missing, starts the brokers the tests need, builds
# everything and runs every test: Rust, then (as they land) Python, Node and
# cross-language. Stops at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# A one-off build (CI's fresh clone) gains nothing from incremental caches,
# which take gigabytes of a shared disk.
if [ "${CI:-}" = "true" ]; then export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"; fi

step() { printf '\n==> %s\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }

# --- 1. what the build needs ----------------------------------------------------
step "checking the toolchain"
if ! have cargo; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "cargo not found: install Rust (https://rustup.rs), then run this again" >&2
    exit 1
  fi
fi
# C compiler for the bundled SQLite; make, OpenSSL and zlib headers for the
# bundled librdkafka (the Kafka backend, built from source).
source tests/lib/apt.sh
have cc && have make || apt_install build-essential
dpkg -s libssl-dev zlib1g-dev pkg-config >/dev/null 2>&1 || apt_install libssl-dev zlib1g-dev pkg-config
if have rustup; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi
cargo --version
# A full build and test run writes about 2.5 GB (target/, the brokers' data):
# say so up front rather than fail half-way with "No space left on device".
free_kb=$(df -Pk . 2>/dev/null | awk 'NR==2 {print $4}')
if [ -n "$free_kb" ] && [ "$free_kb" -lt 3000000 ]; then
  echo "warning: only $((free_kb / 1024)) MB free here; building and testing everything needs about 3 GB" >&2
fi

# --- 2. brokers -----------------------------------------------------------------
# Each backend adds its install-and-start script to tests/brokers/ and is
# started here; none is needed by the embedded backends.
for script in tests/brokers/start-*.sh; do
  [ -e "$script" ] || continue
  step "starting $(basename "$script" .sh | sed 's/^start-//')"
  bash "$script"
done

# --- 3. Rust --------------------------------------------------------------------
# Formatting and lints are part of passing: a toolchain without them fails
# here rather than skipping them unseen.
for tool in fmt clippy; do
  cargo "$tool" --version >/dev/null 2>&1 || {
    echo "cargo $tool is missing: install it (rustup component add ${tool/fmt/rustfmt}), then run this again" >&2
    exit 1
  }
done
step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings
step "cargo test (unit, conformance on every backend, multi-process, broker crashes)"
# The fault tests append what they measured (lost, duplicated, time to
# resume) here: a passing test's own output is hidden.
report="$(cargo metadata --format-version 1 --no-deps | sed 's/.*"target_directory":"\([^"]*\)".*/\1/')/tmp/fault-report.txt"
rm -f "$report"
cargo test --workspace --all-features
step "what the fault tests measured"
cat "$report"

step "the README's demo"
cargo run -q -p pillarbox --example quickstart

step "pillarbox check (the conformance suite against a user's URL)"
cargo run -q -p pillarbox-cli -- check memory://runner-check >/dev/null || {
  cargo run -q -p pillarbox-cli -- check memory://runner-check
  exit 1
}

# --- 4. language packages and cross-language tests -------------------------------
# In this order: the cross-language test uses the packages the others installed;
# django.sh comes right after python.sh.
# RabbitMQ is emptied before each: what a suite leaves keeps the node busy.
for suite in python django node; do
  bash tests/brokers/reset-rabbitmq.sh
  step "$suite"
  bash "tests/suites/$suite.sh"
done
step "cross-language"
bash tests/cross-language/run.sh

step "all tests passed"
