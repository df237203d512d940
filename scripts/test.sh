#!/usr/bin/env bash
# `npm test`: starts the services the tests need when absent, then typecheck and lint (side by side)
# and every test, with line coverage summarized at the end (scripts/test-reporter.mjs, and
# scripts/test-summary.mjs over both lanes). Extra arguments select test files:
#   scripts/test.sh test/unit/config.test.ts
#
# Two lanes run side by side, each one file at a time: the trainer lane (files that train models or
# run runner processes; a trainer uses both cores, so two at once would only slow each other down)
# and the service lane (API, database, storage, dataset and unit tests, which mostly wait on
# Postgres, Redis, S3 and child processes). Each lane's lines are prefixed with its name. Files are
# isolated from each other: each makes its own database, bucket, queue prefix, data folder and ports.
#
# Time limits, so that an await that never resolves fails the run instead of hanging CI:
#   TEST_FILE_TIMEOUT_SECONDS (default 600): Node 20's --test-timeout. Node 20 applies it to each
#     test file's process as a whole (and to every test inside it), so it bounds the slowest file.
#   TEST_SUITE_TIMEOUT_SECONDS (default 1800): a watchdog over the whole test run (both lanes); past
#     it the run is stopped (SIGTERM, then SIGKILL 20 s later) and fails with exit status 124.
#   TEST_COVERAGE=0 turns coverage off.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
bash scripts/chromium.sh   # the browser tests' Chromium, from Debian when missing
if [ $# -eq 0 ]; then
  echo "== typecheck and lint"; checks_started=$SECONDS
  npx tsc -p . & typecheck=$!
  lint_status=0; npx eslint --max-warnings 0 . || lint_status=$?
  typecheck_status=0; wait "$typecheck" || typecheck_status=$?
  [ "$typecheck_status" -eq 0 ] || echo "== typecheck failed" >&2
  [ "$lint_status" -eq 0 ] || echo "== lint failed" >&2
  [ "$typecheck_status" -eq 0 ] && [ "$lint_status" -eq 0 ] || exit 1
  echo "== typecheck and lint passed in $(( SECONDS - checks_started )) s"
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
# The trainer lane: files that train models or run runner processes. Everything else: service lane.
trainer_lane() {
  case "$1" in
    # Runner tests that train nothing (start-up errors, fencing, the child's environment, …).
    test/integration/runner/childEnv.test.ts | test/integration/runner/infra.test.ts | \
      test/integration/runner/mapping.test.ts | test/integration/runner/fencing.test.ts | \
      test/integration/runner/cancelWatch.test.ts | test/integration/runner/startup.test.ts) return 1 ;;
    test/integration/runner/* | test/unit/moco/train.test.ts | test/unit/moco/quality.test.ts | \
      test/integration/pytorch-export.test.ts) return 0 ;;
    # Everything else, including the other trainer unit tests (a few seconds of compute each) and
    # the fault suite, whose runner kinds npm test skips (FAULT_RUNNER_TRIALS=0 above).
    *) return 1 ;;
  esac
}
trainer=() service=()
for f in "${files[@]}"; do
  if trainer_lane "$f"; then trainer+=("$f"); else service+=("$f"); fi
done
echo "== tests (${#files[@]} files: ${#trainer[@]} in the trainer lane, ${#service[@]} in the service lane;" \
  "at most ${file_timeout_ms} ms a file, ${suite_timeout_s} s in all)"
tests_started=$SECONDS
summaries=$(mktemp -d)
trap 'rm -rf "$summaries"' EXIT
# run_lane NAME FILE...: the lane's files one at a time under the suite's watchdog; its lines are
# prefixed with NAME; its exit status is the tests' (124 or 137 when the watchdog stopped them).
run_lane() {
  local name=$1; shift
  set -o pipefail
  TEST_LANE_SUMMARY="$summaries/$name.json" timeout --kill-after=20 "$suite_timeout_s" \
    node --import tsx --test --test-concurrency=1 --test-timeout="$file_timeout_ms" "${coverage[@]}" \
      --test-reporter=./scripts/test-reporter.mjs --test-reporter-destination=stdout "$@" 2>&1 |
    sed -u "s/^/[$name] /"
}
set +e
lanes=() pids=()
if [ ${#trainer[@]} -gt 0 ]; then run_lane trainer "${trainer[@]}" & pids+=($!); lanes+=(trainer); fi
if [ ${#service[@]} -gt 0 ]; then run_lane service "${service[@]}" & pids+=($!); lanes+=(service); fi
status=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}"; lane_status=$?
  if [ "$lane_status" -eq 124 ] || [ "$lane_status" -eq 137 ]; then
    echo "== the ${lanes[$i]} lane ran past TEST_SUITE_TIMEOUT_SECONDS=${suite_timeout_s} and was stopped" >&2
    status=$lane_status
  elif [ "$lane_status" -ne 0 ] && [ "$status" -eq 0 ]; then
    echo "== the ${lanes[$i]} lane failed (exit status $lane_status)" >&2
    status=$lane_status
  fi
done
set -e
summary_files=()
for lane in "${lanes[@]}"; do summary_files+=("$summaries/$lane.json"); done
node scripts/test-summary.mjs "${summary_files[@]}" || status=${status/#0/1}
echo "== tests took $(( SECONDS - tests_started )) s"
exit "$status"
