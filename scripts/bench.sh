#!/usr/bin/env bash
# Every benchmark, one after another (docs/benchmarks.md). Each prints progress lines and, last,
# one JSON line with its figures beside the baselines measured in the same run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
for b in eventstore auth content alerts system rebuild growth; do
  echo "== npm run bench:$b"
  npm run --silent "bench:$b"
done
