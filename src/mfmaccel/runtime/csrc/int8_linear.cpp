// Weight-only int8 linear for batch-1 decode on the CPU: y = (x . w_row) * scale_row + bias.
// Decode reads every weight once per token, so it is memory-bound: int8 rows move a quarter of
// the bytes of fp32 ones. Each row is widened to fp32 in registers (AVX2 + FMA when the
// compiler targets them) and dotted with x; rows are split across threads with at::parallel_for.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

static float dot_row(const int8_t* w, const float* x, int64_t k) {
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
  at::parallel_for(0, n, 64, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      for (int64_t r = 0; r < m; ++r) {
        float value = dot_row(wp + row * k, xp + r * k, k) * sp[row];
        yp[r * n + row] = bp ? value + bp[row] : value;
      }
    }
  });
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("int8_linear", &int8_linear, "weight-only int8 linear (batch-1 decode)");
}
