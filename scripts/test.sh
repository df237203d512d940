#!/usr/bin/env bash
# `npm test`: starts the services the tests need when absent, then typecheck, lint and every test.
# Extra arguments select test files: scripts/test.sh test/unit/config.test.ts
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
if [ $# -eq 0 ]; then
  echo "== typecheck"; npx tsc -p .
  echo "== lint"; npx eslint --max-warnings 0 .
  mapfile -t files < <(find test -name '*.test.ts' | sort)
else
  files=("$@")
fi
echo "== tests (${#files[@]} files)"
# One file at a time: the machines that run this have 2 cores, and the trainer tests use both.
exec node --import tsx --test --test-concurrency=1 --test-reporter=spec "${files[@]}"
