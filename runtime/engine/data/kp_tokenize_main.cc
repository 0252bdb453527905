// kp-tokenize IN.txt OUT.tok: turns any file into a byte-level token file
// (vocab 256) that the engine trains on.
#include <cstdio>
#include <string>

#include "runtime/engine/data/byte_tokenizer.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s IN.txt OUT.tok\n  writes IN's bytes as a kp token file (vocab 256)\n",
                 argv[0]);
    return 2;
  }
  absl::StatusOr<uint64_t> n = kp::data::TokenizeFile(argv[1], argv[2]);
  if (!n.ok()) {
    std::fprintf(stderr, "kp-tokenize: %s\n", std::string(n.status().message()).c_str());
    return 1;
  }
  std::printf("wrote %llu tokens (vocab 256) to %s\n", static_cast<unsigned long long>(*n), argv[2]);
  return 0;
}
