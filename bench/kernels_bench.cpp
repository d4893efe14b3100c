// Matvec and tile throughput of the tensor kernels: GB/s of weights read, per type, path and
// thread count. Weight matrices are 4096 x 4096; the "ram" variants rotate through enough copies
// (>= 256 MiB) that every pass reads from memory, the "l3" variants reuse one matrix.
//   build-tensor/kernels_bench --benchmark_filter='matvec/Q4_K'
#include <benchmark/benchmark.h>

#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tensor/kernels.h"
#include "tensor/type.h"

namespace {

using namespace strata;
using namespace strata::kernels;

constexpr int64_t kN = 4096;     // row length
constexpr int64_t kRows = 4096;  // rows per matrix

struct Matrices {
  std::vector<uint8_t> data;  // n_copies matrices back to back
  size_t matrix_bytes = 0;
  size_t row_bytes = 0;
  int n_copies = 1;
};

std::vector<float> random_floats(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

// 64 distinct quantized rows repeated (quantizing 16 M floats with the K-quant reference is slow).
Matrices make_matrices(DType t, size_t min_total_bytes) {
  Matrices m;
  m.row_bytes = strata::row_bytes(t, kN);
  m.matrix_bytes = m.row_bytes * size_t(kRows);
  m.n_copies = int((min_total_bytes + m.matrix_bytes - 1) / m.matrix_bytes);
  if (m.n_copies < 1) m.n_copies = 1;
  const int kDistinct = 64;
  const auto x = random_floats(kN * kDistinct, 1);
  std::vector<uint8_t> rows(m.row_bytes * kDistinct);
  kernels_for(t, Isa::scalar).quantize(x.data(), rows.data(), kN * kDistinct);
  m.data.resize(m.matrix_bytes * size_t(m.n_copies));
  for (size_t off = 0; off < m.data.size(); off += rows.size())
    std::memcpy(m.data.data() + off, rows.data(), std::min(rows.size(), m.data.size() - off));
  return m;
}

std::vector<uint8_t> make_activations(DType t, int n_cols) {
  const DType at = kernels_for(t, Isa::scalar).vec_dot_type;
  const auto x = random_floats(kN * n_cols, 2);
  std::vector<uint8_t> a(strata::row_bytes(at, kN) * size_t(n_cols));
  kernels_for(at, Isa::scalar).quantize_activation(x.data(), a.data(), kN * n_cols);
  return a;
}

template <class F>
void run_threads(int n_threads, F&& f) {
  if (n_threads == 1) return f(0, kRows);
  std::vector<std::thread> ts;
  const int64_t per = kRows / n_threads;
  for (int i = 0; i < n_threads; ++i) ts.emplace_back(f, per * i, i + 1 == n_threads ? kRows : per * (i + 1));
  for (auto& t : ts) t.join();
}

void bm_matvec(benchmark::State& state, DType t, Isa isa, bool from_ram, int n_threads) {
  const TypeKernels& k = kernels_for(t, isa);
  const Matrices m = make_matrices(t, from_ram ? (size_t(256) << 20) : 0);
  const auto a = make_activations(t, 1);
  std::vector<float> y(kRows);
  int copy = 0;
  for (auto _ : state) {
    const uint8_t* w = m.data.data() + m.matrix_bytes * size_t(copy);
    run_threads(n_threads, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) y[size_t(r)] = k.vec_dot(kN, w + m.row_bytes * size_t(r), a.data());
    });
    benchmark::DoNotOptimize(y.data());
    copy = (copy + 1) % m.n_copies;
  }
  state.counters["GB/s"] = benchmark::Counter(double(m.matrix_bytes) * double(state.iterations()) / 1e9,
                                              benchmark::Counter::kIsRate);
}

// Prompt processing: 4096 x 4096 weights times n_cols activation columns, through tile_dot when the
// path has one, else vec_dot per (row, column).
void bm_matmul(benchmark::State& state, DType t, Isa isa, int n_cols, bool use_tile) {
  const TypeKernels& k = kernels_for(t, isa);
  const Matrices m = make_matrices(t, 0);
  const auto a = make_activations(t, n_cols);
  const size_t arb = strata::row_bytes(k.vec_dot_type, kN);
  std::vector<float> out(size_t(kRows) * size_t(n_cols));
  for (auto _ : state) {
    if (use_tile) {
      const int64_t step = 16;
      for (int64_t r = 0; r < kRows; r += step)
        k.tile_dot(kN, m.data.data() + m.row_bytes * size_t(r), m.row_bytes, int(step), a.data(), arb, n_cols,
                   out.data() + size_t(r) * size_t(n_cols), size_t(n_cols), 1);
    } else {
      for (int64_t r = 0; r < kRows; ++r)
        for (int c = 0; c < n_cols; ++c)
          out[size_t(r) * size_t(n_cols) + size_t(c)] =
              k.vec_dot(kN, m.data.data() + m.row_bytes * size_t(r), a.data() + arb * size_t(c));
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["Gmac/s"] = benchmark::Counter(double(kRows) * double(kN) * n_cols * double(state.iterations()) / 1e9,
                                                benchmark::Counter::kIsRate);
}

// Prompt processing as ops::matmul runs it: rows x k weights (in 8 chunks of rows) times n_cols
// activation columns through tile_dot, output [column][row]; one thread, Gop/s over CPU time.
//   build/kernels_bench --benchmark_filter='prompt/Q4_K'
void bm_prompt(benchmark::State& state, DType t, Isa isa, int64_t rows, int64_t k, int n_cols) {
  const TypeKernels& kt = kernels_for(t, isa);
  const size_t wrb = strata::row_bytes(t, k);
  std::vector<uint8_t> w(wrb * size_t(rows));
  {
    const int kDistinct = 16;
    const auto x = random_floats(k * kDistinct, 1);
    std::vector<uint8_t> q(wrb * kDistinct);
    kernels_for(t, Isa::scalar).quantize(x.data(), q.data(), k * kDistinct);
    for (size_t off = 0; off < w.size(); off += q.size()) std::memcpy(w.data() + off, q.data(), std::min(q.size(), w.size() - off));
  }
  const DType at = kt.vec_dot_type;
  const size_t arb = strata::row_bytes(at, k);
  std::vector<uint8_t> a(arb * size_t(n_cols));
  {
    const auto x = random_floats(k * n_cols, 2);
    kernels_for(at, Isa::scalar).quantize_activation(x.data(), a.data(), k * n_cols);
  }
  std::vector<float> out(size_t(rows) * size_t(n_cols));
  for (auto _ : state) {
    for (int64_t r = 0; r < rows; r += rows / 8)  // ops::matmul's chunks on a pool of 2 threads
      kt.tile_dot(k, w.data() + wrb * size_t(r), wrb, int(rows / 8), a.data(), arb, n_cols, out.data() + r, 1, size_t(rows));
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["Gop/s"] = benchmark::Counter(2.0 * double(rows) * double(k) * n_cols * double(state.iterations()) / 1e9,
                                               benchmark::Counter::kIsRate);
}

}  // namespace

int main(int argc, char** argv) {
  const DType types[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1,
                         DType::Q8_0, DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K};
  std::vector<Isa> isas = {Isa::scalar};
  if (int(detected_isa()) >= int(Isa::avx2)) isas.push_back(Isa::avx2);
  if (int(detected_isa()) >= int(Isa::avx512)) isas.push_back(Isa::avx512);
  for (DType t : types)
    for (Isa isa : isas)
      for (bool ram : {false, true})
        for (int th : {1, 2}) {
          const std::string name = std::string("matvec/") + type_name(t) + "/" + isa_name(isa) + (ram ? "/ram" : "/l3") +
                                   "/threads:" + std::to_string(th);
          // One thread: rates over CPU time (robust when the machine is shared). Two threads: wall time.
          auto* b = benchmark::RegisterBenchmark(name.c_str(), bm_matvec, t, isa, ram, th)->Unit(benchmark::kMillisecond);
          if (th > 1) b->UseRealTime();
        }
  for (DType t : types)
    for (Isa isa : isas) {
      if (!kernels_for(t, isa).tile_dot) continue;
      for (bool tile : {false, true}) {
        const std::string name = std::string("matmul64/") + type_name(t) + "/" + isa_name(isa) + (tile ? "/tile" : "/vec_dot");
        benchmark::RegisterBenchmark(name.c_str(), bm_matmul, t, isa, 64, tile)->Unit(benchmark::kMillisecond)->UseRealTime();
      }
    }
  const int64_t shapes[][2] = {{4096, 4096}, {14336, 4096}, {4096, 14336}};
  for (DType t : types)
    for (Isa isa : isas) {
      if (!kernels_for(t, isa).tile_dot) continue;
      for (const auto& sh : shapes) {
        const std::string name = std::string("prompt/") + type_name(t) + "/" + isa_name(isa) + "/" + std::to_string(sh[0]) +
                                 "x" + std::to_string(sh[1]) + "/512";
        benchmark::RegisterBenchmark(name.c_str(), bm_prompt, t, isa, sh[0], sh[1], 512)->Unit(benchmark::kMillisecond);
      }
    }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
