/* test_interpolate.c — op_interpolate on the CPU against torch.nn.functional.interpolate
 * (tools/gen_interp_fixtures.py, tests/golden/interpolate/): bicubic and bilinear (align_corners False,
 * no antialias) and area, down and up, borders, identity, NCHW and channels-last; every case within a
 * relative 6e-6 (measured 0 to 5.6e-7). Control that shows the comparison can fail: the same resize in the
 * other mode misses by far more (except on an odd integer downsample, where both read the same samples:
 * checked equal). The argument checks exit naming the op. (CUDA against the CPU: test_ops_cuda.)
 */
#include <jansson.h>
#include <math.h>

#include "io/safetensors.h"
#include "nn/ops.h"
#include "test.h"

static double rel(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), den += (double)b[i] * b[i];
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static nn_resize mode_of(const char *s) {
    return !strcmp(s, "bicubic") ? NN_RESIZE_BICUBIC : !strcmp(s, "bilinear") ? NN_RESIZE_BILINEAR : NN_RESIZE_AREA;
}

static tensor view(const st_tensor *t, const char *name) {
    int64_t sh[4];
    for (int i = 0; i < 4; i++) sh[i] = t->shape[i];
    return tensor_make(name, NN_F32, NN_CPU, 4, sh, (void *)t->data);
}

static void misuse_alias(void) {
    float buf[16] = {0};
    tensor x = tensor_make("x", NN_F32, NN_CPU, 4, (int64_t[]){1, 1, 4, 4}, buf);
    op_interpolate(&x, &x, NN_RESIZE_BILINEAR, 0);
}

static void misuse_channels(void) {
    float a[16] = {0}, b[32] = {0};
    tensor x = tensor_make("x", NN_F32, NN_CPU, 4, (int64_t[]){1, 1, 4, 4}, a);
    tensor y = tensor_make("y", NN_F32, NN_CPU, 4, (int64_t[]){1, 2, 4, 4}, b);
    op_interpolate(&y, &x, NN_RESIZE_AREA, 0);
}

int main(void) {
    safetensors *st;
    asvr_error err;
    if (safetensors_open(ASVR_GOLDEN "/interpolate/cases.safetensors", &st, &err) < 0) {
        T_CHECK(0, "%s", err.msg);
        return t_done();
    }
    json_error_t je;
    json_t *cases = json_loads(safetensors_metadata(st, "cases"), 0, &je);
    T_CHECK(json_is_array(cases) && json_array_size(cases) == 15, "the case list: %s", je.text);
    double worst = 0;
    int n_controls = 0;
    for (size_t i = 0; i < json_array_size(cases); i++) {
        json_t *c = json_array_get(cases, i);
        const char *ms = json_string_value(json_object_get(c, "mode"));
        int cl = (int)json_integer_value(json_object_get(c, "channels_last"));
        char kx[32], ky[32];
        snprintf(kx, sizeof kx, "%zu.x", i), snprintf(ky, sizeof ky, "%zu.y", i);
        const st_tensor *sx = safetensors_find(st, kx), *sy = safetensors_find(st, ky);
        T_CHECK(sx && sy && sx->ndim == 4 && sy->ndim == 4 && sx->dtype == ST_F32, "case %zu tensors", i);
        if (!sx || !sy) continue;
        tensor x = view(sx, kx), want = view(sy, ky), y = want;
        y.data = malloc(tensor_nbytes(&want));
        for (int64_t k = 0; k < tensor_numel(&y); k++) ((float *)y.data)[k] = NAN; /* an unwritten value fails */
        nn_resize mode = mode_of(ms);
        op_interpolate(&y, &x, mode, cl);
        double e = rel(y.data, want.data, tensor_numel(&y));
        /* measured 5.6e-7 at worst (bicubic up; PyTorch's vectorised kernels round differently), 0 for area */
        T_CHECK(e < 6e-6, "case %zu (%s%s): relative error %.3g", i, ms, cl ? ", channels-last" : "", e);
        if (e > worst || e != e) worst = e;
        /* control: another mode on a resize that changes the size misses (identity cases excepted) */
        int64_t H = x.shape[1 + !cl], W = x.shape[2 + !cl], OH = y.shape[1 + !cl], OW = y.shape[2 + !cl];
        if (H != OH || W != OW) {
            nn_resize other = mode == NN_RESIZE_BICUBIC ? NN_RESIZE_BILINEAR : NN_RESIZE_BICUBIC;
            op_interpolate(&y, &x, other, cl);
            double eo = rel(y.data, want.data, tensor_numel(&y));
            /* an odd integer downsample k puts every source position on a sample (k·o + (k-1)/2), where
             * bicubic and bilinear both return it: S2's 1152 -> 384 of the tower input and of the targets
             * are one subsample */
            int on_samples = mode != NN_RESIZE_AREA && H % OH == 0 && W % OW == 0 && (H / OH) % 2 == 1 && (W / OW) % 2 == 1;
            if (on_samples)
                T_CHECK(eo == 0, "case %zu: %s and %s differ (%.3g) on an odd integer downsample", i, ms, nn_resize_name(other), eo);
            else
                T_CHECK(eo > 1e-3, "case %zu: mode %s gives %s's result (%.3g): the comparison cannot tell modes apart", i,
                        nn_resize_name(other), ms, eo);
            n_controls++;
        }
        free(y.data);
    }
    printf("interpolate: %zu cases against torch, worst relative error %.3g; %d controls\n", json_array_size(cases), worst,
           n_controls);
    json_decref(cases);
    safetensors_close(st);
    t_expect_fatal("y aliases x", misuse_alias, "op_interpolate");
    t_expect_fatal("channels changed", misuse_channels, "keep the batch and channels");
    return t_done();
}
