#!/usr/bin/env bash
# The whole check, as CI runs it (`npm test`, from .ci/run): dependencies, the servers the
# integration tests talk to, the typecheck, the deployment files, then every Vitest project
# (unit and integration; the gateway test runs nginx in front of two instances).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/ensure-deps.sh
bash scripts/ensure-services.sh

echo "== typecheck: tsc -p tsconfig.json --noEmit"
npx --no-install tsc -p tsconfig.json --noEmit

echo "== deployment: compose.yaml (docker-compose config) and the gateway's nginx configuration (nginx -t)"
bash scripts/check-compose.sh

echo "== tests: vitest run"
mkdir -p .tmp
report=.tmp/vitest-report.json
rm -f "$report"
status=0
npx --no-install vitest run --reporter=default --reporter=json --outputFile.json="$report" || status=$?

# One plain closing line with the counts, e.g. "vitest: 42 passed, 0 failed, 1 skipped".
if [ -f "$report" ]; then
  # shellcheck disable=SC2016 # JavaScript, not shell
  node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const skipped = (r.numPendingTests ?? 0) + (r.numTodoTests ?? 0);
    console.log(`vitest: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${skipped} skipped`);
  ' "$report" || true
fi
exit "$status"
