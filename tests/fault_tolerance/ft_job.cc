#include "tests/fault_tolerance/ft_job.h"

namespace kp::ft {

std::string JobConfig() {
  return R"(model:
  vocab_size: 256
  d_model: 64
  n_layers: 2
  n_heads: 4
  n_kv_heads: 2
  ffn_hidden: 128
  max_seq_len: 32
training:
  seq_len: 32
  micro_batch: )" + std::to_string(kMicroBatch) + R"(
  grad_accum: 1
  steps: )" + std::to_string(kSteps) + R"(
  lr: 3.0e-3
  min_lr: 3.0e-4
  warmup_steps: 5
  seed: 1234
  log_every: 10
  checkpoint_every: )" + std::to_string(kCheckpointEvery) + R"(
  keep_checkpoints: 3
precision: fp32
parallel:
  dp: 2
  cp: 1
data:
  corpus: builtin
  builtin:
    seed: 1
    num_symbols: 32
    order: 2
    retrieval_prob: 0.0
    num_tokens: 65536
)";
}

v1::JobSpec JobSpec(const std::string& name, int min_dp, int steps) {
  v1::JobSpec s;
  s.set_name(name);
  s.set_config_yaml(JobConfig());
  s.set_dp(kDp);
  s.set_cp(1);
  s.set_steps(steps);
  s.set_elastic(true);
  s.set_max_restarts(2);
  s.mutable_checkpoint()->set_dir(name);
  s.mutable_checkpoint()->set_every_steps(kCheckpointEvery);
  if (min_dp > 0) (*s.mutable_labels())["kp.min_dp"] = std::to_string(min_dp);
  return s;
}

}  // namespace kp::ft
