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
 * Compiled with -ffast-math (reassociated sums, no NaN/infinity handling): inputs must be finite; callers
 * check the bias. Exponentials use the inlined fast_expf below, so that the loops vectorise without calls.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
static inline int thread_index(void) { return omp_get_thread_num(); }
#else
static inline int thread_index(void) { return 0; }
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

int t2v_abi_version(void) { return 2; }

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

