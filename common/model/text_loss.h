/* text_loss.h — the next-token targets of the text loss for packed rows.
 *
 * Labels follow the HF convention (not yet shifted: labels[b,t] is the token that position t-1 must
 * predict, NN_IGNORE_INDEX = -100 where unsupervised). The logits at position t are scored against
 *   target[b,t] = labels[b,t+1]  when t+1 < T and seg[b,t+1] == seg[b,t] >= 0,
 *   target[b,t] = -100           otherwise,
 * so in a packed row the first token of a sample is never scored from the previous sample's last
 * token (a plain row-level shift would do that), and padding (segment < 0) is never scored.
 * The targets feed op_cross_entropy over the logits of all B*T positions; the caller divides by the
 * scored count of the whole batch (e.g. scale = 1 / count for a mean).
 * Not for: computing the loss itself (op_cross_entropy does), or building labels from a template
 * (text/template.h does).
 */
#ifndef ASVR_MODEL_TEXT_LOSS_H
#define ASVR_MODEL_TEXT_LOSS_H

#include <stdint.h>

#include "nn/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* labels, seg, targets: i32 [B,T] on the CPU (targets must not alias labels). Returns the number of
 * scored positions (targets != -100). A label that is neither -100 nor >= 0 exits naming it. */
int64_t text_loss_targets(const tensor *labels, const tensor *seg, tensor *targets);

#ifdef __cplusplus
}
#endif
#endif
