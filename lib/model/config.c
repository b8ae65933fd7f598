/* config: config.json of a Llama-family model, as transformers reads it. */
#include "model/config.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/json.h"
#include "core/path.h"

static const cJSON *key(const cJSON *j, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
	return cJSON_IsNull(v) ? NULL : v;
}

/* Positive integer below 2^31 at k; required or not. 1 if absent. */
static int get_size(const cJSON *j, const char *k, size_t *v, int required, const char *path, lora_err *e)
{
	const cJSON *x = key(j, k);
	if (!x) {
		if (required)
			return lora_err_set(e, LORA_EFORMAT, "%s: missing key '%s'", path, k);
		return 1;
	}
	if (cJSON_IsNumber(x) && x->valuedouble >= 2147483648.0 && x->valuedouble == floor(x->valuedouble))
		return lora_err_set(e, LORA_EFORMAT, "%s: '%s': %g is too large (at most 2147483647)", path, k,
		                    x->valuedouble);
	if (!cJSON_IsNumber(x) || !(x->valuedouble >= 1 && x->valuedouble < 2147483648.0) ||
	    x->valuedouble != floor(x->valuedouble))
		return lora_err_set(e, LORA_EFORMAT, "%s: '%s' must be a positive integer", path, k);
	*v = (size_t)x->valuedouble;
	return 0;
}

/* Positive number at k (in must name the enclosing object for messages:
 * "" at the top level, "rope_scaling." inside it). 1 if absent. */
static int get_num(const cJSON *j, const char *in, const char *k, double *v, int required, const char *path,
                   lora_err *e)
{
	const cJSON *x = key(j, k);
	if (!x) {
		if (required)
			return lora_err_set(e, LORA_EFORMAT, "%s: missing key '%s%s'", path, in, k);
		return 1;
	}
	if (!cJSON_IsNumber(x) || !(x->valuedouble > 0) || !isfinite(x->valuedouble))
		return lora_err_set(e, LORA_EFORMAT, "%s: '%s%s' must be a positive number", path, in, k);
	*v = x->valuedouble;
	return 0;
}

static int get_pos(const cJSON *j, const char *k, double *v, int required, const char *path, lora_err *e)
{
	return get_num(j, "", k, v, required, path, e);
}

static int parse_rope(lora_config *c, const cJSON *rs, const char *what, const char *path, lora_err *e)
{
	if (!cJSON_IsObject(rs))
		return lora_err_set(e, LORA_EFORMAT, "%s: '%s' must be an object or null", path, what);
	const cJSON *t = key(rs, "rope_type");
	if (!t)
		t = key(rs, "type");
	if (t && !cJSON_IsString(t))
		return lora_err_set(e, LORA_EFORMAT, "%s: %s type must be a string", path, what);
	const char *type = t ? t->valuestring : "default";
	int rc;
	char in[32];
	snprintf(in, sizeof in, "%s.", what);
	if (strcmp(type, "default") == 0) {
		c->rope_type = LORA_ROPE_DEFAULT;
	} else if (strcmp(type, "linear") == 0) {
		c->rope_type = LORA_ROPE_LINEAR;
		if ((rc = get_num(rs, in, "factor", &c->rope_factor, 1, path, e)) < 0)
			return rc;
	} else if (strcmp(type, "llama3") == 0) {
		c->rope_type = LORA_ROPE_LLAMA3;
		if ((rc = get_num(rs, in, "factor", &c->rope_factor, 1, path, e)) < 0 ||
		    (rc = get_num(rs, in, "low_freq_factor", &c->rope_low_freq, 1, path, e)) < 0 ||
		    (rc = get_num(rs, in, "high_freq_factor", &c->rope_high_freq, 1, path, e)) < 0 ||
		    (rc = get_num(rs, in, "original_max_position_embeddings", &c->rope_orig_max, 1, path, e)) < 0)
			return rc;
		if (!(c->rope_high_freq > c->rope_low_freq))
			return lora_err_set(e, LORA_EFORMAT, "%s: %s high_freq_factor must exceed low_freq_factor", path,
			                    what);
	} else {
		return lora_err_set(e, LORA_EFORMAT, "%s: %s type '%s' is not supported (linear, llama3)", path, what,
		                    type);
	}
	return 0;
}

/* Sliding-window attention, by model_type. */
static int parse_window(lora_config *c, const cJSON *j, const char *path, lora_err *e)
{
	if (strcmp(c->model_type, "mistral") == 0) {
		/* MistralConfig's default window is 4096; null turns it off. */
		const cJSON *sw = cJSON_GetObjectItemCaseSensitive(j, "sliding_window");
		c->sliding_window = sw ? 0 : 4096;
		return get_size(j, "sliding_window", &c->sliding_window, 0, path, e);
	}
	const cJSON *use = key(j, "use_sliding_window");
	if (strcmp(c->model_type, "qwen2") != 0 || !use || !cJSON_IsTrue(use))
		return 0;
	c->sliding_window = 4096;
	c->window_from = 28;
	int rc = get_size(j, "sliding_window", &c->sliding_window, 0, path, e);
	if (rc < 0)
		return rc;
	const cJSON *mw = key(j, "max_window_layers");
	if (mw && (!cJSON_IsNumber(mw) || mw->valuedouble < 0 || mw->valuedouble != floor(mw->valuedouble)))
		return lora_err_set(e, LORA_EFORMAT, "%s: 'max_window_layers' must be a non-negative integer", path);
	if (mw)
		c->window_from = mw->valuedouble > 1e9 ? (size_t)1e9 : (size_t)mw->valuedouble;
	return 0;
}

int lora_config_parse(lora_config *c, const char *text, size_t len, const char *path, lora_err *e)
{
	int rc = 0;
	memset(c, 0, sizeof *c);
	cJSON *j;
	if ((rc = lora_json_parse(&j, path, "file", text, len, e)))
		return rc;
	const cJSON *mt = key(j, "model_type");
	if (!mt) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: missing key 'model_type'", path);
		goto out;
	}
	if (!cJSON_IsString(mt)) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: 'model_type' must be a string", path);
		goto out;
	}
	if (strcmp(mt->valuestring, "llama") && strcmp(mt->valuestring, "mistral") &&
	    strcmp(mt->valuestring, "qwen2")) {
		rc = lora_err_set(e, LORA_EINVAL, "%s: model_type '%.64s' is not supported (llama, mistral, qwen2)", path,
		                  mt->valuestring);
		goto out;
	}
	snprintf(c->model_type, sizeof c->model_type, "%s", mt->valuestring);
	if ((rc = get_size(j, "hidden_size", &c->dim, 1, path, e)) < 0 ||
	    (rc = get_size(j, "intermediate_size", &c->hidden_dim, 1, path, e)) < 0 ||
	    (rc = get_size(j, "num_hidden_layers", &c->n_layers, 1, path, e)) < 0 ||
	    (rc = get_size(j, "num_attention_heads", &c->n_heads, 1, path, e)) < 0 ||
	    (rc = get_size(j, "vocab_size", &c->vocab_size, 1, path, e)) < 0)
		goto out;
	c->n_kv_heads = c->n_heads;
	c->head_dim = c->dim / c->n_heads;
	c->rms_eps = 1e-6;
	c->rope_theta = 10000.0;
	if ((rc = get_size(j, "num_key_value_heads", &c->n_kv_heads, 0, path, e)) < 0 ||
	    (rc = get_size(j, "head_dim", &c->head_dim, 0, path, e)) < 0 ||
	    (rc = get_size(j, "max_position_embeddings", &c->max_pos, 0, path, e)) < 0 ||
	    (rc = get_pos(j, "rms_norm_eps", &c->rms_eps, 0, path, e)) < 0 ||
	    (rc = get_pos(j, "rope_theta", &c->rope_theta, 0, path, e)) < 0)
		goto out;
	rc = 0;
	if (c->n_heads % c->n_kv_heads) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: num_attention_heads %zu is not a multiple of num_key_value_heads %zu",
		                  path, c->n_heads, c->n_kv_heads);
		goto out;
	}
	if (c->head_dim == 0 || c->head_dim % 2) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: head_dim %zu must be even and positive (RoPE rotates pairs)", path,
		                  c->head_dim);
		goto out;
	}
	const cJSON *act = key(j, "hidden_act");
	if (act && (!cJSON_IsString(act) || (strcmp(act->valuestring, "silu") && strcmp(act->valuestring, "swish")))) {
		rc = lora_err_set(e, LORA_EINVAL, "%s: hidden_act '%.64s' is not supported (silu)", path,
		                  cJSON_IsString(act) ? act->valuestring : "?");
		goto out;
	}
	const cJSON *tie = key(j, "tie_word_embeddings");
	if (tie && !cJSON_IsBool(tie)) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: 'tie_word_embeddings' must be true or false", path);
		goto out;
	}
	c->tied = tie && cJSON_IsTrue(tie);
	/* transformers 5 keeps theta and scaling together in rope_parameters. */
	const cJSON *rp = key(j, "rope_parameters"), *rs = key(j, "rope_scaling");
	if (rp) {
		if ((rc = parse_rope(c, rp, "rope_parameters", path, e)) < 0 ||
		    (rc = get_num(rp, "rope_parameters.", "rope_theta", &c->rope_theta, 0, path, e)) < 0)
			goto out;
	} else if (rs && (rc = parse_rope(c, rs, "rope_scaling", path, e)) < 0) {
		goto out;
	}
	if ((rc = parse_window(c, j, path, e)) < 0)
		goto out;
	/* Matrix products take int sizes and strides (BLAS): keep the widths
	 * well inside. */
	size_t QD = c->n_heads * c->head_dim, QKV = QD + 2 * c->n_kv_heads * c->head_dim;
	if (QD >= (1u << 31) / 4 || QKV >= (1u << 31) / 4 || c->hidden_dim >= (1u << 30)) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: attention or MLP width is too large", path);
		goto out;
	}
	rc = 0;
out:
	cJSON_Delete(j);
	return rc;
}

int lora_config_read(lora_config *c, const char *path, lora_err *e)
{
	char *buf;
	size_t n;
	int rc = lora_json_slurp(&buf, &n, path, 0, e);
	if (!rc)
		rc = lora_config_parse(c, buf, n, path, e);
	free(buf);
	return rc;
}

size_t lora_config_window(const lora_config *c, size_t l)
{
	return c->sliding_window && l >= c->window_from ? c->sliding_window : 0;
}

/* The revision refs/main of a hub cache entry names, if it is one line of
 * hex digits. */
static char *hub_snapshot(const char *repo_dir)
{
	char *ref = lora_path_join(repo_dir, "refs/main"), rev[128] = "", *out = NULL;
	int fd = ref ? lora_path_open_file(ref, NULL, NULL) : -1;
	FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
	if (fd >= 0 && !f)
		close(fd);
	if (f && fgets(rev, sizeof rev, f)) {
		rev[strcspn(rev, "\n")] = 0;
		if (*rev && strspn(rev, "0123456789abcdef") == strlen(rev)) {
			char sub[192];
			snprintf(sub, sizeof sub, "snapshots/%s/config.json", rev);
			out = lora_path_join(repo_dir, sub);
		}
	}
	if (f)
		fclose(f);
	free(ref);
	return out;
}

int lora_config_locate(char **path, const char *name, lora_err *e)
{
	char *p = NULL, hub[4096], repo[600];
	*path = NULL;
	if (lora_path_has_suffix(name, "config.json") && lora_path_exists(name))
		p = strdup(name);
	else if (lora_path_is_file(name)) {
		/* weights or an index: config.json beside them */
		char *d = lora_path_dir(name);
		p = d ? lora_path_join(d, "config.json") : NULL;
		free(d);
		if (p && !lora_path_exists(p)) {
			free(p);
			p = NULL;
		}
	} else if ((p = lora_path_join(name, "config.json")) && !lora_path_exists(p)) {
		free(p);
		p = NULL;
	}
	/* "org/name": Hugging Face's hub cache, where transformers keeps it. */
	const char *slash = strchr(name, '/'), *c = getenv("HF_HUB_CACHE"), *h = getenv("HF_HOME"), *home = getenv("HOME");
	if (!p && slash && !strchr(slash + 1, '/') && slash > name && slash[1] && strlen(name) < 256 && name[0] != '.') {
		if (c && *c)
			snprintf(hub, sizeof hub, "%s", c);
		else if (h && *h)
			snprintf(hub, sizeof hub, "%s/hub", h);
		else
			snprintf(hub, sizeof hub, "%s/.cache/huggingface/hub", home ? home : "");
		snprintf(repo, sizeof repo, "models--%.*s--%s", (int)(slash - name), name, slash + 1);
		char *dir = lora_path_join(hub, repo);
		p = dir ? hub_snapshot(dir) : NULL;
		free(dir);
		if (p && !lora_path_exists(p)) {
			free(p);
			p = NULL;
		}
	}
	if (!p)
		return lora_err_set(e, LORA_EINVAL, "base model '%s': no config.json found there or in the Hugging Face cache",
		                    name);
	*path = p;
	return 0;
}
