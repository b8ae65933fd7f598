#!/bin/bash
# Tokenizer: encoding throughput (one thread) on a few MB of mixed text and
# the time to load tokenizer.json, for the trimmed fixtures and for any real
# tokenizer.json named in TOKENIZER_FILES (space-separated). Where the
# Hugging Face tokenizers library's Node binding is installed
# (TOKENIZERS_NODE_MODULES=DIR holding node_modules/tokenizers), the library
# encodes the same text in the same run, on one thread (RAYON_NUM_THREADS=1),
# and the ratios are printed, two ways: the text as one string (our encode
# against the library's encode), and the text's lines each on its own with
# the BOS/EOS, as lora-tokenize --lines cuts them (our encoding of each line
# against the library's encodeBatch of all of them, the JS objects it makes
# included): the way the library is usually run, on lines or documents.
# The ids are checked equal both ways (per line: the bytes lora-tokenize
# --lines -j 1 writes against the library's). Times are of encoding only,
# loading not included (printed on its own).
. "$(dirname "$0")/common.bash"
fix=$(cd "$(dirname "$0")/../tests/fixtures/tokenizers" && pwd)
mb=${TOKENIZER_BENCH_MB:-4}
tokbench text "$mb" "$w/text.txt"
echo "== tokenizer (${mb} MB of mixed text, one thread)"
for f in "$fix"/llama3.json "$fix"/qwen.json "$fix"/llama2.json ${TOKENIZER_FILES:-}; do
	tokbench encode "$f" "$w/text.txt" >"$w/c"
	tokbench lines "$f" "$w/text.txt" >"$w/l"
	d=$(dirname "$f")
	name="$(basename "$(dirname "$d")")/$(basename "$d")/$(basename "$f")"
	line="$name: load $(val load "$w/c") s; whole text $(val mbs "$w/c") MB/s, by line $(val mbs "$w/l") MB/s"
	if [ -n "${TOKENIZERS_NODE_MODULES:-}" ]; then
		ref=$(RAYON_NUM_THREADS=1 node -e '
			const fs = require("fs");
			const {Tokenizer} = require(process.argv[1] + "/tokenizers");
			const text = fs.readFileSync(process.argv[3], "utf8");
			const lines = text.split("\n").map((l) => l.replace(/\r$/, "")).filter((l) => l.length);
			const t0 = process.hrtime.bigint();
			const t = Tokenizer.fromFile(process.argv[2]);
			const t1 = process.hrtime.bigint();
			const mbs = (a, b) => (Buffer.byteLength(text) / (Number(b - a) / 1e9) / 1e6).toFixed(2);
			(async () => {
				const t2 = process.hrtime.bigint();
				const e = await t.encode(text, null, {addSpecialTokens: false});
				const t3 = process.hrtime.bigint();
				const b = await t.encodeBatch(lines, {addSpecialTokens: true});
				const t4 = process.hrtime.bigint();
				const ids = b.flatMap((x) => x.getIds());
				fs.writeFileSync(process.argv[4], Buffer.from(Uint32Array.from(ids).buffer));
				console.log((Number(t1 - t0) / 1e9).toFixed(3), mbs(t2, t3), e.getIds().length, mbs(t3, t4), ids.length);
			})();' "$TOKENIZERS_NODE_MODULES" "$f" "$w/text.txt" "$w/lib.u32")
		set -- $ref
		[ "$3" = "$(val ids "$w/c")" ] || { echo "$f: $(val ids "$w/c") ids, the library $3" >&2; exit 1; }
		[ "$5" = "$(val ids "$w/l")" ] || { echo "$f: by line $(val ids "$w/l") ids, the library $5" >&2; exit 1; }
		lora-tokenize -q -f --tokenizer "$f" --lines -j 1 --output-format u32 "$w/text.txt" -o "$w/ours.u32"
		cmp -s "$w/ours.u32" "$w/lib.u32" || { echo "$f: lora-tokenize --lines gave other ids than the library" >&2; exit 1; }
		ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
		line="$line
    the library: load $1 s; whole text $2 MB/s (ours $(ratio "$(val mbs "$w/c")" "$2")), by line (encodeBatch) $4 MB/s (ours $(ratio "$(val mbs "$w/l")" "$4")); same ids"
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
