#!/usr/bin/env bash
# `npm test`: starts the services the tests need when absent, then typecheck, lint and every test,
# with line coverage summarized at the end (scripts/test-reporter.mjs).
# Extra arguments select test files: scripts/test.sh test/unit/config.test.ts
#
# Time limits, so that an await that never resolves fails the run instead of hanging CI:
#   TEST_FILE_TIMEOUT_SECONDS (default 600): Node 20's --test-timeout. Node 20 applies it to each
#     test file's process as a whole (and to every test inside it), so it bounds the slowest file.
#   TEST_SUITE_TIMEOUT_SECONDS (default 1800): a watchdog over the whole test run; past it the run
#     is stopped (SIGTERM, then SIGKILL 20 s later) and fails with exit status 124.
#   TEST_COVERAGE=0 turns coverage off.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
bash scripts/chromium.sh   # the browser tests' Chromium, from Debian when missing
if [ $# -eq 0 ]; then
  echo "== typecheck"; npx tsc -p .
  echo "== lint"; npx eslint --max-warnings 0 .
  mapfile -t files < <(find test -name '*.test.ts' | sort)
else
  files=("$@")
fi
# The fault suite's runner kinds repeat what crash/preempt tests show; `npm run faults` runs them.
export FAULT_RUNNER_TRIALS=${FAULT_RUNNER_TRIALS:-0}
file_timeout_ms=$(( ${TEST_FILE_TIMEOUT_SECONDS:-600} * 1000 ))
suite_timeout_s=${TEST_SUITE_TIMEOUT_SECONDS:-1800}
coverage=()
[ "${TEST_COVERAGE:-1}" = 0 ] || coverage=(--experimental-test-coverage)
echo "== tests (${#files[@]} files; at most ${file_timeout_ms} ms a file, ${suite_timeout_s} s in all)"
# One file at a time: the machines that run this have 2 cores, and the trainer tests use both.
set +e
timeout --kill-after=20 "$suite_timeout_s" \
  node --import tsx --test --test-concurrency=1 --test-timeout="$file_timeout_ms" "${coverage[@]}" \
    --test-reporter=./scripts/test-reporter.mjs --test-reporter-destination=stdout "${files[@]}"
status=$?
set -e
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
  echo "== the tests ran past TEST_SUITE_TIMEOUT_SECONDS=${suite_timeout_s} and were stopped" >&2
fi
exit "$status"
