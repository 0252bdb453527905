#!/usr/bin/env bash
# The command-line tools end to end: kp-tokenize on a text file, kp-corpus,
# and their errors.
set -euo pipefail
tokenize="$1"
corpus="$2"
dir="${TEST_TMPDIR:-$(mktemp -d)}"
printf 'hello, kp\nsecond line \xc3\xa9\n' > "$dir/in.txt"
n=$(stat -c %s "$dir/in.txt")
"$tokenize" "$dir/in.txt" "$dir/out.tok"
size=$(stat -c %s "$dir/out.tok")
[[ "$size" == $((64 + 2 * n)) ]] || { echo "FAIL: token file has $size bytes, want $((64 + 2 * n))"; exit 1; }
[[ "$(head -c 8 "$dir/out.tok")" == "KPTOKENS" ]] || { echo "FAIL: bad magic"; exit 1; }
# Token i is byte i of the input, as a little-endian uint16.
want=$(od -An -tu1 -v "$dir/in.txt" | tr -s ' \n' ' ')
got=$(tail -c +65 "$dir/out.tok" | od -An -tu2 -v --endian=little | tr -s ' \n' ' ')
[[ "$want" == "$got" ]] || { echo "FAIL: tokens differ: $got vs $want"; exit 1; }
if "$tokenize" "$dir/missing.txt" "$dir/x.tok" 2> "$dir/err"; then echo "FAIL: missing input accepted"; exit 1; fi
grep -q "missing.txt" "$dir/err" || { echo "FAIL: error does not name the input"; cat "$dir/err"; exit 1; }
out=$("$corpus" "$dir/c.tok" 100000)
grep -q "entropy_rate_nats_per_token" <<< "$out" || { echo "FAIL: $out"; exit 1; }
[[ $(stat -c %s "$dir/c.tok") == $((64 + 2 * 100000)) ]] || { echo "FAIL: corpus size"; exit 1; }
echo OK
