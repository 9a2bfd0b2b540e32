/* test_visual_head.c — the ASVR visual head (model/visual_head.h) against PyTorch golden data
 * (tests/golden/train/, made by tools/gen_train_fixtures.py):
 *  - forward: logits per depth from the golden final-norm states at the image positions, the codes
 *    and the frozen codebooks, within 4e-6 relative; per-depth and mean visual loss within 1e-6;
 *    top-1 hits equal to the argmax of the golden logits;
 *  - backward at scale 1/(D·N): every visual_head.* gradient within 1e-5 relative (worst printed);
 *    dh_img against a central difference of the loss along a random direction;
 *  - every output element written (activations, logits and dh_img start as NaN), a smaller call
 *    than planned, u16 codes, gradient accumulation over two backward passes;
 *  - a frozen head: same dh_img, no gradient buffer touched; frozen with dh_img NULL does nothing.
 */
#include <jansson.h>
#include <math.h>
#include <stdint.h>

#include "io/safetensors.h"
#include "model/params.h"
#include "model/visual_head.h"
#include "nn/ops.h"
#include "test.h"

#define GOLD ASVR_GOLDEN "/train"

static safetensors *open_or_die(const char *path) {
    asvr_error err = {{0}};
    safetensors *st = NULL;
    if (safetensors_open(path, &st, &err) < 0) {
        fprintf(stderr, "cannot open %s: %s\n(regenerate with tools/gen_train_fixtures.py)\n", path, err.msg);
        exit(1);
    }
    return st;
}

static const st_tensor *find_or_die(const safetensors *st, const char *name) {
    const st_tensor *t = safetensors_find(st, name);
    if (!t) {
        fprintf(stderr, "fixture tensor '%s' missing\n", name);
        exit(1);
    }
    return t;
}

static float *get_f32(const safetensors *st, const char *name, int64_t *numel) {
    const st_tensor *t = find_or_die(st, name);
    float *p = malloc(sizeof(float) * (size_t)t->numel);
    asvr_error err = {{0}};
    if (!p || st_tensor_to_f32(t, p, &err) < 0) {
        fprintf(stderr, "%s: %s\n", name, err.msg);
        exit(1);
    }
    if (numel) *numel = t->numel;
    return p;
}

static int64_t *get_i64(const safetensors *st, const char *name, int64_t *numel) {
    const st_tensor *t = find_or_die(st, name);
    if (t->dtype != ST_I64) {
        fprintf(stderr, "%s: want I64\n", name);
        exit(1);
    }
    int64_t *p = malloc(t->nbytes);
    if (!p) exit(1);
    memcpy(p, t->data, t->nbytes);
    *numel = t->numel;
    return p;
}

static json_t *jget(json_t *j, const char *path) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *tok = strtok(buf, "."); tok; tok = strtok(NULL, ".")) {
        j = json_object_get(j, tok);
        if (!j) {
            fprintf(stderr, "manifest lacks '%s'\n", path);
            exit(1);
        }
    }
    return j;
}
static int jint(json_t *j, const char *path) { return (int)json_integer_value(jget(j, path)); }

static double relerr(const float *a, const float *b, int64_t n, int *nonfinite) {
    double num = 0, den = 0;
    *nonfinite = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(a[i])) (*nonfinite)++;
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static double mean_loss(const double *loss_sum, int D, int N) {
    double s = 0;
    for (int d = 0; d < D; d++) s += loss_sum[d] / N;
    return s / D;
}

int main(void) {
    asvr_error err = {{0}};
    json_error_t je;
    json_t *man = json_load_file(GOLD "/manifest.json", 0, &je);
    if (!man) {
        fprintf(stderr, "cannot read %s: %s\n", GOLD "/manifest.json", je.text);
        return 1;
    }
    safetensors *init = open_or_die(GOLD "/model_init.safetensors");
    safetensors *batch = open_or_die(GOLD "/batch.safetensors");
    safetensors *fwd = open_or_die(GOLD "/forward_default.safetensors");
    safetensors *grads = open_or_die(GOLD "/grads_it_default.safetensors");

    vhead_config cfg = {.d_in = jint(man, "config.llm.hidden_size"),
                        .embed = jint(man, "config.visual_head.embed_dim"),
                        .n_heads = jint(man, "config.visual_head.n_heads"),
                        .depth = jint(man, "config.visual_head.depth"),
                        .codebook_size = jint(man, "config.visual_head.codebook_size"),
                        .code_dim = jint(man, "config.vision.hidden_size"),
                        .n_layers = jint(man, "config.visual_head.n_layers"),
                        .ffn_dim = jint(man, "config.visual_head.ffn_dim"),
                        .eps = (float)json_number_value(jget(man, "config.visual_head.rms_norm_eps"))};
    T_EQ_INT(vhead_config_check(&cfg, &err), 0);
    vhead_config bad = cfg;
    bad.n_heads = 5;
    T_EQ_INT(vhead_config_check(&bad, &err), -1);
    T_STR_CONTAINS(err.msg, "n_heads");
    vhead_config big = vhead_config_asvr();
    T_EQ_INT(vhead_config_check(&big, &err), 0);
    const int D = cfg.depth, K = cfg.codebook_size, C = cfg.code_dim, Din = cfg.d_in;

    /* ---- inputs: final-norm states at the image positions, codes, codebooks ---- */
    int64_t n_pos, n_codes, n_hid, n_books;
    int64_t *pos = get_i64(batch, "image_flat_pos", &n_pos);
    int64_t *codes64 = get_i64(batch, "codes", &n_codes);
    float *hid = get_f32(fwd, "hidden_final", &n_hid);
    float *books = get_f32(init, "codebooks", &n_books);
    const int N = (int)n_pos;
    T_EQ_INT(N, 18);
    T_EQ_INT(n_codes, (int64_t)N * D);
    T_EQ_INT(n_books, (int64_t)D * K * C);
    float *himg = malloc(sizeof(float) * (size_t)N * Din);
    int32_t *codes = malloc(sizeof(int32_t) * (size_t)N * D);
    uint16_t *codes16 = malloc(sizeof(uint16_t) * (size_t)N * D);
    for (int n = 0; n < N; n++) {
        T_CHECK(pos[n] >= 0 && pos[n] * Din < n_hid, "image position %lld", (long long)pos[n]);
        memcpy(himg + (size_t)n * Din, hid + pos[n] * Din, sizeof(float) * (size_t)Din);
    }
    for (int i = 0; i < N * D; i++) codes[i] = (int32_t)codes64[i], codes16[i] = (uint16_t)codes64[i];
    tensor t_himg = tensor_make("h_img", NN_F32, NN_CPU, 2, (int64_t[]){N, Din}, himg);
    tensor t_codes = tensor_make("codes", NN_I32, NN_CPU, 2, (int64_t[]){N, D}, codes);
    tensor t_codes16 = tensor_make("codes_u16", NN_U16, NN_CPU, 2, (int64_t[]){N, D}, codes16);
    tensor t_books = tensor_make("codebooks", NN_F32, NN_CPU, 3, (int64_t[]){D, K, C}, books);

    /* ---- the head, loaded from the golden init (planned for more positions than used) ---- */
    param_set ps;
    param_set_init(&ps, "visual head test");
    vhead *head = vhead_new(&cfg, &ps, "visual_head.");
    param_set_commit(&ps);
    err.msg[0] = 0;
    T_EQ_INT(param_set_load(&ps, init, "", &err), 0);
    if (err.msg[0]) fprintf(stderr, "%s\n", err.msg);
    param_set_print(&ps, stdout);
    const int P = N + 7;
    vhead_acts *acts = vhead_acts_new(head, P);
    vhead_acts_print_plan(acts, stdout);

    /* ---- forward ---- */
    float scale = 1.0f / (float)(D * N);
    double loss[64];
    int64_t hits[64];
    vhead_acts_fill(acts, NAN);
    vhead_forward(head, acts, &t_himg, &t_codes, &t_books, hits);
    int64_t n_vl;
    float *want_logits = get_f32(fwd, "visual_logits", &n_vl);
    T_EQ_INT(n_vl, (int64_t)D * N * K);
    double worst_logit = 0;
    for (int d = 0; d < D; d++) {
        const tensor *lg = vhead_logits(acts, d);
        T_EQ_INT(tensor_rows(lg), N);
        T_EQ_INT(tensor_cols(lg), K);
        int nf;
        double e = relerr(lg->data, want_logits + (size_t)d * N * K, (int64_t)N * K, &nf);
        T_EQ_INT(nf, 0);
        T_CHECK(e < 4e-6, "depth %d logits: relative error %.3g", d, e); /* measured 3.7e-7 (vs the golden) */
        if (e > worst_logit) worst_logit = e;
        int64_t want_hits = 0;
        for (int n = 0; n < N; n++) {
            const float *row = want_logits + ((size_t)d * N + n) * K;
            int best = 0;
            for (int j = 1; j < K; j++)
                if (row[j] > row[best]) best = j;
            want_hits += best == codes[n * D + d];
        }
        T_EQ_INT(hits[d], want_hits);
    }
    printf("visual logits: worst relative error over depths %.3g\n", worst_logit);
    vhead_loss(head, acts, scale, loss); /* in place: the logits become their gradient */
    json_t *vpd = jget(man, "runs.it_default.losses_step0.visual_per_depth");
    double worst_loss = 0;
    for (int d = 0; d < D; d++) {
        double want = json_number_value(json_array_get(vpd, (size_t)d)), got = loss[d] / N;
        double e = fabs(got - want) / fabs(want);
        T_CHECK(e < 1e-6, "depth %d loss %.9g vs %.9g (rel %.3g)", d, got, want, e); /* measured 1.2e-7 (golden) */
        if (e > worst_loss) worst_loss = e;
        printf("depth %d: loss %.9f (torch %.9f), top-1 %lld/%d\n", d, got, want, (long long)hits[d], N);
    }
    double want_visual = json_number_value(jget(man, "runs.it_default.losses_step0.visual"));
    double got_visual = mean_loss(loss, D, N);
    double ev = fabs(got_visual - want_visual) / want_visual;
    T_CHECK(ev < 1e-6, "visual loss %.9g vs %.9g (rel %.3g)", got_visual, want_visual, ev); /* measured 1.2e-7 */
    printf("visual loss %.9f (torch %.9f): relative error %.3g; worst per depth %.3g\n", got_visual,
           want_visual, ev, worst_loss);

    /* ---- backward ---- */
    float *dh = malloc(sizeof(float) * (size_t)N * Din);
    tensor t_dh = tensor_make("dh_img", NN_F32, NN_CPU, 2, (int64_t[]){N, Din}, dh);
    op_fill(&t_dh, NAN);
    param_set_zero_grads(&ps);
    vhead_backward(head, acts, &t_dh);
    int nf_dh = 0;
    for (int i = 0; i < N * Din; i++) nf_dh += !isfinite(dh[i]);
    T_EQ_INT(nf_dh, 0);
    double worst_g = 0;
    const char *worst_name = "";
    int n_checked = 0;
    for (int i = 0; i < ps.n; i++) {
        param *p = ps.v[i];
        int64_t ng;
        float *want = get_f32(grads, p->name, &ng);
        T_EQ_INT(ng, tensor_numel(p->g));
        int nf;
        double e = relerr(p->g->data, want, ng, &nf);
        T_EQ_INT(nf, 0);
        T_CHECK(e < 1e-5, "gradient %s: relative error %.3g", p->name, e); /* measured 9.5e-7 (vs the golden) */
        if (e > worst_g) worst_g = e, worst_name = p->name;
        n_checked++;
        free(want);
    }
    printf("gradients: %d visual_head tensors, worst relative error %.3g (%s)\n", n_checked, worst_g, worst_name);

    /* dh_img: d(mean visual loss)/d(h_img) along a random direction, by central difference */
    {
        float *hp = malloc(sizeof(float) * (size_t)N * Din), *u = malloc(sizeof(float) * (size_t)N * Din);
        uint64_t s = 12345;
        double dir = 0;
        for (int i = 0; i < N * Din; i++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            u[i] = (float)((double)(s >> 11) / 9007199254740992.0 - 0.5);
            dir += (double)u[i] * dh[i];
        }
        tensor t_hp = tensor_make("h_img_shifted", NN_F32, NN_CPU, 2, (int64_t[]){N, Din}, hp);
        const double eps = 1e-2;
        double lp[64], lm[64];
        for (int i = 0; i < N * Din; i++) hp[i] = himg[i] + (float)eps * u[i];
        vhead_forward_loss(head, acts, &t_hp, &t_codes, &t_books, scale, lp, NULL);
        for (int i = 0; i < N * Din; i++) hp[i] = himg[i] - (float)eps * u[i];
        vhead_forward_loss(head, acts, &t_hp, &t_codes, &t_books, scale, lm, NULL);
        double fd = (mean_loss(lp, D, N) - mean_loss(lm, D, N)) / (2 * eps);
        double e = fabs(fd - dir) / fabs(dir);
        printf("dh_img: directional derivative %.6g, central difference %.6g (relative %.3g)\n", dir, fd, e);
        /* measured 2.7e-5 (f32 forward, eps 1e-2) */
        T_CHECK(e < 3e-4, "dh_img directional derivative %.6g vs central difference %.6g", dir, fd);
        free(hp);
        free(u);
    }

    /* u16 codes and a second backward: same logits, gradients accumulate to twice the golden ones */
    {
        double loss16[64];
        vhead_forward_loss(head, acts, &t_himg, &t_codes16, &t_books, scale, loss16, NULL);
        for (int d = 0; d < D; d++) T_CHECK(loss16[d] == loss[d], "u16 codes: depth %d loss differs", d);
        vhead_backward(head, acts, NULL); /* grads now 2x */
        param *p = param_find(&ps, "visual_head.layers.0.ffn_w1");
        int64_t ng;
        float *want = get_f32(grads, p->name, &ng);
        for (int64_t i = 0; i < ng; i++) want[i] *= 2.0f;
        int nf;
        double e = relerr(p->g->data, want, ng, &nf);
        T_CHECK(e < 7e-6, "accumulated gradient: relative error %.3g", e); /* measured 6.1e-7 (vs twice the golden) */
        free(want);
    }

    /* top-1 hits: depth 0 depends on h_img only, so targets set to the golden argmax on even
     * positions must be counted as hits there (and on odd positions only where they coincide) */
    {
        int32_t *c2 = malloc(sizeof(int32_t) * (size_t)N * D);
        memcpy(c2, codes, sizeof(int32_t) * (size_t)N * D);
        int64_t want_hits = 0;
        for (int n = 0; n < N; n++) {
            const float *row = want_logits + (size_t)n * K;
            int best = 0;
            for (int j = 1; j < K; j++)
                if (row[j] > row[best]) best = j;
            if (n % 2 == 0) c2[n * D] = best;
            want_hits += c2[n * D] == best;
        }
        tensor t_c2 = tensor_make("codes_argmax", NN_I32, NN_CPU, 2, (int64_t[]){N, D}, c2);
        double l2[64];
        int64_t h2[64];
        vhead_forward_loss(head, acts, &t_himg, &t_c2, &t_books, scale, l2, h2);
        T_CHECK(want_hits >= N / 2, "%lld", (long long)want_hits);
        T_EQ_INT(h2[0], want_hits);
        printf("top-1 with depth-0 targets at the argmax on even positions: %lld/%d\n", (long long)h2[0], N);
        free(c2);
    }

    /* a call with fewer positions than the first: image 1 alone gives its rows of the logits */
    {
        const int N1 = 9;
        tensor h1 = tensor_make("h_img_1", NN_F32, NN_CPU, 2, (int64_t[]){N1, Din}, himg + (size_t)9 * Din);
        tensor c1 = tensor_make("codes_1", NN_I32, NN_CPU, 2, (int64_t[]){N1, D}, codes + 9 * D);
        double l1[64];
        vhead_acts_fill(acts, NAN);
        vhead_forward(head, acts, &h1, &c1, &t_books, NULL);
        for (int d = 0; d < D; d++) {
            int nf;
            const tensor *lg = vhead_logits(acts, d);
            T_EQ_INT(tensor_rows(lg), N1);
            double e = relerr(lg->data, want_logits + ((size_t)d * N + 9) * K, (int64_t)N1 * K, &nf);
            T_EQ_INT(nf, 0);
            T_CHECK(e < 4e-6, "9-position call, depth %d: relative error %.3g", d, e); /* measured 3.9e-7 (golden) */
        }
        vhead_loss(head, acts, 1.0f, l1);
    }

    /* ---- frozen head: the same dh_img; no gradient buffer is touched ---- */
    {
        param_set fs;
        param_set_init(&fs, "frozen visual head");
        vhead *fh = vhead_new(&cfg, &fs, "visual_head.");
        int64_t one = 4;
        param *sentinel = param_add(&fs, 1, &one, 0, PARAM_INIT_ZERO, 0.0f, "other.trainable");
        param_set_trainable(&fs, "visual_head.", 0);
        param_set_commit(&fs);
        for (int i = 0; i < fs.n; i++)
            if (fs.v[i] != sentinel) {
                T_CHECK(fs.v[i]->g == NULL, "%s has a gradient buffer", fs.v[i]->name);
                memcpy(fs.v[i]->w->data, param_find(&ps, fs.v[i]->name)->w->data, tensor_nbytes(fs.v[i]->w));
            }
        op_fill(sentinel->g, 7.0f);
        vhead_acts *fa = vhead_acts_new(fh, N);
        vhead_acts_fill(fa, NAN);
        double lf[64];
        vhead_forward_loss(fh, fa, &t_himg, &t_codes, &t_books, scale, lf, NULL);
        for (int d = 0; d < D; d++) T_CHECK(lf[d] == loss[d], "frozen head: depth %d loss differs", d);
        float *dhf = malloc(sizeof(float) * (size_t)N * Din);
        tensor t_dhf = tensor_make("dh_img_frozen", NN_F32, NN_CPU, 2, (int64_t[]){N, Din}, dhf);
        op_fill(&t_dhf, NAN);
        vhead_backward(fh, fa, &t_dhf);
        T_CHECK(memcmp(dhf, dh, sizeof(float) * (size_t)N * Din) == 0, "frozen head: dh_img differs");
        vhead_backward(fh, fa, NULL); /* nothing to do: returns */
        const float *sg = sentinel->g->data;
        for (int i = 0; i < 4; i++) T_CHECK(sg[i] == 7.0f, "a gradient outside the head was touched");
        free(dhf);
        vhead_acts_free(fa);
        vhead_free(fh);
        param_set_free(&fs);
    }

    /* seeded init at the declared shapes runs and gives finite losses */
    {
        param_set rs;
        param_set_init(&rs, "random visual head");
        vhead *rh = vhead_new(&cfg, &rs, "visual_head.");
        param_set_commit(&rs);
        param_set_init_random(&rs, 7);
        vhead_acts *ra = vhead_acts_new(rh, N);
        double lr_[64];
        vhead_forward_loss(rh, ra, &t_himg, &t_codes, &t_books, scale, lr_, NULL);
        for (int d = 0; d < D; d++)
            T_CHECK(isfinite(lr_[d]) && lr_[d] / N > 0 && lr_[d] / N < 3 * log((double)K),
                    "random init: depth %d loss %g", d, lr_[d] / N);
        vhead_backward(rh, ra, NULL);
        vhead_acts_free(ra);
        vhead_free(rh);
        param_set_free(&rs);
    }

    free(dh);
    free(want_logits);
    free(himg);
    free(codes);
    free(codes16);
    free(pos);
    free(codes64);
    free(hid);
    free(books);
    vhead_acts_free(acts);
    vhead_free(head);
    param_set_free(&ps);
    safetensors_close(init);
    safetensors_close(batch);
    safetensors_close(fwd);
    safetensors_close(grads);
    json_decref(man);
    return t_done();
}
