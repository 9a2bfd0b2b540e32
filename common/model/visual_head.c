#include "model/visual_head.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/ops.h"

typedef struct vhead_layer {
    param *norm1, *norm2, *in_w, *in_b, *out_w, *out_b, *ffn_w1, *ffn_w2;
} vhead_layer;

struct vhead {
    vhead_config cfg;
    mlp2 head_in;                /* head_in_proj: d_in -> E -> E */
    param *code_w, *code_b;      /* code_in_proj: code_dim -> E */
    vhead_layer *layer;          /* n_layers */
    param *norm;                 /* final RMSNorm */
    param **head_w, **head_b;    /* D heads, [K, E] and [K] */
    param **all;                 /* every parameter, for "is anything trainable" */
    int n_all;
};

/* Per-layer saved activations; "dm" = depth-major [D, N, ...], "tm" = token-major [N, D, ...]. */
typedef struct vhead_layer_acts {
    tensor *rstd1;               /* rstd of norm1(x) */
    tensor *n1t, *q, *k, *v, *ao; /* tm: norm1 output, q, k, v, attention output */
    tensor *att;                 /* [P, H, D, D] kept probabilities */
    tensor *r, *rstd2;           /* x + attn (dm, the input of norm2), its rstd */
    tensor *h;                   /* norm2(r) dm */
    tensor *fpre, *fg;           /* FFN pre-activation and gelu output, dm [D, N, F] */
} vhead_layer_acts;

enum { VHEAD_EMPTY, VHEAD_LOGITS, VHEAD_DLOGITS }; /* what the logits buffer holds */

struct vhead_acts {
    const vhead *hd;
    int max_positions;
    int n;                       /* positions of the last forward; 0 before the first */
    int state;                   /* VHEAD_*: logits after vhead_forward, their gradient after vhead_loss */
    nn_arena *arena;             /* on the parameters' device */
    tensor *codes_dm, *perm_tm, *perm_dm; /* i32 [D*P] */
    nn_arena *host;              /* host copies of the index tensors, built here and uploaded */
    tensor *h_codes_dm, *h_perm_tm, *h_perm_dm, *h_top1; /* i32 [D*P] */
    tensor *top1;                /* i32 [D*P] argmax of the logits rows */
    tensor *h_img;               /* copy of the input [P, d_in] */
    tensor *in_pre, *in_h;       /* head_in_proj hidden [P, E] */
    tensor *emb, *cum;           /* code rows [P, C]; cumulative sums [(D-1)*P, C] */
    tensor **xs;                 /* n_layers + 1 residual streams, dm [D*P, E] */
    vhead_layer_acts *la;
    tensor *scratch;             /* norm1(x) before its gather (dm), then the out_proj output (tm) */
    tensor *rstdf, *y;           /* final norm */
    tensor *logits;              /* dm [D*P, K]: the logits, then (cross-entropy in place) their gradient */
    tensor *dA, *dB, *dtm1, *dtm2, *dq, *dk, *dv; /* backward scratch [D*P, E] */
    tensor *dg;                  /* [P, F] */
    tensor *dh_in;               /* [P, E] */
    tensor *att_scratch;         /* [D*D] */
    tensor logit_view[64];       /* per-depth views of the last forward (vhead_logits) */
};

vhead_config vhead_config_asvr(void) {
    vhead_config c = {.d_in = 4096, .embed = 2048, .n_heads = 16, .depth = 8, .codebook_size = 16384,
                      .code_dim = 1152, .n_layers = 3, .ffn_dim = 4096, .eps = 1e-6f};
    return c;
}

int vhead_config_check(const vhead_config *c, asvr_error *err) {
    if (c->d_in <= 0) return asvr_err_set(err, "visual head config: d_in %d", c->d_in);
    if (c->embed <= 0 || c->n_heads <= 0 || c->embed % c->n_heads)
        return asvr_err_set(err, "visual head config: embed %d is not a positive multiple of n_heads %d",
                            c->embed, c->n_heads);
    if (c->depth < 1 || c->depth > 64)
        return asvr_err_set(err, "visual head config: depth %d outside 1..64", c->depth);
    if (c->codebook_size < 2) return asvr_err_set(err, "visual head config: codebook_size %d", c->codebook_size);
    if (c->code_dim <= 0) return asvr_err_set(err, "visual head config: code_dim %d", c->code_dim);
    if (c->n_layers < 0) return asvr_err_set(err, "visual head config: n_layers %d", c->n_layers);
    if (c->ffn_dim <= 0) return asvr_err_set(err, "visual head config: ffn_dim %d", c->ffn_dim);
    if (c->embed > (1 << 20) || c->ffn_dim > (1 << 22) || c->codebook_size > 65536 || c->code_dim > (1 << 20) ||
        c->n_layers > 1024 || c->d_in > (1 << 20))
        return asvr_err_set(err, "visual head config: embed %d, ffn_dim %d, codebook_size %d, code_dim %d or n_layers "
                                 "%d out of range", c->embed, c->ffn_dim, c->codebook_size, c->code_dim, c->n_layers);
    if (!(c->eps > 0.0f)) return asvr_err_set(err, "visual head config: eps %g must be > 0", (double)c->eps);
    return 0;
}

static param *keep(vhead *h, param *p) {
    h->all[h->n_all++] = p;
    return p;
}

vhead *vhead_new(const vhead_config *c, param_set *ps, const char *prefix) {
    asvr_error err = {{0}};
    CHECK(vhead_config_check(c, &err) == 0, "check the config with vhead_config_check first", "%s", err.msg);
    vhead *h = asvr_calloc(1, sizeof *h, "visual head");
    h->cfg = *c;
    int64_t E = c->embed, D = c->depth, K = c->codebook_size, C = c->code_dim, F = c->ffn_dim;
    h->layer = asvr_calloc((size_t)(c->n_layers ? c->n_layers : 1), sizeof *h->layer, "visual head layers");
    h->head_w = asvr_calloc((size_t)D, sizeof *h->head_w, "visual head heads");
    h->head_b = asvr_calloc((size_t)D, sizeof *h->head_b, "visual head heads");
    h->all = asvr_calloc((size_t)(7 + 8 * c->n_layers + 2 * D), sizeof *h->all, "visual head parameters");

    char pre[128];
    snprintf(pre, sizeof pre, "%shead_in_proj.", prefix);
    mlp2_declare(&h->head_in, ps, c->d_in, c->embed, c->embed, pre);
    keep(h, h->head_in.w1);
    keep(h, h->head_in.b1);
    keep(h, h->head_in.w2);
    keep(h, h->head_in.b2);
    h->code_w = keep(h, param_add(ps, 2, (int64_t[]){E, C}, 1, PARAM_INIT_NORMAL, 1.0f / sqrtf((float)C),
                                  "%scode_in_proj.weight", prefix));
    h->code_b = keep(h, param_add(ps, 1, (int64_t[]){E}, 0, PARAM_INIT_ZERO, 0.0f, "%scode_in_proj.bias", prefix));
    float se = 1.0f / sqrtf((float)E), sf = 1.0f / sqrtf((float)F);
    for (int l = 0; l < c->n_layers; l++) {
        vhead_layer *L = &h->layer[l];
        L->norm1 = keep(h, param_add(ps, 1, (int64_t[]){E}, 0, PARAM_INIT_ONE, 0.0f, "%slayers.%d.norm1.weight",
                                     prefix, l));
        L->norm2 = keep(h, param_add(ps, 1, (int64_t[]){E}, 0, PARAM_INIT_ONE, 0.0f, "%slayers.%d.norm2.weight",
                                     prefix, l));
        L->in_w = keep(h, param_add(ps, 2, (int64_t[]){3 * E, E}, 1, PARAM_INIT_NORMAL, se,
                                    "%slayers.%d.attn.in_proj_weight", prefix, l));
        L->in_b = keep(h, param_add(ps, 1, (int64_t[]){3 * E}, 0, PARAM_INIT_ZERO, 0.0f,
                                    "%slayers.%d.attn.in_proj_bias", prefix, l));
        L->out_w = keep(h, param_add(ps, 2, (int64_t[]){E, E}, 1, PARAM_INIT_NORMAL, se,
                                     "%slayers.%d.attn.out_proj.weight", prefix, l));
        L->out_b = keep(h, param_add(ps, 1, (int64_t[]){E}, 0, PARAM_INIT_ZERO, 0.0f,
                                     "%slayers.%d.attn.out_proj.bias", prefix, l));
        L->ffn_w1 = keep(h, param_add(ps, 3, (int64_t[]){D, F, E}, 1, PARAM_INIT_NORMAL, se,
                                      "%slayers.%d.ffn_w1", prefix, l));
        L->ffn_w2 = keep(h, param_add(ps, 3, (int64_t[]){D, E, F}, 1, PARAM_INIT_NORMAL, sf,
                                      "%slayers.%d.ffn_w2", prefix, l));
    }
    h->norm = keep(h, param_add(ps, 1, (int64_t[]){E}, 0, PARAM_INIT_ONE, 0.0f, "%snorm.weight", prefix));
    for (int d = 0; d < D; d++) {
        h->head_w[d] = keep(h, param_add(ps, 2, (int64_t[]){K, E}, 1, PARAM_INIT_NORMAL, se,
                                         "%sheads.%d.weight", prefix, d));
        h->head_b[d] = keep(h, param_add(ps, 1, (int64_t[]){K}, 0, PARAM_INIT_ZERO, 0.0f, "%sheads.%d.bias",
                                         prefix, d));
    }
    return h;
}

const vhead_config *vhead_cfg(const vhead *h) { return &h->cfg; }

void vhead_free(vhead *h) {
    if (!h) return;
    free(h->layer);
    free(h->head_w);
    free(h->head_b);
    free(h->all);
    free(h);
}

/* ---- activations ------------------------------------------------------------------------------ */

static tensor *add2(nn_arena *ar, const char *name, nn_dtype dt, int64_t rows, int64_t cols) {
    return nn_arena_add(ar, name, dt, 2, (int64_t[]){rows, cols});
}

vhead_acts *vhead_acts_new(const vhead *h, int max_positions) {
    CHECK(max_positions >= 1, "", "visual head activations for %d positions", max_positions);
    const vhead_config *c = &h->cfg;
    int64_t P = max_positions, D = c->depth, E = c->embed, F = c->ffn_dim, K = c->codebook_size,
            C = c->code_dim, H = c->n_heads, DP = D * P;
    vhead_acts *a = asvr_calloc(1, sizeof *a, "visual head activations");
    a->hd = h;
    a->max_positions = max_positions;
    nn_arena *ar = a->arena = nn_arena_new("visual head activations", h->head_in.w1->w->device);
    a->codes_dm = nn_arena_add(ar, "codes_depth_major", NN_I32, 1, (int64_t[]){DP});
    a->perm_tm = nn_arena_add(ar, "perm_to_token_major", NN_I32, 1, (int64_t[]){DP});
    a->perm_dm = nn_arena_add(ar, "perm_to_depth_major", NN_I32, 1, (int64_t[]){DP});
    /* Mixed precision (bf16 weight copies): what only feeds GEMMs or the attention — the normalised
     * inputs of the projections, q/k/v, attention outputs, FFN activations, the final norm's output,
     * the logits, and the gradients flowing into GEMMs — is kept in bf16; the residual streams, the
     * normalised states h (the next stream's base), the code sums, norm statistics and the gradient
     * streams stay f32. */
    nn_dtype cdt = h->head_w[0]->wc->dtype;
    a->h_img = add2(ar, "h_img", cdt, P, c->d_in);
    a->in_pre = add2(ar, "head_in_proj.pre", cdt, P, E);
    a->in_h = add2(ar, "head_in_proj.hidden", cdt, P, E);
    a->emb = add2(ar, "code_rows", NN_F32, P, C);
    a->cum = D > 1 ? add2(ar, "code_cumsum", NN_F32, (D - 1) * P, C) : NULL;
    a->xs = asvr_calloc((size_t)c->n_layers + 1, sizeof *a->xs, "visual head streams");
    a->la = asvr_calloc((size_t)(c->n_layers ? c->n_layers : 1), sizeof *a->la, "visual head layer acts");
    char nm[NN_NAME_MAX];
    for (int l = 0; l <= c->n_layers; l++) {
        snprintf(nm, sizeof nm, "stream.%d", l);
        a->xs[l] = add2(ar, nm, NN_F32, DP, E);
    }
    for (int l = 0; l < c->n_layers; l++) {
        vhead_layer_acts *A = &a->la[l];
#define LA(field, dt, rows, cols)                                                                  \
    (snprintf(nm, sizeof nm, "layers.%d." #field, l), A->field = add2(ar, nm, dt, rows, cols))
        LA(rstd1, NN_F32, DP, 1);
        LA(n1t, cdt, DP, E);
        LA(q, cdt, DP, E);
        LA(k, cdt, DP, E);
        LA(v, cdt, DP, E);
        LA(ao, cdt, DP, E);
        LA(att, NN_F32, P * H * D, D);
        LA(r, NN_F32, DP, E);
        LA(rstd2, NN_F32, DP, 1);
        LA(h, NN_F32, DP, E);
        LA(fpre, cdt, DP, F);
        LA(fg, cdt, DP, F);
#undef LA
    }
    a->scratch = add2(ar, "norm1_out_or_attn_proj_out", NN_F32, DP, E);
    a->rstdf = add2(ar, "norm.rstd", NN_F32, DP, 1);
    a->y = add2(ar, "norm.out", cdt, DP, E);
    /* the D x K logits are the head's largest buffer (cross-entropy and argmax read them in fp32); the
     * cross-entropy overwrites them with their gradient, which the backward reads */
    a->logits = add2(ar, "logits_then_dlogits", cdt, DP, K);
    a->dA = add2(ar, "grad.stream_a", NN_F32, DP, E);
    a->dB = add2(ar, "grad.stream_b", NN_F32, DP, E);
    a->dtm1 = add2(ar, "grad.token_major_a", NN_F32, DP, E);
    a->dtm2 = add2(ar, "grad.token_major_b", cdt, DP, E);
    a->dq = add2(ar, "grad.q", cdt, DP, E);
    a->dk = add2(ar, "grad.k", cdt, DP, E);
    a->dv = add2(ar, "grad.v", cdt, DP, E);
    a->dg = add2(ar, "grad.ffn_hidden", cdt, DP, F);
    a->dh_in = add2(ar, "grad.head_in_proj_hidden", cdt, P, E);
    a->att_scratch = add2(ar, "grad.attention_scratch", NN_F32, D, D);
    a->top1 = nn_arena_add(ar, "top1", NN_I32, 1, (int64_t[]){DP});
    nn_arena_commit(ar);
    nn_arena *hs = a->host = nn_arena_new("visual head indices (host)", NN_CPU);
    a->h_codes_dm = nn_arena_add(hs, "codes_depth_major", NN_I32, 1, (int64_t[]){DP});
    a->h_perm_tm = nn_arena_add(hs, "perm_to_token_major", NN_I32, 1, (int64_t[]){DP});
    a->h_perm_dm = nn_arena_add(hs, "perm_to_depth_major", NN_I32, 1, (int64_t[]){DP});
    a->h_top1 = nn_arena_add(hs, "top1", NN_I32, 1, (int64_t[]){DP});
    nn_arena_commit(hs);
    return a;
}

void vhead_acts_print_plan(const vhead_acts *a, FILE *f) {
    nn_arena_print_plan(a->arena, f);
    nn_arena_print_plan(a->host, f);
}
size_t vhead_acts_bytes(const vhead_acts *a) { return nn_arena_bytes(a->arena); }

void vhead_acts_fill(vhead_acts *a, float value) {
    for (int i = 0; i < nn_arena_count(a->arena); i++) {
        tensor *t = nn_arena_at(a->arena, i);
        if (t->dtype == NN_F32) op_fill(t, value);
    }
}

void vhead_acts_free(vhead_acts *a) {
    if (!a) return;
    nn_arena_free(a->arena);
    nn_arena_free(a->host);
    free(a->xs);
    free(a->la);
    free(a);
}

/* ---- views ------------------------------------------------------------------------------------ */

/* Rows [row0, row0 + rows) of buffer t read as [rows, cols] (or as [b, t, cols] when b > 0). */
static tensor rows_view(const tensor *t, int64_t row0, int64_t rows, int64_t cols) {
    CHECK((row0 + rows) * cols <= tensor_numel(t), "", "visual head: view of %lld x %lld past '%s'",
          (long long)rows, (long long)cols, t->name);
    char *base = (char *)t->data + (size_t)(row0 * cols) * nn_dtype_size(t->dtype);
    return tensor_make(t->name, t->dtype, t->device, 2, (int64_t[]){rows, cols}, base);
}

static tensor view3(const tensor *t, int64_t b, int64_t s, int64_t cols) {
    CHECK(b * s * cols <= tensor_numel(t), "", "visual head: view past '%s'", t->name);
    return tensor_make(t->name, t->dtype, t->device, 3, (int64_t[]){b, s, cols}, t->data);
}

static tensor *opt(tensor *t, tensor *buf) {
    if (!t) return NULL;
    *buf = *t;
    return buf;
}

/* top-1 hits of logits [N, K] against the host targets [N] (op_argmax_rows: the first maximal index, as
 * torch.argmax), through the host copy of the argmax. */
static int64_t top1_hits(vhead_acts *a, const tensor *logits, const int32_t *targets) {
    int64_t N = tensor_rows(logits), hits = 0;
    tensor idx = rows_view(a->top1, 0, 1, N), hidx = rows_view(a->h_top1, 0, 1, N);
    op_argmax_rows(&idx, logits);
    op_transfer(&hidx, &idx);
    const int32_t *best = hidx.data;
    for (int64_t n = 0; n < N; n++) hits += best[n] == targets[n];
    return hits;
}

/* ---- forward ---------------------------------------------------------------------------------- */

void vhead_forward(const vhead *hd, vhead_acts *a, const tensor *h_img, const tensor *codes, const tensor *codebooks,
                   int64_t *correct) {
    const vhead_config *c = &hd->cfg;
    const char *fn = "vhead_forward";
    CHECK(a->hd == hd, "", "%s: activations were planned for another head", fn);
    int64_t D = c->depth, E = c->embed, K = c->codebook_size, C = c->code_dim, H = c->n_heads,
            F = c->ffn_dim;
    int64_t N = tensor_rows(h_img);
    CHECK(h_img->dtype == NN_F32 && tensor_cols(h_img) == c->d_in && N >= 1 && N <= a->max_positions, "",
          "%s: h_img '%s' must be f32 [N, %d] with 1 <= N <= %d", fn, h_img->name, c->d_in, a->max_positions);
    CHECK(codes->device == NN_CPU && (codes->dtype == NN_I32 || codes->dtype == NN_U16) &&
              tensor_rows(codes) == N && tensor_cols(codes) == D,
          "", "%s: codes '%s' must be i32 or u16 [%lld, %lld] on the CPU", fn, codes->name, (long long)N,
          (long long)D);
    CHECK(codebooks->dtype == NN_F32 && codebooks->ndim == 3 && codebooks->shape[0] == D &&
              codebooks->shape[1] == K && codebooks->shape[2] == C,
          "", "%s: codebooks '%s' must be f32 [%lld, %lld, %lld]", fn, codebooks->name, (long long)D,
          (long long)K, (long long)C);
    a->n = 0;
    a->state = VHEAD_EMPTY;
    int64_t DN = D * N;

    /* index bookkeeping: codes depth-major, and the two row permutations between the layouts */
    int32_t *cd = a->h_codes_dm->data, *ptm = a->h_perm_tm->data, *pdm = a->h_perm_dm->data;
    for (int64_t n = 0; n < N; n++)
        for (int64_t d = 0; d < D; d++) {
            int64_t v = codes->dtype == NN_I32 ? ((const int32_t *)codes->data)[n * D + d]
                                               : ((const uint16_t *)codes->data)[n * D + d];
            CHECK(v >= 0 && v < K, "the codes must come from a tokenizer with this codebook size",
                  "%s: code %lld at position %lld depth %lld is outside [0, %lld)", fn, (long long)v,
                  (long long)n, (long long)d, (long long)K);
            cd[d * N + n] = (int32_t)v;
            ptm[n * D + d] = (int32_t)(d * N + n); /* token-major row n*D+d <- depth-major row d*N+n */
            pdm[d * N + n] = (int32_t)(n * D + d);
        }
    tensor perm_tm = rows_view(a->perm_tm, 0, 1, DN), perm_dm = rows_view(a->perm_dm, 0, 1, DN);
    {
        tensor hc = rows_view(a->h_codes_dm, 0, 1, DN), dc = rows_view(a->codes_dm, 0, 1, DN);
        tensor ht = rows_view(a->h_perm_tm, 0, 1, DN), hd2 = rows_view(a->h_perm_dm, 0, 1, DN);
        op_transfer(&dc, &hc);
        op_transfer(&perm_tm, &ht);
        op_transfer(&perm_dm, &hd2);
    }

    /* depth token 0: head_in_proj(h_img) */
    tensor himg = rows_view(a->h_img, 0, N, c->d_in);
    op_copy(&himg, h_img);
    tensor in_pre = rows_view(a->in_pre, 0, N, E), in_h = rows_view(a->in_h, 0, N, E);
    tensor x0_tok0 = rows_view(a->xs[0], 0, N, E);
    mlp2_forward(&hd->head_in, &himg, &in_pre, &in_h, &x0_tok0);

    /* depth tokens 1..D-1: code_in_proj(sum of the codebook rows of the depths before) */
    if (D > 1) {
        tensor emb = rows_view(a->emb, 0, N, C);
        for (int64_t d = 0; d + 1 < D; d++) {
            tensor ids = rows_view(a->codes_dm, d, 1, N);
            tensor book = tensor_index0(codebooks, d);
            tensor cum_d = rows_view(a->cum, d * N, N, C);
            if (d == 0) {
                op_embedding(&cum_d, &ids, &book);
            } else {
                tensor cum_prev = rows_view(a->cum, (d - 1) * N, N, C);
                op_embedding(&emb, &ids, &book);
                op_add(&cum_d, &cum_prev, &emb);
            }
        }
        tensor cum = rows_view(a->cum, 0, (D - 1) * N, C);
        tensor x0_rest = rows_view(a->xs[0], N, (D - 1) * N, E);
        op_matmul(&x0_rest, &cum, hd->code_w->wc, hd->code_b->wc, NN_ACT_NONE, NULL);
    }

    /* depth transformer */
    float att_scale = 1.0f / sqrtf((float)(E / H));
    for (int l = 0; l < c->n_layers; l++) {
        const vhead_layer *L = &hd->layer[l];
        vhead_layer_acts *A = &a->la[l];
        tensor x = rows_view(a->xs[l], 0, DN, E), out = rows_view(a->xs[l + 1], 0, DN, E);
        tensor n1 = rows_view(a->scratch, 0, DN, E), rstd1 = rows_view(A->rstd1, 0, DN, 1);
        tensor n1t = rows_view(A->n1t, 0, DN, E);
        tensor q = view3(A->q, N, D, E), k = view3(A->k, N, D, E), v = view3(A->v, N, D, E);
        tensor ao = view3(A->ao, N, D, E), att = view3(A->att, N * H, D, D);
        tensor tmp = rows_view(a->scratch, 0, DN, E); /* n1 is consumed by then */
        tensor r = rows_view(A->r, 0, DN, E), rstd2 = rows_view(A->rstd2, 0, DN, 1);
        tensor h = rows_view(A->h, 0, DN, E);
        tensor wq = rows_view(L->in_w->wc, 0, E, E), wk = rows_view(L->in_w->wc, E, E, E),
               wv = rows_view(L->in_w->wc, 2 * E, E, E);
        tensor bq = rows_view(L->in_b->wc, 0, 1, E), bk = rows_view(L->in_b->wc, 1, 1, E),
               bv = rows_view(L->in_b->wc, 2, 1, E);

        op_rmsnorm(&n1, &x, L->norm1->wc, c->eps, &rstd1);
        op_gather_rows(&n1t, &n1, &perm_tm);
        op_matmul(&q, &n1t, &wq, &bq, NN_ACT_NONE, NULL);
        op_matmul(&k, &n1t, &wk, &bk, NN_ACT_NONE, NULL);
        op_matmul(&v, &n1t, &wv, &bv, NN_ACT_NONE, NULL);
        op_attention_seg(&ao, &q, &k, &v, (int)H, (int)H, att_scale, 1, NULL, &att, NN_ATT_KEEP);
        op_matmul(&tmp, &ao, L->out_w->wc, L->out_b->wc, NN_ACT_NONE, NULL);
        op_gather_rows(&r, &tmp, &perm_dm);
        op_add_rmsnorm(&r, &h, &r, &x, L->norm2->wc, c->eps, &rstd2);
        { /* the per-depth FFNs: depth-major rows [D, N, .], one batched GEMM per product */
            tensor h3 = view3(A->h, D, N, E), fpre3 = view3(A->fpre, D, N, F), fg3 = view3(A->fg, D, N, F),
                   out3 = view3(a->xs[l + 1], D, N, E);
            op_matmul_batched(&fg3, &h3, L->ffn_w1->wc, NN_ACT_GELU_ERF, &fpre3);
            op_matmul_batched(&out3, &fg3, L->ffn_w2->wc, NN_ACT_NONE, NULL);
        }
        op_add(&out, &out, &h);
    }

    /* final norm, heads */
    tensor xl = rows_view(a->xs[c->n_layers], 0, DN, E), y = rows_view(a->y, 0, DN, E);
    tensor rstdf = rows_view(a->rstdf, 0, DN, 1);
    op_rmsnorm(&y, &xl, hd->norm->wc, c->eps, &rstdf);
    for (int64_t d = 0; d < D; d++) {
        tensor yd = rows_view(a->y, d * N, N, E), lg = rows_view(a->logits, d * N, N, K);
        op_matmul(&lg, &yd, hd->head_w[d]->wc, hd->head_b[d]->wc, NN_ACT_NONE, NULL);
        if (correct) correct[d] = top1_hits(a, &lg, (const int32_t *)a->h_codes_dm->data + d * N);
        a->logit_view[d] = lg;
    }
    a->n = (int)N;
    a->state = VHEAD_LOGITS;
}

void vhead_loss(const vhead *hd, vhead_acts *a, float scale, double *loss_sum) {
    const char *fn = "vhead_loss";
    CHECK(a->hd == hd, "", "%s: activations were planned for another head", fn);
    CHECK(a->state == VHEAD_LOGITS, "", "%s: run vhead_forward first (once per loss)", fn);
    CHECK(loss_sum != NULL, "", "%s: loss_sum is required", fn);
    int64_t N = a->n, D = hd->cfg.depth, K = hd->cfg.codebook_size;
    for (int64_t d = 0; d < D; d++) {
        tensor lg = rows_view(a->logits, d * N, N, K), tg = rows_view(a->codes_dm, d, 1, N);
        int64_t count = 0;
        op_cross_entropy(&lg, &loss_sum[d], &count, &lg, &tg, scale); /* in place: the logits become dlogits */
        CHECK(count == N, "", "%s: %lld of %lld positions scored", fn, (long long)count, (long long)N);
    }
    a->state = VHEAD_DLOGITS;
}

void vhead_forward_loss(const vhead *hd, vhead_acts *a, const tensor *h_img, const tensor *codes,
                        const tensor *codebooks, float scale, double *loss_sum, int64_t *correct) {
    vhead_forward(hd, a, h_img, codes, codebooks, correct);
    vhead_loss(hd, a, scale, loss_sum);
}

const tensor *vhead_logits(const vhead_acts *a, int d) {
    CHECK(a->state == VHEAD_LOGITS, "", "vhead_logits: no forward has run since the last loss (which overwrites them)");
    CHECK(d >= 0 && d < a->hd->cfg.depth, "", "vhead_logits: depth %d outside 0..%d", d, a->hd->cfg.depth - 1);
    return &a->logit_view[d];
}

/* ---- backward --------------------------------------------------------------------------------- */

void vhead_backward(const vhead *hd, vhead_acts *a, tensor *dh_img) {
    const vhead_config *c = &hd->cfg;
    const char *fn = "vhead_backward";
    CHECK(a->hd == hd, "", "%s: activations were planned for another head", fn);
    CHECK(a->state == VHEAD_DLOGITS, "", "%s: run vhead_forward and vhead_loss first", fn);
    int any = 0;
    for (int i = 0; i < hd->n_all; i++) any |= hd->all[i]->g != NULL;
    if (!any && !dh_img) return;
    int64_t N = a->n, D = c->depth, E = c->embed, K = c->codebook_size, C = c->code_dim, H = c->n_heads,
            F = c->ffn_dim, DN = D * N;
    if (dh_img)
        CHECK(dh_img->dtype == NN_F32 && tensor_rows(dh_img) == N && tensor_cols(dh_img) == c->d_in, "",
              "%s: dh_img '%s' must be f32 [%lld, %d]", fn, dh_img->name, (long long)N, c->d_in);
    tensor gb[8];
    tensor perm_tm = rows_view(a->perm_tm, 0, 1, DN), perm_dm = rows_view(a->perm_dm, 0, 1, DN);
    tensor cur = rows_view(a->dA, 0, DN, E), oth = rows_view(a->dB, 0, DN, E);

    /* heads: dy_d = dlogits_d · W_d, then the final norm */
    for (int64_t d = 0; d < D; d++) {
        tensor dl = rows_view(a->logits, d * N, N, K), yd = rows_view(a->y, d * N, N, E),
               dyd = rows_view(a->dB, d * N, N, E);
        op_matmul_backward(&dyd, opt(hd->head_w[d]->g, &gb[0]), opt(hd->head_b[d]->g, &gb[1]), &dl, &yd,
                           hd->head_w[d]->wc, NN_ACT_NONE, NULL, 0);
    }
    {
        tensor xl = rows_view(a->xs[c->n_layers], 0, DN, E), rstdf = rows_view(a->rstdf, 0, DN, 1);
        op_rmsnorm_backward(&cur, opt(hd->norm->g, &gb[0]), &oth, &xl, hd->norm->wc, &rstdf, 0);
    }

    float att_scale = 1.0f / sqrtf((float)(E / H));
    for (int l = c->n_layers - 1; l >= 0; l--) {
        /* cur = d out (layer output); oth becomes d x (layer input) */
        const vhead_layer *L = &hd->layer[l];
        vhead_layer_acts *A = &a->la[l];
        tensor x = rows_view(a->xs[l], 0, DN, E);
        tensor r = rows_view(A->r, 0, DN, E), rstd2 = rows_view(A->rstd2, 0, DN, 1);
        tensor rstd1 = rows_view(A->rstd1, 0, DN, 1), n1t = rows_view(A->n1t, 0, DN, E);
        tensor q = view3(A->q, N, D, E), k = view3(A->k, N, D, E), v = view3(A->v, N, D, E);
        tensor ao = view3(A->ao, N, D, E), att = view3(A->att, N * H, D, D);
        tensor dq = view3(a->dq, N, D, E), dk = view3(a->dk, N, D, E), dv = view3(a->dv, N, D, E);
        tensor dt1 = view3(a->dtm1, N, D, E), dt2 = view3(a->dtm2, N, D, E);
        tensor sc = rows_view(a->att_scratch, 0, D, D);

        /* out = h + FFN_d(h): dh = dout + FFN backward */
        op_copy(&oth, &cur);
        {
            tensor dout3 = view3(&cur, D, N, E), dh3 = view3(&oth, D, N, E), h3 = view3(A->h, D, N, E),
                   fpre3 = view3(A->fpre, D, N, F), fg3 = view3(A->fg, D, N, F), dg3 = view3(a->dg, D, N, F);
            op_matmul_batched_backward(&dg3, opt(L->ffn_w2->g, &gb[1]), &dout3, &fg3, L->ffn_w2->wc, NN_ACT_NONE,
                                       NULL, 0);
            op_matmul_batched_backward(&dh3, opt(L->ffn_w1->g, &gb[0]), &dg3, &h3, L->ffn_w1->wc, NN_ACT_GELU_ERF,
                                       &fpre3, 1);
        }
        /* h = norm2(r): dr (in place) */
        op_rmsnorm_backward(&oth, opt(L->norm2->g, &gb[0]), &oth, &r, L->norm2->wc, &rstd2, 0);
        /* r = x + attn(norm1(x)): attention branch in token-major order */
        op_gather_rows(&dt1, &oth, &perm_tm);
        op_matmul_backward(&dt2, opt(L->out_w->g, &gb[0]), opt(L->out_b->g, &gb[1]), &dt1, &ao, L->out_w->wc,
                           NN_ACT_NONE, NULL, 0);
        op_attention_backward(&dq, &dk, &dv, &dt2, &q, &k, &v, &att, (int)H, (int)H, att_scale, &sc);
        tensor *dqkv[3] = {&dq, &dk, &dv};
        for (int j = 0; j < 3; j++) {
            tensor w = rows_view(L->in_w->wc, j * E, E, E);
            tensor *gw = NULL, *gbias = NULL;
            if (L->in_w->g) gb[2] = rows_view(L->in_w->g, j * E, E, E), gw = &gb[2];
            if (L->in_b->g) gb[3] = rows_view(L->in_b->g, j, 1, E), gbias = &gb[3];
            op_matmul_backward(&dt1, gw, gbias, dqkv[j], &n1t, &w, NN_ACT_NONE, NULL, j > 0);
        }
        tensor dt1_rows = rows_view(a->dtm1, 0, DN, E);
        op_gather_rows(&cur, &dt1_rows, &perm_dm);                 /* d norm1(x), depth-major */
        op_rmsnorm_backward(&oth, opt(L->norm1->g, &gb[0]), &cur, &x, L->norm1->wc, &rstd1, 1);
        tensor t = cur;
        cur = oth;
        oth = t;
    }

    /* cur = d stream 0: token 0 from head_in_proj, tokens 1.. from code_in_proj */
    if (D > 1 && (hd->code_w->g || hd->code_b->g)) {
        tensor cum = rows_view(a->cum, 0, (D - 1) * N, C);
        tensor drest = rows_view(&cur, N, (D - 1) * N, E);
        op_matmul_backward(NULL, opt(hd->code_w->g, &gb[0]), opt(hd->code_b->g, &gb[1]), &drest, &cum,
                           hd->code_w->wc, NN_ACT_NONE, NULL, 0);
    }
    tensor dtok0 = rows_view(&cur, 0, N, E);
    tensor himg = rows_view(a->h_img, 0, N, c->d_in), in_pre = rows_view(a->in_pre, 0, N, E),
           in_h = rows_view(a->in_h, 0, N, E), dhin = rows_view(a->dh_in, 0, N, E);
    mlp2_backward(&hd->head_in, &dtok0, &himg, &in_pre, &in_h, &dhin, dh_img, 0);
}
