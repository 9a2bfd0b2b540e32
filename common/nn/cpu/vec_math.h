/* vec_math.h — branch-free fp32 exp and tanh on 8-lane vectors (GCC/Clang vector extensions), for the
 * CPU backend's GELU loops: the compiler lowers them to whatever SIMD the target has (two SSE halves
 * by default, one AVX2 register in the avx2 clone of the loops that use them). Every lane computes the
 * same IEEE operations in the same order whatever the lowering, so a value does not depend on the
 * clone, its position in the array or the array's length.
 *
 * Accuracy (measured over every float in the ranges, against double precision): v8_tanh within 1.5 ulp
 * (|x| < 0.625: an odd polynomial fitted for this file, 0.8 ulp; beyond: 1 - 2 / (exp(2|x|) + 1));
 * v8_exp within 1.5 ulp on [-87, 88]. glibc's tanhf is within 1 ulp too, so results differ from the
 * scalar tanhf path in the last bit now and then (PyTorch's vectorised tanh differs from both).
 * Not for: arguments outside those ranges beyond what the callers clamp, or double precision.
 */
#ifndef ASVR_NN_CPU_VEC_MATH_H
#define ASVR_NN_CPU_VEC_MATH_H

#include <stdint.h>
#include <string.h>

/* These helpers are always inlined, so the vector calling convention (which differs with and without
 * AVX, what -Wpsabi warns about) never applies. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
#define V8_INLINE static inline __attribute__((always_inline))

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

V8_INLINE v8f v8_splat(float x) { return (v8f){x, x, x, x, x, x, x, x}; }

V8_INLINE v8f v8_bits_f(v8i i) {
    v8f f;
    memcpy(&f, &i, sizeof f);
    return f;
}

V8_INLINE v8i v8_bits_i(v8f f) {
    v8i i;
    memcpy(&i, &f, sizeof i);
    return i;
}

/* mask ? a : b, mask lanes all ones or all zeros */
V8_INLINE v8f v8_select(v8i mask, v8f a, v8f b) { return v8_bits_f((mask & v8_bits_i(a)) | (~mask & v8_bits_i(b))); }

/* exp(x) for x in [-87.3, 88.7] (callers clamp): x = n ln2 + r with |r| <= ln2/2 (ln2 in two parts),
 * exp(r) by its degree-7 Taylor polynomial (truncation below 0.06 ulp), times 2^n built in the
 * exponent bits. */
V8_INLINE v8f v8_exp(v8f x) {
    const v8f shifter = v8_splat(12582912.0f); /* 1.5 * 2^23: adding it rounds to an integer */
    v8f t = x * v8_splat(1.44269504088896341f) + shifter;
    v8f n = t - shifter;
    v8f r = x - n * v8_splat(0.693145751953125f); /* ln2 high part: exact in the product */
    r = r - n * v8_splat(1.42860682030941723e-6f);
    v8f p = v8_splat(1.0f / 5040.0f);
    p = p * r + v8_splat(1.0f / 720.0f);
    p = p * r + v8_splat(1.0f / 120.0f);
    p = p * r + v8_splat(1.0f / 24.0f);
    p = p * r + v8_splat(1.0f / 6.0f);
    p = p * r + v8_splat(0.5f);
    p = p * r + v8_splat(1.0f);
    p = p * r + v8_splat(1.0f);
    v8i e = (__builtin_convertvector(n, v8i) + 127) << 23;
    return p * v8_bits_f(e);
}

/* tanh(x) for every float x (NaN in, NaN out). */
V8_INLINE v8f v8_tanh(v8f x) {
    const v8i absmask = (v8i){0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff,
                              0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff};
    v8i xi = v8_bits_i(x);
    v8f ax = v8_bits_f(xi & absmask);
    v8i sign = xi & ~absmask;
    /* small: x + x^3 q(x^2) */
    v8f s = ax * ax;
    v8f q = v8_splat(0.002138207433745265f);
    q = q * s + v8_splat(-0.008171768859028816f);
    q = q * s + v8_splat(0.021698201075196266f);
    q = q * s + v8_splat(-0.053946252912282944f);
    q = q * s + v8_splat(0.1333320140838623f);
    q = q * s + v8_splat(-0.3333333134651184f);
    v8f small = ax + (ax * s) * q;
    /* large: 1 - 2 / (exp(2|x|) + 1); from |x| = 20 on (long before) the result is exactly 1 */
    v8f a2 = ax + ax;
    a2 = v8_select(a2 < v8_splat(40.0f), a2, v8_splat(40.0f));
    v8f large = v8_splat(1.0f) - v8_splat(2.0f) / (v8_exp(a2) + v8_splat(1.0f));
    v8f y = v8_select(ax < v8_splat(0.625f), small, large);
    y = v8_select(ax != ax, ax, y); /* NaN stays NaN */
    return v8_bits_f(v8_bits_i(y) | sign);
}

#endif
