#include "model/rvq.h"

#include <stdlib.h>

#include "model/weights.h"
#include "nn/ops.h"

struct rvq {
    int D, K, C;
    nn_arena *arena, *norm_arena; /* codebooks (load dtype), norms (always f32) */
    tensor **book;  /* D x [K, C] */
    tensor **norm;  /* D x [K], |c|^2 */
};

struct rvq_work {
    const rvq *q;
    int64_t max_rows;
    nn_arena *arena;
    tensor *residual, *dist;
    int fused;
};

/* Distance scratch rows per GEMM: bounded so [R, K] stays near 32 MiB at K = 16384 on the CPU; on a
 * GPU larger GEMMs run closer to peak (256 MiB at K = 16384). */
#define RVQ_DIST_ROWS 512
#define RVQ_DIST_ROWS_CUDA 4096

int rvq_load(const safetensors *st, const char *prefix, int depth, int codebook_size, int dim,
             rvq **out, asvr_error *err) {
    return rvq_load_ex(st, prefix, depth, codebook_size, dim, NN_CPU, NN_F32, out, err);
}

int rvq_load_ex(const safetensors *st, const char *prefix, int depth, int codebook_size, int dim,
                nn_device dev, nn_dtype dtype, rvq **out, asvr_error *err) {
    *out = NULL;
    if (depth < 1 || codebook_size < 1 || codebook_size > 65536 || dim < 1)
        return asvr_err_set(err, "rvq: depth %d, codebook size %d (1..65536), dim %d", depth,
                            codebook_size, dim);
    rvq *q = asvr_calloc(1, sizeof *q, "rvq");
    q->D = depth, q->K = codebook_size, q->C = dim;
    q->book = asvr_calloc((size_t)depth, sizeof *q->book, "rvq codebooks");
    q->norm = asvr_calloc((size_t)depth, sizeof *q->norm, "rvq norms");
    weights_loader wl;
    weights_loader_init(&wl, "rvq codebooks", st, prefix);
    weights_loader_target(&wl, dev, dtype);
    for (int d = 0; d < depth; d++)
        q->book[d] = weights_want_padded(&wl, 2, (int64_t[]){codebook_size, dim}, 1, "%d.weight", d);
    q->arena = wl.arena;
    if (weights_load(&wl, err) < 0) {
        rvq_free(q);
        return asvr_err_prefix(err, "loading %d RVQ codebooks", depth);
    }
    /* |c|^2 once, in f32, from the codebooks as stored (bf16-rounded rows on a bf16 model). */
    q->norm_arena = nn_arena_new("rvq codebook norms", dev);
    for (int d = 0; d < depth; d++) {
        char name[64];
        snprintf(name, sizeof name, "norm.%d", d);
        q->norm[d] = nn_arena_add(q->norm_arena, name, NN_F32, 1, (int64_t[]){codebook_size});
    }
    nn_arena_commit(q->norm_arena);
    for (int d = 0; d < depth; d++) op_row_sqnorm(q->norm[d], q->book[d]);
    *out = q;
    return 0;
}

void rvq_free(rvq *q) {
    if (!q) return;
    nn_arena_free(q->arena);
    nn_arena_free(q->norm_arena);
    free(q->book);
    free(q->norm);
    free(q);
}

int rvq_depth(const rvq *q) { return q->D; }
int rvq_codebook_size(const rvq *q) { return q->K; }
int rvq_dim(const rvq *q) { return q->C; }
const tensor *rvq_codebook(const rvq *q, int d) { return (d >= 0 && d < q->D) ? q->book[d] : NULL; }
void rvq_print_plan(const rvq *q, FILE *f) {
    nn_arena_print_plan(q->arena, f);
    nn_arena_print_plan(q->norm_arena, f);
}

rvq_work *rvq_work_new(const rvq *q, int64_t max_rows) {
    CHECK(max_rows >= 1, "", "rvq workspace for %lld rows", (long long)max_rows);
    rvq_work *w = asvr_calloc(1, sizeof *w, "rvq workspace");
    w->q = q;
    w->max_rows = max_rows;
    nn_device dev = q->book[0]->device;
    w->arena = nn_arena_new("rvq workspace", dev);
    int64_t cap = dev == NN_CPU ? RVQ_DIST_ROWS : RVQ_DIST_ROWS_CUDA;
    int64_t R = max_rows < cap ? max_rows : cap;
    w->residual = nn_arena_add(w->arena, "residual", q->book[0]->dtype, 2, (int64_t[]){max_rows, q->C});
    w->dist = nn_arena_add(w->arena, "distances", NN_F32, 2, (int64_t[]){R, q->K});
    nn_arena_commit(w->arena);
    return w;
}

void rvq_work_free(rvq_work *w) {
    if (!w) return;
    nn_arena_free(w->arena);
    free(w);
}

void rvq_work_set_fused(rvq_work *w, int fused) {
    CHECK(!fused || w->q->book[0]->device == NN_CUDA, "the fused kernel is a CUDA kernel; use the default path",
          "rvq: the fused distance + argmin kernel needs codebooks on cuda");
    w->fused = fused;
}

void rvq_encode(const rvq *q, rvq_work *w, const tensor *x, tensor *codes) {
    CHECK(w->q == q, "", "rvq_encode: workspace planned for another quantiser");
    int64_t M = tensor_rows(x);
    CHECK(tensor_cols(x) == q->C, "", "rvq_encode: x '%s' has width %lld, codebooks %d", x->name,
          (long long)tensor_cols(x), q->C);
    CHECK(M <= w->max_rows, "", "rvq_encode: %lld rows > planned %lld", (long long)M, (long long)w->max_rows);
    CHECK(tensor_cols(codes) == q->D && tensor_rows(codes) == M, "",
          "rvq_encode: codes '%s' must be [%lld, %d]", codes->name, (long long)M, q->D);
    tensor res = tensor_head0(w->residual, M);
    tensor xin = tensor_make(x->name, x->dtype, x->device, 2, (int64_t[]){M, q->C}, x->data);
    tensor cv = tensor_make(codes->name, codes->dtype, codes->device, 2, (int64_t[]){M, q->D}, codes->data);
    op_copy(&res, &xin);
    for (int d = 0; d < q->D; d++) {
        if (w->fused) op_vq_fused(&res, q->book[d], q->norm[d], &cv, d);
        else op_vq_step(&res, q->book[d], q->norm[d], &cv, d, w->dist);
    }
}
