#include "checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fsutil.h"
#include "io/json_stream.h"
#include "io/safetensors.h"
#include "model/params.h"
#include "nn/ops.h"

static int rm_rf(const char *path) {
    DIR *d = opendir(path);
    if (!d) return unlink(path);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = asvr_path_join(path, e->d_name);
        rm_rf(p);
        free(p);
    }
    closedir(d);
    return rmdir(path);
}

/* A checkpoint never holds non-finite weights: a tensor with a NaN or an infinity fails the save,
 * naming it, and the previous checkpoint stays the newest. The fills only note the first one (bad), so
 * that every rank still takes part in every gather; the save fails once the files are written. */
typedef struct nonfinite {
    char msg[256];
} nonfinite;

static void check_finite(const float *x, int64_t n, const char *name, nonfinite *bad) {
    if (bad->msg[0]) return;
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) {
            snprintf(bad->msg, sizeof bad->msg, "parameter '%s' holds %g at element %lld: not saving non-finite weights",
                     name, (double)x[i], (long long)i);
            return;
        }
}

/* A tensor's bytes for the writer: read straight from a CPU f32 tensor, else converted to f32 on the
 * host when the file is written, one tensor at a time (checkpoints are always the CPU format). */
typedef struct tensor_src {
    const tensor *t;
    nonfinite *bad;
} tensor_src;

static int fill_f32(void *ctx, void *dst, asvr_error *err) {
    (void)err;
    tensor_src *s = ctx;
    op_read_f32(s->t, dst);
    check_finite(dst, tensor_numel(s->t), s->t->name, s->bad);
    return 0;
}

/* s: where the source of a tensor that is filled at write time lives (the caller's, until written). */
static void add_tensor(st_writer *w, const char *name, const tensor *t, nonfinite *bad, tensor_src *s) {
    if (t->device == NN_CPU && t->dtype == NN_F32) {
        check_finite(t->data, tensor_numel(t), name, bad);
        st_writer_add(w, name, ST_F32, t->ndim, t->shape, t->data);
    } else {
        *s = (tensor_src){t, bad};
        st_writer_add_source(w, name, ST_F32, t->ndim, t->shape, fill_f32, s);
    }
}

/* state.json and DONE into the finished temporary folder, then the rename that publishes it. */
static int finish(const char *out_dir, const char *tmp, const char *dir, json_t *state, asvr_error *err) {
    char *js = json_dumps(state, JSON_INDENT(2) | JSON_SORT_KEYS);
    char *p = asvr_path_join(tmp, "state.json");
    int r = asvr_atomic_write(p, js, strlen(js), err);
    free(p);
    free(js);
    if (r < 0) return -1;
    p = asvr_path_join(tmp, "DONE");
    r = asvr_atomic_write(p, "", 0, err);
    free(p);
    if (r < 0) return -1;
    rm_rf(dir);
    if (rename(tmp, dir) != 0) return asvr_err_set(err, "renaming '%s' to '%s': %s", tmp, dir, strerror(errno));
    return asvr_fsync_dir(out_dir, err);
}

/* One moment (m or v) of one trained tensor, completed across ranks when the state is sharded. */
typedef struct moment_src {
    const optim *o;
    const checkpoint_ranks *ranks;
    int i, which;
} moment_src;

static int fill_moment(void *ctx, void *dst, asvr_error *err) {
    (void)err;
    const moment_src *m = ctx;
    int64_t n = m->o->ps->v[m->i]->numel;
    float *full = dst;
    if (m->ranks) { /* every rank takes part, whatever it holds */
        for (int64_t k = 0; k < n; k++) full[k] = -0.0f;
        optim_get(m->o, m->i, m->which, full);
        m->ranks->gather(m->ranks->ctx, full, n);
    } else {
        optim_get(m->o, m->i, m->which, full);
    }
    return 0;
}

/* A parameter whose f32 master exists only as the ranks' pieces (sharded masters), completed across
 * the ranks like the optimizer state. */
typedef struct value_src {
    const param_set *ps;
    const param *p;
    const checkpoint_ranks *ranks;
    nonfinite *bad;
} value_src;

static int fill_value(void *ctx, void *dst, asvr_error *err) {
    (void)err;
    const value_src *v = ctx;
    float *full = dst;
    for (int64_t k = 0; k < v->p->numel; k++) full[k] = -0.0f;
    if (!param_set_read(v->ps, v->p, full) && v->ranks) v->ranks->gather(v->ranks->ctx, full, v->p->numel);
    check_finite(full, v->p->numel, v->p->name, v->bad);
    return 0;
}

/* Writes (or, on a rank that is not the writer, takes part in the fills of) one safetensors file. A
 * writer that fails (a full disk) still runs the fills it had not run, so that the other ranks' gathers
 * complete. */
static int write_or_fill(st_writer *w, int writer, const char *tmp, const char *file, const checkpoint_ranks *ranks,
                         asvr_error *err) {
    if (!writer) return st_writer_run_fills(w, err);
    char *p = asvr_path_join(tmp, file);
    int r = st_writer_write(w, p, err);
    free(p);
    if (r < 0 && ranks) {
        asvr_error e2;
        (void)st_writer_run_fills(w, &e2);
    }
    return r;
}

static int write_files(const char *tmp, const param_set *ps, const optim *o, const checkpoint_ranks *ranks,
                       moment_src *srcs, nonfinite *bad, asvr_error *err) {
    int writer = !ranks || ranks->writer, r = 0;
    value_src *vs = asvr_calloc((size_t)(ps->n + 1), sizeof *vs, "checkpoint sources");
    tensor_src *ts = asvr_calloc((size_t)(ps->n + 1), sizeof *ts, "checkpoint sources");
    st_writer *mw = st_writer_new();
    for (int i = 0; i < ps->n; i++) {
        const param *q = ps->v[i];
        if (q->w->data || !q->trainable) {
            if (writer) add_tensor(mw, q->name, q->w, bad, &ts[i]);
        } else {
            vs[i] = (value_src){ps, q, ranks, bad};
            st_writer_add_source(mw, q->name, ST_F32, q->ndim, q->shape, fill_value, &vs[i]);
        }
    }
    r = write_or_fill(mw, writer, tmp, "model.safetensors", ranks, err);
    st_writer_free(mw);
    free(vs);
    free(ts);
    if (ranks) { /* all go on to the optimizer file, or none */
        int all = ranks->agree(ranks->ctx, r);
        if (all < 0 && r == 0) r = asvr_err_set(err, "another rank failed while the parameters were saved");
    }
    if (!o || r < 0) return r;
    /* every rank runs the optimizer file's fills in file order (they may gather across ranks) */
    st_writer *w = st_writer_new();
    char name[NN_NAME_MAX + 8];
    for (int i = 0; i < ps->n; i++) {
        const param *q = ps->v[i];
        if (!q->g) continue;
        for (int k = 0; k < 2; k++) {
            srcs[2 * i + k] = (moment_src){o, ranks, i, k};
            snprintf(name, sizeof name, "%s.%s", k ? "v" : "m", q->name);
            st_writer_add_source(w, name, ST_F32, q->ndim, q->shape, fill_moment, &srcs[2 * i + k]);
        }
    }
    r = write_or_fill(w, writer, tmp, "optimizer.safetensors", ranks, err);
    st_writer_free(w);
    return r;
}

int checkpoint_save(const char *out_dir, int64_t step, const param_set *ps, const optim *o, json_t *state,
                    const checkpoint_ranks *ranks, asvr_error *err) {
    char name[64], tmpname[64];
    snprintf(name, sizeof name, "step-%08lld", (long long)step);
    snprintf(tmpname, sizeof tmpname, "step-%08lld.tmp", (long long)step);
    char *dir = asvr_path_join(out_dir, name), *tmp = asvr_path_join(out_dir, tmpname);
    int writer = !ranks || ranks->writer, r = 0;
    moment_src *srcs = asvr_calloc((size_t)(2 * ps->n + 1), sizeof *srcs, "checkpoint sources");
    if (writer) {
        rm_rf(tmp);
        r = asvr_mkdir_p(tmp, err);
    }
    if (ranks) { /* the others must not gather for a writer that gave up */
        int all = ranks->agree(ranks->ctx, r);
        if (all < 0 && r == 0) r = asvr_err_set(err, "the writing rank could not make the checkpoint folder");
    }
    nonfinite bad = {{0}};
    if (r == 0) r = write_files(tmp, ps, o, ranks, srcs, &bad, err);
    if (r == 0 && bad.msg[0]) r = asvr_err_set(err, "%s", bad.msg);
    free(srcs);
    if (r == 0 && writer) r = finish(out_dir, tmp, dir, state, err);
    if (r < 0 && writer) rm_rf(tmp); /* a failed save leaves nothing; the previous checkpoint stays */
    if (ranks) {
        int all = ranks->agree(ranks->ctx, r);
        if (all < 0 && r == 0) r = asvr_err_set(err, "checkpoint step %lld: another rank failed", (long long)step);
    }
    free(dir);
    free(tmp);
    return r < 0 ? -1 : 0;
}

int checkpoint_find_latest(const char *out_dir, char **path, int64_t *step) {
    *path = NULL;
    *step = -1;
    DIR *d = opendir(out_dir);
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        long long s;
        char tail;
        if (sscanf(e->d_name, "step-%lld%c", &s, &tail) != 1) continue;
        char *dir = asvr_path_join(out_dir, e->d_name), *done = asvr_path_join(dir, "DONE");
        if (asvr_path_exists(done) && s > *step) {
            free(*path);
            *path = asvr_strdup(dir);
            *step = s;
        }
        free(done);
        free(dir);
    }
    closedir(d);
    return *path != NULL;
}

int checkpoint_load(const char *dir, param_set *ps, optim *o, json_t **state, asvr_error *err) {
    *state = NULL;
    char *p = asvr_path_join(dir, "model.safetensors");
    safetensors *st;
    int rc = safetensors_open(p, &st, err);
    free(p);
    if (rc < 0) return -1;
    rc = param_set_load(ps, st, "", err);
    safetensors_close(st);
    if (rc < 0) return asvr_err_prefix(err, "checkpoint '%s'", dir);
    if (o) {
        p = asvr_path_join(dir, "optimizer.safetensors");
        rc = safetensors_open(p, &st, err);
        free(p);
        if (rc < 0) return -1;
        char name[NN_NAME_MAX + 8];
        float *full = NULL;
        for (int i = 0; i < ps->n && rc == 0; i++) {
            const param *q = ps->v[i];
            if (!q->g) continue;
            full = asvr_realloc(full, sizeof(float) * (size_t)q->numel, "a checkpoint read buffer (one tensor)");
            for (int k = 0; k < 2 && rc == 0; k++) {
                snprintf(name, sizeof name, "%s.%s", k ? "v" : "m", q->name);
                const st_tensor *t = safetensors_find(st, name);
                if (!t || t->numel != q->numel)
                    rc = asvr_err_set(err, "checkpoint '%s': optimizer state '%s' is missing or mis-shaped (was the stage "
                                      "or the set of trainable parameters changed?)", dir, name);
                else if ((rc = st_tensor_to_f32(t, full, err)) == 0)
                    optim_set(o, i, k, full);
            }
        }
        free(full);
        safetensors_close(st);
        if (rc < 0) return -1;
    }
    p = asvr_path_join(dir, "state.json");
    *state = json_read_path(p, (size_t)64 << 20, err);
    free(p);
    if (!*state) return asvr_err_prefix(err, "checkpoint '%s'", dir);
    if (!json_is_object(*state)) {
        json_decref(*state);
        *state = NULL;
        return asvr_err_set(err, "checkpoint '%s': state.json is not a JSON object", dir);
    }
    return 0;
}

static int state_int(const json_t *state, const char *key, int64_t lo, int64_t hi, int64_t *v, asvr_error *err) {
    json_t *x = json_object_get(state, key);
    if (!json_is_integer(x) || json_integer_value(x) < lo || json_integer_value(x) > hi)
        return asvr_err_set(err, "state.json's \"%s\" must be a whole number in %lld..%lld", key, (long long)lo,
                            (long long)hi);
    *v = json_integer_value(x);
    return 0;
}

static int state_fp(const json_t *state, const char *key, const char **v, asvr_error *err) {
    const char *s = json_string_value(json_object_get(state, key));
    size_t n = s ? strlen(s) : 0;
    int hex = n == 16;
    for (size_t i = 0; hex && i < n; i++) hex = (s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f');
    if (!hex) return asvr_err_set(err, "state.json's \"%s\" must be a fingerprint (16 hex digits)", key);
    *v = s;
    return 0;
}

int checkpoint_state_parse(const json_t *state, int64_t rows, checkpoint_state *out, asvr_error *err) {
    memset(out, 0, sizeof *out);
    if (!json_is_object(state)) return asvr_err_set(err, "state.json is not a JSON object");
    if (state_int(state, "step", 0, (int64_t)1 << 53, &out->step, err) < 0 ||
        state_int(state, "data_epoch", 0, (int64_t)1 << 40, &out->epoch, err) < 0 ||
        state_int(state, "data_index", 0, rows, &out->index, err) < 0 ||
        state_fp(state, "packed_source_fingerprint", &out->packed_fp, err) < 0 ||
        state_fp(state, "codes_tokenizer_fingerprint", &out->codes_fp, err) < 0)
        return -1;
    out->blas_threads = -1;
    if (json_object_get(state, "blas_threads") &&
        state_int(state, "blas_threads", 1, 1 << 20, &out->blas_threads, err) < 0)
        return -1;
    return 0;
}
