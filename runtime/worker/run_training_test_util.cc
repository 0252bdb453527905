#include "runtime/worker/run_training_test_util.h"

#include <cstdlib>
#include <filesystem>

#include <gtest/gtest.h>

namespace kp::worker::testing {

namespace fs = std::filesystem;

std::string FreshTempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  fs::path p = fs::path(base ? base : "/tmp") / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

engine::Config SmallTinyConfig() {
  auto c = engine::LoadConfigFile("configs/tiny.yaml");
  EXPECT_TRUE(c.ok()) << c.status();
  engine::Config config = *c;
  config.model.d_model = 32;
  config.model.n_layers = 2;
  config.model.ffn_hidden = 64;
  config.model.max_seq_len = 32;
  config.training.seq_len = 32;
  config.training.micro_batch = 4;
  config.training.grad_accum = 2;
  config.training.steps = 8;
  config.training.warmup_steps = 2;
  config.training.checkpoint_every = 4;
  config.training.log_every = 4;
  config.data.builtin.num_tokens = 1 << 16;
  return config;
}

RunOptions CpuRunOptions(const std::string& run_dir) {
  RunOptions o;
  o.run_dir = run_dir;
  o.device = "cpu";
  o.threads = 1;
  return o;
}

}  // namespace kp::worker::testing
