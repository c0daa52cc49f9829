#!/usr/bin/env bash
# Reproduce the shipped demonstration bundle end to end on a CPU, from the shared PTB-XL data.
#   scripts/reproduce_demo.sh [DATA_DIR] [RUN_DIR]
# Every stage reads its config (seed included) from configs/demo/*.json; the exported manifest records
# the same configs, and tests/test_demo_bundle.py checks that they match.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
RUNS=${2:-runs/demo}
mkdir -p "$RUNS"
diagecg train tokenizer --config configs/demo/tokenizer.json --data "$DATA" --out "$RUNS/tokenizer"
diagecg train pretrain  --config configs/demo/pretrain.json  --data "$DATA" --init "$RUNS/tokenizer" --out "$RUNS/pretrain"
diagecg train instruct  --config configs/demo/instruct.json  --data "$DATA" --init "$RUNS/pretrain" --out "$RUNS/instruct"
diagecg eval --config configs/demo/eval.json --data "$DATA" --checkpoint "$RUNS/instruct" --out "$RUNS/instruct/eval_results.json"
diagecg export --config configs/demo/export.json --set data_dir="$DATA" --checkpoint "$RUNS/instruct" \
  --out "$RUNS/bundle"
echo "bundle written to $RUNS/bundle; copy it to diagecg/bundles/default to ship it"
