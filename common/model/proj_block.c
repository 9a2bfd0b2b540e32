#include "model/proj_block.h"

#include <stdlib.h>

#include "model/weights.h"
#include "nn/ops.h"

struct proj_block {
    int in, out, groups;
    float eps;
    nn_arena *weights;
    tensor *n1_w, *n1_b, *c1_w, *c1_b, *n2_w, *n2_b, *c2_w, *c2_b, *sc_w, *sc_b;
    tensor c1_mat, sc_mat; /* the 1x1 conv weights viewed as [Cout, Cin] matrices */
};

struct proj_block_acts {
    const proj_block *m;
    int max_batch, H, W;
    nn_arena *arena;
    tensor *xn, *h, *cols, *sc;
};

int proj_block_load(const safetensors *st, const char *prefix, int in, int out, int groups, float eps,
                    proj_block **res, asvr_error *err) {
    return proj_block_load_ex(st, prefix, in, out, groups, eps, NN_CPU, NN_F32, res, err);
}

int proj_block_load_ex(const safetensors *st, const char *prefix, int in, int out, int groups, float eps,
                       nn_device dev, nn_dtype dtype, proj_block **res, asvr_error *err) {
    *res = NULL;
    if (in <= 0 || out <= 0 || groups <= 0 || in % groups || out % groups)
        return asvr_err_set(err, "projection block %d -> %d channels: both must be positive multiples of %d "
                            "GroupNorm groups", in, out, groups);
    if (!(eps > 0.0f)) return asvr_err_set(err, "projection block GroupNorm eps %g must be > 0", (double)eps);
    char key[256];
    snprintf(key, sizeof key, "%sconv_shortcut.weight", prefix);
    if (safetensors_find(st, key))
        return asvr_err_set(err, "'%s' is a 3x3 conv shortcut; only the 1x1 nin_shortcut (DualToken's) is supported", key);
    int64_t I = in, O = out;
    proj_block *m = asvr_calloc(1, sizeof *m, "projection block");
    m->in = in, m->out = out, m->groups = groups, m->eps = eps;
    weights_loader wl;
    weights_loader_init(&wl, "projection block weights", st, prefix);
    weights_loader_target(&wl, dev, dtype);
    m->n1_w = weights_want(&wl, 1, (int64_t[]){I}, "norm1.weight");
    m->n1_b = weights_want(&wl, 1, (int64_t[]){I}, "norm1.bias");
    m->c1_w = weights_want(&wl, 4, (int64_t[]){O, I, 1, 1}, "conv1.weight");
    m->c1_b = weights_want(&wl, 1, (int64_t[]){O}, "conv1.bias");
    m->n2_w = weights_want(&wl, 1, (int64_t[]){O}, "norm2.weight");
    m->n2_b = weights_want(&wl, 1, (int64_t[]){O}, "norm2.bias");
    m->c2_w = weights_want(&wl, 4, (int64_t[]){O, O, 3, 3}, "conv2.weight");
    m->c2_b = weights_want(&wl, 1, (int64_t[]){O}, "conv2.bias");
    if (in != out) {
        m->sc_w = weights_want(&wl, 4, (int64_t[]){O, I, 1, 1}, "nin_shortcut.weight");
        m->sc_b = weights_want(&wl, 1, (int64_t[]){O}, "nin_shortcut.bias");
    }
    int rc = weights_load(&wl, err);
    m->weights = wl.arena;
    if (rc < 0) {
        proj_block_free(m);
        return asvr_err_prefix(err, "loading the projection block (%d -> %d channels)", in, out);
    }
    m->c1_mat = tensor_make("conv1.weight as [out, in]", m->c1_w->dtype, m->c1_w->device, 2, (int64_t[]){O, I},
                            m->c1_w->data);
    if (m->sc_w)
        m->sc_mat = tensor_make("nin_shortcut.weight as [out, in]", m->sc_w->dtype, m->sc_w->device, 2,
                                (int64_t[]){O, I}, m->sc_w->data);
    *res = m;
    return 0;
}

void proj_block_free(proj_block *m) {
    if (!m) return;
    nn_arena_free(m->weights);
    free(m);
}

int proj_block_in(const proj_block *m) { return m->in; }
int proj_block_out(const proj_block *m) { return m->out; }
void proj_block_print_plan(const proj_block *m, FILE *f) { nn_arena_print_plan(m->weights, f); }

proj_block_acts *proj_block_acts_new(const proj_block *m, int max_batch, int H, int W) {
    CHECK(max_batch >= 1 && H >= 1 && W >= 1, "", "projection block activations for batch %d, grid %d x %d",
          max_batch, H, W);
    int64_t B = max_batch, P = (int64_t)H * W, I = m->in, O = m->out;
    proj_block_acts *a = asvr_calloc(1, sizeof *a, "projection block activations");
    a->m = m, a->max_batch = max_batch, a->H = H, a->W = W;
    nn_dtype dt = m->c1_w->dtype; /* activations (and the im2col scratch) in the weights' dtype */
    a->arena = nn_arena_new("projection block activations", m->c1_w->device);
    a->xn = nn_arena_add(a->arena, "norm1_out", dt, 3, (int64_t[]){B, P, I});
    a->h = nn_arena_add(a->arena, "conv1_out", dt, 3, (int64_t[]){B, P, O});
    a->cols = nn_arena_add(a->arena, "conv2_cols", dt, 2, (int64_t[]){P, O * 9});
    if (m->sc_w) a->sc = nn_arena_add(a->arena, "shortcut_out", dt, 3, (int64_t[]){B, P, O});
    nn_arena_commit(a->arena);
    return a;
}

void proj_block_acts_print_plan(const proj_block_acts *a, FILE *f) { nn_arena_print_plan(a->arena, f); }

void proj_block_acts_free(proj_block_acts *a) {
    if (!a) return;
    nn_arena_free(a->arena);
    free(a);
}

void proj_block_forward(const proj_block *m, proj_block_acts *a, const tensor *x, tensor *y) {
    CHECK(a->m == m, "", "proj_block_forward: activations were planned for another block");
    int64_t P = (int64_t)a->H * a->W;
    CHECK(x->ndim == 3 && x->shape[0] >= 1 && x->shape[0] <= a->max_batch && x->shape[1] == P && x->shape[2] == m->in,
          "", "proj_block_forward: x '%s' must be [B <= %d, %lld, %d]", x->name, a->max_batch, (long long)P, m->in);
    int64_t B = x->shape[0];
    CHECK(y->ndim == 3 && y->shape[0] == B && y->shape[1] == P && y->shape[2] == m->out, "",
          "proj_block_forward: y '%s' must be [%lld, %lld, %d]", y->name, (long long)B, (long long)P, m->out);
    tensor xn = tensor_head0(a->xn, B), h = tensor_head0(a->h, B);
    op_groupnorm(&xn, x, m->n1_w, m->n1_b, m->groups, m->eps);
    op_silu(&xn, &xn);
    op_matmul(&h, &xn, &m->c1_mat, m->c1_b, NN_ACT_NONE, NULL);
    op_groupnorm(&h, &h, m->n2_w, m->n2_b, m->groups, m->eps);
    op_silu(&h, &h);
    op_conv2d_same(y, &h, m->c2_w, m->c2_b, a->H, a->W, a->cols);
    if (m->sc_w) {
        tensor sc = tensor_head0(a->sc, B);
        op_matmul(&sc, x, &m->sc_mat, m->sc_b, NN_ACT_NONE, NULL);
        op_add(y, y, &sc);
    } else {
        op_add(y, y, x);
    }
}
