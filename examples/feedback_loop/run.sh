#!/usr/bin/env bash
# The improvement loop, end to end, on SmolLM2-135M-Instruct and SST-2 reviews:
#   data -> train -> serve an A/B experiment (tuned run vs plain model) -> simulated users
#   rate the answers -> experiment report -> drift monitor -> feedback export through the
#   gate -> retrain from the served adapter, judged on held-out rows -> promoted as a canary.
#
#   bash examples/feedback_loop/run.sh                 # 829 s measured on 2 busy CPU cores
#   WORK=/tmp/loop TUNELAB="python -m tunelab" bash examples/feedback_loop/run.sh
#
# On a machine other jobs keep busy, OMP_NUM_THREADS=1 in front was 4x faster to train
# than torch's default of a thread per core (254 s against 997 s for the same run).
#
# Everything it writes goes to $WORK (default: a new temporary folder): the data, the
# runs, the request log (tunelab.db), the server's log and the exported feedback. The data
# sets are read from $SHARED (default ../../../shared/data from this folder): SST-2, and
# GSM8K questions for the drift alarm (that step is skipped when GSM8K is absent).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TUNELAB="${TUNELAB:-tunelab}"        # may be several words: "python -m tunelab"
PYTHON="${PYTHON:-python}"           # runs make_data.py and users.py (needs `openai`)
SHARED="${SHARED:-$HERE/../../../shared/data}"
WORK="${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/tunelab-loop.XXXXXX")}"
USERS="${USERS:-60}"                 # simulated users ...
PER_USER="${PER_USER:-5}"            # ... asking about this many reviews each

say() { printf '\n%s\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }   # print a command, then run it
PHASE="" PHASE_START=0
phase() {                                # close the last phase with its wall time, open one
    local now
    now=$(date +%s)
    if [[ -n "$PHASE" ]]; then echo "-- $PHASE: $((now - PHASE_START)) s"; fi
    PHASE="$1" PHASE_START=$now
    if [[ -n "$PHASE" ]]; then say "== $PHASE"; fi
}
key() { "$PYTHON" -c 'import secrets; print(secrets.token_hex(16))'; }

SERVER=""
stop_server() {                          # SIGTERM drains: requests in flight finish first
    if [[ -n "$SERVER" ]] && kill -0 "$SERVER" 2>/dev/null; then
        kill -TERM "$SERVER"
        wait "$SERVER" || true
    fi
    SERVER=""
}
trap stop_server EXIT

mkdir -p "$WORK"
cd "$WORK"
if [[ -e tunelab.db ]]; then             # a second pass would count every user twice
    echo "$WORK/tunelab.db exists: this loop starts from an empty request log; move it away" >&2
    exit 2
fi
cp "$HERE/train.yaml" "$HERE/serve.yaml" .   # the copies' relative paths start here
echo "work folder: $WORK"
STARTED=$(date +%s)

phase "1. data: SST-2 reviews as chat rows"
show "$PYTHON" "$HERE/make_data.py" data --shared "$SHARED"

phase "2. train the first run (LoRA, 50 steps)"
if grep -qs '"status": "complete"' runs/sentiment-v1/summary.json; then
    echo "runs/sentiment-v1 is complete already: not trained again (remove it to train anew)"
else
    show $TUNELAB train train.yaml --no-progress
fi

phase "3. serve the run and the plain model as experiment 'sentiment'"
export TUNELAB_API_KEYS="${TUNELAB_API_KEYS:-$(key)}"
export TUNELAB_ADMIN_KEY="${TUNELAB_ADMIN_KEY:-$(key)}"
export OPENAI_API_KEY="${TUNELAB_API_KEYS%%,*}"
echo "\$ $TUNELAB serve --config serve.yaml > serve.log 2>&1 &"
$TUNELAB serve --config serve.yaml > serve.log 2>&1 &
SERVER=$!
URL=""
for _ in $(seq 600); do                  # up to 5 minutes to load both models
    kill -0 "$SERVER" 2>/dev/null || { cat serve.log; echo "the server exited" >&2; exit 1; }
    URL=${URL:-$(sed -n 's|^serving .* at \(http://[^ ]*\)/v1 .*|\1|p' serve.log)}
    if [[ -n "$URL" ]] && curl -sf "$URL/ready" > /dev/null; then break; fi
    sleep 0.5
done
if [[ -z "$URL" ]] || ! curl -sf "$URL/ready" > /dev/null; then
    cat serve.log; echo "the server did not become ready" >&2; exit 1
fi
grep '^serving' serve.log

phase "4. $USERS simulated users, $PER_USER reviews each, rate the answers"
show "$PYTHON" "$HERE/users.py" --base-url "$URL/v1" --reviews data/production.jsonl \
    --users "$USERS" --per-user "$PER_USER"
say "users per variant, from the admin route (admin key from \$TUNELAB_ADMIN_KEY):"
curl -sf -H "Authorization: Bearer $TUNELAB_ADMIN_KEY" "$URL/admin/experiments"
echo
sleep 2                                  # the request log is written about once a second

phase "5. the experiment report"
show $TUNELAB experiment report sentiment --config serve.yaml

phase "6. drift of the production reviews against the training reviews"
show $TUNELAB monitor --config serve.yaml

if [[ -f data/offtopic.jsonl ]]; then
    phase "6b. math questions sent to the run: the drift alarm"
    SINCE=$(date -u +%Y-%m-%dT%H:%M:%S)
    sleep 1
    show "$PYTHON" "$HERE/users.py" --base-url "$URL/v1" --reviews data/offtopic.jsonl \
        --model sentiment-v1 --users 6 --per-user 10 --prefix asker
    sleep 2
    if show $TUNELAB monitor --config serve.yaml --model sentiment-v1 --since "$SINCE" --fail-on-drift; then
        echo "no drift found in the math questions (unexpected)"
    else
        echo "exit $?: drift, as --fail-on-drift reports it"
    fi
fi

phase "7. stop the server"
stop_server
tail -n 1 serve.log

phase "8. export the feedback on the run's answers, through the data gate"
show $TUNELAB feedback export --out fb --db sqlite:///tunelab.db --model sentiment-v1 \
    --include-unreviewed

phase "9. retrain from the served adapter on the corrections; promote as a 10% canary"
rc=0
show $TUNELAB retrain sentiment-v1 --data fb/sft.jsonl --out sentiment-v2 --no-progress \
    --promote sentiment --weight 0.1 --config serve.yaml || rc=$?
if [[ $rc -gt 1 ]]; then exit "$rc"; fi  # exit 1 is a verdict: judged worse, not promoted
if [[ $rc -eq 0 ]]; then
    say "the promoted serve.yaml (the old one is serve.yaml.bak):"
    cat serve.yaml
else
    echo "exit 1: judged worse than sentiment-v1; serve.yaml is unchanged"
fi

phase "10. the corrections mixed with the training rows (replay), judged the same way"
cat data/train.jsonl fb/sft.jsonl > replay.jsonl     # 420 rows: a second epoch plus the fixes
show $TUNELAB retrain sentiment-v1 --data replay.jsonl --out sentiment-v2-replay --no-progress \
    || { rc=$?; [[ $rc -eq 1 ]] || exit "$rc"; echo "exit 1: judged worse than sentiment-v1"; }

phase ""
echo "all phases: $(( $(date +%s) - STARTED )) s; everything is in $WORK"
