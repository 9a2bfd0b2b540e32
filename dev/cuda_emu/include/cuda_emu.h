// cuda_emu.h — a CPU stand-in for the part of CUDA + cuBLAS that common/nn/cuda/*.cu use, so their
// logic (and the device-side model code calling them) can run on a machine without a GPU
// (dev/cuda_emu/run.sh). Blocks run one after another; the threads of a block are fibers switched
// at __syncthreads, __syncthreads_or and warp shuffles (1-, 2- or 3-D blocks of whole warps, up to 1024
// threads, x fastest in the linear thread order that makes the warps),
// in thread order in even blocks and in reverse order in odd ones, so code that reads what another
// thread wrote without a barrier in between gets garbage in one of the two; barriers that not every
// live thread (or warp lane) reaches, or that threads reach at different __syncthreads() calls, are
// reported (threads that returned count as arrived, as on the hardware).
// Honesty: device memory (cudaMalloc) and shared memory start as garbage (large finite values, a
// different pattern per block for shared memory); device memory is PROT_NONE while host code runs, so
// a host dereference of a device pointer dies with a message (CUDA_EMU_NO_PROTECT=1 turns that off),
// and a guard page follows every allocation; kernel pointer arguments, cudaMemcpy directions and
// cuBLAS operands are checked to be device (or pinned host) memory (a launch converts its arguments to
// the kernel's parameter types, so NULL passes as a null pointer); dynamic shared memory above 48 KiB
// needs cudaFuncSetAttribute, grid/block limits are those of sm_90 (launch errors are reported by
// cudaGetLastError). Streams and events are synchronous; cuBLAS GEMMs are naive loops.
// Tensor cores: nvcuda::wmma is in include/mma.h (its header says what it checks and cannot show).
// Not for: timing, anything the device does differently (ulp-level math, memory model details,
// static shared-memory size limits, tensor-core rounding and fragment layouts), or the build (the
// real build uses nvcc and the real headers).
#pragma once
#include <atomic>
#include <cassert>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <execinfo.h>
#include <functional>
#include <map>
#include <mutex>
#include <signal.h>
#include <sys/mman.h>
#include <type_traits>
#include <unistd.h>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
inline dim3 threadIdx;
inline dim3 blockIdx, blockDim, gridDim;

struct __nv_bfloat16 { uint16_t b; };
inline float __bfloat162float(__nv_bfloat16 h) { uint32_t u = (uint32_t)h.b << 16; float f; memcpy(&f, &u, 4); return f; }
inline __nv_bfloat16 __float2bfloat16(float f) {
    uint32_t u; memcpy(&u, &f, 4);
    __nv_bfloat16 h;
    if ((u & 0x7F800000u) == 0x7F800000u) { h.b = (uint16_t)((u >> 16) | ((u & 0xFFFF) ? 0x40 : 0)); return h; }
    u += 0x7FFFu + ((u >> 16) & 1u);
    h.b = (uint16_t)(u >> 16);
    return h;
}
inline float __expf(float x) { return expf(x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
inline float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }
inline float __fdiv_rn(float a, float b) { volatile float r = a / b; return r; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }

// ---- runtime types (the launcher records launch errors) ----
typedef enum { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2,
               cudaErrorInvalidConfiguration = 9, cudaErrorInvalidDevicePointer = 17, cudaErrorInvalidMemcpyDirection = 21,
               cudaErrorInsufficientDriver = 35, cudaErrorNoDevice = 100, cudaErrorNoKernelImageForDevice = 209,
               cudaErrorLaunchOutOfResources = 701 } cudaError_t;
typedef enum { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice,
               cudaMemcpyDefault } cudaMemcpyKind;
typedef enum { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 } cudaFuncAttribute;

namespace emu {
// ---- device memory: one mapping per allocation, a guard page after it, PROT_NONE outside device work ----
struct region { uintptr_t base; size_t len; uintptr_t user; size_t n; bool pinned; };
inline std::recursive_mutex &big() { static std::recursive_mutex *m = new std::recursive_mutex; return *m; }
inline std::map<uintptr_t, region> &regions() { static auto *m = new std::map<uintptr_t, region>; return *m; }
inline const bool protect = !getenv("CUDA_EMU_NO_PROTECT");
inline int open_depth = 0;
inline cudaError_t last_error = cudaSuccess;
inline const char *last_error_what = "";
inline void fail(cudaError_t e, const char *what) {
    fprintf(stderr, "cuda_emu: %s\n", what);
    if (last_error == cudaSuccess) last_error = e, last_error_what = what;
}
inline const region *find(const void *p) { // the device or pinned region holding p (guard page included)
    auto &m = regions();
    auto it = m.upper_bound((uintptr_t)p);
    if (it == m.begin()) return nullptr;
    --it;
    return (uintptr_t)p < it->second.base + it->second.len + 4096 ? &it->second : nullptr;
}
inline bool is_dev(const void *p, size_t n = 0, bool pinned_ok = false) { // [p, p+n) inside one allocation
    const region *r = find(p);
    if (!r || (r->pinned && !pinned_ok)) return false;
    return (uintptr_t)p >= r->user && (uintptr_t)p + n <= r->user + r->n;
}
inline void set_prot(int prot) {
    for (auto &kv : regions())
        if (!kv.second.pinned) mprotect((void *)kv.second.base, kv.second.len, prot);
}
struct device_scope { // device work (a launch, a copy, a GEMM) in progress: device memory readable
    std::lock_guard<std::recursive_mutex> l{big()};
    device_scope() { if (open_depth++ == 0 && protect) set_prot(PROT_READ | PROT_WRITE); }
    ~device_scope() { if (--open_depth == 0 && protect) set_prot(PROT_NONE); }
};
inline void on_segv(int sig, siginfo_t *si, void *) {
    const region *r = find(si->si_addr);
    if (r) {
        bool guard = (uintptr_t)si->si_addr >= r->base + r->len;
        fprintf(stderr, "cuda_emu: %s at %p (%s allocation of %zu bytes at %p)\n",
                guard ? "access past the end of a device allocation" : open_depth ? "bad access" : "HOST CODE touched device memory",
                si->si_addr, r->pinned ? "pinned" : "device", r->n, (void *)r->user);
    } else {
        fprintf(stderr, "cuda_emu: signal %d at %p (not emulated device memory)\n", sig, si->si_addr);
    }
    void *bt[64];
    int n = backtrace(bt, 64);
    backtrace_symbols_fd(bt, n, 2);
    signal(sig, SIG_DFL);
    raise(sig);
}
inline void install_handler() {
    static bool done = false;
    if (done) return;
    done = true;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, nullptr);
    sigaction(SIGBUS, &sa, nullptr);
}
inline unsigned char garbage = 0x4B; // 0x4B4B4B4B: f32 1.33e7, bf16 1.33e7, i32 1.26e9
inline void *map_region(size_t n, bool pinned) {
    install_handler();
    size_t big_page = 2u << 20, pg = 4096;
    size_t len = n >= big_page ? (n + big_page - 1) / big_page * big_page : (n + pg - 1) / pg * pg;
    if (len == 0) len = pg;
    size_t slack = n >= big_page ? big_page : 0;
    char *m = (char *)mmap(nullptr, len + pg + slack, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return nullptr;
    char *base = slack ? (char *)(((uintptr_t)m + slack - 1) / slack * slack) : m;
    if (base > m) munmap(m, (size_t)(base - m));
    if ((size_t)(base - m) < slack) munmap(base + len + pg, slack - (size_t)(base - m));
    mprotect(base, len, PROT_READ | PROT_WRITE);
    if (slack) madvise(base, len, MADV_HUGEPAGE);
    char *user = base + len - (n + 255) / 256 * 256; // ends at the guard page, 256-aligned
    memset(user, garbage, n);
    std::lock_guard<std::recursive_mutex> l(big());
    regions()[(uintptr_t)base] = region{(uintptr_t)base, len, (uintptr_t)user, n, pinned};
    if (!pinned && protect && open_depth == 0) mprotect(base, len, PROT_NONE);
    return user;
}
inline cudaError_t unmap_region(void *p, bool pinned) {
    if (!p) return cudaSuccess;
    std::lock_guard<std::recursive_mutex> l(big());
    const region *r = find(p);
    if (!r || (uintptr_t)p != r->user || r->pinned != pinned) {
        fail(cudaErrorInvalidValue, pinned ? "cudaFreeHost of a pointer cudaHostAlloc did not return"
                                           : "cudaFree of a pointer cudaMalloc did not return");
        return cudaErrorInvalidValue;
    }
    region c = *r;
    regions().erase(c.base);
    munmap((void *)c.base, c.len + 4096);
    return cudaSuccess;
}
template <class T> inline void check_arg(const T &a, int i) {
    if constexpr (std::is_pointer_v<T>) {
        if (a && !is_dev((const void *)a, 0, true)) {
            static char msg[160];
            snprintf(msg, sizeof msg, "kernel argument %d (%p) is not device memory", i, (const void *)a);
            fail(cudaErrorInvalidDevicePointer, msg);
            abort();
        }
    }
}

// ---- shared memory: static __shared__ arrays register here (prep.py) and get garbage per block ----
struct shared_reg {
    shared_reg(void *p, size_t n) {
        static std::mutex mu;
        std::lock_guard<std::mutex> l(mu);
        memset(p, 0xCB, n);
        all().push_back({p, n});
    }
    static std::vector<std::pair<void *, size_t>> &all() { static auto *v = new std::vector<std::pair<void *, size_t>>; return *v; }
};
inline std::map<const void *, int> &max_dyn_shared() { static auto *m = new std::map<const void *, int>; return *m; }

// ---- a block: its threads are fibers on the calling thread, switched at __syncthreads and warp
// shuffles. They run up to their next barrier one after another, in thread order in even blocks
// and in reverse order in odd ones, so a missing barrier shows as garbage read in one of the two.
enum { F_RUN, F_BLOCK, F_WARP, F_DONE };
constexpr size_t STACK = 256 << 10;
#if defined(__x86_64__)
// The switch: saves the callee-saved registers on the current stack, stores its pointer in *save,
// continues on `to` (ucontext's swapcontext would also make a signal-mask system call per switch).
__attribute__((naked, noipa)) static void emu_swap(void **save, void *to) {
    __asm__ volatile("pushq %rbp\n pushq %rbx\n pushq %r12\n pushq %r13\n pushq %r14\n pushq %r15\n"
                     "movq %rsp, (%rdi)\n movq %rsi, %rsp\n"
                     "popq %r15\n popq %r14\n popq %r13\n popq %r12\n popq %rbx\n popq %rbp\n ret\n");
}
#else
#error "dev/cuda_emu: the fiber switch is written for x86-64 only"
#endif
struct block_ctx {
    int nt = 0, t = 0;
    int state[1024];
    const char *site[1024]; // where each thread waits at __syncthreads ("file:line")
    int sync_or_calls[1024];
    void *sp[1024], *sched_sp;
    double wslot[1024];
    int orflag[2];
    std::function<void()> *body;
};
inline block_ctx *cur;
inline char *stacks;
inline std::vector<char> dyn;
[[noreturn]] inline void fiber_entry() {
    block_ctx *c = cur;
    (*c->body)();
    c->state[c->t] = F_DONE;
    emu_swap(&c->sp[c->t], c->sched_sp);
    abort(); // never resumed
}
inline void yield(int st, const char *site = "") {
    block_ctx *c = cur;
    c->state[c->t] = st;
    c->site[c->t] = site;
    emu_swap(&c->sp[c->t], c->sched_sp);
}
inline void run_block(block_ctx &c, int nt, bool reverse) {
    if (!stacks) stacks = (char *)mmap(nullptr, 1024 * STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    c.nt = nt;
    for (int t = 0; t < nt; t++) { // a fresh stack: six zero registers, then "return" into fiber_entry
        void **top = (void **)(stacks + (size_t)(t + 1) * STACK);
        top[-1] = nullptr;
        top[-2] = (void *)&fiber_entry;
        for (int r = 3; r <= 8; r++) top[-r] = nullptr;
        c.sp[t] = &top[-8];
        c.state[t] = F_RUN, c.sync_or_calls[t] = 0;
    }
    c.orflag[0] = c.orflag[1] = 0;
    cur = &c;
    for (;;) {
        for (int i = 0; i < nt; i++) {
            int t = reverse ? nt - 1 - i : i;
            if (c.state[t] != F_RUN) continue;
            c.t = t;
            threadIdx = dim3((unsigned)t % blockDim.x, (unsigned)t / blockDim.x % blockDim.y,
                             (unsigned)t / (blockDim.x * blockDim.y)); // x fastest, as on the device
            emu_swap(&c.sched_sp, c.sp[t]);
        }
        int alive = 0, at_block = 0;
        bool released = false;
        for (int w = 0; w < nt / 32; w++) {
            int live = 0, at_warp = 0;
            for (int t = w * 32; t < w * 32 + 32; t++)
                if (c.state[t] != F_DONE) live++, at_warp += c.state[t] == F_WARP, at_block += c.state[t] == F_BLOCK;
            alive += live;
            if (live && at_warp == live) {
                for (int t = w * 32; t < w * 32 + 32; t++)
                    if (c.state[t] == F_WARP) c.state[t] = F_RUN;
                released = true;
            }
        }
        if (!alive) break;
        if (released) continue;
        if (at_block == alive) {
            const char *s0 = nullptr;
            for (int t = 0; t < nt; t++)
                if (c.state[t] == F_BLOCK) {
                    if (!s0) s0 = c.site[t];
                    if (strcmp(s0, c.site[t]) != 0) {
                        fprintf(stderr, "cuda_emu: divergent barrier in block (%u, %u, %u): thread %d waits at %s, others at %s\n",
                                blockIdx.x, blockIdx.y, blockIdx.z, t, c.site[t], s0);
                        abort();
                    }
                    c.state[t] = F_RUN;
                }
            continue;
        }
        fprintf(stderr, "cuda_emu: deadlock in block (%u, %u, %u): threads wait at different barriers "
                "(__syncthreads in divergent code, or a warp shuffle not all lanes reach)\n", blockIdx.x, blockIdx.y, blockIdx.z);
        abort();
    }
}

// kernel<<<grid, block[, shmem]>>>(args): the arguments convert to the kernel's parameter types at the
// call, as a launch does (a NULL becomes a null pointer of the parameter's type).
template <class K> struct launcher;
template <class... P> struct launcher<void (*)(P...)> {
    using K = void (*)(P...);
    K k;
    dim3 g, b;
    size_t shm;
    launcher(K kk, dim3 gg, dim3 bb, size_t s = 0) : k(kk), g(gg), b(bb), shm(s) {}
    void operator()(P... args) {
        // what this stand-in runs: 1-, 2- or 3-D blocks of whole warps (32 consecutive linear threads)
        assert(b.x * b.y * b.z % 32 == 0 && b.x * b.y * b.z <= 1024 && b.z <= 64);
        if (g.x == 0 || g.y == 0 || g.z == 0 || g.x > 2147483647u || g.y > 65535 || g.z > 65535) {
            static char msg[120];
            snprintf(msg, sizeof msg, "launch with grid (%u, %u, %u): invalid configuration", g.x, g.y, g.z);
            fail(cudaErrorInvalidConfiguration, msg);
            return;
        }
        int allowed = 48 << 10;
        auto it = max_dyn_shared().find((const void *)k);
        if (it != max_dyn_shared().end()) allowed = it->second;
        if (shm > (size_t)allowed || shm > 232448) {
            static char msg[160];
            snprintf(msg, sizeof msg, "launch with %zu bytes of dynamic shared memory (allowed %d: above 48 KiB needs "
                     "cudaFuncSetAttribute, at most 227 KiB)", shm, allowed);
            fail(cudaErrorInvalidValue, msg);
            return;
        }
        device_scope ds;
        { int i = 0; (check_arg(args, i++), ...); }
        int nt = (int)(b.x * b.y * b.z);
        dyn.assign(shm + 16, 0);
        std::function<void()> body = [&] { k(args...); };
        static block_ctx *the_block = new block_ctx; // one per kernel: a kernel cannot launch another
        block_ctx *c = the_block;
        c->body = &body;
        gridDim = g, blockDim = b;
        unsigned long nb = 0;
        for (unsigned z = 0; z < g.z; z++)
            for (unsigned y = 0; y < g.y; y++)
                for (unsigned x = 0; x < g.x; x++, nb++) {
                    unsigned char pat = (nb & 1) ? 0xCB : 0x4B; // garbage, not what the previous block left
                    memset(dyn.data(), pat, dyn.size());
                    for (auto &r : shared_reg::all()) memset(r.first, pat, r.second);
                    blockIdx = dim3(x, y, z);
                    run_block(*c, nt, nb & 1);
                }
    }
};
template <class... P> launcher(void (*)(P...), dim3, dim3) -> launcher<void (*)(P...)>;
template <class... P> launcher(void (*)(P...), dim3, dim3, size_t) -> launcher<void (*)(P...)>;
} // namespace emu

inline void *emu_dyn_shared() { return emu::dyn.data(); }
#define EMU_STR2(x) #x
#define EMU_STR(x) EMU_STR2(x)
#define __syncthreads() emu::yield(emu::F_BLOCK, __FILE__ ":" EMU_STR(__LINE__))
inline int __syncthreads_or(int p) {
    emu::block_ctx *c = emu::cur;
    int t = c->t, k = c->sync_or_calls[t]++ & 1;
    if (p) c->orflag[k] = 1;
    emu::yield(emu::F_BLOCK, "__syncthreads_or");
    int r = c->orflag[k];
    if (t == 0) c->orflag[k ^ 1] = 0;
    emu::yield(emu::F_BLOCK, "__syncthreads_or");
    return r;
}
template <class T> inline T __shfl_xor_sync(unsigned, T v, int o) {
    emu::block_ctx *c = emu::cur;
    int t = c->t, w = t / 32;
    static_assert(sizeof(T) <= 8, "");
    memcpy(&c->wslot[t], &v, sizeof v);
    emu::yield(emu::F_WARP);
    T r;
    memcpy(&r, &c->wslot[w * 32 + ((t % 32) ^ o)], sizeof r);
    emu::yield(emu::F_WARP);
    return r;
}
inline int atomicCAS(int *p, int cmp, int val) {
    __atomic_compare_exchange_n(p, &cmp, val, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return cmp;
}
inline int atomicMin(int *p, int v) {
    int old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    while (v < old && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
    return old;
}
inline int atomicAdd(int *p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline float atomicAdd(float *p, float v) {
    uint32_t *u = (uint32_t *)p, old = __atomic_load_n(u, __ATOMIC_SEQ_CST), nw;
    do {
        float f;
        memcpy(&f, &old, 4);
        f += v;
        memcpy(&nw, &f, 4);
    } while (!__atomic_compare_exchange_n(u, &old, nw, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
    float r;
    memcpy(&r, &old, 4);
    return r;
}

// ---- runtime ----
typedef struct emu_stream *cudaStream_t;
typedef struct emu_event { double t; } *cudaEvent_t;
enum { cudaHostAllocDefault = 0, cudaHostAllocPortable = 1, cudaHostAllocMapped = 2 };
struct cudaDeviceProp { char name[256]; int major, minor, multiProcessorCount; size_t totalGlobalMem; };
inline cudaError_t cudaGetDeviceCount(int *n) { *n = 1; return cudaSuccess; }
inline cudaError_t cudaGetDevice(int *d) { *d = 0; return cudaSuccess; }
inline cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidValue; }
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int) { memset(p, 0, sizeof *p); strcpy(p->name, "emu"); p->major = 9; p->totalGlobalMem = 1ull << 34; p->multiProcessorCount = 1; return cudaSuccess; }
inline cudaError_t cudaMemGetInfo(size_t *fr, size_t *tot) { *fr = 1ull << 33, *tot = 1ull << 34; return cudaSuccess; }
inline cudaError_t cudaMalloc(void **p, size_t n) {
    *p = emu::map_region(n, false);
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
inline cudaError_t cudaFree(void *p) { return emu::unmap_region(p, false); }
inline cudaError_t cudaHostAlloc(void **p, size_t n, unsigned) {
    *p = emu::map_region(n, true);
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
inline cudaError_t cudaMallocHost(void **p, size_t n) { return cudaHostAlloc(p, n, 0); }
inline cudaError_t cudaFreeHost(void *p) { return emu::unmap_region(p, true); }
inline cudaError_t cudaMemcpy(void *d, const void *s, size_t n, cudaMemcpyKind k) {
    if (n == 0) return cudaSuccess;
    emu::device_scope ds;
    bool dd = emu::is_dev(d, n), sd = emu::is_dev(s, n);
    bool ok = k == cudaMemcpyDefault || (k == cudaMemcpyHostToDevice && dd && !sd) ||
              (k == cudaMemcpyDeviceToHost && !dd && sd) || (k == cudaMemcpyDeviceToDevice && dd && sd) ||
              (k == cudaMemcpyHostToHost && !dd && !sd);
    if (!ok) {
        static char msg[160];
        snprintf(msg, sizeof msg, "cudaMemcpy kind %d of %zu bytes: dst %p is %s, src %p is %s", (int)k, n, d,
                 dd ? "device" : "host (or not a whole device range)", s, sd ? "device" : "host (or not a whole device range)");
        emu::fail(cudaErrorInvalidValue, msg);
        return cudaErrorInvalidValue;
    }
    memmove(d, s, n);
    return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind k, cudaStream_t = nullptr) {
    return cudaMemcpy(d, s, n, k);
}
inline cudaError_t cudaMemset(void *d, int v, size_t n) {
    if (n == 0) return cudaSuccess;
    emu::device_scope ds;
    if (!emu::is_dev(d, n)) { emu::fail(cudaErrorInvalidValue, "cudaMemset of memory that is not a device range"); return cudaErrorInvalidValue; }
    memset(d, v, n);
    return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t = nullptr) { return cudaMemset(d, v, n); }
inline cudaError_t cudaGetLastError(void) { cudaError_t e = emu::last_error; emu::last_error = cudaSuccess; return e; }
inline cudaError_t cudaPeekAtLastError(void) { return emu::last_error; }
inline cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
inline const char *cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : emu::last_error_what[0] ? emu::last_error_what : "emulated error"; }
inline const char *cudaGetErrorName(cudaError_t) { return "cudaErrorEmu"; }
template <class F> cudaError_t cudaFuncSetAttribute(F f, cudaFuncAttribute a, int v) {
    if (a == cudaFuncAttributeMaxDynamicSharedMemorySize) {
        if (v < 0 || v > 232448) return cudaErrorInvalidValue;
        emu::max_dyn_shared()[(const void *)f] = v;
    }
    return cudaSuccess;
}
template <class T> cudaError_t cudaMemcpyFromSymbol(void *dst, const T &sym, size_t n) { memcpy(dst, &sym, n); return cudaSuccess; }
template <class T> cudaError_t cudaMemcpyToSymbol(T &sym, const void *src, size_t n) { memcpy(&sym, src, n); return cudaSuccess; }
inline cudaError_t cudaStreamCreate(cudaStream_t *s) { *s = (cudaStream_t)new char; return cudaSuccess; }
inline cudaError_t cudaStreamDestroy(cudaStream_t s) { delete (char *)s; return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline double emu_now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec; }
inline cudaError_t cudaEventCreate(cudaEvent_t *e) { *e = new emu_event{0.0}; return cudaSuccess; }
inline cudaError_t cudaEventDestroy(cudaEvent_t e) { delete e; return cudaSuccess; }
inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t = nullptr) { e->t = emu_now(); return cudaSuccess; }
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) { *ms = (float)((b->t - a->t) * 1e3); return cudaSuccess; }

// ---- cuBLAS (column-major GEMM, f32 / bf16; default pointer mode: alpha and beta on the host) ----
typedef enum { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_NOT_INITIALIZED = 1, CUBLAS_STATUS_ALLOC_FAILED = 3,
               CUBLAS_STATUS_INVALID_VALUE = 7, CUBLAS_STATUS_NOT_SUPPORTED = 15 } cublasStatus_t;
typedef enum { CUBLAS_OP_N, CUBLAS_OP_T } cublasOperation_t;
typedef enum { CUDA_R_32F = 0, CUDA_R_16BF = 14 } cudaDataType_t;
typedef enum { CUBLAS_COMPUTE_32F = 68, CUBLAS_COMPUTE_32F_FAST_TF32 = 77 } cublasComputeType_t;
typedef enum { CUBLAS_GEMM_DEFAULT = -1, CUBLAS_GEMM_DEFAULT_TENSOR_OP = 99 } cublasGemmAlgo_t;
typedef enum { CUBLAS_DEFAULT_MATH = 0, CUBLAS_TENSOR_OP_MATH = 1, CUBLAS_PEDANTIC_MATH = 2,
               CUBLAS_TF32_TENSOR_OP_MATH = 3 } cublasMath_t;
typedef struct emu_blas *cublasHandle_t;
inline cublasStatus_t cublasCreate(cublasHandle_t *h) { *h = (cublasHandle_t)new char; return CUBLAS_STATUS_SUCCESS; }
inline cublasStatus_t cublasDestroy(cublasHandle_t h) { delete (char *)h; return CUBLAS_STATUS_SUCCESS; }
inline cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }
inline cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }
inline const char *cublasGetStatusString(cublasStatus_t) { return "emulated cublas error"; }
inline float emu_ld(const void *p, cudaDataType_t t, int64_t i) {
    return t == CUDA_R_16BF ? __bfloat162float(((const __nv_bfloat16 *)p)[i]) : ((const float *)p)[i];
}
inline cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                                 int k, const void *alpha, const void *A, cudaDataType_t at, int lda,
                                                 long long sa, const void *B, cudaDataType_t bt, int ldb, long long sb,
                                                 const void *beta, void *C, cudaDataType_t ct, int ldc, long long sc,
                                                 int batch, cublasComputeType_t, cublasGemmAlgo_t) {
    if (at != bt) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (at == CUDA_R_32F && ct != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (m < 0 || n < 0 || k < 0 || batch < 0 || ldc < (m > 1 ? m : 1) ||
        lda < (ta == CUBLAS_OP_N ? (m > 1 ? m : 1) : (k > 1 ? k : 1)) ||
        ldb < (tb == CUBLAS_OP_N ? (k > 1 ? k : 1) : (n > 1 ? n : 1)))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (m == 0 || n == 0 || batch == 0) return CUBLAS_STATUS_SUCCESS;
    emu::device_scope ds;
    if (emu::is_dev(alpha) || emu::is_dev(beta)) { fprintf(stderr, "cuda_emu: cuBLAS alpha/beta in device memory\n"); return CUBLAS_STATUS_INVALID_VALUE; }
    if ((k > 0 && (!emu::is_dev(A) || !emu::is_dev(B))) || !emu::is_dev(C)) {
        fprintf(stderr, "cuda_emu: cuBLAS operand not in device memory (A %p, B %p, C %p)\n", A, B, C);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    float al = *(const float *)alpha, be = *(const float *)beta;
    for (int q = 0; q < batch; q++) {
        const char *Aq = (const char *)A + (size_t)(q * sa) * (at == CUDA_R_16BF ? 2 : 4);
        const char *Bq = (const char *)B + (size_t)(q * sb) * (bt == CUDA_R_16BF ? 2 : 4);
        char *Cq = (char *)C + (size_t)(q * sc) * (ct == CUDA_R_16BF ? 2 : 4);
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                float s = 0.0f;
                for (int l = 0; l < k; l++) {
                    float a = ta == CUBLAS_OP_N ? emu_ld(Aq, at, i + (int64_t)l * lda) : emu_ld(Aq, at, l + (int64_t)i * lda);
                    float b = tb == CUBLAS_OP_N ? emu_ld(Bq, bt, l + (int64_t)j * ldb) : emu_ld(Bq, bt, j + (int64_t)l * ldb);
                    s += a * b;
                }
                int64_t ci = i + (int64_t)j * ldc;
                float v = al * s + (be != 0.0f ? be * emu_ld(Cq, ct, ci) : 0.0f); // beta 0: C is not read
                if (ct == CUDA_R_16BF) ((__nv_bfloat16 *)Cq)[ci] = __float2bfloat16(v);
                else ((float *)Cq)[ci] = v;
            }
    }
    return CUBLAS_STATUS_SUCCESS;
}
// Pointer-array batched GEMM: the arrays themselves must be in device memory, as cuBLAS requires.
inline cublasStatus_t cublasGemmBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                          int k, const void *alpha, const void *const Aarray[], cudaDataType_t at,
                                          int lda, const void *const Barray[], cudaDataType_t bt, int ldb,
                                          const void *beta, void *const Carray[], cudaDataType_t ct, int ldc, int batch,
                                          cublasComputeType_t ctype, cublasGemmAlgo_t algo) {
    if (batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
    if (batch == 0) return CUBLAS_STATUS_SUCCESS;
    std::vector<const void *> A((size_t)batch), B((size_t)batch);
    std::vector<void *> C((size_t)batch);
    {
        emu::device_scope ds;
        size_t bytes = (size_t)batch * sizeof(void *);
        if (!emu::is_dev(Aarray, bytes) || !emu::is_dev(Barray, bytes) || !emu::is_dev(Carray, bytes)) {
            fprintf(stderr, "cuda_emu: cublasGemmBatchedEx pointer arrays must be in device memory\n");
            return CUBLAS_STATUS_INVALID_VALUE;
        }
        memcpy(A.data(), Aarray, bytes), memcpy(B.data(), Barray, bytes), memcpy(C.data(), Carray, bytes);
    }
    for (int q = 0; q < batch; q++) {
        cublasStatus_t st = cublasGemmStridedBatchedEx(h, ta, tb, m, n, k, alpha, A[q], at, lda, 0, B[q], bt, ldb, 0,
                                                       beta, C[q], ct, ldc, 0, 1, ctype, algo);
        if (st != CUBLAS_STATUS_SUCCESS) return st;
    }
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                   const void *alpha, const void *A, cudaDataType_t at, int lda, const void *B,
                                   cudaDataType_t bt, int ldb, const void *beta, void *C, cudaDataType_t ct, int ldc,
                                   cublasComputeType_t ctype, cublasGemmAlgo_t algo) {
    return cublasGemmStridedBatchedEx(h, ta, tb, m, n, k, alpha, A, at, lda, 0, B, bt, ldb, 0, beta, C, ct, ldc, 0, 1,
                                      ctype, algo);
}
