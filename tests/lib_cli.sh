# lib_cli.sh — what the shell tests share; each cli_*.sh sources it first:
#   . "$(dirname "$0")/lib_cli.sh" "$@"
# with BUILD_DIR and GOLDEN_DIR as its arguments. Gives BIN (the tools), G (the fixtures), TMP (a
# folder removed at exit), TOK and SP (the tiny vision tokenizer and text tokenizer), and
# check 'CONDITION' 'WHAT' counting passes and failures in pass / fail (a failure prints FAIL: WHAT).
set -u
BIN=$(cd "$1/bin" && pwd) || exit 1 # absolute: a test may change folders
G=$(cd "$2" && pwd) || exit 1
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0 fail=0
check() { if eval "$1"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $2" >&2; fi; }
TOK="$G/tokenize/tiny_tokenizer.safetensors"
SP="$G/sp/tiny_bpe.model"
