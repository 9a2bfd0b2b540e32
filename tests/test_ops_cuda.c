/* test_ops_cuda.c — every CUDA op against the CPU op on the same seeded random inputs:
 * ||cuda - cpu|| / ||cpu|| < 5e-6 with f32 storage (GEMMs may use TF32-free fp32 compute) and < 1e-2
 * with bf16 storage; codes of the VQ step equal (f32), and of the fused VQ kernel too. The
 * convolutional-block ops (GroupNorm, SiLU, conv2d same) write into NaN-filled outputs, so an element
 * left unwritten fails. Without a CUDA build or a visible device the test reports itself skipped.
 */
#include <math.h>
#include <stdint.h>

#include "nn/ops.h"
#include "nn/tensor.h"
#include "test.h"
#ifdef ASVR_HAVE_CUDA
#include "nn/cuda/cuda_host.h"

static uint64_t rng = 0x2545F4914F6CDD1DULL;
static float frand(void) { return t_frand(&rng); }

#define MAXT 256
static void *owned[MAXT];
static int n_owned;

static tensor host(const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3, float scale) {
    int64_t sh[4] = {d0, d1, d2, d3};
    tensor t = tensor_make(name, NN_F32, NN_CPU, ndim, sh, NULL);
    t.data = malloc(tensor_nbytes(&t));
    owned[n_owned++] = t.data;
    for (int64_t i = 0; i < tensor_numel(&t); i++) ((float *)t.data)[i] = scale * frand();
    return t;
}
static tensor dev(const tensor *h, nn_dtype dt) {
    tensor t = tensor_make(h->name, dt, NN_CUDA, h->ndim, h->shape, NULL);
    t.data = nn_cuda_malloc(tensor_nbytes(&t), h->name);
    nn_cuda_upload(&t, h);
    return t;
}
static double cmp(const tensor *d, const tensor *h) {
    tensor back = *h;
    back.data = malloc(tensor_nbytes(h));
    nn_cuda_download(&back, d);
    double num = 0, den = 0;
    for (int64_t i = 0; i < tensor_numel(h); i++) {
        double a = ((float *)back.data)[i], b = ((float *)h->data)[i];
        num += (a - b) * (a - b), den += b * b;
    }
    free(back.data);
    nn_cuda_free(d->data);
    return isfinite(num) ? sqrt(num / den) : INFINITY;
}
static void release(void) {
    for (int i = 0; i < n_owned; i++) free(owned[i]);
    n_owned = 0;
}

static void run(nn_dtype dt) {
    /* measured on the stand-in: f32 4.2e-7 (conv2d_same; the element-wise ops 0), bf16 3.5e-3 (the f32
     * inputs' rounding to bf16 alone is ~1e-3 per op: the bf16 bound stays) */
    double tol = dt == NN_BF16 ? 1e-2 : 5e-6;
    const char *dn = nn_dtype_name(dt);
    { /* matmul with bias + gelu, and pre */
        tensor x = host("x", 2, 33, 80, 0, 0, 1), w = host("w", 2, 45, 80, 0, 0, 0.2f), b = host("b", 1, 45, 0, 0, 0, 0.5f);
        tensor y = host("y", 2, 33, 45, 0, 0, 1), pre = host("pre", 2, 33, 45, 0, 0, 1);
        tensor dx = dev(&x, dt), dw = dev(&w, dt), db = dev(&b, dt), dy = dev(&y, dt), dp = dev(&pre, dt);
        op_matmul(&y, &x, &w, &b, NN_ACT_GELU_TANH, &pre);
        op_matmul(&dy, &dx, &dw, &db, NN_ACT_GELU_TANH, &dp);
        double e1 = cmp(&dy, &y), e2 = cmp(&dp, &pre);
        T_CHECK(e1 < tol && e2 < tol, "%s matmul %.3g pre %.3g", dn, e1, e2);
        nn_cuda_free(dx.data), nn_cuda_free(dw.data), nn_cuda_free(db.data);
    }
    { /* gelu erf, add, layernorm, rmsnorm */
        tensor x = host("x", 2, 17, 300, 0, 0, 3), z = host("z", 2, 17, 300, 0, 0, 1), y = host("y", 2, 17, 300, 0, 0, 1);
        tensor w = host("w", 1, 300, 0, 0, 0, 1), b = host("b", 1, 300, 0, 0, 0, 1);
        tensor dx = dev(&x, dt), dz = dev(&z, dt), dw = dev(&w, dt), db = dev(&b, dt), dy = dev(&y, dt);
        op_gelu(&y, &x, NN_ACT_GELU_ERF), op_gelu(&dy, &dx, NN_ACT_GELU_ERF);
        double e = cmp(&dy, &y);
        T_CHECK(e < tol, "%s gelu %.3g", dn, e);
        dy = dev(&y, dt);
        op_add(&y, &x, &z), op_add(&dy, &dx, &dz);
        e = cmp(&dy, &y);
        T_CHECK(e < tol, "%s add %.3g", dn, e);
        dy = dev(&y, dt);
        op_layernorm(&y, &x, &w, &b, 1e-6f, NULL, NULL), op_layernorm(&dy, &dx, &dw, &db, 1e-6f, NULL, NULL);
        e = cmp(&dy, &y);
        T_CHECK(e < tol, "%s layernorm %.3g", dn, e);
        dy = dev(&y, dt);
        op_rmsnorm(&y, &x, &w, 1e-5f, NULL), op_rmsnorm(&dy, &dx, &dw, 1e-5f, NULL);
        e = cmp(&dy, &y);
        T_CHECK(e < tol, "%s rmsnorm %.3g", dn, e);
        nn_cuda_free(dx.data), nn_cuda_free(dz.data), nn_cuda_free(dw.data), nn_cuda_free(db.data);
    }
    for (int causal = 0; causal < 2; causal++) { /* attention, GQA when causal */
        int H = 4, Hkv = causal ? 2 : 4, Dh = 16, T = 37, B = 2;
        tensor q = host("q", 3, B, T, H * Dh, 0, 1), k = host("k", 3, B, T, Hkv * Dh, 0, 1),
               v = host("v", 3, B, T, Hkv * Dh, 0, 1), o = host("o", 3, B, T, H * Dh, 0, 1),
               att = host("att", 4, B, H, T, T, 1);
        tensor dq = dev(&q, dt), dk = dev(&k, dt), dv = dev(&v, dt), dO = dev(&o, dt), da = dev(&att, NN_F32);
        op_attention(&o, &q, &k, &v, H, Hkv, 0.25f, causal, &att, NN_ATT_KEEP);
        op_attention(&dO, &dq, &dk, &dv, H, Hkv, 0.25f, causal, &da, NN_ATT_KEEP);
        double e1 = cmp(&dO, &o), e2 = cmp(&da, &att);
        T_CHECK(e1 < tol && e2 < tol, "%s attention causal=%d out %.3g probs %.3g (batched GEMMs)", dn, causal, e1, e2);
        /* with only a T x T scratch: the one-block-per-row kernel */
        tensor sc = host("scratch", 2, T, T, 0, 0, 1), dsc = dev(&sc, NN_F32);
        tensor dO2 = dev(&o, dt);
        op_fill(&dO2, NAN);
        op_attention(&dO2, &dq, &dk, &dv, H, Hkv, 0.25f, causal, &dsc, NN_ATT_SCRATCH);
        double e3 = cmp(&dO2, &o);
        nn_cuda_free(dsc.data);
        T_CHECK(e3 < tol, "%s attention causal=%d out %.3g (row kernel, scratch only)", dn, causal, e3);
        nn_cuda_free(dq.data), nn_cuda_free(dk.data), nn_cuda_free(dv.data);
    }
    { /* patch embedding on a size that is not a multiple of the patch */
        int B = 2, S = 32, p = 14, NP = (S / p) * (S / p), C = 24;
        tensor img = host("img", 4, B, 3, S, S, 1), w = host("w", 4, C, 3, p, p, 0.1f), b = host("b", 1, C, 0, 0, 0, 0.5f);
        tensor y = host("y", 3, B, NP, C, 0, 1), cols = host("cols", 2, B * NP, 3 * p * p, 0, 0, 1);
        tensor di = dev(&img, dt), dw = dev(&w, dt), db = dev(&b, dt), dy = dev(&y, dt), dc = dev(&cols, dt);
        op_patch_embed(&y, &img, &w, &b, p, &cols), op_patch_embed(&dy, &di, &dw, &db, p, &dc);
        double e = cmp(&dy, &y);
        T_CHECK(e < tol, "%s patch embed %.3g", dn, e);
        nn_cuda_free(di.data), nn_cuda_free(dw.data), nn_cuda_free(db.data), nn_cuda_free(dc.data);
    }
    { /* convolutional-block ops: GroupNorm (also in place), SiLU, same-padding conv 3x3 and 1x1 on a
       * non-square grid; device outputs start as NaN so an unwritten element fails the comparison */
        int B = 2, H = 5, W = 7, P = H * W, C = 64, G = 8, Cout = 24;
        tensor x = host("x", 3, B, P, C, 0, 2), w = host("w", 1, C, 0, 0, 0, 1), b = host("b", 1, C, 0, 0, 0, 1);
        tensor y = host("y", 3, B, P, C, 0, 1);
        tensor dx = dev(&x, dt), dw = dev(&w, dt), db = dev(&b, dt), dy = dev(&y, dt);
        for (int64_t i = 0; i < tensor_numel(&x); i++) ((float *)x.data)[i] += 0.5f; /* a non-zero mean */
        nn_cuda_free(dx.data);
        dx = dev(&x, dt);
        op_fill(&dy, NAN);
        op_groupnorm(&y, &x, &w, &b, G, 1e-6f), op_groupnorm(&dy, &dx, &dw, &db, G, 1e-6f);
        double e = cmp(&dy, &y);
        T_CHECK(e < tol, "%s groupnorm %.3g", dn, e);
        tensor xi = host("xi", 3, B, P, C, 0, 3);
        tensor dxi = dev(&xi, dt);
        op_groupnorm(&xi, &xi, &w, &b, G, 1e-5f), op_groupnorm(&dxi, &dxi, &dw, &db, G, 1e-5f);
        e = cmp(&dxi, &xi);
        T_CHECK(e < tol, "%s groupnorm in place %.3g", dn, e);
        dy = dev(&y, dt);
        op_fill(&dy, NAN);
        op_silu(&y, &x), op_silu(&dy, &dx);
        e = cmp(&dy, &y);
        T_CHECK(e < tol, "%s silu %.3g", dn, e);
        for (int k = 1; k <= 3; k += 2) {
            tensor cw = host("cw", 4, Cout, C, k, k, 0.2f), cb = host("cb", 1, Cout, 0, 0, 0, 0.5f);
            tensor cy = host("cy", 3, B, P, Cout, 0, 1), cols = host("cols", 1, (int64_t)P * C * k * k, 0, 0, 0, 1);
            tensor dcw = dev(&cw, dt), dcb = dev(&cb, dt), dcy = dev(&cy, dt), dcols = dev(&cols, dt);
            op_fill(&dcy, NAN);
            op_conv2d_same(&cy, &x, &cw, &cb, H, W, &cols), op_conv2d_same(&dcy, &dx, &dcw, &dcb, H, W, &dcols);
            e = cmp(&dcy, &cy);
            T_CHECK(e < tol, "%s conv2d_same k=%d %.3g", dn, k, e);
            nn_cuda_free(dcw.data), nn_cuda_free(dcb.data), nn_cuda_free(dcols.data);
        }
        nn_cuda_free(dx.data), nn_cuda_free(dw.data), nn_cuda_free(db.data);
    }
    { /* interpolate: bicubic and bilinear resizes up and down (borders clamped), area pooling divisible and
       * not, on [N, C, H, W] and channels-last grids; device outputs start as NaN */
        static const struct { int mode, cl, N, C, H, W, OH, OW; } cs[] = {
            {NN_RESIZE_BICUBIC, 0, 2, 3, 13, 17, 7, 29}, {NN_RESIZE_BICUBIC, 0, 1, 3, 30, 30, 10, 10},
            {NN_RESIZE_BICUBIC, 0, 1, 2, 30, 30, 20, 20}, {NN_RESIZE_BICUBIC, 1, 2, 5, 6, 9, 13, 4},
            {NN_RESIZE_BILINEAR, 0, 2, 3, 13, 17, 7, 29}, {NN_RESIZE_BILINEAR, 0, 1, 3, 30, 30, 10, 10},
            {NN_RESIZE_BILINEAR, 1, 2, 4, 5, 3, 11, 8}, {NN_RESIZE_AREA, 1, 2, 33, 9, 9, 3, 3},
            {NN_RESIZE_AREA, 0, 2, 3, 7, 5, 3, 4}, {NN_RESIZE_AREA, 1, 1, 8, 6, 6, 6, 6}};
        for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
            tensor x = cs[i].cl ? host("x", 4, cs[i].N, cs[i].H, cs[i].W, cs[i].C, 1)
                                : host("x", 4, cs[i].N, cs[i].C, cs[i].H, cs[i].W, 1);
            tensor y = cs[i].cl ? host("y", 4, cs[i].N, cs[i].OH, cs[i].OW, cs[i].C, 1)
                                : host("y", 4, cs[i].N, cs[i].C, cs[i].OH, cs[i].OW, 1);
            tensor dx = dev(&x, dt), dy = dev(&y, dt);
            op_fill(&dy, NAN);
            op_interpolate(&y, &x, (nn_resize)cs[i].mode, cs[i].cl), op_interpolate(&dy, &dx, (nn_resize)cs[i].mode, cs[i].cl);
            double e = cmp(&dy, &y);
            T_CHECK(e < tol, "%s interpolate %s %dx%d -> %dx%d%s %.3g", dn, nn_resize_name((nn_resize)cs[i].mode), cs[i].H,
                    cs[i].W, cs[i].OH, cs[i].OW, cs[i].cl ? " channels-last" : "", e);
            nn_cuda_free(dx.data);
        }
    }
    { /* fused VQ step against the CPU step: codes equal (f32) or nearly (bf16), residuals close; a
       * row count that is not a multiple of the kernel's row tile */
        int N = 37, C = 40, K = 700, D = 3;
        tensor x = host("x", 2, N, C, 0, 0, 1), cb = host("cb", 2, K, C, 0, 0, 1), cn = host("cn", 1, K, 0, 0, 0, 1);
        tensor dist = host("dist", 2, N, K, 0, 0, 1);
        int32_t hc[37 * 3], dc_host[37 * 3];
        tensor codes = tensor_make("codes", NN_I32, NN_CPU, 2, (int64_t[]){N, D}, hc);
        tensor dx = dev(&x, dt), dcb = dev(&cb, dt), dcn = dev(&cn, NN_F32);
        tensor dcodes = tensor_make("codes", NN_I32, NN_CUDA, 2, (int64_t[]){N, D}, nn_cuda_malloc(sizeof hc, "codes"));
        tensor back = tensor_make("codes", NN_F32, NN_CPU, 2, (int64_t[]){N, D}, dc_host);
        tensor dcodes_f = dcodes;
        dcodes_f.dtype = NN_F32; /* raw 4-byte copies */
        for (int i = 0; i < N * D; i++) dc_host[i] = -1;
        tensor sentinel = tensor_make("codes", NN_F32, NN_CPU, 2, (int64_t[]){N, D}, dc_host);
        nn_cuda_upload(&dcodes_f, &sentinel);
        op_row_sqnorm(&cn, &cb), op_row_sqnorm(&dcn, &dcb);
        for (int d = 0; d < D; d++) {
            op_vq_step(&x, &cb, &cn, &codes, d, &dist);
            op_vq_fused(&dx, &dcb, &dcn, &dcodes, d);
        }
        nn_cuda_download(&back, &dcodes_f);
        int bad = 0, unset = 0;
        for (int i = 0; i < N * D; i++) bad += hc[i] != dc_host[i], unset += dc_host[i] < 0;
        T_EQ_INT(unset, 0);
        if (dt == NN_F32) {
            T_EQ_INT(bad, 0);
            double e = cmp(&dx, &x);
            T_CHECK(e < 1e-6, "fused vq residual %.3g", e); /* measured 0 (stand-in); ~ten f32 roundings */
        } else {
            T_CHECK(bad <= N * D / 10, "bf16 fused vq: %d of %d codes differ from the f32 CPU codes", bad, N * D);
            nn_cuda_free(dx.data);
        }
        nn_cuda_free(dcb.data), nn_cuda_free(dcn.data), nn_cuda_free(dcodes.data);
    }
    if (dt == NN_F32) { /* VQ step: codes equal, residuals close; rows in two chunks */
        int N = 70, C = 32, K = 300, D = 2;
        tensor x = host("x", 2, N, C, 0, 0, 1), cb = host("cb", 2, K, C, 0, 0, 1), cn = host("cn", 1, K, 0, 0, 0, 1);
        tensor dist = host("dist", 2, 40, K, 0, 0, 1);
        int32_t hc[140], dc_host[140];
        tensor codes = tensor_make("codes", NN_I32, NN_CPU, 2, (int64_t[]){N, D}, hc);
        tensor dx = dev(&x, dt), dcb = dev(&cb, dt), dcn = dev(&cn, NN_F32), dd = dev(&dist, NN_F32);
        tensor dcodes = tensor_make("codes", NN_I32, NN_CUDA, 2, (int64_t[]){N, D}, nn_cuda_malloc(sizeof hc, "codes"));
        op_row_sqnorm(&cn, &cb), op_row_sqnorm(&dcn, &dcb);
        for (int d = 0; d < D; d++) {
            op_vq_step(&x, &cb, &cn, &codes, d, &dist);
            op_vq_step(&dx, &dcb, &dcn, &dcodes, d, &dd);
        }
        tensor back = tensor_make("codes", NN_F32, NN_CPU, 2, (int64_t[]){N, D}, dc_host);
        tensor dcodes_f = dcodes;
        dcodes_f.dtype = NN_F32; /* raw 4-byte copy back */
        nn_cuda_download(&back, &dcodes_f);
        int bad = 0;
        for (int i = 0; i < N * D; i++) bad += hc[i] != dc_host[i];
        T_EQ_INT(bad, 0);
        double e = cmp(&dx, &x);
        T_CHECK(e < 1e-6, "vq residual %.3g", e); /* measured 0 (stand-in); ~ten f32 roundings */
        nn_cuda_free(dcb.data), nn_cuda_free(dcn.data), nn_cuda_free(dd.data), nn_cuda_free(dcodes.data);
    }
    release();
}
#endif

int main(void) {
#ifdef ASVR_HAVE_CUDA
    if (!nn_cuda_available()) {
        t_skip("no CUDA device");
        return t_done();
    }
    run(NN_F32);
    run(NN_BF16);
#else
    t_skip("built without the CUDA backend");
#endif
    return t_done();
}
