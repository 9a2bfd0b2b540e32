// mma.h — the stand-in's nvcuda::wmma: the subset the backend uses (16x16x16 tiles, bf16 operands
// in matrix_a / matrix_b fragments, row_major or col_major; float accumulators loaded and stored
// row- or column-major; fill_fragment, load_matrix_sync, store_matrix_sync, mma_sync; num_elements
// and x[] element access).
// Layout: a fragment here holds the whole 16x16 tile in every lane, in row-major order. On the
// device each lane holds an opaque, unspecified part of the tile, so code may use x[] only for
// position-independent elementwise work (scale all, convert all, fill); code that gives x[e] a
// row or column meaning is wrong on the device yet would pass here.
// Collective: load, store and mma are warp-wide in spirit: every lane of the warp must reach the
// same call (each waits for the others: a call that some lanes skip while others wait elsewhere
// deadlocks and is reported, and so is a call made after some lanes returned); every lane computes
// the same tile and a store writes the same values from every lane. Checked: ldm a multiple of 8
// elements for bf16 and 4 for float, and the pointer 32-byte aligned (shared memory: from the start
// of the dynamic shared memory) — the device requires both.
// What it cannot show: tensor-core numerics (the product here is exact bf16 x bf16 in fp32, summed
// in k order from the accumulator's value; the device's internal summation and rounding differ at
// ulp level), the real per-lane layout, register pressure or spilling from fragments, bank
// conflicts, speed, and ordering between lanes of a warp (a lane reading another lane's part of a
// stored tile without a barrier works here).
#pragma once
#include "cuda_emu.h"

namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void> struct fragment {
    static_assert(M == 16 && N == 16 && K == 16, "the stand-in has 16x16x16 tiles only");
    static constexpr int num_elements = 256;
    T x[256]; // row-major tile (the stand-in's layout; see the header)
};

namespace detail {
inline float tof(float v) { return v; }
inline float tof(__nv_bfloat16 v) { return __bfloat162float(v); }
inline void check(const void *p, unsigned ldm, size_t esz) {
    uintptr_t base = 0, u = (uintptr_t)p;
    if (!emu::dyn.empty() && u >= (uintptr_t)emu::dyn.data() && u < (uintptr_t)emu::dyn.data() + emu::dyn.size())
        base = (uintptr_t)emu::dyn.data();
    if ((u - base) % 32 != 0) {
        fprintf(stderr, "cuda_emu: wmma pointer %p not 32-byte aligned\n", p);
        abort();
    }
    if (ldm == 0 || (ldm * esz) % 16 != 0) {
        fprintf(stderr, "cuda_emu: wmma ldm %u not a multiple of %zu elements\n", ldm, 16 / esz);
        abort();
    }
}
// Every lane of the warp, none returned, reaches this call: the lanes meet, each checks that no lane
// has returned (none can return in between: each stops at the second meeting), and meet again.
inline void warp_collective(const char *what) {
    emu::yield(emu::F_WARP, what);
    emu::block_ctx *c = emu::cur;
    int w0 = c->t / 32 * 32;
    for (int t = w0; t < w0 + 32; t++)
        if (c->state[t] == emu::F_DONE) {
            fprintf(stderr, "cuda_emu: %s in block (%u, %u, %u) with lane %d of the warp returned (wmma needs the whole warp)\n",
                    what, blockIdx.x, blockIdx.y, blockIdx.z, t % 32);
            abort();
        }
    emu::yield(emu::F_WARP, what);
}
} // namespace detail

template <class Use, class T, class L, class V> inline void fill_fragment(fragment<Use, 16, 16, 16, T, L> &f, const V &v) {
    for (int e = 0; e < 256; e++) {
        if constexpr (std::is_same_v<T, __nv_bfloat16>) f.x[e] = __float2bfloat16((float)v);
        else f.x[e] = (T)v;
    }
}

// matrix_a / matrix_b: element (r, c) at p[r * ldm + c] (row_major) or p[c * ldm + r] (col_major).
template <class Use, class L> inline void load_matrix_sync(fragment<Use, 16, 16, 16, __nv_bfloat16, L> &f,
                                                            const __nv_bfloat16 *p, unsigned ldm) {
    static_assert(std::is_same_v<L, row_major> || std::is_same_v<L, col_major>, "operand fragments need a layout");
    detail::check(p, ldm, 2);
    detail::warp_collective("wmma::load_matrix_sync");
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++)
            f.x[r * 16 + c] = std::is_same_v<L, row_major> ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r];
}
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float> &f, const float *p, unsigned ldm, layout_t l) {
    detail::check(p, ldm, 4);
    detail::warp_collective("wmma::load_matrix_sync");
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++) f.x[r * 16 + c] = l == mem_row_major ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r];
}
inline void store_matrix_sync(float *p, const fragment<accumulator, 16, 16, 16, float> &f, unsigned ldm, layout_t l) {
    detail::check(p, ldm, 4);
    detail::warp_collective("wmma::store_matrix_sync");
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++) (l == mem_row_major ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r]) = f.x[r * 16 + c];
}
// d = a b + c (d may be c)
template <class LA, class LB>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float> &d, const fragment<matrix_a, 16, 16, 16, __nv_bfloat16, LA> &a,
                     const fragment<matrix_b, 16, 16, 16, __nv_bfloat16, LB> &b,
                     const fragment<accumulator, 16, 16, 16, float> &c) {
    detail::warp_collective("wmma::mma_sync");
    float out[256];
    for (int r = 0; r < 16; r++)
        for (int col = 0; col < 16; col++) {
            float s = c.x[r * 16 + col];
            for (int k = 0; k < 16; k++) s += detail::tof(a.x[r * 16 + k]) * detail::tof(b.x[k * 16 + col]);
            out[r * 16 + col] = s;
        }
    memcpy(d.x, out, sizeof out);
}
} // namespace wmma
} // namespace nvcuda
