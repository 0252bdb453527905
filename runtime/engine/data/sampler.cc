#include "runtime/engine/data/sampler.h"

#include <ATen/ATen.h>

#include <span>
#include <utility>

#include "absl/strings/str_cat.h"

namespace kp::data {
namespace {

// SplitMix64's finaliser: a bijection with full avalanche, so neighbouring
// (seed, index) pairs give unrelated offsets.
uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

Sampler::Sampler(std::shared_ptr<const TokenSource> source, const SamplerOptions& options)
    : source_(std::move(source)), options_(options) {}

absl::StatusOr<std::unique_ptr<Sampler>> Sampler::Create(std::shared_ptr<const TokenSource> source,
                                                         const SamplerOptions& o) {
  auto bad = [](const std::string& why) { return absl::InvalidArgumentError("sampler: " + why); };
  if (source == nullptr) return bad("no token source");
  if (o.seq_len <= 0) return bad(absl::StrCat("seq_len must be > 0, got ", o.seq_len));
  if (o.dp_world <= 0) return bad(absl::StrCat("dp_world must be > 0, got ", o.dp_world));
  if (o.grad_accum <= 0) return bad(absl::StrCat("grad_accum must be > 0, got ", o.grad_accum));
  if (o.dp_rank < 0 || o.dp_rank >= o.dp_world) {
    return bad(absl::StrCat("dp_rank ", o.dp_rank, " outside [0, ", o.dp_world, ")"));
  }
  if (o.global_batch <= 0 || o.global_batch % (int64_t{o.dp_world} * o.grad_accum) != 0) {
    return bad(absl::StrCat("global_batch ", o.global_batch, " is not a positive multiple of dp_world ",
                            o.dp_world, " x grad_accum ", o.grad_accum));
  }
  if (source->size() < static_cast<uint64_t>(o.seq_len) + 1) {
    return bad(absl::StrCat(source->name(), " holds ", source->size(),
                            " tokens, fewer than seq_len + 1 = ", o.seq_len + 1));
  }
  return std::unique_ptr<Sampler>(new Sampler(std::move(source), o));
}

int64_t Sampler::micro_batch() const {
  return options_.global_batch / options_.dp_world / options_.grad_accum;
}

uint64_t Sampler::SampleOffset(int64_t global_index) const {
  const uint64_t windows = source_->size() - static_cast<uint64_t>(options_.seq_len);
  const uint64_t h = Mix64(Mix64(options_.seed) ^ static_cast<uint64_t>(global_index));
  // Multiply-shift maps h uniformly onto [0, windows) without modulo bias.
  return static_cast<uint64_t>((static_cast<unsigned __int128>(h) * windows) >> 64);
}

absl::StatusOr<at::Tensor> Sampler::Samples(int64_t first, int64_t count) const {
  if (first < 0 || count < 0) {
    return absl::InvalidArgumentError(absl::StrCat("sampler: bad sample range first=", first,
                                                   " count=", count));
  }
  const int64_t width = options_.seq_len + 1;
  at::Tensor out = at::empty({count, width}, at::TensorOptions().dtype(at::kLong));
  int64_t* data = out.data_ptr<int64_t>();
  for (int64_t i = 0; i < count; ++i) {
    KP_RETURN_IF_ERROR(source_->Read(SampleOffset(first + i),
                                     std::span<int64_t>(data + i * width, width)));
  }
  return out;
}

absl::StatusOr<at::Tensor> Sampler::Batch(int64_t step, int micro) const {
  if (step < 0 || micro < 0 || micro >= options_.grad_accum) {
    return absl::InvalidArgumentError(absl::StrCat("sampler: bad step ", step, " / micro step ",
                                                   micro, " (grad_accum ", options_.grad_accum, ")"));
  }
  const int64_t per_rank = options_.global_batch / options_.dp_world;
  const int64_t first =
      step * options_.global_batch + options_.dp_rank * per_rank + micro * micro_batch();
  return Samples(first, micro_batch());
}

}  // namespace kp::data
