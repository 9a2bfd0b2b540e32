/* vec_math.h — branch-free fp32 exp and tanh on 4-lane vectors (GCC/Clang vector extensions, 128 bits:
 * SSE2 on x86-64, NEON on arm64, scalar code elsewhere), for the CPU backend's GELU loops. Every lane
 * computes the same IEEE operations in the same order, so a value does not depend on its position in
 * the array or the array's length.
 *
 * Accuracy (measured over every float in the ranges, against double precision): v4_tanh within 1.5 ulp
 * (|x| < 0.625: an odd polynomial fitted for this file, 0.8 ulp; beyond: 1 - 2 / (exp(2|x|) + 1));
 * v4_exp within 1.5 ulp on [-87, 88]. glibc's tanhf is within 1 ulp too, so results differ from the
 * scalar tanhf path in the last bit now and then (PyTorch's vectorised tanh differs from both).
 * Not for: arguments outside those ranges beyond what the callers clamp, or double precision.
 */
#ifndef ASVR_NN_CPU_VEC_MATH_H
#define ASVR_NN_CPU_VEC_MATH_H

#include <stdint.h>
#include <string.h>

#define V4_INLINE static inline __attribute__((always_inline))

typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));

V4_INLINE v4f v4_splat(float x) { return (v4f){x, x, x, x}; }

V4_INLINE v4f v4_bits_f(v4i i) {
    v4f f;
    memcpy(&f, &i, sizeof f);
    return f;
}

V4_INLINE v4i v4_bits_i(v4f f) {
    v4i i;
    memcpy(&i, &f, sizeof i);
    return i;
}

/* mask ? a : b, mask lanes all ones or all zeros */
V4_INLINE v4f v4_select(v4i mask, v4f a, v4f b) { return v4_bits_f((mask & v4_bits_i(a)) | (~mask & v4_bits_i(b))); }

/* exp(x) for x in [-87.3, 88.7] (callers clamp): x = n ln2 + r with |r| <= ln2/2 (ln2 in two parts),
 * exp(r) by its degree-7 Taylor polynomial (truncation below 0.06 ulp), times 2^n built in the
 * exponent bits. */
V4_INLINE v4f v4_exp(v4f x) {
    const v4f shifter = v4_splat(12582912.0f); /* 1.5 * 2^23: adding it rounds to an integer */
    v4f t = x * v4_splat(1.44269504088896341f) + shifter;
    v4f n = t - shifter;
    v4f r = x - n * v4_splat(0.693145751953125f); /* ln2 high part: exact in the product */
    r = r - n * v4_splat(1.42860682030941723e-6f);
    v4f p = v4_splat(1.0f / 5040.0f);
    p = p * r + v4_splat(1.0f / 720.0f);
    p = p * r + v4_splat(1.0f / 120.0f);
    p = p * r + v4_splat(1.0f / 24.0f);
    p = p * r + v4_splat(1.0f / 6.0f);
    p = p * r + v4_splat(0.5f);
    p = p * r + v4_splat(1.0f);
    p = p * r + v4_splat(1.0f);
    v4i e = (__builtin_convertvector(n, v4i) + 127) << 23;
    return p * v4_bits_f(e);
}

/* tanh(x) for every float x (NaN in, NaN out). */
V4_INLINE v4f v4_tanh(v4f x) {
    const v4i absmask = (v4i){0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff};
    v4i xi = v4_bits_i(x);
    v4f ax = v4_bits_f(xi & absmask);
    v4i sign = xi & ~absmask;
    /* small: x + x^3 q(x^2) */
    v4f s = ax * ax;
    v4f q = v4_splat(0.002138207433745265f);
    q = q * s + v4_splat(-0.008171768859028816f);
    q = q * s + v4_splat(0.021698201075196266f);
    q = q * s + v4_splat(-0.053946252912282944f);
    q = q * s + v4_splat(0.1333320140838623f);
    q = q * s + v4_splat(-0.3333333134651184f);
    v4f small = ax + (ax * s) * q;
    /* large: 1 - 2 / (exp(2|x|) + 1); from |x| = 20 on (long before) the result is exactly 1 */
    v4f a2 = ax + ax;
    a2 = v4_select(a2 < v4_splat(40.0f), a2, v4_splat(40.0f));
    v4f large = v4_splat(1.0f) - v4_splat(2.0f) / (v4_exp(a2) + v4_splat(1.0f));
    v4f y = v4_select(ax < v4_splat(0.625f), small, large);
    y = v4_select(ax != ax, ax, y); /* NaN stays NaN */
    return v4_bits_f(v4_bits_i(y) | sign);
}

#endif
