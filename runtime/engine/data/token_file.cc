#include "runtime/engine/data/token_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "runtime/common/files.h"

namespace kp::data {
namespace {

constexpr char kMagic[8] = {'K', 'P', 'T', 'O', 'K', 'E', 'N', 'S'};
constexpr uint32_t kVersion = 1;
constexpr size_t kCrcOffset = 60;
// Tokens checked at open in each of three windows (start, middle, end): a
// corrupt or mislabelled file usually shows within a few thousand tokens,
// and checking all of a 100 GB file at open would take minutes.
constexpr uint64_t kCheckWindow = 1 << 16;

uint32_t Width(TokenDtype d) { return d == TokenDtype::kUint16 ? 2 : 4; }

// The format is little-endian; so is every machine we build for (x86-64,
// aarch64 Linux), which lets tokens be read straight from the mapping.
static_assert(std::endian::native == std::endian::little, "token files assume little-endian");

template <typename T>
void Put(std::string& buf, size_t off, T v) {
  std::memcpy(buf.data() + off, &v, sizeof(T));
}
template <typename T>
T Get(const uint8_t* p, size_t off) {
  T v;
  std::memcpy(&v, p + off, sizeof(T));
  return v;
}

uint32_t Crc(const uint8_t* p, size_t n) {
  return static_cast<uint32_t>(crc32(0L, p, static_cast<uInt>(n)));
}

}  // namespace

TokenDtype DtypeForVocab(uint32_t vocab_size) {
  return vocab_size <= 65536 ? TokenDtype::kUint16 : TokenDtype::kUint32;
}

absl::Status WriteTokenFile(const std::string& path, std::span<const uint32_t> tokens,
                            uint32_t vocab_size) {
  if (vocab_size == 0) return absl::InvalidArgumentError("token file " + path + ": vocab_size is 0");
  const TokenDtype dtype = DtypeForVocab(vocab_size);
  const uint32_t width = Width(dtype);
  std::string buf(kTokenFileHeaderSize + tokens.size() * width, '\0');
  std::memcpy(buf.data(), kMagic, 8);
  Put<uint32_t>(buf, 8, kVersion);
  Put<uint32_t>(buf, 12, static_cast<uint32_t>(dtype));
  Put<uint32_t>(buf, 16, vocab_size);
  Put<uint32_t>(buf, 20, static_cast<uint32_t>(kTokenFileHeaderSize));
  Put<uint64_t>(buf, 24, tokens.size());
  Put<uint32_t>(buf, kCrcOffset, Crc(reinterpret_cast<const uint8_t*>(buf.data()), kCrcOffset));
  char* out = buf.data() + kTokenFileHeaderSize;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const uint32_t t = tokens[i];
    if (t >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token file ", path, ": token ", t,
                                                     " at position ", i, " is >= vocab_size ",
                                                     vocab_size));
    }
    if (width == 2) {
      const uint16_t s = static_cast<uint16_t>(t);
      std::memcpy(out + 2 * i, &s, 2);
    } else {
      std::memcpy(out + 4 * i, &t, 4);
    }
  }
  return WriteFileAtomically(path, buf);
}

absl::StatusOr<std::unique_ptr<TokenFile>> TokenFile::Open(const std::string& path) {
  auto loss = [&](const std::string& why) {
    return absl::DataLossError("token file " + path + ": " + why);
  };
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) {
    const int err = errno;
    const std::string msg = "token file " + path + ": " + std::strerror(err);
    return err == ENOENT ? absl::NotFoundError(msg) : absl::PermissionDeniedError(msg);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return absl::InternalError("token file " + path + ": fstat: " + std::strerror(errno));
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < kTokenFileHeaderSize) {
    ::close(fd);
    return loss(absl::StrCat("truncated: ", file_size, " bytes, shorter than the ",
                             kTokenFileHeaderSize, "-byte header"));
  }
  void* map = ::mmap(nullptr, file_size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);  // the mapping keeps the file open
  if (map == MAP_FAILED) {
    return absl::InternalError("token file " + path + ": mmap: " + std::strerror(errno));
  }
  std::unique_ptr<TokenFile> f(new TokenFile());
  f->path_ = path;
  f->map_ = static_cast<const uint8_t*>(map);
  f->map_size_ = file_size;
  const uint8_t* p = f->map_;
  if (std::memcmp(p, kMagic, 8) != 0) return loss("bad magic (not a kp token file)");
  const uint32_t version = Get<uint32_t>(p, 8);
  if (version != kVersion) return loss(absl::StrCat("unsupported version ", version));
  if (Get<uint32_t>(p, kCrcOffset) != Crc(p, kCrcOffset)) return loss("header checksum mismatch");
  const uint32_t dtype = Get<uint32_t>(p, 12);
  if (dtype != 1 && dtype != 2) return loss(absl::StrCat("unknown dtype code ", dtype));
  f->dtype_ = static_cast<TokenDtype>(dtype);
  f->vocab_size_ = Get<uint32_t>(p, 16);
  if (f->vocab_size_ == 0) return loss("vocab_size is 0");
  if (f->dtype_ == TokenDtype::kUint16 && f->vocab_size_ > 65536) {
    return loss(absl::StrCat("vocab_size ", f->vocab_size_, " does not fit uint16 tokens"));
  }
  if (Get<uint32_t>(p, 20) != kTokenFileHeaderSize) {
    return loss(absl::StrCat("header_size ", Get<uint32_t>(p, 20), " != ", kTokenFileHeaderSize));
  }
  f->num_tokens_ = Get<uint64_t>(p, 24);
  const uint64_t width = Width(f->dtype_);
  const uint64_t data = file_size - kTokenFileHeaderSize;
  if (f->num_tokens_ > data / width || data != f->num_tokens_ * width) {
    return loss(absl::StrCat(data < f->num_tokens_ * width ? "truncated" : "trailing bytes",
                             ": header says ", f->num_tokens_, " tokens (",
                             kTokenFileHeaderSize + f->num_tokens_ * width, " bytes), file has ",
                             file_size, " bytes"));
  }
  const uint64_t n = f->num_tokens_;
  const uint64_t w = std::min(n, kCheckWindow);
  for (uint64_t start : {uint64_t{0}, (n - w) / 2, n - w}) {
    for (uint64_t i = start; i < start + w; ++i) {
      if (f->at(i) >= f->vocab_size_) {
        return loss(absl::StrCat("token ", f->at(i), " at position ", i, " is >= vocab_size ",
                                 f->vocab_size_));
      }
    }
  }
  return f;
}

TokenFile::~TokenFile() {
  if (map_ != nullptr) ::munmap(const_cast<uint8_t*>(map_), map_size_);
}

uint32_t TokenFile::at(uint64_t i) const {
  const uint8_t* p = map_ + kTokenFileHeaderSize;
  return dtype_ == TokenDtype::kUint16 ? Get<uint16_t>(p, 2 * i) : Get<uint32_t>(p, 4 * i);
}

absl::Status TokenFile::Read(uint64_t start, std::span<int64_t> out) const {
  if (start > num_tokens_ || out.size() > num_tokens_ - start) {
    return absl::OutOfRangeError(absl::StrCat("token file ", path_, ": window [", start, ", ",
                                              start + out.size(), ") leaves the ", num_tokens_,
                                              " tokens"));
  }
  for (size_t i = 0; i < out.size(); ++i) {
    const uint32_t t = at(start + i);
    if (t >= vocab_size_) {
      return absl::DataLossError(absl::StrCat("token file ", path_, ": token ", t, " at position ",
                                              start + i, " is >= vocab_size ", vocab_size_));
    }
    out[i] = t;
  }
  return absl::OkStatus();
}

}  // namespace kp::data
