/* Fused CPU kernels for text2video (float32, contiguous tensors), called through ctypes.
 *
 * Built on first use by text2video.nn.cpu_kernels with the system C compiler and OpenMP. Inside a
 * PyTorch process the OpenMP runtime is the one torch already loaded (same soname), so these loops
 * share torch's thread pool. Every entry point takes the thread count to use.
 *
 * Short-sequence attention: qkv (T, N, 3, H, D) -> out (T, N, H, D); each of the N*H sequences of
 * length T attends to itself, with an optional additive bias (H, T, T) and optional rotary embeddings
 * of the queries and keys (frame t rotates the interleaved pairs of their first 2R features by the
 * angles whose cosines and sines are rot (T, R, 2)).
 *
 * RMS norm + scale-shift + SiLU over the last axis of x (G, P, C):
 * y = silu(x * r * coef[g] + shift[g]), r = 1 / sqrt(mean(x^2) + eps).
 *
 * im2col / col2im for 3x3 convolutions (stride 1, zero padding 1) on small maps.
 *
 * Winograd F(2x2, 3x3) and F(4x4, 3x3): the tile transforms of channels-last maps, the weight transform,
 * and their adjoints (the GEMMs between them are the caller's).
 *
 * Compiled with -ffast-math (reassociated sums, no NaN/infinity handling): inputs must be finite; callers
 * check the bias. Exponentials use the inlined fast_expf below, so that the loops vectorise without calls.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#ifdef _OPENMP
#include <omp.h>
static inline int thread_index(void) { return omp_get_thread_num(); }
static inline int thread_count(void) { return omp_get_num_threads(); }
#else
static inline int thread_index(void) { return 0; }
static inline int thread_count(void) { return 1; }
#endif

#define T2V_MAX_T 64

/* Loops over whole rows of channels run faster on AVX-512 machines with 512-bit vectors, which GCC
 * does not pick by default there. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__AVX512F__)
#define WIDE_VECTORS __attribute__((target("prefer-vector-width=512")))
#else
#define WIDE_VECTORS
#endif

/* exp(a) = 2^n * e^f with n = round(a / ln 2) and f = a - n ln 2 (|f| <= ln(2) / 2; ln 2 in two parts, fused
 * multiply-adds, so that f keeps its accuracy for large |a|), e^f a degree-6 Taylor polynomial: relative
 * error about 2e-7. The argument is clamped to [-87, 88], so the result is always a normal float. Inlined
 * so that loops vectorise it without calls. */
static inline __attribute__((always_inline)) float fast_expf(float a) {
    a = a < -87.f ? -87.f : (a > 88.f ? 88.f : a);
    const float n = __builtin_roundf(a * 1.44269504088896341f);
    float f = __builtin_fmaf(-n, 0.693145751953125f, a); /* ln 2, high part (exact in 16 bits) */
    f = __builtin_fmaf(-n, 1.42860676533018690e-06f, f);  /* ln 2, low part */
    float p = 1.f / 720.f;
    p = p * f + 1.f / 120.f;
    p = p * f + 1.f / 24.f;
    p = p * f + 1.f / 6.f;
    p = p * f + 0.5f;
    p = p * f + 1.f;
    p = p * f + 1.f;
    union {
        int32_t i;
        float f;
    } scale = {.i = ((int32_t)n + 127) << 23};
    return p * scale.f;
}

/* dst[e] = sum over threads t of partial[t * stride + e], for e < len (per-thread partial sums). */
static void reduce_partials(float *restrict dst, const float *restrict partial, int nthreads, int64_t len,
                            int64_t stride) {
    memset(dst, 0, sizeof(float) * len);
    for (int t = 0; t < nthreads; ++t)
        for (int64_t e = 0; e < len; ++e) dst[e] += partial[(int64_t)t * stride + e];
}

int t2v_abi_version(void) { return 3; }

int t2v_max_frames(void) { return T2V_MAX_T; }

static inline __attribute__((always_inline)) float dot(const float *restrict a, const float *restrict b, int64_t n) {
    float acc = 0.f;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
    return acc;
}

/* Row-wise softmax of s (T x T) in place; the exponentials in one vector pass. */
static inline void softmax_rows(float *restrict s, int64_t T) {
    float shift[T2V_MAX_T * T2V_MAX_T];
    for (int64_t i = 0; i < T; ++i) {
        float mx = s[i * T];
        for (int64_t j = 1; j < T; ++j) mx = s[i * T + j] > mx ? s[i * T + j] : mx;
        for (int64_t j = 0; j < T; ++j) shift[i * T + j] = mx;
    }
#pragma omp simd
    for (int64_t e = 0; e < T * T; ++e) s[e] = fast_expf(s[e] - shift[e]);
    for (int64_t i = 0; i < T; ++i) {
        float sum = 0.f;
        for (int64_t j = 0; j < T; ++j) sum += s[i * T + j];
        const float inv = 1.f / sum;
        for (int64_t j = 0; j < T; ++j) s[i * T + j] *= inv;
    }
}

/* One (pixel, head) sequence. Inlined with D a constant for the common head sizes. */
static inline __attribute__((always_inline)) void attend_one(const float *restrict q, const float *restrict k,
                                                             const float *restrict v, const float *restrict b,
                                                             float *restrict o, float *restrict s, int64_t T,
                                                             int64_t D, int64_t qk_frame, int64_t qkv_frame,
                                                             int64_t out_frame, float scale) {
    for (int64_t i = 0; i < T; ++i)
        for (int64_t j = 0; j < T; ++j)
            s[i * T + j] = dot(q + i * qk_frame, k + j * qk_frame, D) * scale + (b ? b[i * T + j] : 0.f);
    softmax_rows(s, T);
    for (int64_t i = 0; i < T; ++i) {
        float acc[D];
#pragma omp simd
        for (int64_t e = 0; e < D; ++e) acc[e] = 0.f;
        for (int64_t j = 0; j < T; ++j) {
            const float p = s[i * T + j], *vj = v + j * qkv_frame;
#pragma omp simd
            for (int64_t e = 0; e < D; ++e) acc[e] += p * vj[e];
        }
        float *oi = o + i * out_frame;
#pragma omp simd
        for (int64_t e = 0; e < D; ++e) oi[e] = acc[e];
    }
}

/* dst = the T frames of src (D features each, frame strides src_frame / dst_frame) with the interleaved pairs of
 * their first 2R features rotated by the frame's angles (cos, sin in rot (T, R, 2)); sign -1 rotates back. */
static inline __attribute__((always_inline)) void rotate_frames(const float *restrict src, int64_t src_frame,
                                                                float *restrict dst, int64_t dst_frame,
                                                                const float *restrict rot, int64_t T, int64_t D,
                                                                int64_t R, float sign) {
    for (int64_t t = 0; t < T; ++t) {
        const float *a = src + t * src_frame, *cs = rot + t * R * 2;
        float *b = dst + t * dst_frame;
        for (int64_t r = 0; r < R; ++r) {
            const float c = cs[2 * r], si = sign * cs[2 * r + 1], even = a[2 * r], odd = a[2 * r + 1];
            b[2 * r] = even * c - odd * si;
            b[2 * r + 1] = odd * c + even * si;
        }
        for (int64_t e = 2 * R; e < D; ++e) b[e] = a[e];
    }
}

/* The heads of pixel n; rot (T, R, 2) or NULL (no rotary embedding). */
static inline __attribute__((always_inline)) void forward_pixel(const float *restrict qkv, const float *restrict bias,
                                                                const float *restrict rot, int64_t R,
                                                                float *restrict out, float *restrict probs,
                                                                float *restrict s, int64_t n, int64_t T, int64_t N,
                                                                int64_t H, int64_t D, float scale) {
    const int64_t qkv_frame = N * 3 * H * D, out_frame = N * H * D;
    for (int64_t h = 0; h < H; ++h) {
        const float *q = qkv + n * 3 * H * D + h * D, *b = bias ? bias + h * T * T : NULL;
        float *o = out + (n * H + h) * D;
        if (rot) {
            float qr[T * D], kr[T * D];
            rotate_frames(q, qkv_frame, qr, D, rot, T, D, R, 1.f);
            rotate_frames(q + H * D, qkv_frame, kr, D, rot, T, D, R, 1.f);
            attend_one(qr, kr, q + 2 * H * D, b, o, s, T, D, D, qkv_frame, out_frame, scale);
        } else {
            attend_one(q, q + H * D, q + 2 * H * D, b, o, s, T, D, qkv_frame, qkv_frame, out_frame, scale);
        }
        if (probs) memcpy(probs + (n * H + h) * T * T, s, sizeof(float) * T * T);
    }
}

/* probs may be NULL (nothing kept for a backward). */
void t2v_short_attention_forward(const float *restrict qkv, const float *restrict bias, const float *restrict rot,
                                 int64_t R, float *restrict out, float *restrict probs, int64_t T, int64_t N, int64_t H,
                                 int64_t D, float scale, int nthreads) {
    /* the head size is made a constant inside the parallel loop: GCC outlines an OpenMP region before it
     * inlines, so a constant passed to an inlined function that contains the region would be lost */
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t n = 0; n < N; ++n) {
        float s[T2V_MAX_T * T2V_MAX_T];
        if (D == 32)
            forward_pixel(qkv, bias, rot, R, out, probs, s, n, T, N, H, 32, scale);
        else if (D == 64)
            forward_pixel(qkv, bias, rot, R, out, probs, s, n, T, N, H, 64, scale);
        else
            forward_pixel(qkv, bias, rot, R, out, probs, s, n, T, N, H, D, scale);
    }
}

static inline __attribute__((always_inline)) void backward_one(const float *restrict q, const float *restrict k,
                                                               const float *restrict v, const float *restrict p,
                                                               const float *restrict g, float *restrict dq,
                                                               float *restrict dk, float *restrict dv,
                                                               float *restrict ds, float *restrict dbias, int64_t T,
                                                               int64_t D, int64_t qk_frame, int64_t qkv_frame,
                                                               int64_t out_frame, float scale) {
    /* dp_ij = g_i . v_j ; ds = p * (dp - sum_j p dp) */
    for (int64_t i = 0; i < T; ++i) {
        float acc = 0.f;
        for (int64_t j = 0; j < T; ++j) {
            const float dp = dot(g + i * out_frame, v + j * qkv_frame, D);
            ds[i * T + j] = dp;
            acc += dp * p[i * T + j];
        }
        for (int64_t j = 0; j < T; ++j) ds[i * T + j] = p[i * T + j] * (ds[i * T + j] - acc);
    }
    if (dbias)
        for (int64_t e = 0; e < T * T; ++e) dbias[e] += ds[e];
    /* dv_j = sum_i p_ij g_i ; dq_j = scale sum_i ds_ji k_i ; dk_j = scale sum_i ds_ij q_i */
    for (int64_t j = 0; j < T; ++j) {
        float av[D], ak[D], aq[D];
#pragma omp simd
        for (int64_t e = 0; e < D; ++e) av[e] = ak[e] = aq[e] = 0.f;
        for (int64_t i = 0; i < T; ++i) {
            const float pij = p[i * T + j], sij = ds[i * T + j] * scale, sji = ds[j * T + i] * scale;
            const float *gi = g + i * out_frame, *qi = q + i * qk_frame, *ki = k + i * qk_frame;
#pragma omp simd
            for (int64_t e = 0; e < D; ++e) {
                av[e] += pij * gi[e];
                ak[e] += sij * qi[e];
                aq[e] += sji * ki[e];
            }
        }
        float *dvj = dv + j * qkv_frame, *dkj = dk + j * qk_frame, *dqj = dq + j * qk_frame;
#pragma omp simd
        for (int64_t e = 0; e < D; ++e) {
            dvj[e] = av[e];
            dkj[e] = ak[e];
            dqj[e] = aq[e];
        }
    }
}

/* The heads of pixel n; dbias_part (H, T, T) or NULL accumulates. With rot, the queries and keys are rotated
 * before, and their gradients rotated back after. */
static inline __attribute__((always_inline)) void backward_pixel(const float *restrict qkv, const float *restrict probs,
                                                                 const float *restrict rot, int64_t R,
                                                                 const float *restrict dout, float *restrict dqkv,
                                                                 float *restrict dbias_part, float *restrict ds,
                                                                 int64_t n, int64_t T, int64_t N, int64_t H, int64_t D,
                                                                 float scale) {
    const int64_t qkv_frame = N * 3 * H * D, out_frame = N * H * D, tt = T * T;
    for (int64_t h = 0; h < H; ++h) {
        const int64_t base = n * 3 * H * D + h * D;
        const float *q = qkv + base, *p = probs + (n * H + h) * tt, *g = dout + (n * H + h) * D;
        float *dq = dqkv + base, *db = dbias_part ? dbias_part + h * tt : NULL;
        if (rot) {
            float qr[T * D], kr[T * D], dqr[T * D], dkr[T * D];
            rotate_frames(q, qkv_frame, qr, D, rot, T, D, R, 1.f);
            rotate_frames(q + H * D, qkv_frame, kr, D, rot, T, D, R, 1.f);
            backward_one(qr, kr, q + 2 * H * D, p, g, dqr, dkr, dq + 2 * H * D, ds, db, T, D, D, qkv_frame, out_frame,
                         scale);
            rotate_frames(dqr, D, dq, qkv_frame, rot, T, D, R, -1.f);
            rotate_frames(dkr, D, dq + H * D, qkv_frame, rot, T, D, R, -1.f);
        } else {
            backward_one(q, q + H * D, q + 2 * H * D, p, g, dq, dq + H * D, dq + 2 * H * D, ds, db, T, D, qkv_frame,
                         qkv_frame, out_frame, scale);
        }
    }
}

/* dout (T, N, H, D) -> dqkv (T, N, 3, H, D), every element written; dbias (H, T, T) or NULL, overwritten.
 * Returns 0, or -1 when scratch memory could not be allocated. */
int t2v_short_attention_backward(const float *restrict qkv, const float *restrict probs, const float *restrict rot,
                                 int64_t R, const float *restrict dout, float *restrict dqkv, float *restrict dbias,
                                 int64_t T, int64_t N, int64_t H, int64_t D, float scale, int nthreads) {
    const int64_t tt = T * T;
    float *partial = NULL;
    if (dbias) {
        partial = calloc((size_t)nthreads * H * tt, sizeof(float));
        if (!partial) return -1;
    }
#pragma omp parallel num_threads(nthreads)
    {
        float *mine = partial ? partial + (int64_t)thread_index() * H * tt : NULL;
        float ds[T2V_MAX_T * T2V_MAX_T];
#pragma omp for schedule(static)
        for (int64_t n = 0; n < N; ++n) {
            if (D == 32)
                backward_pixel(qkv, probs, rot, R, dout, dqkv, mine, ds, n, T, N, H, 32, scale);
            else if (D == 64)
                backward_pixel(qkv, probs, rot, R, dout, dqkv, mine, ds, n, T, N, H, 64, scale);
            else
                backward_pixel(qkv, probs, rot, R, dout, dqkv, mine, ds, n, T, N, H, D, scale);
        }
    }
    if (dbias) {
        reduce_partials(dbias, partial, nthreads, H * tt, H * tt);
        free(partial);
    }
    return 0;
}

static inline __attribute__((always_inline)) float sigmoidf(float a) { return 1.f / (1.f + fast_expf(-a)); }

/* One row of the norm's forward: y = silu(x * r * coef[g] + shift[g]), r = 1 / sqrt(mean(x^2) + eps). */
static inline __attribute__((always_inline)) void rms_silu_forward_row(const float *restrict x,
                                                                       const float *restrict coef, int64_t coef_stride,
                                                                       const float *restrict shift,
                                                                       int64_t shift_stride, float *restrict y,
                                                                       float *restrict r, int64_t row, int64_t P,
                                                                       int64_t C, float eps) {
    const int64_t g = row / P;
    const float *xr = x + row * C, *cf = coef + g * coef_stride, *sh = shift ? shift + g * shift_stride : NULL;
    float *yr = y + row * C;
    const float rr = 1.f / sqrtf(dot(xr, xr, C) / (float)C + eps);
    r[row] = rr;
    if (sh) {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
            const float a = xr[c] * rr * cf[c] + sh[c];
            yr[c] = a * sigmoidf(a);
        }
    } else {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
            const float a = xr[c] * rr * cf[c];
            yr[c] = a * sigmoidf(a);
        }
    }
}

/* One row of the norm's backward: dx (when not NULL) for the row; the row's terms of dcoef and dshift are added
 * to pcg and psg; da is scratch of C floats. */
static inline __attribute__((always_inline)) void rms_silu_backward_row(
    const float *restrict x, const float *restrict r, const float *restrict coef, int64_t coef_stride,
    const float *restrict shift, int64_t shift_stride, const float *restrict dy, float *restrict dx,
    float *restrict pc, float *restrict ps, float *restrict da, int64_t row, int64_t P, int64_t C) {
    const int64_t g = row / P;
    const float *xr = x + row * C, *gr = dy + row * C, *cf = coef + g * coef_stride;
    const float *sh = shift ? shift + g * shift_stride : NULL;
    const float rr = r[row];
    float *pcg = pc + g * C, *psg = ps + g * C, dotv = 0.f;
#pragma omp simd reduction(+ : dotv)
    for (int64_t c = 0; c < C; ++c) {
        const float xn = xr[c] * rr, a = xn * cf[c] + (sh ? sh[c] : 0.f), s = sigmoidf(a);
        const float d = gr[c] * s * (1.f + a * (1.f - s));
        da[c] = d;
        pcg[c] += d * xn;
        psg[c] += d;
        dotv += d * cf[c] * xn;
    }
    if (dx) {
        const float mean = dotv / (float)C;
        float *dxr = dx + row * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) dxr[c] = (da[c] * cf[c] - xr[c] * rr * mean) * rr;
    }
}

/* The norm's loops over rows, compiled twice: with 512-bit vectors (rows of a multiple of 16 channels, where
 * they are faster) and with the compiler's default width (other rows, where the 512-bit loops' scalar tails
 * cost more than they gain). partial: nthreads x (2, G, C) zeroed sums; scratch: nthreads x C floats. */
#define T2V_RMS_SILU_LOOPS(suffix, attributes)                                                                         \
    attributes static void rms_silu_forward_##suffix(const float *restrict x, const float *restrict coef,             \
                                                     int64_t coef_stride, const float *restrict shift,                 \
                                                     int64_t shift_stride, float *restrict y, float *restrict r,       \
                                                     int64_t G, int64_t P, int64_t C, float eps, int nthreads) {       \
        _Pragma("omp parallel for num_threads(nthreads) schedule(static)") for (int64_t row = 0; row < G * P; ++row)  \
            rms_silu_forward_row(x, coef, coef_stride, shift, shift_stride, y, r, row, P, C, eps);                     \
    }                                                                                                                  \
    attributes static void rms_silu_backward_##suffix(                                                                 \
        const float *restrict x, const float *restrict r, const float *restrict coef, int64_t coef_stride,             \
        const float *restrict shift, int64_t shift_stride, const float *restrict dy, float *restrict dx,               \
        float *restrict partial, float *restrict scratch, int64_t G, int64_t P, int64_t C, int nthreads) {             \
        const int64_t gc = G * C;                                                                                      \
        _Pragma("omp parallel num_threads(nthreads)") {                                                                \
            const int tid = thread_index();                                                                            \
            float *pc = partial + (int64_t)tid * 2 * gc;                                                               \
            _Pragma("omp for schedule(static)") for (int64_t row = 0; row < G * P; ++row)                              \
                rms_silu_backward_row(x, r, coef, coef_stride, shift, shift_stride, dy, dx, pc, pc + gc,               \
                                      scratch + (int64_t)tid * C, row, P, C);                                          \
        }                                                                                                              \
    }

T2V_RMS_SILU_LOOPS(wide, WIDE_VECTORS)
T2V_RMS_SILU_LOOPS(default_width, )

/* coef: (G, C) with coef_stride C, or (C,) with coef_stride 0; shift likewise or NULL. r: (G*P,) out. */
void t2v_rms_silu_forward(const float *restrict x, const float *restrict coef, int64_t coef_stride,
                          const float *restrict shift, int64_t shift_stride, float *restrict y, float *restrict r,
                          int64_t G, int64_t P, int64_t C, float eps, int nthreads) {
    if (C % 16 == 0)
        rms_silu_forward_wide(x, coef, coef_stride, shift, shift_stride, y, r, G, P, C, eps, nthreads);
    else
        rms_silu_forward_default_width(x, coef, coef_stride, shift, shift_stride, y, r, G, P, C, eps, nthreads);
}

/* dx (G, P, C) written when not NULL; dcoef (G, C) and dshift (G, C) (or NULL) overwritten with the sums
 * over P of da * x * r and da, where da is the gradient at the SiLU's input. */
int t2v_rms_silu_backward(const float *restrict x, const float *restrict r, const float *restrict coef,
                          int64_t coef_stride, const float *restrict shift, int64_t shift_stride,
                          const float *restrict dy, float *restrict dx, float *restrict dcoef, float *restrict dshift,
                          int64_t G, int64_t P, int64_t C, int nthreads) {
    const int64_t gc = G * C;
    float *partial = calloc((size_t)nthreads * 2 * gc, sizeof(float));
    float *scratch = malloc((size_t)nthreads * C * sizeof(float));
    if (!partial || !scratch) {
        free(partial);
        free(scratch);
        return -1;
    }
    if (C % 16 == 0)
        rms_silu_backward_wide(x, r, coef, coef_stride, shift, shift_stride, dy, dx, partial, scratch, G, P, C,
                               nthreads);
    else
        rms_silu_backward_default_width(x, r, coef, coef_stride, shift, shift_stride, dy, dx, partial, scratch, G, P,
                                        C, nthreads);
    reduce_partials(dcoef, partial, nthreads, gc, 2 * gc);
    if (dshift) reduce_partials(dshift, partial + gc, nthreads, gc, 2 * gc);
    free(partial);
    free(scratch);
    return 0;
}

/* 3x3 patches (zero padding 1) of x (N, C, H, W) -> patches (N*H*W, C*9), ordered (c, ky, kx) like a
 * (C_out, C, 3, 3) weight. */
void t2v_im2col3x3(const float *restrict x, float *restrict patches, int64_t N, int64_t C, int64_t H, int64_t W,
                   int nthreads) {
    const int64_t hw = H * W, row_len = C * 9;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t row = 0; row < N * hw; ++row) {
        const int64_t n = row / hw, y = (row % hw) / W, xx = row % W;
        const float *xn = x + n * C * hw;
        float *out = patches + row * row_len;
        for (int64_t c = 0; c < C; ++c) {
            const float *plane = xn + c * hw;
            for (int64_t ky = 0; ky < 3; ++ky) {
                const int64_t sy = y + ky - 1;
                for (int64_t kx = 0; kx < 3; ++kx) {
                    const int64_t sx = xx + kx - 1;
                    out[c * 9 + ky * 3 + kx] = (sy >= 0 && sy < H && sx >= 0 && sx < W) ? plane[sy * W + sx] : 0.f;
                }
            }
        }
    }
}

/* The adjoint of t2v_im2col3x3: patch gradients (N*H*W, C*9) -> dx (N, C, H, W), overwritten. */
void t2v_col2im3x3(const float *restrict dpatches, float *restrict dx, int64_t N, int64_t C, int64_t H, int64_t W,
                   int nthreads) {
    const int64_t hw = H * W, row_len = C * 9;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t nc = 0; nc < N * C; ++nc) {
        const int64_t n = nc / C, c = nc % C;
        const float *src = dpatches + n * hw * row_len + c * 9;
        float *plane = dx + nc * hw;
        for (int64_t y = 0; y < H; ++y)
            for (int64_t xx = 0; xx < W; ++xx) {
                float acc = 0.f;
                /* input pixel (y, xx) feeds output pixel (y - ky + 1, xx - kx + 1) at tap (ky, kx) */
                for (int64_t ky = 0; ky < 3; ++ky) {
                    const int64_t oy = y - ky + 1;
                    if (oy < 0 || oy >= H) continue;
                    for (int64_t kx = 0; kx < 3; ++kx) {
                        const int64_t ox = xx - kx + 1;
                        if (ox < 0 || ox >= W) continue;
                        acc += src[(oy * W + ox) * row_len + ky * 3 + kx];
                    }
                }
                plane[y * W + xx] = acc;
            }
    }
}

/* Winograd F(m x m, 3x3) transforms, m = 2 or 4, for 3x3 convolutions (stride 1, zero padding 1) of
 * channels-last maps (N, H, W, C) whose height and width are multiples of m. With alpha = m + 2, tile
 * (n, i, j) covers the output pixels (m i .. m i + m - 1, m j ..) and the input pixels (m i - 1 .. m i + m,
 * m j - 1 ..); tiles are numbered t = (n * H/m + i) * W/m + j. Transformed tiles are stored
 * (alpha^2, tiles, C), position p = alpha a + b. The convolution is y = A^T (U * (B^T d B)) A per tile and
 * channel pair, U = G g G^T the transformed weight; summed over input channels, the product at each
 * position is one GEMM (done by the caller). Matrices from Lavin & Gray (2016), points 0, +-1 (m = 2) and
 * 0, +-1, +-2 (m = 4). */

#define WINO_CB 16    /* channels per block: one 512-bit vector; C (and C_out * C) must be multiples of it */
#define WINO_MAX_A 6  /* largest alpha */

typedef struct {
    int m, alpha;
    const float *bt; /* B^T (alpha x alpha) */
    const float *at; /* A^T (m x alpha) */
    const float *g;  /* G (alpha x 3) */
} wino_spec;

static const float WINO2_BT[16] = {1, 0, -1, 0, 0, 1, 1, 0, 0, -1, 1, 0, 0, 1, 0, -1};
static const float WINO2_AT[8] = {1, 1, 1, 0, 0, 1, -1, -1};
static const float WINO2_G[12] = {1, 0, 0, 0.5f, 0.5f, 0.5f, 0.5f, -0.5f, 0.5f, 0, 0, 1};
static const float WINO4_BT[36] = {4, 0, -5, 0, 1, 0, 0, -4, -4, 1, 1, 0, 0, 4, -4, -1, 1, 0,
                                   0, -2, -1, 2, 1, 0, 0, 2, -1, -2, 1, 0, 0, 4, 0, -5, 0, 1};
static const float WINO4_AT[24] = {1, 1, 1, 1, 1, 0, 0, 1, -1, 2, -2, 0, 0, 1, 1, 4, 4, 0, 0, 1, -1, 8, -8, 1};
static const float WINO4_G[18] = {1.f / 4,  0,         0,         -1.f / 6, -1.f / 6, -1.f / 6,
                                  -1.f / 6, 1.f / 6,   -1.f / 6,  1.f / 24, 1.f / 12, 1.f / 6,
                                  1.f / 24, -1.f / 12, 1.f / 6,   0,        0,        1};
static const wino_spec WINO2 = {2, 4, WINO2_BT, WINO2_AT, WINO2_G};
static const wino_spec WINO4 = {4, 6, WINO4_BT, WINO4_AT, WINO4_G};

/* dst[k] = sum_j coef[j * coef_stride] * src[j][k] over j < count, k < WINO_CB. The callers are inlined into
 * wrappers for one tile size with their small loops unrolled, so that the coefficients are constants: the
 * compiler drops the zero terms and keeps the sum in registers. */
#define WINO_UNROLL _Pragma("GCC unroll 6")
static inline __attribute__((always_inline)) void wino_combine(float *restrict dst, const float *const *src,
                                                              const float *coef, int coef_stride, int count) {
#pragma omp simd
    for (int k = 0; k < WINO_CB; ++k) {
        float acc = 0.f;
        WINO_UNROLL
        for (int j = 0; j < count; ++j) acc += coef[j * coef_stride] * src[j][k];
        dst[k] = acc;
    }
}

/* Large transform outputs are written with non-temporal stores. A transform writes alpha^2 interleaved streams
 * (one per position), and ordinary stores first read each missing line into the cache. With 36 streams (F(4x4))
 * those reads queue: the 64-channel input transform of a 32x32 map at batch 10 (5.9 MB out) took 2.1 ms with
 * ordinary stores and 0.7 ms streaming, and the GEMM that then reads its output was no slower. With 16 streams
 * (F(2x2)) ordinary stores keep up, and an output of a megabyte or two is better left in the cache for the GEMM
 * that reads it many times over (measured cold, with the GEMM, at batch 10). */
#define WINO_STREAM_MIN_BYTES (1 << 20)      /* with more than 16 streams */
#define WINO_STREAM_ANY_MIN_BYTES (4 << 20)  /* with any number of streams */

/* Whether stores into dst (bytes long, written in `streams` interleaved streams) should be non-temporal: large
 * enough, 64-byte aligned (block stores are then aligned: blocks start at multiples of WINO_CB floats), and a
 * machine with streaming vector stores. */
static inline int wino_streams(const float *dst, int64_t bytes, int streams) {
#if defined(__AVX512F__) || defined(__AVX__)
    const int large = bytes >= WINO_STREAM_ANY_MIN_BYTES || (streams > 16 && bytes >= WINO_STREAM_MIN_BYTES);
    return large && ((uintptr_t)dst & 63) == 0;
#else
    (void)dst;
    (void)bytes;
    (void)streams;
    return 0;
#endif
}

/* Makes this thread's streaming stores visible before the memory is read (each thread calls it after its share). */
static inline void wino_stream_fence(void) {
#if defined(__AVX512F__) || defined(__AVX__)
    _mm_sfence();
#endif
}

/* wino_combine into dst; with stream set, through a register and one non-temporal store per block. */
static inline __attribute__((always_inline)) void wino_emit(float *restrict dst, const float *const *src,
                                                           const float *coef, int coef_stride, int count, int stream) {
#if defined(__AVX512F__) || defined(__AVX__)
    if (stream) {
        float block[WINO_CB] __attribute__((aligned(64)));
        wino_combine(block, src, coef, coef_stride, count);
#if defined(__AVX512F__)
        _mm512_stream_ps(dst, _mm512_load_ps(block));
#else
        for (int k = 0; k < WINO_CB; k += 8) _mm256_stream_ps(dst + k, _mm256_load_ps(block + k));
#endif
        return;
    }
#endif
    (void)stream;
    wino_combine(dst, src, coef, coef_stride, count);
}

/* x (N, H, W, C) -> v (alpha^2, tiles, C) = B^T d B per tile. */
static inline __attribute__((always_inline)) void winograd_input(const wino_spec *sp, const float *restrict x,
                                                                 float *restrict v, int64_t N, int64_t H, int64_t W,
                                                                 int64_t C, int stream, int64_t begin, int64_t end) {
    const int m = sp->m, A = sp->alpha;
    const int64_t th = H / m, tw = W / m, tiles = N * th * tw;
    static const float zeros[WINO_CB];
    for (int64_t t = begin; t < end; ++t) {
        const int64_t n = t / (th * tw), y0 = m * ((t / tw) % th) - 1, x0 = m * (t % tw) - 1;
        float e[WINO_MAX_A * WINO_MAX_A][WINO_CB];
        const float *src[WINO_MAX_A];
        for (int64_t c0 = 0; c0 < C; c0 += WINO_CB) {
            WINO_UNROLL
            for (int s = 0; s < A; ++s) { /* columns of d: e[a][s] = sum_r B^T[a][r] d[r][s] */
                WINO_UNROLL
                for (int r = 0; r < A; ++r) {
                    const int64_t yy = y0 + r, xx = x0 + s;
                    src[r] = (yy < 0 || yy >= H || xx < 0 || xx >= W) ? zeros : x + ((n * H + yy) * W + xx) * C + c0;
                }
                WINO_UNROLL
                for (int a = 0; a < A; ++a) wino_combine(e[a * A + s], src, sp->bt + a * A, 1, A);
            }
            WINO_UNROLL
            for (int a = 0; a < A; ++a) { /* v[a][b] = sum_s e[a][s] B^T[b][s] */
                WINO_UNROLL
                for (int s = 0; s < A; ++s) src[s] = e[a * A + s];
                WINO_UNROLL
                for (int b = 0; b < A; ++b)
                    wino_emit(v + ((int64_t)(a * A + b) * tiles + t) * C + c0, src, sp->bt + b * A, 1, A, stream);
            }
        }
    }
}

/* m (alpha^2, tiles, C) -> y (N, H, W, C) = A^T m A per tile, plus bias (C) when not NULL. */
static inline __attribute__((always_inline)) void winograd_output(const wino_spec *sp, const float *restrict mt,
                                                                  const float *restrict bias, float *restrict y,
                                                                  int64_t N, int64_t H, int64_t W, int64_t C,
                                                                  int64_t begin, int64_t end) {
    const int m = sp->m, A = sp->alpha;
    const int64_t th = H / m, tw = W / m, tiles = N * th * tw;
    for (int64_t t = begin; t < end; ++t) {
        const int64_t n = t / (th * tw), y0 = m * ((t / tw) % th), x0 = m * (t % tw);
        float u[4 * WINO_MAX_A][WINO_CB];
        const float *src[WINO_MAX_A];
        for (int64_t c0 = 0; c0 < C; c0 += WINO_CB) {
            WINO_UNROLL
            for (int s = 0; s < A; ++s) { /* u[p][s] = sum_a A^T[p][a] m[a][s] */
                WINO_UNROLL
                for (int a = 0; a < A; ++a) src[a] = mt + ((int64_t)(a * A + s) * tiles + t) * C + c0;
                WINO_UNROLL
                for (int p = 0; p < m; ++p) wino_combine(u[p * A + s], src, sp->at + p * A, 1, A);
            }
            WINO_UNROLL
            for (int p = 0; p < m; ++p) { /* y[p][q] = sum_s u[p][s] A^T[q][s] */
                WINO_UNROLL
                for (int s = 0; s < A; ++s) src[s] = u[p * A + s];
                WINO_UNROLL
                for (int q = 0; q < m; ++q) {
                    float *out = y + ((n * H + y0 + p) * W + x0 + q) * C + c0;
                    wino_combine(out, src, sp->at + q * A, 1, A);
                    if (bias) {
#pragma omp simd
                        for (int64_t k = 0; k < WINO_CB; ++k) out[k] += bias[c0 + k];
                    }
                }
            }
        }
    }
}

/* The adjoint of winograd_output (without the bias): dy (N, H, W, C) -> dm (alpha^2, tiles, C) = A dy A^T. */
static inline __attribute__((always_inline)) void winograd_output_adjoint(const wino_spec *sp, const float *restrict dy,
                                                                          float *restrict dm, int64_t N, int64_t H,
                                                                          int64_t W, int64_t C, int stream,
                                                                          int64_t begin, int64_t end) {
    const int m = sp->m, A = sp->alpha;
    const int64_t th = H / m, tw = W / m, tiles = N * th * tw;
    for (int64_t t = begin; t < end; ++t) {
        const int64_t n = t / (th * tw), y0 = m * ((t / tw) % th), x0 = m * (t % tw);
        float w[WINO_MAX_A * 4][WINO_CB];
        const float *src[WINO_MAX_A];
        for (int64_t c0 = 0; c0 < C; c0 += WINO_CB) {
            WINO_UNROLL
            for (int q = 0; q < m; ++q) { /* w[a][q] = sum_p A^T[p][a] dy[p][q] */
                WINO_UNROLL
                for (int p = 0; p < m; ++p) src[p] = dy + ((n * H + y0 + p) * W + x0 + q) * C + c0;
                WINO_UNROLL
                for (int a = 0; a < A; ++a) wino_combine(w[a * 4 + q], src, sp->at + a, A, m);
            }
            WINO_UNROLL
            for (int a = 0; a < A; ++a) { /* dm[a][b] = sum_q w[a][q] A^T[q][b] */
                WINO_UNROLL
                for (int q = 0; q < m; ++q) src[q] = w[a * 4 + q];
                WINO_UNROLL
                for (int b = 0; b < A; ++b)
                    wino_emit(dm + ((int64_t)(a * A + b) * tiles + t) * C + c0, src, sp->at + b, A, m, stream);
            }
        }
    }
}

/* The adjoint of winograd_input: dv (alpha^2, tiles, C) -> dx (N, H, W, C), adding the sum over tiles of
 * B dv B^T at the tile's input pixels (the caller zeroes dx). Job k of a parity is the tile row i = parity + 2
 * (k mod rows) of image k / rows: tile rows of one parity never overlap (m >= 2), so the two parities run one
 * after the other, each in parallel. */
static inline __attribute__((always_inline)) void winograd_input_adjoint(const wino_spec *sp, const float *restrict dv,
                                                                         float *restrict dx, int64_t N, int64_t H,
                                                                         int64_t W, int64_t C, int parity,
                                                                         int64_t begin, int64_t end) {
    const int m = sp->m, A = sp->alpha;
    const int64_t th = H / m, tw = W / m, tiles = N * th * tw, rows = (th - parity + 1) / 2;
    float e[WINO_MAX_A * WINO_MAX_A][WINO_CB], dd[WINO_CB];
    const float *src[WINO_MAX_A];
    for (int64_t job = begin; job < end; ++job) {
        const int64_t n = job / rows, i = parity + 2 * (job % rows);
        for (int64_t j = 0; j < tw; ++j) {
            const int64_t t = (n * th + i) * tw + j, y0 = m * i - 1, x0 = m * j - 1;
            for (int64_t c0 = 0; c0 < C; c0 += WINO_CB) {
                WINO_UNROLL
                for (int b = 0; b < A; ++b) { /* e[r][b] = sum_a B^T[a][r] dv[a][b] */
                    WINO_UNROLL
                    for (int a = 0; a < A; ++a) src[a] = dv + ((int64_t)(a * A + b) * tiles + t) * C + c0;
                    WINO_UNROLL
                    for (int r = 0; r < A; ++r) wino_combine(e[r * A + b], src, sp->bt + r, A, A);
                }
                WINO_UNROLL
                for (int r = 0; r < A; ++r) { /* dx[r][s] += sum_b e[r][b] B^T[b][s] */
                    const int64_t yy = y0 + r;
                    if (yy < 0 || yy >= H) continue;
                    WINO_UNROLL
                    for (int b = 0; b < A; ++b) src[b] = e[r * A + b];
                    WINO_UNROLL
                    for (int s = 0; s < A; ++s) {
                        const int64_t xx = x0 + s;
                        if (xx < 0 || xx >= W) continue;
                        wino_combine(dd, src, sp->bt + s, A, A);
                        float *out = dx + ((n * H + yy) * W + xx) * C + c0;
#pragma omp simd
                        for (int64_t k = 0; k < WINO_CB; ++k) out[k] += dd[k];
                    }
                }
            }
        }
    }
}

/* w (P, 3, 3) -> u (alpha^2, P): u[alpha a + b] = (G w G^T)[a][b] for each of the P = C_out * C channel pairs. */
static inline __attribute__((always_inline)) void winograd_weight(const wino_spec *sp, const float *restrict w,
                                                                  float *restrict u, int64_t P, int stream,
                                                                  int64_t begin, int64_t end) {
    const int A = sp->alpha;
    for (int64_t e0 = begin * WINO_CB; e0 < end * WINO_CB; e0 += WINO_CB) {
        float taps[9][WINO_CB], rows[WINO_MAX_A * 3][WINO_CB];
        const float *src[WINO_MAX_A];
        WINO_UNROLL
        for (int k = 0; k < 9; ++k)
            for (int64_t q = 0; q < WINO_CB; ++q) taps[k][q] = w[(e0 + q) * 9 + k];
        WINO_UNROLL
        for (int l = 0; l < 3; ++l) { /* rows[a][l] = sum_k G[a][k] w[k][l] */
            WINO_UNROLL
            for (int k = 0; k < 3; ++k) src[k] = taps[k * 3 + l];
            WINO_UNROLL
            for (int a = 0; a < A; ++a) wino_combine(rows[a * 3 + l], src, sp->g + a * 3, 1, 3);
        }
        WINO_UNROLL
        for (int a = 0; a < A; ++a) { /* u[a][b] = sum_l rows[a][l] G[b][l] */
            WINO_UNROLL
            for (int l = 0; l < 3; ++l) src[l] = rows[a * 3 + l];
            WINO_UNROLL
            for (int b = 0; b < A; ++b) wino_emit(u + (int64_t)(a * A + b) * P + e0, src, sp->g + b * 3, 1, 3, stream);
        }
    }
}

/* The adjoint of winograd_weight: du (alpha^2, P) -> dw (P, 3, 3) (overwritten), dw = G^T du G. */
static inline __attribute__((always_inline)) void winograd_weight_adjoint(const wino_spec *sp, const float *restrict du,
                                                                          float *restrict dw, int64_t P, int64_t begin,
                                                                          int64_t end) {
    const int A = sp->alpha;
    for (int64_t e0 = begin * WINO_CB; e0 < end * WINO_CB; e0 += WINO_CB) {
        float cols[WINO_MAX_A * 3][WINO_CB], taps[9][WINO_CB];
        const float *src[WINO_MAX_A];
        WINO_UNROLL
        for (int a = 0; a < A; ++a) { /* cols[a][l] = sum_b du[a][b] G[b][l] */
            WINO_UNROLL
            for (int b = 0; b < A; ++b) src[b] = du + (int64_t)(a * A + b) * P + e0;
            WINO_UNROLL
            for (int l = 0; l < 3; ++l) wino_combine(cols[a * 3 + l], src, sp->g + l, 3, A);
        }
        WINO_UNROLL
        for (int l = 0; l < 3; ++l) { /* dw[k][l] = sum_a G[a][k] cols[a][l] */
            WINO_UNROLL
            for (int a = 0; a < A; ++a) src[a] = cols[a * 3 + l];
            WINO_UNROLL
            for (int k = 0; k < 3; ++k) wino_combine(taps[k * 3 + l], src, sp->g + k, 3, A);
        }
        WINO_UNROLL
        for (int k = 0; k < 9; ++k)
            for (int64_t q = 0; q < WINO_CB; ++q) dw[(e0 + q) * 9 + k] = taps[k][q];
    }
}

/* Runs CALL(spec) for this thread's share [begin, end) of jobs, in parallel, with the spec of tile size m
 * named as a constant (so that the inlined transform is specialised for it), then fences the thread's
 * streaming stores. The pragma's num_threads names
 * the calling function's own `nthreads` (a _Pragma string is not macro-expanded). */
#define WINO_PARALLEL(m, nthreads, jobs, CALL)                                                  \
    _Pragma("omp parallel num_threads(nthreads)") {                                           \
        const int64_t per_thread = ((jobs) + thread_count() - 1) / thread_count();             \
        const int64_t begin = thread_index() * per_thread;                                     \
        const int64_t end = begin + per_thread < (jobs) ? begin + per_thread : (jobs);         \
        if ((m) == 4)                                                                          \
            CALL(&WINO4);                                                                      \
        else                                                                                   \
            CALL(&WINO2);                                                                      \
        wino_stream_fence();                                                                   \
    }

WIDE_VECTORS void t2v_winograd_input(const float *x, float *v, int64_t N, int64_t H, int64_t W, int64_t C, int m,
                                     int nthreads) {
    const int stream = wino_streams(v, (int64_t)sizeof(float) * (m + 2) * (m + 2) * N * (H / m) * (W / m) * C, (m + 2) * (m + 2));
#define CALL(spec) winograd_input(spec, x, v, N, H, W, C, stream, begin, end)
    WINO_PARALLEL(m, nthreads, N * (H / m) * (W / m), CALL)
#undef CALL
}

WIDE_VECTORS void t2v_winograd_output(const float *mt, const float *bias, float *y, int64_t N, int64_t H, int64_t W,
                                      int64_t C, int m, int nthreads) {
#define CALL(spec) winograd_output(spec, mt, bias, y, N, H, W, C, begin, end)
    WINO_PARALLEL(m, nthreads, N * (H / m) * (W / m), CALL)
#undef CALL
}

WIDE_VECTORS void t2v_winograd_output_adjoint(const float *dy, float *dm, int64_t N, int64_t H, int64_t W, int64_t C,
                                              int m, int nthreads) {
    const int stream = wino_streams(dm, (int64_t)sizeof(float) * (m + 2) * (m + 2) * N * (H / m) * (W / m) * C, (m + 2) * (m + 2));
#define CALL(spec) winograd_output_adjoint(spec, dy, dm, N, H, W, C, stream, begin, end)
    WINO_PARALLEL(m, nthreads, N * (H / m) * (W / m), CALL)
#undef CALL
}

/* dx (N, H, W, C) overwritten. */
WIDE_VECTORS void t2v_winograd_input_adjoint(const float *dv, float *dx, int64_t N, int64_t H, int64_t W, int64_t C,
                                             int m, int nthreads) {
    memset(dx, 0, sizeof(float) * N * H * W * C);
    for (int parity = 0; parity < 2; ++parity) {
#define CALL(spec) winograd_input_adjoint(spec, dv, dx, N, H, W, C, parity, begin, end)
        WINO_PARALLEL(m, nthreads, N * ((H / m - parity + 1) / 2), CALL)
#undef CALL
    }
}

WIDE_VECTORS void t2v_winograd_weight(const float *w, float *u, int64_t P, int m, int nthreads) {
    const int stream = wino_streams(u, (int64_t)sizeof(float) * (m + 2) * (m + 2) * P, (m + 2) * (m + 2));
#define CALL(spec) winograd_weight(spec, w, u, P, stream, begin, end)
    WINO_PARALLEL(m, nthreads, P / WINO_CB, CALL)
#undef CALL
}

/* dw (P, 3, 3) overwritten. */
WIDE_VECTORS void t2v_winograd_weight_adjoint(const float *du, float *dw, int64_t P, int m, int nthreads) {
#define CALL(spec) winograd_weight_adjoint(spec, du, dw, P, begin, end)
    WINO_PARALLEL(m, nthreads, P / WINO_CB, CALL)
#undef CALL
}
