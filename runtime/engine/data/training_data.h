// What the engine trains on, as a TokenSource: the built-in corpus, a kp
// token file, or any other file read as byte-level text.
#ifndef KP_RUNTIME_ENGINE_DATA_TRAINING_DATA_H_
#define KP_RUNTIME_ENGINE_DATA_TRAINING_DATA_H_

#include <cstdint>
#include <memory>
#include <string>

#include "runtime/common/status.h"
#include "runtime/engine/data/markov_corpus.h"
#include "runtime/engine/data/token_source.h"

namespace kp::data {

// A path ending in ".tok" must be a valid token file (its errors are
// returned: a corrupt token file never trains as text); any other file is
// tokenized byte-level in memory (vocab 256). NOT_FOUND if missing,
// INVALID_ARGUMENT if empty.
absl::StatusOr<std::shared_ptr<const TokenSource>> OpenTrainingData(const std::string& path);

// The built-in corpus, generated into cache_dir on first use and mapped.
absl::StatusOr<std::shared_ptr<const TokenSource>> OpenBuiltinCorpus(const CorpusSpec& spec,
                                                                     uint64_t num_tokens,
                                                                     const std::string& cache_dir);

}  // namespace kp::data

#endif  // KP_RUNTIME_ENGINE_DATA_TRAINING_DATA_H_
