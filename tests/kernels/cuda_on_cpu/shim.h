// Just enough of CUDA for wkv7.cu's kernel bodies to compile with g++ and run on CPU threads
// (tests/kernels/test_cuda_on_cpu.py). One thread block at a time, one std::thread per CUDA
// thread, __syncthreads() a std::barrier over the block: the source is compiled unchanged, so
// index arithmetic, shared-memory use and barrier placement are the real kernel's.
#pragma once
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>

struct Dim3 { unsigned x = 0, y = 0, z = 0; };
inline thread_local Dim3 threadIdx, blockIdx;
inline std::barrier<>* g_block_barrier = nullptr;  // set by the launcher for each block
inline void __syncthreads() { g_block_barrier->arrive_and_wait(); }

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static  // one block at a time: a static is the block's shared memory

// The device build uses --use_fast_math (__expf is an approximation there); exp is the truth.
inline float __expf(float x) { return std::exp(x); }

// bf16 with CUDA's conversions: widening is exact, narrowing rounds to nearest even.
struct __nv_bfloat16 { uint16_t bits; };
inline float __bfloat162float(__nv_bfloat16 h) {
  uint32_t u = uint32_t(h.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline __nv_bfloat16 __float2bfloat16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if (std::isnan(f)) return {uint16_t((u >> 16) | 0x40)};  // keep NaN a (quiet) NaN
  u += 0x7fffu + ((u >> 16) & 1u);                          // round half to even
  return {uint16_t(u >> 16)};
}
