// Host side of the CPU run: the kernel bodies of wkv7.cu (extracted at test time into
// wkv7_kernels.inc) launched block by block, each block as N std::threads on one barrier.
// extern "C" entry points take raw pointers; the Python side (cuda_on_cpu/__init__.py) allocates.
#include <thread>
#include <vector>

#include "shim.h"

namespace wkv7 {
#include "wkv7_kernels.inc"
}

namespace {

template <typename Body>
void launch(int grid_x, int grid_y, Body body) {
  for (int by = 0; by < grid_y; by++) {
    for (int bx = 0; bx < grid_x; bx++) {
      std::barrier<> block(wkv7::N);
      g_block_barrier = &block;
      std::vector<std::thread> threads;
      for (int i = 0; i < wkv7::N; i++) {
        threads.emplace_back([=] {
          threadIdx = {unsigned(i), 0, 0};
          blockIdx = {unsigned(bx), unsigned(by), 0};
          body();
        });
      }
      for (auto& t : threads) t.join();
    }
  }
}

template <typename F>
void forward(int B, int T, int H, void* const* p) {
  launch(H, B, [=] {
    wkv7::wkv7_forward_kernel<F>(T, H, (const F*)p[0], (const float*)p[1], (const F*)p[2],
                                 (const F*)p[3], (const F*)p[4], (const F*)p[5],
                                 (const float*)p[6], (F*)p[7], (float*)p[8], (float*)p[9],
                                 (float*)p[10]);
  });
}

template <typename F>
void backward(int B, int T, int H, void* const* p) {
  launch(H, B, [=] {
    wkv7::wkv7_backward_kernel<F>(
        T, H, (const F*)p[0], (const float*)p[1], (const F*)p[2], (const F*)p[3],
        (const F*)p[4], (const F*)p[5], (const float*)p[6], (const float*)p[7],
        (const float*)p[8], (const F*)p[9], (const float*)p[10], (F*)p[11], (float*)p[12],
        (F*)p[13], (F*)p[14], (F*)p[15], (F*)p[16], (float*)p[17]);
  });
}

}  // namespace

// p: the kernel's pointer arguments in its own order; bf16 selects the I/O type.
extern "C" int wkv7_chunk() { return wkv7::CHUNK; }
extern "C" void wkv7_forward(int bf16, int B, int T, int H, void* const* p) {
  bf16 ? forward<__nv_bfloat16>(B, T, H, p) : forward<float>(B, T, H, p);
}
extern "C" void wkv7_backward(int bf16, int B, int T, int H, void* const* p) {
  bf16 ? backward<__nv_bfloat16>(B, T, H, p) : backward<float>(B, T, H, p);
}
