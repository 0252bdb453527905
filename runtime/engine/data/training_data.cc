#include "runtime/engine/data/training_data.h"

#include <filesystem>

#include "runtime/common/files.h"
#include "runtime/engine/data/byte_tokenizer.h"
#include "runtime/engine/data/token_file.h"

namespace kp::data {

absl::StatusOr<std::shared_ptr<const TokenSource>> OpenTrainingData(const std::string& path) {
  if (!std::filesystem::exists(path)) return absl::NotFoundError("training data " + path + " does not exist");
  if (std::filesystem::path(path).extension() == ".tok") {
    KP_ASSIGN_OR_RETURN(std::unique_ptr<TokenFile> f, TokenFile::Open(path));
    return std::shared_ptr<const TokenSource>(std::move(f));
  }
  KP_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  if (text.empty()) return absl::InvalidArgumentError("training data " + path + " is empty");
  return std::shared_ptr<const TokenSource>(
      std::make_shared<InMemoryTokenSource>(EncodeBytes(text), kByteVocabSize, path));
}

absl::StatusOr<std::shared_ptr<const TokenSource>> OpenBuiltinCorpus(const CorpusSpec& spec,
                                                                     uint64_t num_tokens,
                                                                     const std::string& cache_dir) {
  KP_ASSIGN_OR_RETURN(std::string path, EnsureCorpusFile(spec, num_tokens, cache_dir));
  KP_ASSIGN_OR_RETURN(std::unique_ptr<TokenFile> f, TokenFile::Open(path));
  return std::shared_ptr<const TokenSource>(std::move(f));
}

}  // namespace kp::data
