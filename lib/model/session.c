#include "model/session.h"

#include <stdlib.h>
#include <string.h>

#include "io/load.h"

void lora_session_close(lora_session *s)
{
	for (size_t i = 0; i < s->n; i++) {
		if (s->adapters)
			lora_adapter_free(s->adapters[i]);
		if (s->paths)
			free(s->paths[i]);
	}
	free(s->adapters), free(s->paths), free(s->scales), free(s->model_name);
	lora_llama_free(s->m);
	lora_ckpt_close(s->ck);
	memset(s, 0, sizeof *s);
}

int lora_session_open(lora_session *s, const char *model, char *const *specs, size_t n, lora_llama_compute compute,
                      lora_err *e)
{
	int rc;
	memset(s, 0, sizeof *s);
	s->n = n;
	s->adapters = calloc(n ? n : 1, sizeof *s->adapters);
	s->paths = calloc(n ? n : 1, sizeof *s->paths);
	s->scales = calloc(n ? n : 1, sizeof *s->scales);
	if (!s->adapters || !s->paths || !s->scales) {
		rc = lora_err_nomem(e);
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		if ((rc = lora_load_spec(specs[i], &s->paths[i], &s->scales[i], e)))
			goto out;
	if ((rc = lora_ckpt_open(&s->ck, model, e)) || (rc = lora_llama_open(&s->m, s->ck, e)) ||
	    (rc = lora_llama_set_compute(s->m, compute, e)))
		goto out;
	if (s->ck->name && !(s->model_name = strdup(s->ck->name))) {
		rc = lora_err_nomem(e);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		const char *p = s->paths[i];
		if ((rc = lora_load_adapter(&s->adapters[i], p, e)) ||
		    (rc = lora_llama_attach(s->m, s->adapters[i], s->scales[i], 0, strcmp(p, "-") ? p : "standard input", e)))
			goto out;
	}
out:
	if (rc)
		lora_session_close(s);
	return rc;
}
