#include "io/ckpt.h"

#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/json.h"
#include "core/path.h"
#include "core/rng.h"

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}





typedef struct {
	const char *name, *shard;
	size_t si;
} wm_entry;

static int cmp_wm(const void *a, const void *b)
{
	return strcmp(((const wm_entry *)a)->name, ((const wm_entry *)b)->name);
}

static size_t find_str(const char *const *v, size_t n, const char *s)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(s, v[mid]);
		if (c == 0)
			return mid;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return n;
}

/* Open every shard named in the index once (in file-name order) and check
 * that the weight_map and the shards' contents agree exactly. */
static int open_index(lora_ckpt *m, const char *prefix, lora_err *e)
{
	const char *ip = m->index_path;
	cJSON *root = NULL;
	wm_entry *ent = NULL;
	const char **shard = NULL;
	int rc;
	if ((rc = lora_json_read_file(&root, ip, 0, e)))
		return rc;
	const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
	if (!cJSON_IsObject(wm) || !wm->child) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: missing or empty \"weight_map\" object", ip);
		goto out;
	}
	size_t n = (size_t)cJSON_GetArraySize(wm), k = 0;
	ent = malloc(n * sizeof *ent);
	shard = malloc(n * sizeof *shard);
	if (!ent || !shard) {
		rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory", ip);
		goto out;
	}
	for (const cJSON *j = wm->child; j; j = j->next, k++) {
		const char *s = cJSON_IsString(j) ? j->valuestring : NULL;
		if (!s) {
			rc = lora_err_set(e, LORA_EFORMAT, "%s: weight_map value for tensor '%s' is not a string", ip,
			                  j->string);
			goto out;
		}
		/* Shards must sit beside the index: no paths, no "..". */
		if (!*s || strchr(s, '/') || strcmp(s, ".") == 0 || strcmp(s, "..") == 0) {
			rc = lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s': shard '%s' is not a plain file name", ip,
			                  j->string, s);
			goto out;
		}
		ent[k] = (wm_entry){j->string, s, 0};
		shard[k] = s;
	}
	/* Names are unique: lora_json_read_file refuses a key given twice. */
	qsort(ent, n, sizeof *ent, cmp_wm);
	qsort(shard, n, sizeof *shard, cmp_str);
	size_t ns = 0;
	for (size_t i = 0; i < n; i++)
		if (ns == 0 || strcmp(shard[ns - 1], shard[i]) != 0)
			shard[ns++] = shard[i];
	if (!(m->shards = calloc(ns, sizeof *m->shards))) {
		rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory", ip);
		goto out;
	}
	for (size_t i = 0; i < ns; i++) {
		char *sp = lora_path_join(prefix, shard[i]);
		if (!sp) {
			rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory", ip);
			goto out;
		}
		rc = lora_st_open(&m->shards[i], sp, e);
		free(sp);
		if (rc) {
			lora_err_prefix(e, "%s", ip);
			goto out;
		}
		m->nshards++;
	}
	for (size_t i = 0; i < n; i++) {
		ent[i].si = find_str(shard, ns, ent[i].shard);
		if (!lora_st_find(m->shards[ent[i].si], ent[i].name)) {
			rc = lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s' mapped to shard '%s' which does not contain it",
			                  ip, ent[i].name, ent[i].shard);
			goto out;
		}
	}
	for (size_t si = 0; si < ns; si++) {
		const lora_st *st = m->shards[si];
		for (size_t t = 0; t < st->ntensors; t++) {
			wm_entry key = {st->tensors[t].name, NULL, 0};
			const wm_entry *f = bsearch(&key, ent, n, sizeof *ent, cmp_wm);
			if (!f)
				rc = lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s' in shard '%s' is not in the weight_map",
				                  ip, key.name, shard[si]);
			else if (f->si != si)
				rc = lora_err_set(e, LORA_EFORMAT,
				                  "%s: tensor '%s' is in shard '%s' but the weight_map maps it to '%s'", ip,
				                  key.name, shard[si], f->shard);
			if (rc)
				goto out;
		}
	}
out:
	free(ent);
	free(shard);
	cJSON_Delete(root);
	return rc;
}

/* Base name of a directory, resolved so that "." and "dir/" give a name. */
static char *dir_base(const char *dir)
{
	char *real = realpath(dir, NULL);
	const char *p = real ? real : dir;
	const char *slash = strrchr(p, '/');
	char *s = strdup(slash && slash[1] ? slash + 1 : p);
	free(real);
	return s;
}

static int model_name(lora_ckpt *m, int dir_input, lora_err *e)
{
	if (m->config_path) {
		cJSON *cfg;
		int rc = lora_json_read_file(&cfg, m->config_path, 0, e);
		if (rc)
			return rc;
		const cJSON *nm = cJSON_GetObjectItemCaseSensitive(cfg, "_name_or_path");
		if (cJSON_IsString(nm) && nm->valuestring[0])
			m->name = strdup(nm->valuestring);
		cJSON_Delete(cfg);
		if (!m->name)
			m->name = dir_base(m->dir);
	} else if (dir_input) {
		m->name = dir_base(m->dir);
	} else {
		const char *base = lora_path_base(m->path);
		size_t len = strlen(base);
		if (lora_path_has_suffix(base, ".index.json"))
			len -= strlen(".index.json");
		if (len > 12 && strncmp(base + len - 12, ".safetensors", 12) == 0)
			len -= 12;
		m->name = strndup(base, len);
	}
	return m->name ? 0 : lora_err_set(e, LORA_ENOMEM, "%s: out of memory", m->path);
}

static int cmp_tptr(const void *a, const void *b)
{
	const lora_st_tensor *x = *(const lora_st_tensor *const *)a, *y = *(const lora_st_tensor *const *)b;
	return strcmp(x->name, y->name);
}

int lora_ckpt_open(lora_ckpt **out, const char *path, lora_err *e)
{
	int rc = 0, dir_input;
	char *prefix = NULL, *single = NULL;
	struct stat sb;
	*out = NULL;
	if (stat(path, &sb) != 0)
		return lora_err_set(e, LORA_EIO, "%s: %s", path, strerror(errno));
	lora_ckpt *m = calloc(1, sizeof *m);
	if (!m || !(m->path = strdup(path))) {
		free(m);
		return lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
	}
	/* prefix: what to put before a file name to reach the model's directory. */
	size_t len = strlen(path);
	if ((dir_input = S_ISDIR(sb.st_mode))) {
		m->dir = strdup(path);
		prefix = malloc(len + 2);
		if (prefix)
			snprintf(prefix, len + 2, "%s%s", path, len && path[len - 1] == '/' ? "" : "/");
	} else {
		const char *slash = strrchr(path, '/');
		size_t plen = slash ? (size_t)(slash - path) + 1 : 0;
		prefix = strndup(path, plen);
		m->dir = plen ? strndup(path, plen > 1 ? plen - 1 : 1) : strdup(".");
	}
	if (!m->dir || !prefix) {
		rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
		goto out;
	}
	if (dir_input) {
		char *idx = lora_path_join(prefix, "model.safetensors.index.json");
		single = lora_path_join(prefix, "model.safetensors");
		if (!idx || !single) {
			free(idx);
			rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
			goto out;
		}
		if (lora_path_exists(idx)) {
			m->index_path = idx;
		} else {
			free(idx);
			if (!lora_path_exists(single)) {
				rc = lora_err_set(e, LORA_EIO, "%s: no model.safetensors or model.safetensors.index.json",
				                  path);
				goto out;
			}
		}
	} else if (lora_path_has_suffix(path, ".index.json")) {
		if (!(m->index_path = strdup(path))) {
			rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
			goto out;
		}
	} else if (!(single = strdup(path))) {
		rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
		goto out;
	}
	char *cfg = lora_path_join(prefix, "config.json");
	if (cfg && lora_path_exists(cfg))
		m->config_path = cfg;
	else
		free(cfg);
	if (m->index_path) {
		if ((rc = open_index(m, prefix, e)))
			goto out;
	} else {
		if (!(m->shards = calloc(1, sizeof *m->shards))) {
			rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
			goto out;
		}
		if ((rc = lora_st_open(&m->shards[0], single, e)))
			goto out;
		m->nshards = 1;
	}
	if ((rc = model_name(m, dir_input, e)))
		goto out;
	size_t nt = 0;
	for (size_t i = 0; i < m->nshards; i++)
		nt += m->shards[i]->ntensors;
	m->tensors = malloc((nt ? nt : 1) * sizeof *m->tensors);
	m->tensor_shard = malloc((nt ? nt : 1) * sizeof *m->tensor_shard);
	if (!m->tensors || !m->tensor_shard) {
		rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
		goto out;
	}
	for (size_t i = 0; i < m->nshards; i++)
		for (size_t t = 0; t < m->shards[i]->ntensors; t++)
			m->tensors[m->ntensors++] = &m->shards[i]->tensors[t];
	qsort(m->tensors, nt, sizeof *m->tensors, cmp_tptr);
	/* The shard of each tensor: a shard's tensors form one contiguous
	 * array, so the pointer tells which. */
	for (size_t i = 0; i < nt; i++) {
		for (size_t s = 0; s < m->nshards; s++) {
			const lora_st *st = m->shards[s];
			if (m->tensors[i] >= st->tensors && m->tensors[i] < st->tensors + st->ntensors)
				m->tensor_shard[i] = s;
		}
		/* Already guaranteed by the index checks; kept as a backstop. */
		if (i && strcmp(m->tensors[i - 1]->name, m->tensors[i]->name) == 0) {
			rc = lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s' appears in more than one shard", path,
			                  m->tensors[i]->name);
			goto out;
		}
	}
	*out = m;
out:
	free(prefix);
	free(single);
	if (rc)
		lora_ckpt_close(m);
	return rc;
}

void lora_ckpt_close(lora_ckpt *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->nshards; i++)
		lora_st_close(m->shards[i]);
	free(m->shards);
	free(m->tensors);
	free(m->tensor_shard);
	free(m->path);
	free(m->dir);
	free(m->index_path);
	free(m->config_path);
	free(m->name);
	free(m);
}

const lora_st_tensor *lora_ckpt_find(const lora_ckpt *m, const char *name)
{
	size_t lo = 0, hi = m->ntensors;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(name, m->tensors[mid]->name);
		if (c == 0)
			return m->tensors[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}


void lora_ckpt_fingerprint(const lora_ckpt *m, char buf[17])
{
	uint64_t h = LORA_FNV_INIT;
	for (size_t i = 0; i < m->ntensors; i++) {
		const lora_st_tensor *t = m->tensors[i];
		const char *dn = lora_dtype_st_name(t->dtype);
		h = lora_rng_fnv1a(h, t->name, strlen(t->name) + 1);
		h = lora_rng_fnv1a(h, dn, strlen(dn) + 1);
		for (size_t d = 0; d < t->ndim; d++) {
			unsigned char le[8];
			for (int k = 0; k < 8; k++)
				le[k] = (unsigned char)((uint64_t)t->shape[d] >> (8 * k));
			h = lora_rng_fnv1a(h, le, 8);
		}
	}
	snprintf(buf, 17, "%016llx", (unsigned long long)h);
}
