/* asvr.c — the ASVR model assembled from its parts: declaration, the slot order of its trained
 * tensors, the frozen tower and codebooks, printing (asvr.h). The step is in asvr_step.c. */
#include "model/asvr.h"

#include <stdlib.h>
#include <string.h>

#include "nn/ops.h"

void asvr_model_init(asvr_model *m, const asvr_config *c) {
    memset(m, 0, sizeof *m);
    m->c = *c;
    param_set_init(&m->ps, "asvr");
    m->llm = llama_new(&c->llm, &m->ps, "llm.");
    mlp2_declare(&m->proj, &m->ps, asvr_feature_width(c), c->llm.dim, c->llm.dim, "mm_projector.");
    if (c->has_head) m->head = vhead_new(&c->head, &m->ps, "visual_head.");
    if (c->has_app_head) m->head_app = vhead_new(&c->head_app, &m->ps, "visual_head_appearance.");
    if (c->compute_bf16) param_set_set_compute_dtype(&m->ps, NN_BF16);
    /* slots in the order the step finishes the gradients: the visual heads (their backward runs with
     * the loss), then the LLM from lm_head down to the embedding, then the projector */
    int nl;
    char **llm_order;
    llama_slot_order(m->llm, &nl, &llm_order);
    const char **order = asvr_calloc((size_t)nl + 3, sizeof *order, "the slot order");
    int k = 0;
    order[k++] = "visual_head.";
    order[k++] = "visual_head_appearance.";
    for (int i = 0; i < nl; i++) order[k++] = llm_order[i];
    order[k++] = "mm_projector.";
    param_set_set_order(&m->ps, k, order);
    for (int i = 0; i < nl; i++) free(llm_order[i]);
    free(llm_order);
    free(order);
}

int asvr_max_images(const asvr_config *c, int rows, int T) { return rows * (T / c->image_positions + 1); }

int asvr_model_load_tower(asvr_model *m, const safetensors *st, const char *prefix, asvr_error *err) {
    nn_dtype dt = m->ps.device == NN_CUDA && m->c.tower_bf16 ? NN_BF16 : NN_F32;
    return siglip_load_ex(&m->c.vision, st, prefix, m->ps.device, dt, &m->tower, err);
}

static int load_books(const vhead_config *h, const safetensors *st, const char *name, const char *label, nn_device dev,
                      nn_arena **frozen, tensor **books, int C, asvr_error *err) {
    int D = h ? h->depth : 0, K = h ? h->codebook_size : 0;
    if (h) C = h->code_dim;
    const st_tensor *all = safetensors_find(st, name);
    if (all) { /* one [D,K,C] tensor */
        if (all->ndim != 3 || (D && (all->shape[0] != D || all->shape[1] != K)) || all->shape[2] != C)
            return asvr_err_set(err, "codebooks '%s' must be [%d, %d, %d]", name, D, K, C);
        D = (int)all->shape[0], K = (int)all->shape[1];
    }
    if (!D) return asvr_err_set(err, "the codebooks' depth is unknown without a visual head config");
    *frozen = nn_arena_new(label, dev);
    *books = nn_arena_add(*frozen, label, NN_F32, 3, (int64_t[]){D, K, C});
    nn_arena_commit(*frozen);
    if (all) return param_tensor_load(*books, all, err);
    for (int d = 0; d < D; d++) {
        char key[256];
        snprintf(key, sizeof key, "%s%d.weight", name, d);
        const st_tensor *t = safetensors_find(st, key);
        if (!t) return asvr_err_set(err, "codebook '%s' is missing", key);
        if (t->ndim != 2 || t->shape[1] != C || (t->shape[0] != K && t->shape[0] != K + 1))
            return asvr_err_set(err, "codebook '%s' must be [%d or %d, %d]", key, K, K + 1, C);
        float *tmp = asvr_malloc(sizeof(float) * (size_t)t->numel, "a codebook");
        if (st_tensor_to_f32(t, tmp, err) < 0) {
            free(tmp);
            return -1;
        }
        tensor book = tensor_index0(*books, d);
        op_write_f32(&book, tmp); /* the leading K rows (a padding row K, if any, is dropped) */
        free(tmp);
    }
    return 0;
}

int asvr_model_load_codebooks(asvr_model *m, const safetensors *st, const char *name, asvr_error *err) {
    /* the semantic head's config gives D and K even when that head is off (--input discrete) */
    return load_books(m->c.head.depth > 0 ? &m->c.head : NULL, st, name, "codebooks", m->ps.device, &m->frozen,
                      &m->codebooks, m->c.vision.hidden, err);
}

int asvr_model_load_app_codebooks(asvr_model *m, const safetensors *st, const char *name, asvr_error *err) {
    if (!m->c.has_app_head) return asvr_err_set(err, "the model config has no visual_head_appearance");
    return load_books(&m->c.head_app, st, name, "appearance codebooks", m->ps.device, &m->frozen_app,
                      &m->codebooks_app, m->c.vision.hidden, err);
}

void asvr_model_free(asvr_model *m) {
    llama_free(m->llm);
    if (m->head) vhead_free(m->head);
    if (m->head_app) vhead_free(m->head_app);
    siglip_free(m->tower);
    if (m->frozen) nn_arena_free(m->frozen);
    if (m->frozen_app) nn_arena_free(m->frozen_app);
    param_set_free(&m->ps);
    memset(m, 0, sizeof *m);
}

void asvr_model_print(const asvr_model *m, FILE *f) {
    const asvr_config *c = &m->c;
    fprintf(f, "model: LLaMA d%d x %d layers, %d heads (%d kv), FFN %d, vocab %d | vision %dpx/%d, %d wide, tap %d, "
               "%d positions%s | ",
            c->llm.dim, c->llm.n_layers, c->llm.n_heads, c->llm.n_kv_heads, c->llm.ffn_dim, c->llm.vocab,
            c->vision.image_size, c->vision.patch_size, c->vision.hidden, c->vision.tap, c->image_positions,
            c->input_discrete ? " (discrete input)" : "");
    if (c->n_scales > 0) {
        fprintf(f, "S2 input at scales");
        for (int i = 0; i < c->n_scales; i++) fprintf(f, "%s%d", i ? "/" : " ", c->scales[i]);
        fprintf(f, " (%d tower forwards per image, %d features per position) | ",
                s2_tiles_per_image(c->scales, c->n_scales, c->vision.image_size), asvr_feature_width(c));
    }
    fprintf(f, "%s attention, %d of %d layers recomputed | ", c->flash_attention ? "flash" : "kept-probabilities",
            c->recompute_layers, c->llm.n_layers);
    if (c->has_app_head)
        fprintf(f, "appearance head E%d, D %d, K %d, code dim %d | ", c->head_app.embed, c->head_app.depth,
                c->head_app.codebook_size, c->head_app.code_dim);
    if (c->has_head)
        fprintf(f, "visual head E%d, %d heads, D %d, K %d, %d layers, FFN %d, lambda %.2f\n", c->head.embed,
                c->head.n_heads, c->head.depth, c->head.codebook_size, c->head.n_layers, c->head.ffn_dim,
                (double)c->lambda_visual);
    else
        fprintf(f, "no visual head (text loss only)\n");
    param_set_print(&m->ps, f);
}

