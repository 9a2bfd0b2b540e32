#!/usr/bin/env bash
# regen.sh BUILD_DIR — remakes run/, the small checkpoint tests/cli_eval_ask.sh asks questions of:
# asvr-train's own output for model.json (a 2-layer LLM 8 wide over the tiny tokenizer's 46 px tower
# and the 700-piece tiny SentencePiece model), 150 steps of stage it with text loss only on
# train_cli/it.json (codes → pack → train, as cli_train.sh chains them). Only what asvr-eval and
# asvr-train export read is kept: the step folder's model.safetensors, state.json and DONE (no
# optimizer state, no log).
set -euo pipefail
BIN="$(cd "$1" && pwd)/bin"
HERE=$(cd "$(dirname "$0")" && pwd)
G=$(cd "$HERE/.." && pwd)
F="$G/train_cli"
TOK="$G/tokenize/tiny_tokenizer.safetensors"
SP="$G/sp/tiny_bpe.model"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
Q="--log-level warn"
"$BIN/asvr-tokenize" encode --json "$F/it.json" --image-root "$G/images" --tokenizer "$TOK" --policy pad --out "$TMP/it.lmdb" $Q
"$BIN/asvr-pack" build --template vicuna_v1 --tokenizer "$SP" --codes "$TMP/it.lmdb" --max-len 128 --out "$TMP/it.pack" $Q "$F/it.json"
"$BIN/asvr-train" train --config "$HERE/model.json" --image-root "$G/images" --vision "$TOK" --rows 4 $Q --stage it \
    --packed "$TMP/it.pack" --codes "$TMP/it.lmdb" --steps 150 --lr 1e-2 --visual-loss none --out "$TMP/run"
S=step-00000150
rm -rf "$HERE/run"
mkdir -p "$HERE/run/$S"
cp "$TMP/run/$S/model.safetensors" "$TMP/run/$S/state.json" "$TMP/run/$S/DONE" "$HERE/run/$S/"
echo "regen.sh: wrote $HERE/run/$S ($(du -sk "$HERE/run" | cut -f1) KiB)"
