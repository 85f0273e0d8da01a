// pixel_keys (pixelkernels/reference/sample_pixels.py draw_keys, per-image seeds): the samplers'
// one random step as a hash, one pass over (B, P) keys,
//     h_b       = mix32(lo(s_b) ^ mix32(hi(s_b) ^ mix32(stream mod 2^32)))
//     key[b, p] = mix32(p ^ h_b) << (42 - 32)
// mix32: C. Wellons' "lowbias32" bijection of [0, 2^32) (the reference's _mix32, whose 16-bit
// halves only keep torch's int64 products from overflowing: the same values as uint32 wrapping).
// A bijection per image: an image's keys are distinct, so the sampler needs no tie-break.
#pragma once

#include "common/types.h"

namespace pixelkernels {

constexpr int kKeyBits = 42;  // reference/sample_pixels.py KEY_BITS

PK_HD uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  return x ^ (x >> 16);
}

// h_b of one image's seed and the stream.
PK_HD uint32_t image_hash(int64_t seed, int64_t stream) {
  const uint64_t s = static_cast<uint64_t>(seed);
  const uint32_t lo = static_cast<uint32_t>(s), hi = static_cast<uint32_t>(s >> 32);
  return mix32(lo ^ mix32(hi ^ mix32(static_cast<uint32_t>(static_cast<uint64_t>(stream)))));
}

PK_HD int64_t pixel_key(uint32_t h, int64_t p) {
  return static_cast<int64_t>(mix32(static_cast<uint32_t>(p) ^ h)) << (kKeyBits - 32);
}

struct PixelKeys {
  const int64_t* seeds;  // (B,)
  int64_t B, P;          // P < 2^31
  int64_t stream;
  int64_t* keys;  // (B, P) contiguous; every element is written
};

// Kernels: csrc/cpu/pixel_keys.cpp and csrc/cuda/pixel_keys.cu.
Status launch(OnCpu, const PixelKeys& p);
Status launch(OnCuda, const PixelKeys& p);

}  // namespace pixelkernels
