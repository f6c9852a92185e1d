#!/usr/bin/env bash
# The quickstart's evaluation, reviewed blind by two reviewers, adjudicated, exported.
#
#   tunelab quickstart                      # leaves quickstart/ and the run in runs/
#   bash examples/review/run.sh RUN         # RUN: the run folder the quickstart printed
#
# Steps: `tunelab eval` writes a blinded review sheet (fine-tuned vs base, 40 tickets);
# a review project imports it; three users are made (random passwords in
# review/passwords.txt, mode 600); the app is served on a free port; two scripted
# reviewers and an adjudicator answer through its forms (reviewers.py: they judge by the
# reference; the second is careless on a seeded 15%, so some items disagree); then the
# agreement figures are printed and the agreed and adjudicated items exported.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
RUN=${1:?usage: run.sh RUN (the quickstart run folder)}
OUT=${OUT:-review}
PY=${PYTHON:-python}
mkdir -p "$OUT"
DB="sqlite:///$(cd "$OUT" && pwd)/review.db"
PROJECT=quickstart-review

tunelab eval "$RUN" --compare smollm2-135m-instruct --data quickstart/data/test.jsonl \
  --labels Atlas,Beacon,Comet,Dune,Ember,Fjord \
  --method generate --max-new-tokens 8 --review 40 --report "$OUT/eval" --no-progress

umask 077
: > "$OUT/passwords.txt"
for pair in ann:reviewer ben:reviewer cy:adjudicator root:admin; do
  name=${pair%%:*}; role=${pair##*:}
  password=$("$PY" -c 'import secrets; print(secrets.token_urlsafe(18))')
  echo "$name $password" >> "$OUT/passwords.txt"
  echo "$password" | tunelab review user add "$name" --role "$role" --password-stdin --db "$DB"
done
umask 022

tunelab review project add "$PROJECT" --kind output --guideline "$HERE/guideline.md" \
  --reviews 2 --db "$DB"
tunelab review add "$PROJECT" "$OUT/eval/review.csv" --db "$DB"

tunelab review serve --db "$DB" --port 0 2> "$OUT/serve.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  URL=$(grep -o 'http://[0-9.:]*/' "$OUT/serve.log" || true)
  [ -n "$URL" ] && break
  sleep 0.2
done
[ -n "$URL" ] || { cat "$OUT/serve.log"; exit 1; }

"$PY" "$HERE/reviewers.py" "$URL" --project "$PROJECT" --reviewers ann ben --adjudicator cy \
  --password-file "$OUT/passwords.txt" --careless 0.15 --seed 0

tunelab review agreement "$PROJECT" --db "$DB"
tunelab review export "$PROJECT" --as verdicts --out "$OUT/verdicts.json" --db "$DB"
tunelab review export "$PROJECT" --as pairs --out "$OUT/pairs.jsonl" --db "$DB"
kill $SERVER
wait $SERVER 2>/dev/null || true
trap - EXIT
