// The `fp8:` section of a training config (YAML), for the engine's config
// parser to hand over. Unknown keys and bad values are errors naming
// "fp8.<key>" and the file. Documented fields:
//   recipe: delayed | current        (default delayed)
//   amax_history_len: int >= 1       (default 16; delayed recipe's window)
//   margin: int in [-16, 16]         (default 0; scale = fp8_max / (amax * 2^margin))
//   allow_fallback: bool             (default false; BF16 where FP8 is unsupported, logged)
//   fp8_lm_head: bool                (default false; the LM head stays BF16)
//   autotune: bool                   (default true; time BF16 vs FP8 per layer shape at start-up)
//   autotune_iters: int >= 1         (default 5)
//   min_speedup: float > 0           (default 1.0; FP8 kept where bf16_time / fp8_time >= this)
//   fast_accum_forward: bool         (default true)
// `tokens` is not a config field: the engine sets it from the run's shape.
#ifndef KP_RUNTIME_FP8_OPTIONS_YAML_H_
#define KP_RUNTIME_FP8_OPTIONS_YAML_H_

#include <string>

#include <yaml-cpp/yaml.h>

#include "runtime/common/status.h"
#include "runtime/fp8/options.h"

namespace kp::fp8 {

// `node` may be null/undefined (no fp8 section): the defaults. `autotune` is
// returned separately because it only says whether to set Fp8Options::tokens.
struct ParsedFp8Config {
  Fp8Options options;
  bool autotune = true;
};

absl::StatusOr<ParsedFp8Config> ParseFp8Config(const YAML::Node& node, const std::string& source);

}  // namespace kp::fp8

#endif  // KP_RUNTIME_FP8_OPTIONS_YAML_H_
