#include "model/siglip.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/weights.h"

typedef struct siglip_layer {
    tensor *ln1_w, *ln1_b, *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *o_w, *o_b;
    tensor *ln2_w, *ln2_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
} siglip_layer;

struct siglip {
    siglip_config cfg;
    nn_device dev;
    nn_dtype dtype;
    nn_arena *weights;
    tensor *patch_w, *patch_b, *pos;
    siglip_layer *layer; /* tap entries */
};

struct siglip_acts {
    const siglip *m;
    int max_batch;
    nn_arena *arena;
    tensor *cols, *h, *x, *q, *k, *v, *attn, *att, *mlp, *tmp;
};

siglip_config siglip_config_so400m(void) {
    siglip_config c = {.image_size = 384, .patch_size = 14, .hidden = 1152, .intermediate = 4304,
                       .layers = 27, .heads = 16, .ln_eps = 1e-6f, .tap = 26, .act = NN_ACT_GELU_TANH};
    return c;
}

int siglip_config_check(const siglip_config *c, asvr_error *err) {
    if (c->patch_size <= 0 || c->image_size < c->patch_size)
        return asvr_err_set(err, "siglip config: image_size %d smaller than patch_size %d (or not positive)",
                            c->image_size, c->patch_size);
    /* a code record holds at most 65535 positions; the widths stay far from int overflow */
    if (c->image_size / c->patch_size > 255 || c->image_size > 65536)
        return asvr_err_set(err, "siglip config: image_size %d / patch_size %d gives more than 255 x 255 patches",
                            c->image_size, c->patch_size);
    if (c->hidden > (1 << 20) || c->intermediate > (1 << 22) || c->heads > 4096 || c->layers > 4096)
        return asvr_err_set(err, "siglip config: hidden %d, intermediate %d, heads %d or layers %d out of range",
                            c->hidden, c->intermediate, c->heads, c->layers);
    if (c->hidden <= 0 || c->heads <= 0 || c->hidden % c->heads)
        return asvr_err_set(err, "siglip config: hidden %d is not a positive multiple of heads %d",
                            c->hidden, c->heads);
    if (c->intermediate <= 0) return asvr_err_set(err, "siglip config: intermediate %d", c->intermediate);
    if (c->tap < 1 || c->tap > c->layers)
        return asvr_err_set(err, "siglip config: tap layer %d outside 1..%d", c->tap, c->layers);
    if (!(c->ln_eps > 0.0f)) return asvr_err_set(err, "siglip config: layer_norm_eps %g", (double)c->ln_eps);
    if (c->act != NN_ACT_GELU_TANH && c->act != NN_ACT_GELU_ERF)
        return asvr_err_set(err, "siglip config: activation must be a GELU");
    return 0;
}

int siglip_load(const siglip_config *cfg, const safetensors *st, const char *prefix, siglip **out,
                asvr_error *err) {
    return siglip_load_ex(cfg, st, prefix, NN_CPU, NN_F32, out, err);
}

int siglip_load_ex(const siglip_config *cfg, const safetensors *st, const char *prefix, nn_device dev,
                   nn_dtype dtype, siglip **out, asvr_error *err) {
    *out = NULL;
    if (siglip_config_check(cfg, err) < 0) return -1;
    int64_t C = cfg->hidden, I = cfg->intermediate, p = cfg->patch_size, N = siglip_num_patches(cfg);
    siglip *m = asvr_calloc(1, sizeof *m, "siglip model");
    m->cfg = *cfg;
    m->dev = dev;
    m->dtype = dtype;
    m->layer = asvr_calloc((size_t)cfg->tap, sizeof *m->layer, "siglip layers");
    weights_loader wl;
    weights_loader_init(&wl, "siglip weights", st, prefix);
    weights_loader_target(&wl, dev, dtype);
    m->patch_w = weights_want(&wl, 4, (int64_t[]){C, 3, p, p}, "embeddings.patch_embedding.weight");
    m->patch_b = weights_want(&wl, 1, (int64_t[]){C}, "embeddings.patch_embedding.bias");
    m->pos = weights_want(&wl, 2, (int64_t[]){N, C}, "embeddings.position_embedding.weight");
    for (int i = 0; i < cfg->tap; i++) {
        siglip_layer *L = &m->layer[i];
        char base[64];
        snprintf(base, sizeof base, "encoder.layers.%d.", i);
        L->ln1_w = weights_want(&wl, 1, (int64_t[]){C}, "%slayer_norm1.weight", base);
        L->ln1_b = weights_want(&wl, 1, (int64_t[]){C}, "%slayer_norm1.bias", base);
        L->q_w = weights_want(&wl, 2, (int64_t[]){C, C}, "%sself_attn.q_proj.weight", base);
        L->q_b = weights_want(&wl, 1, (int64_t[]){C}, "%sself_attn.q_proj.bias", base);
        L->k_w = weights_want(&wl, 2, (int64_t[]){C, C}, "%sself_attn.k_proj.weight", base);
        L->k_b = weights_want(&wl, 1, (int64_t[]){C}, "%sself_attn.k_proj.bias", base);
        L->v_w = weights_want(&wl, 2, (int64_t[]){C, C}, "%sself_attn.v_proj.weight", base);
        L->v_b = weights_want(&wl, 1, (int64_t[]){C}, "%sself_attn.v_proj.bias", base);
        L->o_w = weights_want(&wl, 2, (int64_t[]){C, C}, "%sself_attn.out_proj.weight", base);
        L->o_b = weights_want(&wl, 1, (int64_t[]){C}, "%sself_attn.out_proj.bias", base);
        L->ln2_w = weights_want(&wl, 1, (int64_t[]){C}, "%slayer_norm2.weight", base);
        L->ln2_b = weights_want(&wl, 1, (int64_t[]){C}, "%slayer_norm2.bias", base);
        L->fc1_w = weights_want(&wl, 2, (int64_t[]){I, C}, "%smlp.fc1.weight", base);
        L->fc1_b = weights_want(&wl, 1, (int64_t[]){I}, "%smlp.fc1.bias", base);
        L->fc2_w = weights_want(&wl, 2, (int64_t[]){C, I}, "%smlp.fc2.weight", base);
        L->fc2_b = weights_want(&wl, 1, (int64_t[]){C}, "%smlp.fc2.bias", base);
    }
    if (weights_load(&wl, err) < 0) {
        m->weights = wl.arena;
        siglip_free(m);
        return asvr_err_prefix(err, "loading the SigLIP encoder (layers 1..%d)", cfg->tap);
    }
    m->weights = wl.arena;
    *out = m;
    return 0;
}

const siglip_config *siglip_cfg(const siglip *m) { return &m->cfg; }
nn_device siglip_device(const siglip *m) { return m->dev; }
nn_dtype siglip_dtype(const siglip *m) { return m->dtype; }
void siglip_print_plan(const siglip *m, FILE *f) { nn_arena_print_plan(m->weights, f); }

void siglip_free(siglip *m) {
    if (!m) return;
    nn_arena_free(m->weights);
    free(m->layer);
    free(m);
}

siglip_acts *siglip_acts_new(const siglip *m, int max_batch) {
    CHECK(max_batch >= 1, "", "siglip activations for batch %d", max_batch);
    const siglip_config *c = &m->cfg;
    int64_t B = max_batch, N = siglip_num_patches(c), C = c->hidden, I = c->intermediate;
    int64_t p = c->patch_size;
    siglip_acts *a = asvr_calloc(1, sizeof *a, "siglip activations");
    a->m = m;
    a->max_batch = max_batch;
    nn_dtype dt = m->dtype; /* activations in the weights' dtype; the attention scratch stays f32 */
    a->arena = nn_arena_new("siglip activations", m->dev);
    a->cols = nn_arena_add(a->arena, "patch_cols", dt, 2, (int64_t[]){B * N, 3 * p * p});
    a->h = nn_arena_add(a->arena, "residual", dt, 3, (int64_t[]){B, N, C});
    a->x = nn_arena_add(a->arena, "ln_out", dt, 3, (int64_t[]){B, N, C});
    a->q = nn_arena_add(a->arena, "q", dt, 3, (int64_t[]){B, N, C});
    a->k = nn_arena_add(a->arena, "k", dt, 3, (int64_t[]){B, N, C});
    a->v = nn_arena_add(a->arena, "v", dt, 3, (int64_t[]){B, N, C});
    a->attn = nn_arena_add(a->arena, "attn_out", dt, 3, (int64_t[]){B, N, C});
    /* CUDA: the full [B, heads, N, N] probabilities, so the attention runs as two batched tensor-core
     * GEMMs (2.2 GB at batch 64 for SO400M); CPU: one N x N scratch, a head at a time. */
    if (m->dev == NN_CUDA)
        a->att = nn_arena_add(a->arena, "attention_probs", NN_F32, 4, (int64_t[]){B, m->cfg.heads, N, N});
    else
        a->att = nn_arena_add(a->arena, "att_scratch", NN_F32, 2, (int64_t[]){N, N});
    a->mlp = nn_arena_add(a->arena, "mlp_hidden", dt, 3, (int64_t[]){B, N, I});
    a->tmp = nn_arena_add(a->arena, "branch_out", dt, 3, (int64_t[]){B, N, C});
    nn_arena_commit(a->arena);
    return a;
}

void siglip_acts_print_plan(const siglip_acts *a, FILE *f) { nn_arena_print_plan(a->arena, f); }
size_t siglip_acts_bytes(const siglip_acts *a) { return nn_arena_bytes(a->arena); }

void siglip_acts_free(siglip_acts *a) {
    if (!a) return;
    nn_arena_free(a->arena);
    free(a);
}

void siglip_forward(const siglip *m, siglip_acts *a, const tensor *images, tensor *out) {
    const siglip_config *c = &m->cfg;
    CHECK(a->m == m, "", "siglip_forward: activations were planned for another model");
    CHECK(images->ndim == 4 && images->shape[1] == 3 && images->shape[2] == c->image_size &&
              images->shape[3] == c->image_size,
          "resize and normalise images to the encoder's input size first",
          "siglip_forward: images '%s' must be [B, 3, %d, %d]", images->name, c->image_size, c->image_size);
    int64_t B = images->shape[0];
    CHECK(B <= a->max_batch, "", "siglip_forward: batch %lld > planned %d", (long long)B, a->max_batch);
    int64_t N = siglip_num_patches(c);
    tensor cols = tensor_head0(a->cols, B * N);
    tensor h = tensor_head0(a->h, B), x = tensor_head0(a->x, B), q = tensor_head0(a->q, B),
           k = tensor_head0(a->k, B), v = tensor_head0(a->v, B), attn = tensor_head0(a->attn, B),
           mlp = tensor_head0(a->mlp, B), tmp = tensor_head0(a->tmp, B);

    op_patch_embed(&h, images, m->patch_w, m->patch_b, c->patch_size, &cols);
    for (int64_t b = 0; b < B; b++) {
        tensor hb = tensor_index0(&h, b);
        op_add(&hb, &hb, m->pos);
    }
    float scale = 1.0f / sqrtf((float)(c->hidden / c->heads));
    for (int i = 0; i < c->tap; i++) {
        const siglip_layer *L = &m->layer[i];
        op_layernorm(&x, &h, L->ln1_w, L->ln1_b, c->ln_eps, NULL, NULL);
        op_matmul(&q, &x, L->q_w, L->q_b, NN_ACT_NONE, NULL);
        op_matmul(&k, &x, L->k_w, L->k_b, NN_ACT_NONE, NULL);
        op_matmul(&v, &x, L->v_w, L->v_b, NN_ACT_NONE, NULL);
        tensor att = a->att->ndim == 4 ? tensor_head0(a->att, B) : *a->att;
        op_attention(&attn, &q, &k, &v, c->heads, c->heads, scale, 0, &att,
                     a->att->ndim == 4 ? NN_ATT_KEEP : NN_ATT_SCRATCH);
        op_matmul(&tmp, &attn, L->o_w, L->o_b, NN_ACT_NONE, NULL);
        op_add(&h, &h, &tmp);
        op_layernorm(&x, &h, L->ln2_w, L->ln2_b, c->ln_eps, NULL, NULL);
        op_matmul(&mlp, &x, L->fc1_w, L->fc1_b, c->act, NULL);
        op_matmul(&tmp, &mlp, L->fc2_w, L->fc2_b, NN_ACT_NONE, NULL);
        op_add(&h, &h, &tmp);
    }
    CHECK(tensor_same_shape(out, &h), "", "siglip_forward: out '%s' must be [%lld, %lld, %d]", out->name,
          (long long)B, (long long)N, c->hidden);
    op_copy(out, &h);
}

int siglip_load_on(const siglip_config *cfg, const safetensors *st, const char *prefix, nn_device dev, siglip **out,
                   asvr_error *err) {
    return siglip_load_ex(cfg, st, prefix, dev, NN_F32, out, err);
}
