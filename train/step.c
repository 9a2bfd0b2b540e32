/* step.c — one optimizer step of a run (trainer.h), and its checkpoint.
 *
 * Loss normalisation (the whole optimizer step is one mean, whatever the micro-batching): the text
 * loss is the mean CE over the supervised tokens of all the step's micro-batches; the visual loss of
 * a head is, per depth, the mean CE over the step's image positions, then the mean over depths, times
 * λ. Each micro-batch's gradient is scaled accordingly, built on its own and added to the step's
 * gradient (over the ranks with data parallelism: dp.h); the loss sums and counts are summed over the
 * ranks for the log. */
#include <cblas.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/progress.h" /* asvr_now */
#include "checkpoint.h"
#include "trainer.h"

/* The step's gradient scales: 1 / supervised text tokens; λ / (D · image positions) per head (with the
 * reference's text-only samples counted as P positions each). */
static asvr_scales step_scales(const trainer *t, const step_batches *sb) {
    const asvr_config *c = &t->mc;
    int64_t img_pos = sb->image_positions, app_pos = sb->image_positions;
    if (t->zero_codes) img_pos += sb->text_only * c->image_positions;
    int D = c->has_head ? c->head.depth : 0, Da = c->has_app_head ? c->head_app.depth : 0;
    asvr_scales s = {sb->text_targets ? 1.0 / (double)sb->text_targets : 0,
                     (D && img_pos) ? c->lambda_visual / ((double)D * img_pos) : 0,
                     (Da && app_pos) ? c->lambda_visual / ((double)Da * app_pos) : 0};
    return s;
}

/* The step's loss sums and counts over the ranks (two-operand sums with two ranks: exact). */
static void sum_losses(trainer *t, asvr_losses *L) {
    if (t->world == 1) return;
    int D = t->mc.has_head ? t->mc.head.depth : 0, Da = t->mc.has_app_head ? t->mc.head_app.depth : 0;
    double f[1 + 2 * 256];
    int64_t n[3 + 2 * 256];
    int nf = 0, ni = 0;
    f[nf++] = L->text_sum;
    for (int d = 0; d < D; d++) f[nf++] = L->vis_sum[d];
    for (int d = 0; d < Da; d++) f[nf++] = L->app_sum[d];
    n[ni++] = L->text_count, n[ni++] = L->vis_count, n[ni++] = L->app_count;
    for (int d = 0; d < D; d++) n[ni++] = L->vis_correct[d];
    for (int d = 0; d < Da; d++) n[ni++] = L->app_correct[d];
    dp_sum_f64(&t->dp, f, nf);
    dp_sum_i64(&t->dp, n, ni);
    nf = ni = 0;
    L->text_sum = f[nf++];
    for (int d = 0; d < D; d++) L->vis_sum[d] = f[nf++];
    for (int d = 0; d < Da; d++) L->app_sum[d] = f[nf++];
    L->text_count = n[ni++], L->vis_count = n[ni++], L->app_count = n[ni++];
    for (int d = 0; d < D; d++) L->vis_correct[d] = n[ni++];
    for (int d = 0; d < Da; d++) L->app_correct[d] = n[ni++];
}

void trainer_step(trainer *t, step_batches *sb, step_stats *st) {
    double t0 = asvr_now();
    memset(st, 0, sizeof *st);
    asvr_scales s = step_scales(t, sb);
    comm_counts c0, c1;
    comm_get_counts(t->comm, &c0);
    dp_step_begin(&t->dp, &t->opt, sb->rounds);
    for (int k = 0; k < sb->rounds; k++) {
        dp_round_begin(&t->dp, k);
        if (k < sb->n) {
            const train_batch *b = &sb->mb[k];
            asvr_batch ab = {b->B, b->T, b->ids, b->labels, b->pos, b->seg, b->n_images, b->image_pos, b->codes,
                             b->codes_app, b->pixels, b->n_text_only, t->zero_codes};
            asvr_forward(&t->m, t->acts, &ab);
            asvr_loss(&t->m, t->acts, &s, &st->L, 1);
            asvr_backward(&t->m, t->acts);
        } else {
            param_set_grads_done(&t->m.ps, NULL); /* no micro-batch of this rank: its zeros take part */
        }
        dp_round_end(&t->dp);
    }
    sum_losses(t, &st->L);
    st->lr = optim_step(&t->opt, &st->grad_norm, &st->clip_coef);
    dp_step_end(&t->dp, &t->opt);
    comm_get_counts(t->comm, &c1);
    for (int k = 0; k < COMM_NKINDS; k++) st->collectives[k] = c1.calls[k] - c0.calls[k];
    t->step++;
    if (t->o.check_replicas > 0 && t->step % t->o.check_replicas == 0 && !dp_replicas_equal(&t->dp))
        ASVR_FATAL("report this: the ranks' parameters drifted apart", "step %lld: the replicas' parameters differ",
                   (long long)t->step);
    st->seconds = asvr_now() - t0;
    st->tokens = sb->tokens;
    st->rounds = sb->rounds;
    st->samples = sb->samples;
}

int trainer_blas_threads(void) { return openblas_get_num_threads(); }

int trainer_step_check(const trainer *t, const step_stats *st, asvr_error *err) {
    const asvr_losses *L = &st->L;
    int D = t->mc.has_head ? t->mc.head.depth : 0, Da = t->mc.has_app_head ? t->mc.head_app.depth : 0;
    int finite = isfinite(L->text_sum) && isfinite(st->grad_norm);
    for (int d = 0; d < D; d++) finite = finite && isfinite(L->vis_sum[d]);
    for (int d = 0; d < Da; d++) finite = finite && isfinite(L->app_sum[d]);
    if (finite) return 0;
    char vis[64] = "", app[64] = "";
    double v = 0, a = 0;
    for (int d = 0; d < D; d++) v += L->vis_sum[d];
    for (int d = 0; d < Da; d++) a += L->app_sum[d];
    if (D) snprintf(vis, sizeof vis, ", visual loss sum %g", v);
    if (Da) snprintf(app, sizeof app, ", appearance loss sum %g", a);
    return asvr_err_set(err,
                        "step %lld: training diverged: text loss sum %g%s%s, gradient norm %g (learning rate %g); "
                        "stopped without saving this step (the newest checkpoint in '%s' is kept). Lower --lr, set "
                        "--clip-norm, or check the model config (image_std, norms) and the data",
                        (long long)t->step, L->text_sum, vis, app, st->grad_norm, st->lr, t->o.out);
}

int trainer_save(trainer *t, const step_batches *sb, asvr_error *err) {
    const train_opts *o = &t->o;
    json_t *cfg = json_loads(t->config_text, 0, NULL);
    /* the cursor after this step's data, not the prefetch's */
    json_t *state = json_pack("{s:I, s:I, s:I, s:s, s:I, s:I, s:f, s:o, s:s, s:s, s:s, s:s}", "step", (json_int_t)t->step,
                              "data_epoch", (json_int_t)sb->epoch, "data_index", (json_int_t)sb->index, "stage",
                              o->rc.stage, "seed", (json_int_t)o->seed, "total_steps", (json_int_t)t->total, "lr", o->lr,
                              "model_config", cfg, "visual_loss", o->rc.visual_loss, "input", o->rc.input,
                              "packed_source_fingerprint", data_packed_fingerprint(t->dl),
                              "codes_tokenizer_fingerprint", data_codes_fingerprint(t->dl));
    checkpoint_ranks ranks = {t->rank == 0, dp_gather_host, dp_agree, &t->dp};
    json_object_set_new(state, "world", json_integer(t->world));
    /* CPU results depend on how OpenBLAS splits its sums: a rerun matches with the same count */
    json_object_set_new(state, "blas_threads", json_integer(trainer_blas_threads()));
    json_object_set_new(state, "zero", json_integer(t->zero));
    int rc = checkpoint_save(o->out, t->step, &t->m.ps, &t->opt, state, t->world > 1 ? &ranks : NULL, err);
    json_decref(state);
    return rc;
}
