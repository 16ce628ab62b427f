#!/usr/bin/env bash
# Champion/challenger retraining on the real DWC letters, in an isolated MLflow store.
#
#   experiments/retrain_demo.sh [WORKDIR] [CONFIG]
#
# 1. builds a snapshot of the letters decided in December 2016 and January 2017,
# 2. trains and registers the first champion on it (`imr-outcome train --register`),
# 3. retrains with all letters (`imr-outcome retrain --sources <all letters>`): the
#    December/January letters are recognised as duplicates, the February letters are new,
#    half of them are held out for the champion/challenger comparison,
# 4. shows the registry (`models list`) and the challenger's version tags.
#
# Nothing is written to the project's mlflow.db or artifacts/: everything goes to WORKDIR
# (default /tmp/retrain-demo). No case text is printed.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${1:-/tmp/retrain-demo}"
CONFIG="$(realpath "${2:-$REPO/experiments/tfidf_lr.yaml}")"
LETTERS="$(realpath "$REPO/../shared/data/dwc-imr-letters/pdf")"
CLI="$REPO/.venv/bin/imr-outcome"

mkdir -p "$WORK"
cd "$WORK"
export MLFLOW_TRACKING_URI="sqlite:///$WORK/mlflow.db"

# The letters decided in December and January (decision dates parsed from the letters).
"$REPO/.venv/bin/python" - "$LETTERS" > decjan.txt <<'EOF'
import sys
from pathlib import Path

from imr_outcome.data.letters import parse_letter_file

for path in sorted(Path(sys.argv[1]).glob("*.pdf")):
    decided = parse_letter_file(path).decision_date
    if decided is not None and (decided.value.month, decided.value.year) in ((12, 2016), (1, 2017)):
        print(path)
EOF
echo "+ $(wc -l < decjan.txt) letters decided in Dec 2016 / Jan 2017"

set -x
mapfile -t DECJAN < decjan.txt
"$CLI" data build "${DECJAN[@]}" --out "$WORK/dataset-decjan"
"$CLI" train --config "$CONFIG" --set "data.dataset_dir=$WORK/dataset-decjan" \
  --register --models-dir "$WORK/models"
"$CLI" retrain --sources "$LETTERS" --config "$CONFIG" \
  --set "data.dataset_dir=$WORK/dataset-decjan" \
  --models-dir "$WORK/models" --datasets-dir "$WORK/datasets"
COLUMNS=160 "$CLI" models list
"$REPO/.venv/bin/python" - <<'EOF'
from mlflow import MlflowClient

client = MlflowClient()
for version in client.search_model_versions("name='imr-outcome'"):
    if version.tags.get("retrain.decision"):
        print(f"version {version.version} tags:")
        for key, value in sorted(version.tags.items()):
            print(f"  {key} = {value}")
EOF
