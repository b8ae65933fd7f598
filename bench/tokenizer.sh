#!/bin/bash
# Tokenizer: encoding throughput (one thread) on a few MB of mixed text and
# the time to load tokenizer.json, for the trimmed fixtures and for any real
# tokenizer.json named in TOKENIZER_FILES (space-separated). Where the
# Hugging Face tokenizers library's Node binding is installed
# (TOKENIZERS_NODE_MODULES=DIR holding node_modules/tokenizers), the library
# encodes the same text in the same run and the ratio is printed.
. "$(dirname "$0")/common.bash"
fix=$(cd "$(dirname "$0")/../tests/fixtures/tokenizers" && pwd)
mb=${TOKENIZER_BENCH_MB:-4}
tokbench text "$mb" "$w/text.txt"
echo "== tokenizer (${mb} MB of mixed text, one thread)"
for f in "$fix"/llama3.json "$fix"/qwen.json "$fix"/llama2.json ${TOKENIZER_FILES:-}; do
	tokbench encode "$f" "$w/text.txt" >"$w/c"
	line="$(basename "$(dirname "$f")")/$(basename "$f"): load $(val load "$w/c") s, encode $(val mbs "$w/c") MB/s"
	if [ -n "${TOKENIZERS_NODE_MODULES:-}" ]; then
		ref=$(RAYON_NUM_THREADS=1 node -e '
			const {Tokenizer} = require(process.argv[1] + "/tokenizers");
			const text = require("fs").readFileSync(process.argv[3], "utf8");
			const t = Tokenizer.fromFile(process.argv[2]);
			const t0 = process.hrtime.bigint();
			t.encode(text, null, {addSpecialTokens: false}).then((e) => {
				const s = Number(process.hrtime.bigint() - t0) / 1e9;
				console.log((Buffer.byteLength(text) / s / 1e6).toFixed(2), e.getIds().length);
			});' "$TOKENIZERS_NODE_MODULES" "$f" "$w/text.txt")
		set -- $ref
		[ "$2" = "$(val ids "$w/c")" ] || { echo "$f: $(val ids "$w/c") ids, the library $2" >&2; exit 1; }
		line="$line; the library $1 MB/s: $(awk -v a="$(val mbs "$w/c")" -v b="$1" 'BEGIN { printf "%.1fx", a / b }')"
	fi
	echo "$line"
done

# lora-tokenize --lines over the same text: one thread against every core,
# and the same bytes at both counts.
echo "== lora-tokenize --lines (${mb} MB, llama3 fixture)"
tok() { # THREADS OUT: seconds
	local t0 t1
	t0=$(date +%s.%N)
	lora-tokenize -q --tokenizer "$fix/llama3.json" --lines -j "$1" "$w/text.txt" -o "$2"
	t1=$(date +%s.%N)
	awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'
}
s1=$(tok 1 "$w/j1.u32")
sn=$(tok "$cores" "$w/jn.u32")
cmp -s "$w/j1.u32" "$w/jn.u32" || { echo "lora-tokenize: -j $cores wrote other bytes than -j 1" >&2; exit 1; }
awk -v mb="$mb" -v a="$s1" -v b="$sn" -v n="$cores" \
	'BEGIN { printf "-j 1: %.2f MB/s; -j %d: %.2f MB/s (%.2fx), same bytes\n", mb / a, n, mb / b, a / b }'
