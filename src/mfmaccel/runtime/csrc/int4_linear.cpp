// Weight-only 4-bit linear for decode on the CPU: y = x . W^T + bias, W read as packed nibbles.
// Decode reads every weight once per token, so it is memory-bound: 4-bit rows move half the
// bytes of int8 ones. Each weight is (u - shift) * scale for its nibble u and its group's scale
// and shift, exactly as grid.dequantize computes it, so the products are those of the
// dequantized weight and only the order of the sums differs.
//
// The AVX-512 path never converts an integer to a float: per group it builds the 16 possible
// weights as a table, and _mm512_permutexvar_ps looks each nibble up (it reads only an index
// lane's low 4 bits, so no mask is needed). 16 packed bytes (32 weights, high nibble first as
// runtime/pack.py stores them) widen to 16 lanes holding the odd elements in their low nibble
// and, shifted by 4, the even ones; x is reordered once per call to match (evens, then odds,
// per block of 32).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <vector>
#include <immintrin.h>
#if !defined(__AVX512F__)
#error "int4_linear.cpp needs AVX-512 (runtime/kernels.py builds it only where the CPU has it)"
#endif

namespace {

constexpr int64_t kBlock = 32;  // weights per 16 packed bytes
constexpr int64_t kRowTile = 4;  // input rows sharing one decode of the weights

// x (m, k) -> per block of 32: x[0], x[2], .., x[30], x[1], x[3], .., x[31].
std::vector<float> even_odd(const float* x, int64_t m, int64_t k) {
  std::vector<float> out(m * k);
  for (int64_t r = 0; r < m; ++r)
    for (int64_t b = 0; b < k; b += kBlock)
      for (int64_t j = 0; j < kBlock / 2; ++j) {
        out[r * k + b + j] = x[r * k + b + 2 * j];
        out[r * k + b + kBlock / 2 + j] = x[r * k + b + 2 * j + 1];
      }
  return out;
}

// Rows r0..r0+ROWS-1 of x' (even_odd order) against one weight row, 64 weights a step: the
// weights are looked up once and multiplied into every row's sums. Four independent sums per
// row keep the FMA latency hidden, and every row sums in the same order whatever ROWS is, so a
// row's result does not depend on how many rows came with it (speculative verification must
// equal decode).
template <int ROWS>
void row_tile_fixed(const uint8_t* w, const float* scale, const float* shift, const float* xs,
                    int64_t k, int64_t group, float* totals) {
  constexpr int kSums = 4;
  const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512 acc[ROWS][kSums];
  for (int r = 0; r < ROWS; ++r)
    for (int j = 0; j < kSums; ++j) acc[r][j] = _mm512_setzero_ps();
  __m512 table = iota;
  for (int64_t i = 0; i < k; i += 2 * kBlock) {
    if (i % group == 0) {
      const int64_t g = i / group;
      table = _mm512_mul_ps(_mm512_sub_ps(iota, _mm512_set1_ps(shift[g])),
                            _mm512_set1_ps(scale[g]));
    }
    __m512i first = _mm512_cvtepu8_epi32(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i / 2)));
    __m512i second = _mm512_cvtepu8_epi32(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i / 2 + 16)));
    __m512 weights[4];
    weights[0] = _mm512_permutexvar_ps(_mm512_srli_epi32(first, 4), table);
    weights[1] = _mm512_permutexvar_ps(first, table);
    __m512 second_table = table;
    if (group == kBlock) {  // groups of 32: the step's second half has its own group
      const int64_t g = (i + kBlock) / group;
      second_table = _mm512_mul_ps(_mm512_sub_ps(iota, _mm512_set1_ps(shift[g])),
                                   _mm512_set1_ps(scale[g]));
    }
    weights[2] = _mm512_permutexvar_ps(_mm512_srli_epi32(second, 4), second_table);
    weights[3] = _mm512_permutexvar_ps(second, second_table);
    for (int r = 0; r < ROWS; ++r) {
      const float* x = xs + r * k + i;
      for (int j = 0; j < 4; ++j)
        acc[r][j] = _mm512_fmadd_ps(weights[j], _mm512_loadu_ps(x + 16 * j),
                                            acc[r][j]);
    }
  }
  for (int r = 0; r < ROWS; ++r) {
    __m512 sum = acc[r][0];
    for (int j = 1; j < kSums; ++j) sum = _mm512_add_ps(sum, acc[r][j]);
    totals[r] = _mm512_reduce_add_ps(sum);
  }
}

void row_tile(const uint8_t* w, const float* scale, const float* shift, const float* xs,
              int64_t k, int64_t group, int64_t rows, float* totals) {
  switch (rows) {
    case 1: return row_tile_fixed<1>(w, scale, shift, xs, k, group, totals);
    case 2: return row_tile_fixed<2>(w, scale, shift, xs, k, group, totals);
    case 3: return row_tile_fixed<3>(w, scale, shift, xs, k, group, totals);
    default: return row_tile_fixed<4>(w, scale, shift, xs, k, group, totals);
  }
}

}  // namespace

// x: (m, k) float32; packed: (n, k / 2) uint8; scale, shift: (n, k / group) float32.
torch::Tensor int4_linear(torch::Tensor x, torch::Tensor packed, torch::Tensor scale,
                          torch::Tensor shift, int64_t group, c10::optional<torch::Tensor> bias) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 && packed.scalar_type() == torch::kUInt8 &&
              scale.scalar_type() == torch::kFloat32 && shift.scalar_type() == torch::kFloat32,
              "int4_linear: expected fp32 x, uint8 packed, fp32 scale and shift");
  const int64_t m = x.size(0), k = x.size(1), n = packed.size(0);
  TORCH_CHECK(k % (2 * kBlock) == 0 && (group == kBlock || group % (2 * kBlock) == 0) &&
              k % group == 0 &&
              packed.size(1) * 2 == k && scale.size(0) == n && scale.size(1) == k / group &&
              shift.sizes() == scale.sizes(), "int4_linear: shape mismatch");
  auto pc = packed.contiguous();
  auto sc = scale.contiguous();
  auto hc = shift.contiguous();
  const std::vector<float> xs = even_odd(x.contiguous().data_ptr<float>(), m, k);
  auto y = torch::empty({m, n}, x.options());
  const uint8_t* wp = pc.data_ptr<uint8_t>();
  const float* sp = sc.data_ptr<float>();
  const float* hp = hc.data_ptr<float>();
  const float* bp = bias.has_value() ? bias->data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  const int64_t groups = k / group;
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    float totals[kRowTile];
    for (int64_t row = begin; row < end; ++row) {
      for (int64_t r0 = 0; r0 < m; r0 += kRowTile) {
        const int64_t rows = std::min(kRowTile, m - r0);
        row_tile(wp + row * (k / 2), sp + row * groups, hp + row * groups, xs.data() + r0 * k,
                 k, group, rows, totals);
        for (int64_t r = 0; r < rows; ++r)
          yp[(r0 + r) * n + row] = bp ? totals[r] + bp[row] : totals[r];
      }
    }
  });
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("int4_linear", &int4_linear, "weight-only 4-bit linear (decode)");
}
