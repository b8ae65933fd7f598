// The independent check of GGUF adapters: llama.cpp (node-llama-cpp 3.21.1,
// its prebuilt CPU build) loads a base model and our adapters and reports
// next-token probabilities. Used while developing, never by `make check`.
//
//   node gguf_llamacpp.mjs base MODEL_DIR OUT.gguf
//       write the base model's GGUF (f32) from a Hugging Face directory
//       (config.json + model.safetensors, f32), with a converter written
//       here from the GGUF specification and convert_hf_to_gguf.py's rules,
//       independently of lib/: tensor names, ne order, the q/k row
//       permutation for llama, a 256-token byte vocabulary.
//   node gguf_llamacpp.mjs probs MODEL.gguf TOKENS.u16 [ADAPTER.gguf[:SCALE]]...
//       print, per position, the log-probabilities of every token (one
//       line each), from an f32 KV cache without flash attention.
//   node gguf_llamacpp.mjs tokenize MODEL.gguf STRINGS.json
//       print llama.cpp's ids of each string of a JSON array (no BOS/EOS,
//       special tokens not parsed), one line each.
//
// Needs `npm install node-llama-cpp@3.21.1` somewhere on NODE_PATH (see
// tests/ref/gguf_check.sh).
import fs from "node:fs";

function readSafetensors(path) {
	const buf = fs.readFileSync(path);
	const n = Number(buf.readBigUInt64LE(0));
	const hdr = JSON.parse(buf.subarray(8, 8 + n).toString("utf8"));
	const out = {};
	for (const [name, t] of Object.entries(hdr)) {
		if (name === "__metadata__")
			continue;
		if (t.dtype !== "F32")
			throw new Error(`${name}: ${t.dtype}, only F32 models are converted here`);
		const [b, e] = t.data_offsets;
		const bytes = buf.subarray(8 + n + b, 8 + n + e);
		const data = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
		out[name] = { shape: t.shape, data };
	}
	return out;
}

// convert_hf_to_gguf's LlamaModel.permute: reshape the rows to
// (heads, 2, rows/heads/2) and swap the last two of those axes.
function permute(t, heads) {
	const [rows, cols] = t.shape.length === 2 ? t.shape : [t.shape[0], 1];
	const half = rows / heads / 2, out = new Float32Array(t.data.length);
	for (let h = 0; h < heads; h++)
		for (let two = 0; two < 2; two++)
			for (let j = 0; j < half; j++) {
				const src = (h * 2 * half + two * half + j) * cols, dst = (h * 2 * half + j * 2 + two) * cols;
				out.set(t.data.subarray(src, src + cols), dst);
			}
	return { shape: t.shape, data: out };
}

class Writer {
	constructor() { this.parts = []; this.len = 0; }
	bytes(b) { this.parts.push(Buffer.from(b)); this.len += b.length; }
	u32(v) { const b = Buffer.alloc(4); b.writeUInt32LE(v); this.bytes(b); }
	i32(v) { const b = Buffer.alloc(4); b.writeInt32LE(v); this.bytes(b); }
	u64(v) { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); this.bytes(b); }
	f32(v) { const b = Buffer.alloc(4); b.writeFloatLE(v); this.bytes(b); }
	str(s) { const b = Buffer.from(s, "utf8"); this.u64(b.length); this.bytes(b); }
	pad(a) { const k = (a - (this.len % a)) % a; if (k) this.bytes(Buffer.alloc(k)); }
}

// Value types: 4 u32, 5 i32, 6 f32, 8 string, 9 array.
function writeGGUF(path, kvs, tensors) {
	const w = new Writer();
	w.bytes(Buffer.from("GGUF"));
	w.u32(3);
	w.u64(tensors.length);
	w.u64(kvs.length);
	for (const [k, type, v, elem] of kvs) {
		w.str(k);
		w.u32(type);
		if (type === 4) w.u32(v);
		else if (type === 6) w.f32(v);
		else if (type === 8) w.str(v);
		else if (type === 9) {
			w.u32(elem);
			w.u64(v.length);
			for (const x of v)
				elem === 8 ? w.str(x) : elem === 6 ? w.f32(x) : w.i32(x);
		}
	}
	let off = 0;
	for (const t of tensors) {
		w.str(t.name);
		// ne[0] is the fastest-varying dimension: PyTorch's shape reversed.
		const ne = [...t.shape].reverse();
		w.u32(ne.length);
		for (const d of ne) w.u64(d);
		w.u32(0); // F32
		w.u64(off);
		off += Math.ceil(t.data.length * 4 / 32) * 32;
	}
	w.pad(32);
	for (const t of tensors) {
		w.bytes(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.length * 4));
		w.pad(32);
	}
	fs.writeFileSync(path, Buffer.concat(w.parts));
}

function base(dir, out) {
	const c = JSON.parse(fs.readFileSync(`${dir}/config.json`, "utf8"));
	const W = readSafetensors(`${dir}/model.safetensors`);
	const arch = c.model_type === "qwen2" ? "qwen2" : "llama";
	const H = c.num_attention_heads, KV = c.num_key_value_heads ?? H, D = c.hidden_size;
	const hd = c.head_dim ?? D / H, V = c.vocab_size;
	if (V !== 256)
		throw new Error("the byte vocabulary needs vocab_size 256");
	const kvs = [
		["general.architecture", 8, arch],
		["general.name", 8, "reference"],
		[`${arch}.context_length`, 4, c.max_position_embeddings ?? 2048],
		[`${arch}.embedding_length`, 4, D],
		[`${arch}.block_count`, 4, c.num_hidden_layers],
		[`${arch}.feed_forward_length`, 4, c.intermediate_size],
		[`${arch}.attention.head_count`, 4, H],
		[`${arch}.attention.head_count_kv`, 4, KV],
		[`${arch}.attention.layer_norm_rms_epsilon`, 6, c.rms_norm_eps ?? 1e-6],
		[`${arch}.rope.freq_base`, 6, c.rope_theta ?? 10000],
		[`${arch}.rope.dimension_count`, 4, hd],
		[`${arch}.vocab_size`, 4, V],
		["tokenizer.ggml.model", 8, "llama"],
		["tokenizer.ggml.tokens", 9, [...Array(V).keys()].map(i => `<0x${i.toString(16).toUpperCase().padStart(2, "0")}>`), 8],
		["tokenizer.ggml.scores", 9, Array(V).fill(0), 6],
		["tokenizer.ggml.token_type", 9, Array(V).fill(6), 5],
		["tokenizer.ggml.bos_token_id", 4, 1],
		["tokenizer.ggml.eos_token_id", 4, 2],
	];
	const T = [];
	const add = (name, hf, f) => { if (W[hf]) T.push({ name, ...(f ? f(W[hf]) : W[hf]) }); };
	add("token_embd.weight", "model.embed_tokens.weight");
	for (let l = 0; l < c.num_hidden_layers; l++) {
		const p = `model.layers.${l}.`, b = `blk.${l}.`;
		const rope = heads => arch === "llama" ? t => permute(t, heads) : null;
		add(b + "attn_norm.weight", p + "input_layernorm.weight");
		add(b + "attn_q.weight", p + "self_attn.q_proj.weight", rope(H));
		add(b + "attn_k.weight", p + "self_attn.k_proj.weight", rope(KV));
		add(b + "attn_v.weight", p + "self_attn.v_proj.weight");
		add(b + "attn_q.bias", p + "self_attn.q_proj.bias", rope(H));
		add(b + "attn_k.bias", p + "self_attn.k_proj.bias", rope(KV));
		add(b + "attn_v.bias", p + "self_attn.v_proj.bias");
		add(b + "attn_output.weight", p + "self_attn.o_proj.weight");
		add(b + "ffn_norm.weight", p + "post_attention_layernorm.weight");
		add(b + "ffn_gate.weight", p + "mlp.gate_proj.weight");
		add(b + "ffn_up.weight", p + "mlp.up_proj.weight");
		add(b + "ffn_down.weight", p + "mlp.down_proj.weight");
	}
	add("output_norm.weight", "model.norm.weight");
	if (!c.tie_word_embeddings)
		add("output.weight", "lm_head.weight");
	writeGGUF(out, kvs, T);
}

async function probs(modelPath, tokensPath, specs) {
	const { getLlama, LlamaLogLevel } = await import("node-llama-cpp");
	const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
	const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
	const adapters = specs.map(s => {
		const i = s.lastIndexOf(":");
		return i > 0 && !isNaN(Number(s.slice(i + 1))) ? { filePath: s.slice(0, i), scale: Number(s.slice(i + 1)) }
		                                                : { filePath: s };
	});
	const raw = fs.readFileSync(tokensPath);
	const tokens = [...new Uint16Array(raw.buffer, raw.byteOffset, raw.length / 2)];
	const ctx = await model.createContext({
		contextSize: Math.max(64, tokens.length + 1), batchSize: Math.max(64, tokens.length), sequences: 1,
		flashAttention: false, experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32",
		...(adapters.length ? { lora: { adapters } } : {}),
	});
	const seq = ctx.getSequence();
	const res = await seq.controlledEvaluate(tokens.map(t => [t, { generateNext: { probabilities: true, options: { temperature: 1, topK: 0, topP: 1, minP: 0 } } }]));
	const V = model.fileInfo.metadata.tokenizer.ggml.tokens.length;
	const lines = res.map(r => {
		const p = new Float64Array(V).fill(0);
		for (const [tok, prob] of r.next.probabilities) p[tok] = prob;
		return [...p].map(x => Math.log(x).toPrecision(9)).join(" ");
	});
	process.stdout.write(lines.join("\n") + "\n");
	await ctx.dispose();
	await model.dispose();
}

async function tokenize(modelPath, stringsPath) {
	const { getLlama, LlamaLogLevel } = await import("node-llama-cpp");
	const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
	const model = await llama.loadModel({ modelPath, gpuLayers: 0, vocabOnly: true });
	for (const s of JSON.parse(fs.readFileSync(stringsPath, "utf8")))
		process.stdout.write(model.tokenize(s, false).join(" ") + "\n");
	await model.dispose();
}

const [cmd, ...args] = process.argv.slice(2);
if (cmd === "base")
	base(args[0], args[1]);
else if (cmd === "tokenize")
	await tokenize(args[0], args[1]);
else if (cmd === "probs")
	await probs(args[0], args[1], args.slice(2));
else {
	console.error("usage: gguf_llamacpp.mjs base MODEL_DIR OUT.gguf | probs MODEL.gguf TOKENS.u16 [ADAPTER[:SCALE]]...");
	process.exit(2);
}
