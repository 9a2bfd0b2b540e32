#!/usr/bin/env bash
# cli_preprocess.sh BUILD_DIR GOLDEN_DIR — `asvr-tokenize preprocess`: exit codes 0/1/2, the PPM equals
# Pillow's output (fixtures from tools/gen_image_fixtures.py), and nothing is left behind on failure.
set -u
BIN="$1/bin/asvr-tokenize"
IMG="$2/images"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fails=0
pass() { echo "ok   $1"; }
fail() { echo "FAIL $1"; fails=$((fails + 1)); }
expect_rc() { # expect_rc WANT NAME CMD...
    local want=$1 name=$2; shift 2
    "$@" >"$TMP/stdout" 2>"$TMP/stderr"
    local rc=$?
    if [ "$rc" -eq "$want" ]; then pass "$name (exit $rc)"; else fail "$name: exit $rc, expected $want"; cat "$TMP/stderr"; fi
}

# Bit-exact outputs
expect_rc 0 "pad 27" "$BIN" preprocess --size 27 "$IMG/j420.jpg" "$TMP/a.ppm"
cmp -s "$TMP/a.ppm" "$IMG/cli_j420_jpg_pad27.ppm" && pass "pad 27 equals Pillow" || fail "pad 27 differs from Pillow"
expect_rc 0 "squash 64" "$BIN" preprocess --policy squash --size=64 "$IMG/ptall.png" "$TMP/b.ppm"
cmp -s "$TMP/b.ppm" "$IMG/cli_ptall_png_squash64.ppm" && pass "squash 64 equals Pillow" || fail "squash 64 differs"
expect_rc 0 "pad colour" "$BIN" preprocess --pad 122,116,104 --size 27 "$IMG/pwide.png" "$TMP/c.ppm"
cmp -s "$TMP/c.ppm" "$IMG/cli_pwide_png_pad27.ppm" && pass "pad colour equals Pillow" || fail "pad colour differs"
# A rerun overwrites atomically with the same bytes
expect_rc 0 "rerun" "$BIN" preprocess --size 27 "$IMG/j420.jpg" "$TMP/a.ppm"
cmp -s "$TMP/a.ppm" "$IMG/cli_j420_jpg_pad27.ppm" && pass "rerun same bytes" || fail "rerun differs"

# Failures: exit 1, message names the file, no output (and no temp file) left
for bad in corrupt/truncated.jpg corrupt/text.jpg corrupt/huge.png corrupt/bad_crc.png corrupt/empty.jpg; do
    expect_rc 1 "$bad" "$BIN" preprocess "$IMG/$bad" "$TMP/bad.ppm"
    grep -q "$bad" "$TMP/stderr" && pass "$bad: message names the file" || fail "$bad: message: $(cat "$TMP/stderr")"
    [ -z "$(ls "$TMP" | grep '^bad\.ppm')" ] && pass "$bad: no output left" || fail "$bad: output left behind"
done
expect_rc 1 "max-pixels" "$BIN" preprocess --max-pixels 100 "$IMG/j420.jpg" "$TMP/bad.ppm"
grep -q "exceeds the limit of 100" "$TMP/stderr" && pass "max-pixels message" || fail "max-pixels message"
expect_rc 0 "accept-warnings" "$BIN" preprocess --accept-warnings --size 27 "$IMG/corrupt/truncated.jpg" "$TMP/t.ppm"
expect_rc 0 "exif" "$BIN" preprocess --exif --size 27 "$IMG/exif6.jpg" "$TMP/e.ppm"
expect_rc 1 "missing input" "$BIN" preprocess "$TMP/nope.jpg" "$TMP/bad.ppm"
expect_rc 1 "unwritable output" "$BIN" preprocess --size 27 "$IMG/j420.jpg" "$TMP/no/such/dir/x.ppm"

# Usage errors: exit 2
expect_rc 2 "bad policy" "$BIN" preprocess --policy crop "$IMG/j420.jpg" "$TMP/u.ppm"
expect_rc 2 "bad size" "$BIN" preprocess --size 0 "$IMG/j420.jpg" "$TMP/u.ppm"
expect_rc 2 "bad pad" "$BIN" preprocess --pad 1,2 "$IMG/j420.jpg" "$TMP/u.ppm"
expect_rc 2 "bad max-pixels" "$BIN" preprocess --max-pixels x "$IMG/j420.jpg" "$TMP/u.ppm"
expect_rc 2 "unknown flag" "$BIN" preprocess --bogus "$IMG/j420.jpg" "$TMP/u.ppm"
expect_rc 2 "missing argument" "$BIN" preprocess "$IMG/j420.jpg"
expect_rc 2 "unknown subcommand" "$BIN" frobnicate
expect_rc 2 "no subcommand" "$BIN"
[ ! -e "$TMP/u.ppm" ] && pass "no output on usage errors" || fail "output written on a usage error"
expect_rc 0 "--help" "$BIN" preprocess --help
grep -q "usage: asvr-tokenize preprocess" "$TMP/stdout" && pass "help text" || fail "help text"
expect_rc 0 "--version" "$BIN" preprocess --version
expect_rc 0 "top-level --help" "$BIN" --help

echo "$fails failed"
[ "$fails" -eq 0 ]
