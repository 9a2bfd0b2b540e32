/* log.c — a run's log (trainer.h): log.jsonl in the run folder, one JSON object per step, and the
 * step line on stderr. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/ops.h"
#include "base/fsutil.h"
#include "base/log.h"
#include "trainer.h"

void train_log_open(trainer *t) {
    if (t->rank != 0) return; /* rank 0 keeps the log */
    asvr_error err;
    t->log_path = asvr_path_join(t->o.out, "log.jsonl");
    /* keep the lines of steps the checkpoint covers (a crash may have logged more) */
    uint8_t *data = NULL;
    size_t n = 0;
    char *kept = NULL;
    size_t kn = 0;
    if (asvr_read_file(t->log_path, &data, &n, &err) == 0) {
        kept = asvr_malloc(n + 1, "the log");
        char *save = NULL;
        int lineno = 0;
        for (char *line = strtok_r((char *)data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            json_t *j = json_loads(line, 0, NULL);
            lineno++;
            if (!j) LOG_WARN("'%s': line %d is not JSON; it is dropped", t->log_path, lineno);
            if (j && json_integer_value(json_object_get(j, "step")) <= t->step) {
                size_t l = strlen(line);
                memcpy(kept + kn, line, l);
                kept[kn + l] = '\n';
                kn += l + 1;
            }
            json_decref(j);
        }
        free(data);
    }
    if (asvr_atomic_write(t->log_path, kept ? kept : "", kn, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    free(kept);
    t->log = asvr_fopen_append(t->log_path, &err);
    if (!t->log) ASVR_FATAL("", "%s", err.msg);
}

void train_log_close(trainer *t) {
    if (t->log) fclose(t->log);
    free(t->log_path);
    t->log = NULL;
    t->log_path = NULL;
}

/* A number for the log: JSON has no NaN or infinity, so those are written as null (a step whose loss
 * or gradient norm is not finite stops the run before it is logged: trainer_step_check). */
static json_t *jnum(double x) { return isfinite(x) ? json_real(x) : json_null(); }

/* Per-depth losses and accuracies of one head as JSON arrays; returns the mean loss over depths. */
static double head_json(int D, const double *sum, const int64_t *correct, int64_t count, json_t **loss, json_t **acc) {
    double mean = 0;
    *loss = json_array();
    *acc = json_array();
    for (int d = 0; d < D; d++) {
        double ld = count ? sum[d] / (double)count : 0;
        mean += ld / D;
        json_array_append_new(*loss, jnum(ld));
        json_array_append_new(*acc, jnum(count ? (double)correct[d] / (double)count : 0));
    }
    return mean;
}

void train_log_step(trainer *t, const step_stats *st) {
    if (t->rank != 0) return;
    const asvr_config *mc = &t->mc;
    const asvr_losses *L = &st->L;
    int D = mc->has_head ? mc->head.depth : 0, Da = mc->has_app_head ? mc->head_app.depth : 0;
    double dt = st->seconds, text = L->text_count ? L->text_sum / (double)L->text_count : 0;
    json_t *vd, *acc, *ad, *aacc;
    double vis = head_json(D, L->vis_sum, L->vis_correct, L->vis_count, &vd, &acc);
    double app = head_json(Da, L->app_sum, L->app_correct, L->app_count, &ad, &aacc);
    double loss = text + mc->lambda_visual * (vis + app);
    double mfu = dt > 0 ? t->flops_per_token * (double)st->tokens / dt / (t->o.peak_tflops * 1e12 * t->world) : 0;
    /* a loss with nothing to score in this step (no supervised token, no image) is logged as null */
    json_t *line = json_pack("{s:I, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:I, s:I, s:o, s:o, s:i}", "step",
                             (json_int_t)t->step, "loss", jnum(loss), "text_loss", L->text_count ? jnum(text) : json_null(),
                             "visual_loss", (D && L->vis_count) ? jnum(vis) : json_null(), "visual_loss_depth", vd,
                             "code_accuracy_depth", acc, "lr", jnum(st->lr), "grad_norm", jnum(st->grad_norm), "tokens",
                             (json_int_t)st->tokens, "samples", (json_int_t)st->samples, "seconds", jnum(dt),
                             "tokens_per_s", jnum(dt > 0 ? st->tokens / dt : 0), "blas_threads",
                             trainer_blas_threads());
    CHECK(line != NULL, "report this", "step %lld: building the log line", (long long)t->step);
    if (t->dev != NN_CPU) json_object_set_new(line, "mfu", jnum(mfu));
    if (t->world > 1) {
        json_object_set_new(line, "tokens_per_s_per_rank", jnum(dt > 0 ? st->tokens / dt / t->world : 0));
        json_t *cc = json_object(); /* rank 0's collectives of the step, by kind, and the buckets they reduce */
        for (int k = 0; k < COMM_NKINDS; k++)
            if (st->collectives[k]) json_object_set_new(cc, comm_kind_name((comm_kind)k), json_integer(st->collectives[k]));
        json_object_set_new(cc, "buckets", json_integer(t->m.ps.n_buckets));
        json_object_set_new(cc, "rounds", json_integer(st->rounds));
        json_object_set_new(line, "collectives", cc);
    }
    size_t mem_used, mem_total;
    if (nn_device_mem_used(t->dev, &mem_used, &mem_total)) {
        const double G = 1024.0 * 1024.0 * 1024.0;
        json_object_set_new(line, "device_mem_gib", jnum((double)mem_used / G));
        if (st->first) /* the arenas are all allocated and the scratch has grown by now */
            LOG_INFO("device memory in use after the first step: %.2f GiB of %.2f GiB (the plan above: %.2f GiB)",
                     (double)mem_used / G, (double)mem_total / G, (t->mem.total - t->mem.tower_weights - t->mem.tower_acts) / G);
    }
    if (Da) {
        json_object_set_new(line, "appearance_loss", L->app_count ? jnum(app) : json_null());
        json_object_set_new(line, "appearance_loss_depth", ad);
        json_object_set_new(line, "appearance_accuracy_depth", aacc);
    } else {
        json_decref(ad);
        json_decref(aacc);
    }
    char *s = json_dumps(line, JSON_COMPACT);
    CHECK(s != NULL, "report this", "step %lld: serialising the log line", (long long)t->step);
    if (fprintf(t->log, "%s\n", s) < 0 || fflush(t->log) != 0)
        CHECK_SYS(-1, "appending step %lld to '%s'", (long long)t->step, t->log_path);
    free(s);
    json_decref(line);
    char accs[256] = "";
    for (int d = 0; d < D && d < 8; d++) {
        size_t l = strlen(accs);
        snprintf(accs + l, sizeof accs - l, "%s%.2f", d ? " " : "", L->vis_count ? (double)L->vis_correct[d] / (double)L->vis_count : 0);
    }
    char apps[64] = "", mfus[32] = "";
    if (Da) snprintf(apps, sizeof apps, "  appearance %.4f", app);
    if (t->dev != NN_CPU) snprintf(mfus, sizeof mfus, "  MFU %.1f%%", 100.0 * mfu);
    LOG_INFO("step %lld/%lld  loss %.4f  text %.4f  visual %.4f%s  acc [%s]  lr %.3g  gnorm %.3f  %.0f tok/s%s",
             (long long)t->step, (long long)t->total, loss, text, vis, apps, accs, st->lr, st->grad_norm,
             dt > 0 ? st->tokens / dt : 0, mfus);
}
