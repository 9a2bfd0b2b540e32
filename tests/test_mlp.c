/* test_mlp.c — the two-layer MLP (model/mlp.h):
 *  - mm_projector forward on the golden SigLIP tap features equals PyTorch's image_embeds
 *    (tests/golden/train/, within 2e-6 relative), every output element written;
 *  - backward against central finite differences of a double-precision forward on a small random
 *    case (dW1, db1, dW2, db2, dx within 2e-6 relative), dx accumulate and NULL, frozen parameters
 *    untouched.
 */
#include <math.h>
#include <stdint.h>

#include "io/safetensors.h"
#include "model/mlp.h"
#include "model/params.h"
#include "nn/ops.h"
#include "test.h"

#define GOLD ASVR_GOLDEN "/train"

static float *get_f32(const safetensors *st, const char *name, int64_t *numel) {
    const st_tensor *t = safetensors_find(st, name);
    asvr_error err = {{0}};
    float *p = t ? malloc(sizeof(float) * (size_t)t->numel) : NULL;
    if (!t || !p || st_tensor_to_f32(t, p, &err) < 0) {
        fprintf(stderr, "fixture tensor '%s': %s\n", name, t ? err.msg : "missing");
        exit(1);
    }
    *numel = t->numel;
    return p;
}

static double relerr_fd(const float *a, const double *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += b[i] * b[i];
    }
    return sqrt(num / den);
}

/* sum_{m,o} R[m,o] * mlp(x)[m,o] in double, from the float parameters with one entry perturbed. */
typedef struct { int M, in, hid, out; } dims;
static double loss_dbl(dims z, const float *x, const float *w1, const float *b1, const float *w2,
                       const float *b2, const float *R, const float *which, int64_t idx, double delta) {
#define V(arr, i) ((double)(arr)[i] + ((arr) == which && (i) == idx ? delta : 0.0))
    double L = 0;
    for (int m = 0; m < z.M; m++) {
        double h[64];
        for (int j = 0; j < z.hid; j++) {
            double s = V(b1, j);
            for (int k = 0; k < z.in; k++) s += V(w1, (int64_t)j * z.in + k) * V(x, (int64_t)m * z.in + k);
            h[j] = 0.5 * s * (1.0 + erf(s / sqrt(2.0)));
        }
        for (int o = 0; o < z.out; o++) {
            double s = V(b2, o);
            for (int j = 0; j < z.hid; j++) s += V(w2, (int64_t)o * z.hid + j) * h[j];
            L += (double)R[m * z.out + o] * s;
        }
    }
#undef V
    return L;
}

static void fill_rand(float *p, int64_t n, uint64_t *s, float amp) {
    for (int64_t i = 0; i < n; i++) {
        *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
        p[i] = amp * (float)((double)(*s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
}

int main(void) {
    asvr_error err = {{0}};
    /* ---- mm_projector vs PyTorch ---- */
    {
        safetensors *init = NULL, *fwd = NULL;
        if (safetensors_open(GOLD "/model_init.safetensors", &init, &err) < 0 ||
            safetensors_open(GOLD "/forward_default.safetensors", &fwd, &err) < 0) {
            fprintf(stderr, "%s\n(regenerate with tools/gen_train_fixtures.py)\n", err.msg);
            return 1;
        }
        int64_t nf, ne;
        float *feat = get_f32(fwd, "vision_features", &nf);
        float *want = get_f32(fwd, "image_embeds", &ne);
        const st_tensor *w1 = safetensors_find(init, "mm_projector.0.weight");
        T_CHECK(w1 && w1->ndim == 2, "mm_projector.0.weight");
        int C = (int)w1->shape[1], d = (int)w1->shape[0];
        int64_t M = nf / C;
        T_EQ_INT(ne, M * d);
        param_set ps;
        param_set_init(&ps, "mm_projector test");
        mlp2 proj;
        mlp2_declare(&proj, &ps, C, d, d, "mm_projector.");
        param_set_commit(&ps);
        T_EQ_INT(param_set_load(&ps, init, "", &err), 0);
        float *buf = malloc(sizeof(float) * (size_t)(3 * M * d));
        tensor x = tensor_make("vision_features", NN_F32, NN_CPU, 2, (int64_t[]){M, C}, feat);
        tensor pre = tensor_make("pre", NN_F32, NN_CPU, 2, (int64_t[]){M, d}, buf);
        tensor h = tensor_make("hidden", NN_F32, NN_CPU, 2, (int64_t[]){M, d}, buf + M * d);
        tensor y = tensor_make("image_embeds", NN_F32, NN_CPU, 2, (int64_t[]){M, d}, buf + 2 * M * d);
        op_fill(&pre, NAN);
        op_fill(&h, NAN);
        op_fill(&y, NAN);
        mlp2_forward(&proj, &x, &pre, &h, &y);
        double num = 0, den = 0;
        int nonfinite = 0;
        for (int64_t i = 0; i < 3 * M * d; i++) nonfinite += !isfinite(buf[i]);
        const float *yy = y.data;
        for (int64_t i = 0; i < M * d; i++) {
            double e = (double)yy[i] - want[i];
            num += e * e;
            den += (double)want[i] * want[i];
        }
        double e = sqrt(num / den);
        printf("mm_projector forward: relative error %.3g over %lld values\n", e, (long long)(M * d));
        T_EQ_INT(nonfinite, 0);
        T_CHECK(e < 2e-6, "mm_projector relative error %.3g", e); /* measured 1.6e-7 (f32 vs the PyTorch golden) */
        free(buf);
        free(feat);
        free(want);
        param_set_free(&ps);
        safetensors_close(init);
        safetensors_close(fwd);
    }

    /* ---- backward vs central differences (double) ---- */
    {
        dims z = {.M = 5, .in = 6, .hid = 9, .out = 4};
        param_set ps;
        param_set_init(&ps, "mlp2 grad check");
        mlp2 m;
        mlp2_declare(&m, &ps, z.in, z.hid, z.out, "mlp.");
        param_set_commit(&ps);
        uint64_t s = 99;
        fill_rand(m.w1->w->data, tensor_numel(m.w1->w), &s, 0.6f);
        fill_rand(m.b1->w->data, tensor_numel(m.b1->w), &s, 0.3f);
        fill_rand(m.w2->w->data, tensor_numel(m.w2->w), &s, 0.6f);
        fill_rand(m.b2->w->data, tensor_numel(m.b2->w), &s, 0.3f);
        float xb[5 * 6], R[5 * 4], pre_b[5 * 9], h_b[5 * 9], y_b[5 * 4], dhs[5 * 9], dx_b[5 * 6];
        fill_rand(xb, 30, &s, 1.5f);
        fill_rand(R, 20, &s, 1.0f);
        tensor x = tensor_make("x", NN_F32, NN_CPU, 2, (int64_t[]){z.M, z.in}, xb);
        tensor pre = tensor_make("pre", NN_F32, NN_CPU, 2, (int64_t[]){z.M, z.hid}, pre_b);
        tensor h = tensor_make("h", NN_F32, NN_CPU, 2, (int64_t[]){z.M, z.hid}, h_b);
        tensor y = tensor_make("y", NN_F32, NN_CPU, 2, (int64_t[]){z.M, z.out}, y_b);
        tensor dy = tensor_make("dy", NN_F32, NN_CPU, 2, (int64_t[]){z.M, z.out}, R);
        tensor dh = tensor_make("dh", NN_F32, NN_CPU, 2, (int64_t[]){z.M, z.hid}, dhs);
        tensor dx = tensor_make("dx", NN_F32, NN_CPU, 2, (int64_t[]){z.M, z.in}, dx_b);
        mlp2_forward(&m, &x, &pre, &h, &y);
        op_fill(&dx, NAN);
        param_set_zero_grads(&ps);
        float R_copy[20];
        memcpy(R_copy, R, sizeof R);
        mlp2_backward(&m, &dy, &x, &pre, &h, &dh, &dx, 0);
        T_CHECK(memcmp(R, R_copy, sizeof R) == 0, "mlp2_backward changed dy");

        const float *W1 = m.w1->w->data, *B1 = m.b1->w->data, *W2 = m.w2->w->data, *B2 = m.b2->w->data;
        struct { const char *name; const float *val; const float *grad; int64_t n; } chk[] = {
            {"dW1", W1, m.w1->g->data, tensor_numel(m.w1->w)}, {"db1", B1, m.b1->g->data, tensor_numel(m.b1->w)},
            {"dW2", W2, m.w2->g->data, tensor_numel(m.w2->w)}, {"db2", B2, m.b2->g->data, tensor_numel(m.b2->w)},
            {"dx", xb, dx_b, 30}};
        const double eps = 1e-4;
        for (int c = 0; c < 5; c++) {
            double *fd = malloc(sizeof(double) * (size_t)chk[c].n);
            for (int64_t i = 0; i < chk[c].n; i++)
                fd[i] = (loss_dbl(z, xb, W1, B1, W2, B2, R, chk[c].val, i, eps) -
                         loss_dbl(z, xb, W1, B1, W2, B2, R, chk[c].val, i, -eps)) / (2 * eps);
            double e = relerr_fd(chk[c].grad, fd, chk[c].n);
            printf("mlp2 backward %s vs central differences: relative error %.3g\n", chk[c].name, e);
            T_CHECK(e < 2e-6, "%s relative error %.3g", chk[c].name, e); /* measured 1.1e-7 (vs double differences) */
            free(fd);
        }

        /* accumulate_dx adds; dx NULL still gives the parameter gradients (now twice) */
        float dx1[30], gw1[9 * 6];
        memcpy(dx1, dx_b, sizeof dx1);
        memcpy(gw1, m.w1->g->data, sizeof gw1);
        mlp2_backward(&m, &dy, &x, &pre, &h, &dh, &dx, 1);
        int ok = 1;
        /* measured 0 (exact here); 1e-6 is about ten f32 roundings */
        for (int i = 0; i < 30; i++) ok &= fabsf(dx_b[i] - 2 * dx1[i]) <= 1e-6f * (1 + fabsf(dx1[i]));
        T_CHECK(ok, "accumulate_dx does not add");
        mlp2_backward(&m, &dy, &x, &pre, &h, &dh, NULL, 0);
        const float *g = m.w1->g->data;
        ok = 1;
        /* measured 0 (exact here); 1e-6 is about ten f32 roundings */
        for (int i = 0; i < 54; i++) ok &= fabsf(g[i] - 3 * gw1[i]) <= 1e-6f * (1 + fabsf(gw1[i]));
        T_CHECK(ok, "parameter gradients do not accumulate");

        /* frozen: dx identical, the gradients of another parameter untouched */
        param_set fs;
        param_set_init(&fs, "frozen mlp2");
        mlp2 f;
        mlp2_declare(&f, &fs, z.in, z.hid, z.out, "mlp.");
        int64_t four = 4;
        param *other = param_add(&fs, 1, &four, 0, PARAM_INIT_ZERO, 0.0f, "other");
        param_set_trainable(&fs, "mlp.", 0);
        param_set_commit(&fs);
        T_CHECK(!f.w1->g && !f.b1->g && !f.w2->g && !f.b2->g, "frozen parameters have gradients");
        memcpy(f.w1->w->data, W1, tensor_nbytes(f.w1->w));
        memcpy(f.b1->w->data, B1, tensor_nbytes(f.b1->w));
        memcpy(f.w2->w->data, W2, tensor_nbytes(f.w2->w));
        memcpy(f.b2->w->data, B2, tensor_nbytes(f.b2->w));
        op_fill(other->g, 5.0f);
        float dxf[30];
        tensor tdxf = tensor_make("dx_frozen", NN_F32, NN_CPU, 2, (int64_t[]){z.M, z.in}, dxf);
        op_fill(&tdxf, NAN);
        mlp2_forward(&f, &x, &pre, &h, &y);
        mlp2_backward(&f, &dy, &x, &pre, &h, &dh, &tdxf, 0);
        T_CHECK(memcmp(dxf, dx1, sizeof dxf) == 0, "frozen: dx differs");
        mlp2_backward(&f, &dy, &x, &pre, &h, NULL, NULL, 0); /* nothing wanted: no work, no scratch */
        const float *og = other->g->data;
        for (int i = 0; i < 4; i++) T_CHECK(og[i] == 5.0f, "another parameter's gradient was touched");
        param_set_free(&fs);
        param_set_free(&ps);
    }
    return t_done();
}
