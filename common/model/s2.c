/* s2.c — the input tower in S2 multi-scale mode (s2.h): resizes, tiles, one batched tower forward,
 * reassembly, area pooling and the channel concatenation, composed of ops. The index tables of the three
 * row gathers are built on the host for the batch's image count and uploaded when that count changes. */
#include "model/s2.h"

#include <stdlib.h>
#include <string.h>

#include "nn/ops.h"

struct s2_acts {
    const siglip *tower;
    int n, scales[S2_MAX_SCALES];
    int t, g, P, C, tiles, max_images, built_B;
    nn_arena *arena, *host;
    siglip_acts *sa;
    tensor *resized; /* [max_images · 3 · Σ s² / t, t] f32: each scale's resized images, scale after scale */
    tensor *tile_px; /* [max_images · tiles · 3 · t, t] f32: the tower's input, image after image */
    tensor *feats;   /* [max_images · tiles · P, C]: the tower's tap-layer output per tile */
    tensor *maps;    /* [max_images · tiles · P, C]: per scale, the reassembled (k g) x (k g) maps */
    tensor *pooled;  /* [n · max_images · P, C]: per scale, the maps pooled to g x g */
    tensor *idx_tiles, *idx_maps, *idx_cat, *h_tiles, *h_maps, *h_cat;
};

int s2_scales_check(const int *scales, int n, int image_size, asvr_error *err) {
    if (n < 1 || n > S2_MAX_SCALES)
        return asvr_err_set(err, "vision scales: %d scales given, want 1 to %d", n, S2_MAX_SCALES);
    for (int i = 0; i < n; i++) {
        if (scales[i] <= 0 || image_size <= 0 || scales[i] % image_size != 0)
            return asvr_err_set(err, "vision scale %d is not a multiple of the tower's image_size %d", scales[i], image_size);
        if (i > 0 && scales[i] <= scales[i - 1])
            return asvr_err_set(err, "vision scales must increase: %d after %d", scales[i], scales[i - 1]);
        if (scales[i] / image_size > 64)
            return asvr_err_set(err, "vision scale %d is more than 64 times the tower's image_size %d", scales[i], image_size);
    }
    return 0;
}

int s2_tiles_per_image(const int *scales, int n, int image_size) {
    int tiles = 0;
    for (int i = 0; i < n; i++) tiles += (scales[i] / image_size) * (scales[i] / image_size);
    return tiles;
}

static double aligned(double bytes) { return 256.0 * (double)(((size_t)bytes + 255) / 256); }

double s2_buffer_bytes(const siglip_config *v, const int *scales, int n, int max_images, double esize) {
    double t = v->image_size, P = siglip_num_patches(v), C = v->hidden, M = max_images;
    double tiles = s2_tiles_per_image(scales, n, v->image_size), px = 0;
    for (int i = 0; i < n; i++) px += (double)scales[i] * scales[i];
    return aligned(4.0 * M * 3 * px) + aligned(4.0 * M * tiles * 3 * t * t) + 2 * aligned(esize * M * tiles * P * C) +
           aligned(esize * n * M * P * C) + aligned(4.0 * M * tiles * 3 * t) + aligned(4.0 * M * tiles * P) +
           aligned(4.0 * M * P * n);
}

s2_acts *s2_acts_new(const siglip *tower, const int *scales, int n_scales, int max_images) {
    const siglip_config *v = siglip_cfg(tower);
    asvr_error err;
    CHECK(s2_scales_check(scales, n_scales, v->image_size, &err) == 0, "", "%s", err.msg);
    CHECK(max_images >= 1, "", "S2 activations for %d images", max_images);
    s2_acts *a = asvr_calloc(1, sizeof *a, "the S2 input tower");
    a->tower = tower;
    a->n = n_scales;
    memcpy(a->scales, scales, sizeof(int) * (size_t)n_scales);
    a->t = v->image_size, a->g = v->image_size / v->patch_size, a->P = siglip_num_patches(v), a->C = v->hidden;
    a->tiles = s2_tiles_per_image(scales, n_scales, v->image_size);
    a->max_images = max_images;
    int64_t M = max_images, t = a->t, T = a->tiles, P = a->P, C = a->C, px = 0;
    for (int i = 0; i < n_scales; i++) px += (int64_t)scales[i] * scales[i];
    nn_dtype dt = siglip_dtype(tower);
    nn_arena *ar = a->arena = nn_arena_new("S2 input tower", siglip_device(tower));
    a->resized = nn_arena_add(ar, "s2_resized_images", NN_F32, 2, (int64_t[]){M * 3 * px / t, t});
    a->tile_px = nn_arena_add(ar, "s2_tiles", NN_F32, 2, (int64_t[]){M * T * 3 * t, t});
    a->feats = nn_arena_add(ar, "s2_tile_features", dt, 2, (int64_t[]){M * T * P, C});
    a->maps = nn_arena_add(ar, "s2_maps", dt, 2, (int64_t[]){M * T * P, C});
    a->pooled = nn_arena_add(ar, "s2_pooled", dt, 2, (int64_t[]){n_scales * M * P, C});
    a->idx_tiles = nn_arena_add(ar, "s2_tile_rows", NN_I32, 1, (int64_t[]){M * T * 3 * t});
    a->idx_maps = nn_arena_add(ar, "s2_map_rows", NN_I32, 1, (int64_t[]){M * T * P});
    a->idx_cat = nn_arena_add(ar, "s2_concat_rows", NN_I32, 1, (int64_t[]){M * P * n_scales});
    nn_arena_commit(ar);
    nn_arena *hs = a->host = nn_arena_new("S2 index tables (host)", NN_CPU);
    a->h_tiles = nn_arena_add(hs, "s2_tile_rows", NN_I32, 1, (int64_t[]){M * T * 3 * t});
    a->h_maps = nn_arena_add(hs, "s2_map_rows", NN_I32, 1, (int64_t[]){M * T * P});
    a->h_cat = nn_arena_add(hs, "s2_concat_rows", NN_I32, 1, (int64_t[]){M * P * n_scales});
    nn_arena_commit(hs);
    a->sa = siglip_acts_new(tower, max_images * a->tiles);
    return a;
}

size_t s2_acts_bytes(const s2_acts *a) { return nn_arena_bytes(a->arena) + siglip_acts_bytes(a->sa); }

void s2_acts_print_plan(const s2_acts *a, FILE *f) {
    nn_arena_print_plan(a->arena, f);
    siglip_acts_print_plan(a->sa, f);
}

void s2_acts_free(s2_acts *a) {
    if (!a) return;
    siglip_acts_free(a->sa);
    nn_arena_free(a->arena);
    nn_arena_free(a->host);
    free(a);
}

/* The three gathers' row tables for B images (layouts as in the struct: scale after scale where a buffer
 * holds all scales, image after image within a scale, tiles image after image in the tower's batch). */
static void build_tables(s2_acts *a, int B) {
    const int64_t t = a->t, g = a->g, P = a->P, T = a->tiles;
    int32_t *rt = a->h_tiles->data, *rm = a->h_maps->data, *rc = a->h_cat->data;
    int64_t seg_rows = 0; /* first row of the scale's resized images in `resized` (rows of t values) */
    int64_t tile0 = 0;    /* the scale's first tile within an image's tiles */
    int64_t map_row = 0;  /* next row of `maps` */
    for (int si = 0; si < a->n; si++) {
        int64_t s = a->scales[si], k = s / t;
        /* tiles: tower input row ((b·T + tile0 + r·k + c)·3 + ch)·t + y = resized row of image b, channel ch,
         * pixel row r·t + y, columns c·t .. c·t + t - 1 */
        for (int64_t b = 0; b < B; b++)
            for (int64_t r = 0; r < k; r++)
                for (int64_t c = 0; c < k; c++)
                    for (int64_t ch = 0; ch < 3; ch++)
                        for (int64_t y = 0; y < t; y++) {
                            int64_t dst = ((b * T + tile0 + r * k + c) * 3 + ch) * t + y;
                            rt[dst] = (int32_t)(seg_rows + ((b * 3 + ch) * s + r * t + y) * k + c);
                        }
        /* maps: row (Y·k·g + X) of image b's map = feature p = (Y mod g)·g + X mod g of tile (Y / g, X / g) */
        for (int64_t b = 0; b < B; b++)
            for (int64_t Y = 0; Y < k * g; Y++)
                for (int64_t X = 0; X < k * g; X++)
                    rm[map_row++] = (int32_t)((b * T + tile0 + (Y / g) * k + X / g) * P + (Y % g) * g + X % g);
        seg_rows += (int64_t)B * 3 * s * k;
        tile0 += k * k;
    }
    /* concatenation: out row (b·P + p)·n + si (a C-wide slice of out's row b·P + p) = pooled row
     * (si·B + b)·P + p */
    for (int64_t b = 0; b < B; b++)
        for (int64_t p = 0; p < P; p++)
            for (int si = 0; si < a->n; si++) rc[(b * P + p) * a->n + si] = (int32_t)(((int64_t)si * B + b) * P + p);
    tensor d1 = tensor_head0(a->idx_tiles, (int64_t)B * T * 3 * t), h1 = tensor_head0(a->h_tiles, (int64_t)B * T * 3 * t);
    tensor d2 = tensor_head0(a->idx_maps, (int64_t)B * T * P), h2 = tensor_head0(a->h_maps, (int64_t)B * T * P);
    tensor d3 = tensor_head0(a->idx_cat, (int64_t)B * P * a->n), h3 = tensor_head0(a->h_cat, (int64_t)B * P * a->n);
    op_transfer(&d1, &h1);
    op_transfer(&d2, &h2);
    op_transfer(&d3, &h3);
    a->built_B = B;
}

/* A view of rows [row0, row0 + rows) of a [R, cols] buffer with the given shape. */
static tensor view_at(const tensor *buf, int64_t row0, const char *name, int ndim, const int64_t *shape) {
    char *base = (char *)buf->data + (size_t)(row0 * buf->shape[1]) * nn_dtype_size(buf->dtype);
    return tensor_make(name, buf->dtype, buf->device, ndim, shape, base);
}

void s2_forward(const siglip *tower, s2_acts *a, const tensor *images, tensor *out) {
    CHECK(a->tower == tower, "", "s2_forward: activations were planned for another tower");
    int64_t S = a->scales[a->n - 1], t = a->t, P = a->P, C = a->C, T = a->tiles;
    CHECK(images->ndim == 4 && images->shape[1] == 3 && images->shape[2] == S && images->shape[3] == S &&
              images->dtype == NN_F32,
          "prepare images at the largest scale", "s2_forward: images '%s' must be f32 [B, 3, %lld, %lld]", images->name,
          (long long)S, (long long)S);
    int64_t B = images->shape[0];
    CHECK(B >= 1 && B <= a->max_images, "", "s2_forward: %lld images, planned for %d", (long long)B, a->max_images);
    CHECK(out->ndim == 3 && out->shape[0] == B && out->shape[1] == P && out->shape[2] == a->n * C &&
              out->dtype == siglip_dtype(tower),
          "", "s2_forward: out '%s' must be %s [%lld, %lld, %lld]", out->name, nn_dtype_name(siglip_dtype(tower)),
          (long long)B, (long long)P, (long long)(a->n * C));
    if (B != a->built_B) build_tables(a, (int)B);

    /* 1. each scale's bicubic resize, then the tiles by one row gather over all scales */
    int64_t row = 0;
    for (int si = 0; si < a->n; si++) {
        int64_t s = a->scales[si];
        tensor r = view_at(a->resized, row, "s2_resized_images", 4, (int64_t[]){B, 3, s, s});
        op_interpolate(&r, images, NN_RESIZE_BICUBIC, 0);
        row += B * 3 * s * s / t;
    }
    tensor src = view_at(a->resized, 0, "s2_resized_images", 2, (int64_t[]){row, t});
    tensor tiles = view_at(a->tile_px, 0, "s2_tiles", 2, (int64_t[]){B * T * 3 * t, t});
    tensor it = tensor_head0(a->idx_tiles, B * T * 3 * t);
    op_gather_rows(&tiles, &src, &it);

    /* 2. one forward of the tower over every tile */
    tensor tin = view_at(a->tile_px, 0, "s2_tiles", 4, (int64_t[]){B * T, 3, t, t});
    tensor feats = view_at(a->feats, 0, "s2_tile_features", 3, (int64_t[]){B * T, P, C});
    siglip_forward(tower, a->sa, &tin, &feats);

    /* 3. the tiles' maps put back in place; 4. each scale's map area-pooled to g x g */
    tensor f2 = view_at(a->feats, 0, "s2_tile_features", 2, (int64_t[]){B * T * P, C});
    tensor maps = view_at(a->maps, 0, "s2_maps", 2, (int64_t[]){B * T * P, C});
    tensor im = tensor_head0(a->idx_maps, B * T * P);
    op_gather_rows(&maps, &f2, &im);
    row = 0;
    for (int si = 0; si < a->n; si++) {
        int64_t kg = a->scales[si] / t * a->g;
        tensor m = view_at(a->maps, row, "s2_maps", 4, (int64_t[]){B, kg, kg, C});
        tensor p = view_at(a->pooled, si * B * P, "s2_pooled", 4, (int64_t[]){B, a->g, a->g, C});
        op_interpolate(&p, &m, NN_RESIZE_AREA, 1);
        row += B * kg * kg;
    }

    /* 5. the scales side by side on channels */
    tensor pooled = view_at(a->pooled, 0, "s2_pooled", 2, (int64_t[]){a->n * B * P, C});
    tensor o = tensor_make(out->name, out->dtype, out->device, 2, (int64_t[]){B * P * a->n, C}, out->data);
    tensor ic = tensor_head0(a->idx_cat, B * P * a->n);
    op_gather_rows(&o, &pooled, &ic);
}
