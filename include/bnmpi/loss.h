/* loss.h: ReLU and the fused, numerically stable softmax cross-entropy. */
#ifndef BNMPI_LOSS_H
#define BNMPI_LOSS_H

#include <stdint.h>

/* y = max(x, 0), (n); y may alias x. */
void relu_forward(float *y, const float *x, size_t n);
/* d *= (y > 0): turns dL/dy into dL/dx in place, given the ReLU output y. */
void relu_backward(float *d, const float *y, size_t n);

/* logits (B, k), labels (B). Returns the summed loss over the B rows (natural
 * log) and adds the number of rows whose argmax equals the label to *correct.
 * If dlogits (B, k) is non-NULL it receives (softmax - onehot) * scale: with
 * scale = 1/global_batch, summing every rank's gradient gives the gradient of
 * the global-mean loss. */
double softmax_xent(float *dlogits, const float *logits, const uint8_t *labels, int B, int k, float scale,
                    long *correct);

#endif
