/* asvr_config.c — the model config JSON (asvr.h) and the run-time recompute set. */
#include <jansson.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

#include "model/asvr.h"

/* ---- config ------------------------------------------------------------------------------------- */

static int jint(json_t *o, const char *k, int *v, asvr_error *err) {
    json_t *j = json_object_get(o, k);
    if (!json_is_integer(j)) return asvr_err_set(err, "model config: \"%s\" must be an integer", k);
    *v = (int)json_integer_value(j);
    return 0;
}
static int jnum(json_t *o, const char *k, float *v, asvr_error *err) {
    json_t *j = json_object_get(o, k);
    if (!json_is_number(j)) return asvr_err_set(err, "model config: \"%s\" must be a number", k);
    *v = (float)json_number_value(j);
    return 0;
}

static int parse_head(json_t *vh, int d_in, int code_dim, vhead_config *h, asvr_error *err) {
    if (jint(vh, "embed_dim", &h->embed, err) < 0 || jint(vh, "n_heads", &h->n_heads, err) < 0 ||
        jint(vh, "depth", &h->depth, err) < 0 || jint(vh, "codebook_size", &h->codebook_size, err) < 0 ||
        jint(vh, "n_layers", &h->n_layers, err) < 0 || jint(vh, "ffn_dim", &h->ffn_dim, err) < 0 ||
        jnum(vh, "rms_norm_eps", &h->eps, err) < 0)
        return -1;
    h->d_in = d_in;
    h->code_dim = code_dim;
    json_t *cd = json_object_get(vh, "code_dim"); /* the codebook width when it is not the tower's */
    if (json_is_integer(cd)) h->code_dim = (int)json_integer_value(cd);
    if (h->depth < 1 || h->depth > 255) return asvr_err_set(err, "model config: visual head depth %d outside 1..255", h->depth);
    return vhead_config_check(h, err);
}

/* The vision object: no unknown key (a misspelt "scales" must not train without S2), hidden_act if given
 * the tower's GELU, and the S2 scales (multiples of image_size, increasing). */
static int parse_vision_extra(json_t *vis, asvr_config *c, asvr_error *err) {
    static const char *known[] = {"image_size", "patch_size", "hidden_size", "intermediate_size", "num_layers",
                                  "num_heads", "layer_norm_eps", "tap_layer", "image_mean", "image_std", "scales",
                                  "hidden_act"};
    const char *key;
    json_t *val;
    json_object_foreach(vis, key, val) {
        size_t i = 0;
        while (i < sizeof known / sizeof known[0] && strcmp(key, known[i]) != 0) i++;
        if (i == sizeof known / sizeof known[0])
            return asvr_err_set(err, "model config: unknown key \"%s\" in \"vision\" (known: image_size, patch_size, "
                                     "hidden_size, intermediate_size, num_layers, num_heads, layer_norm_eps, tap_layer, "
                                     "image_mean, image_std, scales, hidden_act)", key);
    }
    json_t *act = json_object_get(vis, "hidden_act");
    if (act && (!json_is_string(act) || strcmp(json_string_value(act), "gelu_pytorch_tanh") != 0))
        return asvr_err_set(err, "model config: vision \"hidden_act\" must be \"gelu_pytorch_tanh\" (SigLIP's)");
    json_t *sc = json_object_get(vis, "scales");
    c->n_scales = 0;
    if (!sc) return 0;
    if (!json_is_array(sc) || json_array_size(sc) < 1 || json_array_size(sc) > S2_MAX_SCALES)
        return asvr_err_set(err, "model config: vision \"scales\" must be a list of 1 to %d image sizes", S2_MAX_SCALES);
    for (size_t i = 0; i < json_array_size(sc); i++) {
        json_t *e = json_array_get(sc, i);
        if (!json_is_integer(e) || json_integer_value(e) <= 0 || json_integer_value(e) > 1 << 16)
            return asvr_err_set(err, "model config: vision \"scales\" must hold positive integers");
        c->scales[c->n_scales++] = (int)json_integer_value(e);
    }
    if (s2_scales_check(c->scales, c->n_scales, c->vision.image_size, err) < 0) return asvr_err_prefix(err, "model config");
    return 0;
}

int asvr_config_from_json(const char *text, asvr_config *c, asvr_error *err) {
    memset(c, 0, sizeof *c);
    json_error_t je;
    json_t *o = json_loads(text, 0, &je);
    if (!json_is_object(o)) {
        json_decref(o);
        return asvr_err_set(err, "model config is not a JSON object: %s", je.text);
    }
    int rc = -1;
    json_t *llm = json_object_get(o, "llm"), *vis = json_object_get(o, "vision"), *vh = json_object_get(o, "visual_head");
    if (!json_is_object(llm) || !json_is_object(vis)) {
        asvr_err_set(err, "model config needs \"llm\" and \"vision\" objects");
        goto out;
    }
    char *llm_text = json_dumps(llm, JSON_COMPACT);
    int r = llama_config_from_json(llm_text, &c->llm, err);
    free(llm_text);
    if (r < 0) goto out;
    siglip_config *v = &c->vision;
    if (jint(vis, "image_size", &v->image_size, err) < 0 || jint(vis, "patch_size", &v->patch_size, err) < 0 ||
        jint(vis, "hidden_size", &v->hidden, err) < 0 || jint(vis, "intermediate_size", &v->intermediate, err) < 0 ||
        jint(vis, "num_layers", &v->layers, err) < 0 || jint(vis, "num_heads", &v->heads, err) < 0 ||
        jint(vis, "tap_layer", &v->tap, err) < 0 || jnum(vis, "layer_norm_eps", &v->ln_eps, err) < 0)
        goto out;
    if (parse_vision_extra(vis, c, err) < 0) goto out;
    v->act = NN_ACT_GELU_TANH;
    for (int i = 0; i < 3; i++) c->image_mean[i] = c->image_std[i] = 0.5f;
    json_t *mean = json_object_get(vis, "image_mean"), *std = json_object_get(vis, "image_std");
    /* three finite numbers each (one per channel), the std > 0: anything else would pad with zeros or
     * divide by zero and train on infinities */
    const char *names[2] = {"image_mean", "image_std"};
    json_t *arrs[2] = {mean, std};
    float *dst[2] = {c->image_mean, c->image_std};
    double mean_d[3] = {0.5, 0.5, 0.5}; /* the mean as written (double), for the pad colour */
    for (int k = 0; k < 2; k++) {
        if (!arrs[k]) continue;
        if (!json_is_array(arrs[k]) || json_array_size(arrs[k]) != 3) {
            asvr_err_set(err, "model config: vision.%s must be a list of 3 numbers (R, G, B)", names[k]);
            goto out;
        }
        for (int i = 0; i < 3; i++) {
            json_t *x = json_array_get(arrs[k], (size_t)i);
            double v = json_number_value(x);
            if (!json_is_number(x) || !isfinite(v) || (k == 1 && !(v > 0)) || fabs(v) > 1e6) {
                asvr_err_set(err, "model config: vision.%s[%d] must be a finite number%s", names[k], i, k ? " > 0" : "");
                goto out;
            }
            dst[k][i] = (float)v;
            if (k == 0) mean_d[i] = v;
        }
    }
    for (int i = 0; i < 3; i++) {
        double p = mean_d[i] * 255.0; /* LLaVA's expand2square background: tuple(int(x * 255) for x in image_mean) */
        c->image_pad[i] = (uint8_t)(p < 0 ? 0 : p > 255 ? 255 : (int)p);
    }
    if (siglip_config_check(v, err) < 0) goto out;
    c->image_positions = siglip_num_patches(v);
    json_t *ip = json_object_get(o, "image_positions");
    if (ip && json_integer_value(ip) != c->image_positions) {
        asvr_err_set(err, "model config: image_positions %lld, the vision tower gives %d",
                     (long long)json_integer_value(ip), c->image_positions);
        goto out;
    }
    c->lambda_visual = 1.0f;
    json_t *lam = json_object_get(o, "lambda_visual");
    if (json_is_number(lam)) c->lambda_visual = (float)json_number_value(lam);
    c->has_head = json_is_object(vh);
    if (c->has_head && parse_head(vh, c->llm.dim, v->hidden, &c->head, err) < 0) goto out;
    json_t *va = json_object_get(o, "visual_head_appearance");
    c->has_app_head = json_is_object(va);
    if (c->has_app_head && parse_head(va, c->llm.dim, v->hidden, &c->head_app, err) < 0) goto out;
    rc = 0;
out:
    json_decref(o);
    return rc;
}


int asvr_config_set_recompute(asvr_config *c, int first_n, const char *list, asvr_error *err) {
    int nl = c->llm.n_layers;
    memset(c->recompute_mask, 0, sizeof c->recompute_mask);
    c->recompute_layers = 0;
    if (nl > ASVR_MAX_RECOMPUTE_LAYERS && (first_n > 0 || (list && *list)))
        return asvr_err_set(err, "recompute: the LLM has %d layers; at most %d can be named", nl, ASVR_MAX_RECOMPUTE_LAYERS);
    if (!list || !*list) {
        if (first_n < 0 || first_n > nl) return asvr_err_set(err, "recompute %d layers: give 0 .. %d", first_n, nl);
        for (int i = 0; i < first_n; i++) c->recompute_mask[i] = 1;
        c->recompute_layers = first_n;
        return 0;
    }
    const char *p = list;
    while (*p) {
        char *end;
        long a = strtol(p, &end, 10), b = a;
        if (end == p) return asvr_err_set(err, "recompute layers '%s': expected a layer number at '%s'", list, p);
        p = end;
        if (*p == '-') {
            const char *q = p + 1;
            b = strtol(q, &end, 10);
            if (end == q) return asvr_err_set(err, "recompute layers '%s': expected a layer number after '-'", list);
            p = end;
        }
        if (a < 0 || b < a || b >= nl)
            return asvr_err_set(err, "recompute layers '%s': %ld-%ld is not a range within 0 .. %d", list, a, b, nl - 1);
        for (long i = a; i <= b; i++) c->recompute_mask[i] = 1;
        if (*p == ',') p++;
        else if (*p) return asvr_err_set(err, "recompute layers '%s': unexpected '%c'", list, *p);
    }
    for (int i = 0; i < nl; i++) c->recompute_layers += c->recompute_mask[i];
    return 0;
}

