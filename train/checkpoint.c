#include "checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fsutil.h"
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

/* Host copies of tensors that live on a device (NULL entries: on the CPU already, written from their
 * own memory), freed by host_copies_free. Checkpoints are always the CPU format: f32, host order. */
static const void *host_data(const tensor *t, void **owned) {
    *owned = NULL;
    if (t->device == NN_CPU && t->dtype == NN_F32) return t->data;
    float *h = asvr_malloc(sizeof(float) * (size_t)tensor_numel(t), "a checkpoint download buffer");
    op_read_f32(t, h);
    *owned = h;
    return h;
}

int checkpoint_save(const char *out_dir, int64_t step, const param_set *ps, const optim *o, json_t *state,
                    asvr_error *err) {
    char name[64], tmpname[64];
    snprintf(name, sizeof name, "step-%08lld", (long long)step);
    snprintf(tmpname, sizeof tmpname, "step-%08lld.tmp", (long long)step);
    char *dir = asvr_path_join(out_dir, name), *tmp = asvr_path_join(out_dir, tmpname);
    int rc = -1;
    rm_rf(tmp);
    if (asvr_mkdir_p(tmp, err) < 0) goto out;
    /* downloads (device runs): one buffer per tensor, kept until the writer is done with it */
    void **owned = asvr_calloc((size_t)(3 * ps->n + 1), sizeof *owned, "checkpoint download buffers");
    int n_owned = 0;
    st_writer *w = st_writer_new();
    for (int i = 0; i < ps->n; i++) {
        const void *d = host_data(ps->v[i]->w, &owned[n_owned++]);
        st_writer_add(w, ps->v[i]->name, ST_F32, ps->v[i]->w->ndim, ps->v[i]->w->shape, d);
    }
    char *p = asvr_path_join(tmp, "model.safetensors");
    int r = st_writer_write(w, p, err);
    free(p);
    st_writer_free(w);
    if (r == 0 && o) {
        w = st_writer_new();
        for (int i = 0; i < ps->n; i++) {
            if (!o->m[i]) continue;
            const void *dm = host_data(o->m[i], &owned[n_owned++]), *dv = host_data(o->v[i], &owned[n_owned++]);
            st_writer_add(w, o->m[i]->name, ST_F32, o->m[i]->ndim, o->m[i]->shape, dm);
            st_writer_add(w, o->v[i]->name, ST_F32, o->v[i]->ndim, o->v[i]->shape, dv);
        }
        p = asvr_path_join(tmp, "optimizer.safetensors");
        r = st_writer_write(w, p, err);
        free(p);
        st_writer_free(w);
    }
    for (int i = 0; i < n_owned; i++) free(owned[i]);
    free(owned);
    if (r < 0) goto out;
    char *js = json_dumps(state, JSON_INDENT(2) | JSON_SORT_KEYS);
    p = asvr_path_join(tmp, "state.json");
    r = asvr_atomic_write(p, js, strlen(js), err);
    free(p);
    free(js);
    if (r < 0) goto out;
    p = asvr_path_join(tmp, "DONE");
    r = asvr_atomic_write(p, "", 0, err);
    free(p);
    if (r < 0) goto out;
    rm_rf(dir);
    if (rename(tmp, dir) != 0) {
        asvr_err_set(err, "renaming '%s' to '%s': %s", tmp, dir, strerror(errno));
        goto out;
    }
    rc = asvr_fsync_dir(out_dir, err);
out:
    free(dir);
    free(tmp);
    return rc;
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
        for (int i = 0; i < ps->n && rc == 0; i++) {
            if (!o->m[i]) continue;
            tensor *mv[2] = {o->m[i], o->v[i]};
            for (int k = 0; k < 2 && rc == 0; k++) {
                const st_tensor *t = safetensors_find(st, mv[k]->name);
                if (!t || t->numel != tensor_numel(mv[k]))
                    rc = asvr_err_set(err, "checkpoint '%s': optimizer state '%s' is missing or mis-shaped (was the stage "
                                      "or the set of trainable parameters changed?)", dir, mv[k]->name);
                else rc = param_tensor_load(mv[k], t, err);
            }
        }
        safetensors_close(st);
        if (rc < 0) return -1;
    }
    p = asvr_path_join(dir, "state.json");
    json_error_t je;
    *state = json_load_file(p, 0, &je);
    free(p);
    if (!*state) return asvr_err_set(err, "checkpoint '%s': state.json: %s", dir, je.text);
    return 0;
}
