#include "runtime/coordinator/recovery/batch_config.h"

#include <gtest/gtest.h>

namespace kp::coordinator::recovery {
namespace {

constexpr char kConfig[] = R"(# a comment
model:
  d_model: 128
training:
  micro_batch: 16
  grad_accum: 2
  lr: 3.0e-3
parallel:
  dp: 4
  cp: 1
)";

TEST(BatchConfig, ReadsTheBatchShape) {
  auto b = ReadBatchShape(kConfig);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->micro_batch, 16);
  EXPECT_EQ(b->grad_accum, 2);
  b = ReadBatchShape("training: {micro_batch: 3}\n");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->grad_accum, 1);
}

TEST(BatchConfig, ErrorsNameTheField) {
  auto b = ReadBatchShape("training: {grad_accum: 2}\n");
  EXPECT_NE(b.status().message().find("training.micro_batch is missing"), std::string::npos) << b.status();
  b = ReadBatchShape("training: {micro_batch: 0}\n");
  EXPECT_NE(b.status().message().find("training.micro_batch must be >= 1"), std::string::npos) << b.status();
  b = ReadBatchShape("training: {micro_batch: 4, grad_accum: two}\n");
  EXPECT_NE(b.status().message().find("training.grad_accum is not an integer"), std::string::npos) << b.status();
  EXPECT_FALSE(ReadBatchShape("[1, 2]").ok());
}

TEST(BatchConfig, RewriteChangesOnlyTheLayoutAndBatch) {
  auto out = RewriteForLayout(kConfig, 2, {16, 4});
  ASSERT_TRUE(out.ok()) << out.status();
  auto b = ReadBatchShape(*out);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->micro_batch, 16);
  EXPECT_EQ(b->grad_accum, 4);
  EXPECT_NE(out->find("dp: 2"), std::string::npos) << *out;
  EXPECT_NE(out->find("cp: 1"), std::string::npos) << *out;
  EXPECT_NE(out->find("lr: 3.0e-3"), std::string::npos) << *out;
  EXPECT_NE(out->find("d_model: 128"), std::string::npos) << *out;
  EXPECT_FALSE(RewriteForLayout(kConfig, 0, {16, 4}).ok());
}

}  // namespace
}  // namespace kp::coordinator::recovery
