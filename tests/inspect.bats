#!/usr/bin/env bats
# lora-inspect: every promise of lora-inspect(1).

setup() {
	load test_helper/common-setup
	_common_setup
	mkmodel --hidden 64 --inter 128 --layers 2 --heads 4 --kv-heads 2 --vocab 256 model >/dev/null
	lora-init -m model -o a.lora
}

@test "lora-inspect -h and --version" {
	run -0 lora-inspect -h
	assert_line --index 0 'Usage: lora-inspect [options] [FILE|DIR|-]'
	run -0 lora-inspect --version
	assert_output 'lora-inspect 0.1.0'
}

@test "an unknown option is a usage error" {
	run -2 --separate-stderr lora-inspect --bogus a.lora
	assert_output ''
	assert_equal "${stderr_lines[0]}" "lora-inspect: unknown option '--bogus'"
}

@test "a missing file is named, exit 1" {
	run -1 --separate-stderr lora-inspect nope.lora
	assert_output ''
	assert_equal "$stderr" "lora-inspect: nope.lora: No such file or directory"
}

@test "the table shows rank, alpha, scale, targets, parameters and sizes" {
	run -0 lora-inspect a.lora
	assert_line --index 0 'format       .lora version 1'
	assert_line 'layers       4'
	assert_line 'rank         8'
	assert_line 'alpha        8'
	assert_line 'scaling      standard (alpha/r)'
	assert_line 'targets      q_proj,v_proj'
	assert_line 'dtype        f32'
	assert_line 'parameters   3584'
	size=$(stat -c %s a.lora)
	assert_line --regexp "^bytes        $size \(.*\) on disk, 14336 \(14\.0 KiB\) uncompressed, ratio [0-9.]+$"
	assert_line --regexp '^base model   tiny-llama \(fingerprint [0-9a-f]{16}\)$'
}

@test "mixed ranks are listed with their counts" {
	mkadapter a=8x8x2:1,1 b=8x8x2:1,1 c=16x16x4:1,1,1,1 > m.lora
	run -0 lora-inspect m.lora
	assert_line 'rank         2 (2 layers), 4 (1 layers)'
	assert_equal "$(lora-inspect --json m.lora | jq -c .ranks)" '[{"rank":2,"layers":2},{"rank":4,"layers":1}]'
}

@test "--json bytes and ratio are exact" {
	run -0 lora-inspect --json a.lora
	size=$(stat -c %s a.lora)
	assert_equal "$(jq .file_bytes <<<"$output")" "$size"
	assert_equal "$(jq '.compression_ratio * 1e6 | round' <<<"$output")" "$(awk -v s="$size" 'BEGIN { printf "%d", 14336 / s * 1e6 + 0.5 }')"
}

@test "--layers prints one row per layer" {
	run -0 lora-inspect --layers a.lora
	assert_line --regexp '^model\.layers\.0\.self_attn\.v_proj +32x64 +8 +8 +1$'
	assert_equal "$(grep -c '^model\.layers\.' <<<"$output")" 4
}

@test "--stats gives the exact norm and singular values of scale*B*A" {
	# planted: singular values 3, 2, 0.5 scaled by alpha/r = 6/3 = 2
	mkadapter --alpha 6 w=10x12x3:3,-2,0.5 v=5x4x1:4 > p.lora
	run -0 lora-inspect --json --stats p.lora
	assert_equal "$(jq -c '.layers[0].singular_values | map(. * 1e6 | round / 1e6)' <<<"$output")" '[6,4,1]'
	assert_equal "$(jq '.layers[0].norm * 1e9 | round' <<<"$output")" "$(awk 'BEGIN { printf "%.0f", sqrt(36+16+1) * 1e9 }')"
	assert_equal "$(jq -c '.layers[1] | [.scale, (.singular_values[0] * 1e6 | round / 1e6)]' <<<"$output")" '[6,24]'
	run -0 lora-inspect --stats --top 2 p.lora
	assert_line --regexp '^w +10x12 +3 +6 +2 +7\.2801 +6 4$'
}

@test "rsLoRA scaling is alpha/sqrt(r)" {
	mkadapter --rslora --alpha 8 w=8x8x4:1,1,1,1 > r.lora
	assert_equal "$(lora-inspect --json r.lora | jq -c '[.scaling, .scales[0].scale]')" '["rslora",4]'
}

@test "reads a .lora from a pipe, and '-' means standard input" {
	run -0 bash -c 'lora-init -m model -r 2 | lora-inspect --json - | jq -c "[.file, .num_layers, .ranks[0].rank]"'
	assert_output '["standard input",4,2]'
	run -0 bash -c 'lora-init -m model -r 2 | lora-inspect | head -n 1'
	assert_output 'format       .lora version 1'
}

@test "empty standard input is not a .lora" {
	run -1 --separate-stderr lora-inspect - </dev/null
	assert_equal "$stderr" "lora-inspect: standard input: not a .lora file (bad magic)"
}

@test "a truncated .lora is reported at every cut, nothing on stdout" {
	size=$(stat -c %s a.lora)
	for cut in 0 5 12 17 100 $((size / 2)) $((size - 1)); do
		head -c "$cut" a.lora > t.lora
		run -1 --separate-stderr lora-inspect t.lora
		assert_output ''
		case $cut in
		0|5) assert_equal "$stderr" "lora-inspect: t.lora: not a .lora file (bad magic)" ;;
		*) assert_regex "$stderr" "^lora-inspect: t\.lora: truncated" ;;
		esac
		# and from a pipe, where the size cannot be known up front
		run -1 --separate-stderr lora-inspect - < <(cat t.lora)
		assert_output ''
		[ "$cut" -lt 8 ] || assert_regex "$stderr" "^lora-inspect: standard input: truncated"
	done
	head -c $((size - 1)) a.lora > t.lora
	run -1 --separate-stderr lora-inspect t.lora
	assert_equal "$stderr" "lora-inspect: t.lora: truncated: header promises $size bytes, file has $((size - 1))"
}

@test "a flipped payload byte is caught by --check and --stats, naming the layer" {
	size=$(stat -c %s a.lora)
	flipbyte a.lora $((size - 5))
	run -1 --separate-stderr lora-inspect --check a.lora
	assert_output ''
	assert_equal "$stderr" "lora-inspect: a.lora: layer 'model.layers.1.self_attn.v_proj' B: CRC mismatch (corrupt data)"
	run -1 --separate-stderr lora-inspect --stats a.lora
	assert_equal "$stderr" "lora-inspect: a.lora: layer 'model.layers.1.self_attn.v_proj' B: CRC mismatch (corrupt data)"
}

@test "a flipped header byte is a header CRC mismatch" {
	flipbyte a.lora 30
	run -1 --separate-stderr lora-inspect a.lora
	assert_equal "$stderr" "lora-inspect: a.lora: header CRC mismatch (corrupt header)"
}

@test "wrong magic and unknown version" {
	cp a.lora m.lora && flipbyte m.lora 1
	run -1 --separate-stderr lora-inspect m.lora
	assert_equal "$stderr" "lora-inspect: m.lora: not a .lora file (bad magic)"
	cp a.lora v.lora && printf '\007' | dd of=v.lora bs=1 seek=8 conv=notrunc status=none
	run -1 --separate-stderr lora-inspect v.lora
	assert_equal "$stderr" "lora-inspect: v.lora: unsupported .lora version 7 (this build reads version 1)"
}

@test "a checkpoint: tensors, parameters by dtype, shards" {
	run -0 lora-inspect --json model
	# embed 256x64, 2 x (q 64x64, k,v 32x64, o 64x64, gate,up 128x64, down 64x128, 2 norms 64), norm 64, head 256x64
	params=$((256*64 + 2*(64*64 + 2*32*64 + 64*64 + 3*128*64 + 2*64) + 64 + 256*64))
	assert_equal "$(jq -c '[.kind, .name, .shards, .tensors, .parameters, .dtypes.f32.bytes]' <<<"$output")" \
		"[\"safetensors\",\"tiny-llama\",1,21,$params,$((params * 4))]"
	assert_equal "$(jq .file_bytes <<<"$output")" "$(stat -c %s model/model.safetensors)"
	run -0 lora-inspect --layers model
	assert_line --regexp '^model\.layers\.0\.mlp\.down_proj\.weight +f32 +64x128$'
}

@test "a sharded bf16 checkpoint" {
	mkmodel --hidden 64 --inter 128 --layers 2 --heads 4 --vocab 256 --dtype bf16 --shard-bytes 40000 sh >/dev/null
	n=$(ls sh/model-*-of-*.safetensors | wc -l)
	[ "$n" -gt 1 ]
	run -0 lora-inspect --json sh
	assert_equal "$(jq -c '[.shards, .dtypes.bf16.tensors]' <<<"$output")" "[$n,21]"
	run -0 lora-inspect sh/model.safetensors.index.json
	assert_line "format       safetensors, $n shards"
}

@test "safetensors: header length past the end of the file" {
	mkst bad.safetensors '{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}' 8
	printf '\377\377\000' | dd of=bad.safetensors bs=1 seek=0 conv=notrunc status=none
	run -1 --separate-stderr lora-inspect bad.safetensors
	assert_output ''
	assert_equal "$stderr" "lora-inspect: bad.safetensors: header length 65535 exceeds file size 70"
}

@test "safetensors: overlapping offsets name both tensors" {
	mkst o.safetensors '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}' 12
	run -1 --separate-stderr lora-inspect o.safetensors
	assert_output ''
	assert_equal "$stderr" "lora-inspect: o.safetensors: tensor 'a' overlaps tensor 'b'"
}

@test "safetensors: dtype and byte length disagree" {
	mkst d.safetensors '{"w":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,16]}}' 16
	run -1 --separate-stderr lora-inspect d.safetensors
	assert_equal "$stderr" "lora-inspect: d.safetensors: tensor 'w': BF16 2x2 is 8 bytes but data_offsets span 16"
}
