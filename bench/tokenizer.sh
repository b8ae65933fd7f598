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
