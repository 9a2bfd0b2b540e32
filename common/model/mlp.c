#include "model/mlp.h"

#include <math.h>

#include "base/error.h"

void mlp2_declare(mlp2 *m, param_set *ps, int in, int hidden, int out, const char *prefix) {
    CHECK(in > 0 && hidden > 0 && out > 0, "", "mlp2 '%s': sizes %d -> %d -> %d must be positive", prefix,
          in, hidden, out);
    m->in = in;
    m->hidden = hidden;
    m->out = out;
    m->w1 = param_add(ps, 2, (int64_t[]){hidden, in}, 1, PARAM_INIT_NORMAL, 1.0f / sqrtf((float)in),
                      "%s0.weight", prefix);
    m->b1 = param_add(ps, 1, (int64_t[]){hidden}, 0, PARAM_INIT_ZERO, 0.0f, "%s0.bias", prefix);
    m->w2 = param_add(ps, 2, (int64_t[]){out, hidden}, 1, PARAM_INIT_NORMAL, 1.0f / sqrtf((float)hidden),
                      "%s2.weight", prefix);
    m->b2 = param_add(ps, 1, (int64_t[]){out}, 0, PARAM_INIT_ZERO, 0.0f, "%s2.bias", prefix);
}

void mlp2_forward(const mlp2 *m, const tensor *x, tensor *pre, tensor *h, tensor *y) {
    CHECK(pre != NULL && h != NULL && y != NULL, "", "mlp2_forward: pre, h and y are required");
    op_matmul(h, x, m->w1->wc, m->b1->wc, NN_ACT_GELU_ERF, pre);
    op_matmul(y, h, m->w2->wc, m->b2->wc, NN_ACT_NONE, NULL);
}

void mlp2_backward(const mlp2 *m, tensor *dy, const tensor *x, const tensor *pre, const tensor *h,
                   tensor *dh_scratch, tensor *dx, int accumulate_dx) {
    int first_trains = m->w1->g || m->b1->g;
    int second_trains = m->w2->g || m->b2->g;
    int need_dh = first_trains || dx != NULL;
    if (!need_dh && !second_trains) return;
    CHECK(dh_scratch != NULL || !need_dh, "", "mlp2_backward: dh_scratch is required");
    /* dh = dy · W2 (only when something below needs it); dW2 += dy^T h, db2 += sum dy */
    op_matmul_backward(need_dh ? dh_scratch : NULL, m->w2->g, m->b2->g, dy, h, m->w2->wc, NN_ACT_NONE,
                       NULL, 0);
    if (!need_dh) return;
    /* through the GELU (dh_scratch becomes d pre), then dx = dpre · W1, dW1 += dpre^T x */
    op_matmul_backward(dx, m->w1->g, m->b1->g, dh_scratch, x, m->w1->wc, NN_ACT_GELU_ERF, pre, accumulate_dx);
}
