// Weight-only int8 linear for decode on the CPU: y = (x . w_row) * scale_row + bias.
// Decode reads every weight once per token, so it is memory-bound: int8 rows move a quarter of
// the bytes of fp32 ones. Each row is widened to fp32 in registers (AVX-512, else AVX2 + FMA,
// as the compiler targets them) and dotted with x; the weights of a step are widened once and
// multiplied into up to four input rows (speculative verification sends several); rows of the
// weight are split across threads with at::parallel_for.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

namespace {

constexpr int64_t kRowTile = 4;  // input rows sharing one widening of the weights

#if defined(__AVX512F__)
constexpr int64_t kStep = 64;

// Rows 0..ROWS-1 of x against one weight row. Four independent sums per row keep the FMA
// latency hidden, and every row sums in the same order whatever ROWS is, so a row's result does
// not depend on how many rows came with it (speculative verification must equal decode).
template <int ROWS>
void row_tile_fixed(const int8_t* w, const float* x, int64_t k, float* totals) {
  constexpr int kSums = 4;
  __m512 acc[ROWS][kSums];
  for (int r = 0; r < ROWS; ++r)
    for (int j = 0; j < kSums; ++j) acc[r][j] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + kStep <= k; i += kStep) {
    __m512 weights[4];
    for (int j = 0; j < 4; ++j)
      weights[j] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i + 16 * j))));
    for (int r = 0; r < ROWS; ++r)
      for (int j = 0; j < 4; ++j)
        acc[r][j] = _mm512_fmadd_ps(weights[j], _mm512_loadu_ps(x + r * k + i + 16 * j),
                                            acc[r][j]);
  }
  for (int r = 0; r < ROWS; ++r) {
    __m512 sum = acc[r][0];
    for (int j = 1; j < kSums; ++j) sum = _mm512_add_ps(sum, acc[r][j]);
    float total = _mm512_reduce_add_ps(sum);
    for (int64_t t = i; t < k; ++t) total += static_cast<float>(w[t]) * x[r * k + t];
    totals[r] = total;
  }
}
#else
float dot_row(const int8_t* w, const float* x, int64_t k) {
  int64_t i = 0;
  float total = 0.f;
#if defined(__AVX2__) && defined(__FMA__)
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (; i + 16 <= k; i += 16) {
    __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i));
    __m256 w0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
    __m256 w1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(bytes, 8)));
    acc0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + i), acc0);
    acc1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + i + 8), acc1);
  }
  __m256 acc = _mm256_add_ps(acc0, acc1);
  __m128 half = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  half = _mm_hadd_ps(half, half);
  half = _mm_hadd_ps(half, half);
  total = _mm_cvtss_f32(half);
#endif
  for (; i < k; ++i) total += static_cast<float>(w[i]) * x[i];
  return total;
}

template <int ROWS>
void row_tile_fixed(const int8_t* w, const float* x, int64_t k, float* totals) {
  for (int r = 0; r < ROWS; ++r) totals[r] = dot_row(w, x + r * k, k);
}
#endif

void row_tile(const int8_t* w, const float* x, int64_t k, int64_t rows, float* totals) {
  switch (rows) {
    case 1: return row_tile_fixed<1>(w, x, k, totals);
    case 2: return row_tile_fixed<2>(w, x, k, totals);
    case 3: return row_tile_fixed<3>(w, x, k, totals);
    default: return row_tile_fixed<4>(w, x, k, totals);
  }
}

}  // namespace

// x: (m, k) float32 contiguous; w: (n, k) int8 contiguous; scale: (n) float32.
torch::Tensor int8_linear(torch::Tensor x, torch::Tensor w, torch::Tensor scale,
                          c10::optional<torch::Tensor> bias) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 && w.scalar_type() == torch::kInt8 &&
              scale.scalar_type() == torch::kFloat32, "int8_linear: expected fp32 x, int8 w");
  TORCH_CHECK(x.size(1) == w.size(1), "int8_linear: shape mismatch");
  auto xc = x.contiguous();
  auto wc = w.contiguous();
  const int64_t m = xc.size(0), k = xc.size(1), n = wc.size(0);
  auto y = torch::empty({m, n}, xc.options());
  const float* xp = xc.data_ptr<float>();
  const int8_t* wp = wc.data_ptr<int8_t>();
  const float* sp = scale.data_ptr<float>();
  const float* bp = bias.has_value() ? bias->data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    float totals[kRowTile];
    for (int64_t row = begin; row < end; ++row) {
      for (int64_t r0 = 0; r0 < m; r0 += kRowTile) {
        const int64_t rows = std::min(kRowTile, m - r0);
        row_tile(wp + row * k, xp + r0 * k, k, rows, totals);
        for (int64_t r = 0; r < rows; ++r) {
          const float value = totals[r] * sp[row];
          yp[(r0 + r) * n + row] = bp ? value + bp[row] : value;
        }
      }
    }
  });
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("int8_linear", &int8_linear, "weight-only int8 linear (decode)");
}
