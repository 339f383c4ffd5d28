#!/usr/bin/env bash
# The demo sweep through the embedded executor and through two Celery workers (Redis at 127.0.0.1:6379):
# prints whether every verdict and every candidate's mean fidelity agree. Usage: scripts/executor_parity.sh [probe]
set -euo pipefail
cd "$(dirname "$0")/.."
PROBE=${1:-8}
OUT=$(mktemp -d)
PY=.venv/bin/python
export OMP_NUM_THREADS=1
CARRYGATE_DATA_DIR=$OUT/embedded $PY -m carrygate.app demo --probe "$PROBE" --no-grid --no-serve --port 18001 > "$OUT/embedded.out" 2>&1
export CARRYGATE_DATA_DIR=$OUT/celery CARRYGATE_EXECUTOR=celery CARRYGATE_CELERY_QUEUE=parity-$$
$PY -m carrygate.app migrate > /dev/null 2>&1
$PY -m carrygate.app worker --pool solo > "$OUT/worker1.log" 2>&1 & W1=$!
$PY -m carrygate.app worker --pool solo > "$OUT/worker2.log" 2>&1 & W2=$!
trap 'kill $W1 $W2 2>/dev/null || true' EXIT
until grep -q " ready." "$OUT/worker1.log" && grep -q " ready." "$OUT/worker2.log"; do sleep 0.5; done
$PY -m carrygate.app demo --probe "$PROBE" --no-grid --no-serve --port 18002 > "$OUT/celery.out" 2>&1
$PY - "$OUT" <<'PYEOF'
import json, sqlite3, sys
def outcome(db):
    c = sqlite3.connect(db)
    verdicts = {(ck, cand or "JOB"): d for ck, cand, d in c.execute(
        "select ck.original_name, ca.name, v.decision from verdicts v join jobs j on j.id = v.job_id "
        "join checkpoints ck on ck.id = j.checkpoint_id left join candidates ca on ca.id = v.candidate_id")}
    fidelity = {(ck, m["name"]): (m["fidelity"] or {}).get("mean") for ck, body in c.execute(
        "select ck.original_name, r.body from results r join jobs j on j.id = r.job_id join checkpoints ck on ck.id = j.checkpoint_id")
        for m in json.loads(body)["candidates"]}
    workers = {w for (w,) in c.execute("select distinct lease_owner from jobs")}
    return verdicts, fidelity, workers
(ev, ef, _), (cv, cf, cw) = outcome(f"{sys.argv[1]}/embedded/carrygate.db"), outcome(f"{sys.argv[1]}/celery/carrygate.db")
print(f"{len(ev)} verdicts; identical: {ev == cv}; {len(ef)} fidelity means identical: {ef == cf}; celery workers used: {len(cw)}")
sys.exit(0 if ev == cv and ef == cf and ev else 1)
PYEOF
