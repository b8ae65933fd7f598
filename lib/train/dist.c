#include "train/dist.h"
#include "train/dist_internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef LORA_MPI
#include <mpi.h>
#endif

/* Floats per message of the chain: small enough that every link of a long
 * chain is busy at once, large enough that a message's latency is small
 * beside its transfer (1 MiB). */
#define CHUNK ((size_t)1 << 18)

struct lora_dist {
	int rank, size, mpi; /* mpi: MPI_Init was called */
	char host[256];
	size_t n, local;
	float *slots;        /* rank 0: the running sum, then a scratch slot; others: local slots */
	double *loss;        /* per local micro-batch */
	uint64_t *tokens;
};

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int env_int(const char *name, int def)
{
	const char *v = getenv(name);
	if (!v || !*v)
		return def;
	char *end;
	long x = strtol(v, &end, 10);
	return *end || x < 0 || x > 1 << 24 ? def : (int)x;
}

int lora_dist_env_rank(void)
{
	int r = env_int("OMPI_COMM_WORLD_RANK", -1);
	if (r < 0)
		r = env_int("PMIX_RANK", -1);
	if (r < 0)
		r = env_int("PMI_RANK", 0);
	return r;
}

/* Did a launcher start this process? */
static int launched(void)
{
	return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_SIZE");
}

#ifdef LORA_MPI
static int mpi_fail(lora_err *e, int code, const char *what)
{
	char msg[MPI_MAX_ERROR_STRING];
	int len = 0;
	if (MPI_Error_string(code, msg, &len) != MPI_SUCCESS)
		len = 0;
	msg[len] = 0;
	return lora_err_set(e, LORA_EIO, "MPI: %s: %s", what, len ? msg : "failed");
}
#endif

int lora_dist_open(lora_dist **out, int join, lora_err *e)
{
	lora_dist *d = calloc(1, sizeof *d);
	*out = NULL;
	if (!d)
		return lora_err_nomem(e);
	d->size = 1;
	if (gethostname(d->host, sizeof d->host - 1) != 0)
		strcpy(d->host, "?");
	if (join && launched()) {
#ifdef LORA_MPI
		/* Only the main thread calls MPI; OpenMP threads only compute. */
		int provided, rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
		if (rc != MPI_SUCCESS) {
			free(d);
			return lora_err_set(e, LORA_EIO, "MPI: cannot join the job (MPI_Init_thread failed)");
		}
		d->mpi = 1;
		/* Errors come back as codes and become one line; a dead peer
		 * is the launcher's to report, as it ends the job. */
		MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
		MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
		MPI_Comm_size(MPI_COMM_WORLD, &d->size);
#else
		int size = env_int("OMPI_COMM_WORLD_SIZE", env_int("PMI_SIZE", 1));
		if (size > 1 || lora_dist_env_rank() > 0) {
			free(d);
			return lora_err_set(e, LORA_EUSAGE,
			                    "this lora-train was built without MPI (make MPI=0): it cannot run as one of %d ranks",
			                    size);
		}
#endif
	}
	*out = d;
	return 0;
}

void lora_dist_close(lora_dist *d)
{
	if (!d)
		return;
#ifdef LORA_MPI
	if (d->mpi)
		MPI_Finalize();
#endif
	free(d->slots), free(d->loss), free(d->tokens);
	free(d);
}

int lora_dist_rank(const lora_dist *d) { return d->rank; }
int lora_dist_size(const lora_dist *d) { return d->size; }
const char *lora_dist_host(const lora_dist *d) { return d->host; }

int lora_dist_agree(lora_dist *d, int rc, lora_err *e)
{
	if (d->size == 1)
		return rc;
#ifdef LORA_MPI
	int mine = rc ? d->rank : d->size, first, failed = rc != 0, all;
	int mrc = MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
	if (mrc == MPI_SUCCESS)
		mrc = MPI_Allreduce(&failed, &all, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
	if (mrc != MPI_SUCCESS)
		return mpi_fail(e, mrc, "agreeing on the set-up");
	if (first == d->size)
		return 0;
	if (MPI_Bcast(&rc, 1, MPI_INT, first, MPI_COMM_WORLD) != MPI_SUCCESS)
		rc = LORA_EIO;
	/* Every rank failed: the same trouble everywhere, said by rank 0 as
	 * one process would say it. */
	if (first == d->rank)
		return all == d->size ? rc : lora_err_prefix(e, "rank %d (%s)", d->rank, d->host);
	e->code = rc;
	e->msg[0] = 0;
	return rc;
#else
	(void)e;
	return rc;
#endif
}

int lora_dist_root_text(lora_dist *d, const char *mine, char **root, lora_err *e)
{
	int len = (int)strlen(mine);
#ifdef LORA_MPI
	int rc;
	if (d->size > 1 && (rc = MPI_Bcast(&len, 1, MPI_INT, 0, MPI_COMM_WORLD)))
		return mpi_fail(e, rc, "sending rank 0's data identity");
#endif
	if (!(*root = malloc((size_t)len + 1)))
		return lora_err_nomem(e);
	if (d->rank == 0)
		memcpy(*root, mine, (size_t)len);
#ifdef LORA_MPI
	if (d->size > 1 && (rc = MPI_Bcast(*root, len, MPI_CHAR, 0, MPI_COMM_WORLD))) {
		free(*root);
		*root = NULL;
		return mpi_fail(e, rc, "sending rank 0's data identity");
	}
#endif
	(*root)[len] = 0;
	return 0;
}

int lora_dist_plan(lora_dist *d, size_t n, size_t local, lora_err *e)
{
	/* Rank 0 starts the fold as it goes: a running sum and one slot.
	 * The others wait for the sum before theirs: a slot per micro-batch. */
	size_t slots = d->rank == 0 ? (local > 1 ? 2 : 1) : local;
	free(d->slots), free(d->loss), free(d->tokens);
	d->n = n, d->local = local;
	d->slots = malloc((n ? n : 1) * slots * sizeof *d->slots);
	d->loss = malloc(local * sizeof *d->loss);
	d->tokens = malloc(local * sizeof *d->tokens);
	if (!d->slots || !d->loss || !d->tokens || (n && slots > SIZE_MAX / sizeof(float) / n))
		return lora_err_set(e, LORA_ENOMEM, "out of memory for %zu gradient copies of %zu values", slots, n);
	return 0;
}

float *lora_dist_slot(lora_dist *d, size_t m)
{
	if (d->rank == 0)
		return d->slots + (m ? d->n : 0);
	return d->slots + m * d->n;
}

/* sum += g, element by element: the one addition of the fold. */
static void add_into(float *restrict sum, const float *restrict g, size_t n)
{
	for (size_t j = 0; j < n; j++)
		sum[j] += g[j];
}

void lora_dist_add(lora_dist *d, size_t m, double loss, size_t tokens)
{
	d->loss[m] = loss;
	d->tokens[m] = tokens;
	if (d->rank == 0 && m > 0)
		add_into(d->slots, d->slots + d->n, d->n);
}

/* The part of the fold that travels: losses and counts, stop and failure. */
typedef struct {
	double loss;
	uint64_t tokens;
	int32_t stop, failed;
} head;

static void fold_head(head *h, const lora_dist *d, const lora_dist_sums *s)
{
	for (size_t m = 0; m < d->local; m++) {
		h->loss += d->loss[m];
		h->tokens += d->tokens[m];
	}
	if (s->stop > h->stop)
		h->stop = s->stop;
	if (s->failed >= 0 && (h->failed < 0 || s->failed < h->failed))
		h->failed = s->failed;
}

#ifdef LORA_MPI
/* Ranks 1..N-1: receive the sum so far a chunk at a time into g, add this
 * rank's micro-batches in order, pass it on; the last rank then sends the
 * whole sum to every rank. */
static int chain(lora_dist *d, float *g, head *h, const lora_dist_sums *s, lora_err *e)
{
	size_t n = d->n, nc = (n + CHUNK - 1) / CHUNK;
	int rc = MPI_SUCCESS, prev = d->rank - 1, next = d->rank + 1 < d->size ? d->rank + 1 : -1;
	MPI_Request *req = calloc(2 * nc + 1, sizeof *req), *rreq = req + nc + 1;
	if (!req)
		return lora_err_nomem(e);
	for (size_t c = 0; c <= 2 * nc; c++)
		req[c] = MPI_REQUEST_NULL;
	if (d->rank == 0) {
		*h = (head){.failed = -1};
		fold_head(h, d, s);
		rc = MPI_Isend(h, sizeof *h, MPI_BYTE, next, 1, MPI_COMM_WORLD, &req[nc]);
		for (size_t c = 0; rc == MPI_SUCCESS && c < nc; c++) {
			size_t off = c * CHUNK, len = n - off < CHUNK ? n - off : CHUNK;
			rc = MPI_Isend(d->slots + off, (int)len, MPI_FLOAT, next, 2, MPI_COMM_WORLD, &req[c]);
		}
	} else {
		rc = MPI_Recv(h, sizeof *h, MPI_BYTE, prev, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
		if (rc == MPI_SUCCESS) {
			fold_head(h, d, s);
			if (next >= 0)
				rc = MPI_Isend(h, sizeof *h, MPI_BYTE, next, 1, MPI_COMM_WORLD, &req[nc]);
		}
		/* every piece's receive posted at once, so that the transfers
		 * go on while this rank adds */
		for (size_t c = 0; rc == MPI_SUCCESS && c < nc; c++) {
			size_t off = c * CHUNK, len = n - off < CHUNK ? n - off : CHUNK;
			rc = MPI_Irecv(g + off, (int)len, MPI_FLOAT, prev, 2, MPI_COMM_WORLD, &rreq[c]);
		}
		for (size_t c = 0; rc == MPI_SUCCESS && c < nc; c++) {
			size_t off = c * CHUNK, len = n - off < CHUNK ? n - off : CHUNK;
			if ((rc = MPI_Wait(&rreq[c], MPI_STATUS_IGNORE)))
				break;
			for (size_t m = 0; m < d->local; m++)
				add_into(g + off, d->slots + m * n + off, len);
			if (next >= 0)
				rc = MPI_Isend(g + off, (int)len, MPI_FLOAT, next, 2, MPI_COMM_WORLD, &req[c]);
		}
	}
	if (rc == MPI_SUCCESS)
		rc = MPI_Waitall((int)nc + 1, req, MPI_STATUSES_IGNORE);
	/* After an error, receives may still be posted into g and req: both
	 * stay allocated, and the job ends. */
	if (rc != MPI_SUCCESS)
		return mpi_fail(e, rc, "folding the gradients");
	free(req);
	int root = d->size - 1;
	if ((rc = MPI_Bcast(h, sizeof *h, MPI_BYTE, root, MPI_COMM_WORLD)))
		return mpi_fail(e, rc, "sending the sums");
	for (size_t off = 0; off < n; off += CHUNK * 64) {
		size_t len = n - off < CHUNK * 64 ? n - off : CHUNK * 64;
		if ((rc = MPI_Bcast(g + off, (int)len, MPI_FLOAT, root, MPI_COMM_WORLD)))
			return mpi_fail(e, rc, "sending the gradient");
	}
	return 0;
}
#endif

int lora_dist_reduce(lora_dist *d, float *g, float k, lora_dist_sums *s, int rc, lora_err *e)
{
	double t0 = now();
	head h = {.failed = -1};
	const float *sum = d->slots;
	(void)e; /* only the exchange between ranks fails */
	if (d->size == 1) {
		if (rc)
			return rc;
		fold_head(&h, d, s);
	} else {
#ifdef LORA_MPI
		lora_err mine = *e;
		int mrc = chain(d, g, &h, s, e);
		if (mrc)
			return mrc;
		*e = mine;
		sum = g;
		if (h.failed == d->rank)
			return lora_err_prefix(e, "rank %d (%s)", d->rank, d->host);
		if (h.failed >= 0) {
			e->code = LORA_EIO;
			e->msg[0] = 0;
			return LORA_EIO;
		}
#endif
	}
	for (size_t j = 0; j < d->n; j++)
		g[j] = sum[j] * k;
	s->loss = h.loss;
	s->tokens = h.tokens;
	s->stop = h.stop;
	s->failed = h.failed;
	s->wait = d->size > 1 ? now() - t0 : 0; /* one process exchanges nothing */
	return 0;
}

double lora_dist_bench_allreduce(lora_dist *d, float *g, size_t n)
{
#ifdef LORA_MPI
	if (d->size > 1) {
		double t0 = now();
		for (size_t off = 0; off < n; off += CHUNK * 64) {
			size_t len = n - off < CHUNK * 64 ? n - off : CHUNK * 64;
			if (MPI_Allreduce(MPI_IN_PLACE, g + off, (int)len, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS)
				return -1;
		}
		return now() - t0;
	}
#endif
	(void)g, (void)n;
	return d->size > 1 ? -1 : 0;
}
