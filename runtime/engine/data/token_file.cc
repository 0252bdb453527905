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
#include <random>
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

absl::Status WriteAll(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError("token file: write " + path + ": " + std::strerror(errno));
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

uint32_t Crc(const uint8_t* p, size_t n) {
  return static_cast<uint32_t>(crc32(0L, p, static_cast<uInt>(n)));
}

}  // namespace

TokenDtype DtypeForVocab(uint32_t vocab_size) {
  return vocab_size <= 65536 ? TokenDtype::kUint16 : TokenDtype::kUint32;
}

absl::StatusOr<std::unique_ptr<TokenFileWriter>> TokenFileWriter::Create(const std::string& path,
                                                                          uint32_t vocab_size) {
  if (vocab_size == 0) return absl::InvalidArgumentError("token file " + path + ": vocab_size is 0");
  std::unique_ptr<TokenFileWriter> w(new TokenFileWriter());
  w->path_ = path;
  std::random_device rd;
  w->tmp_ = absl::StrCat(path, ".tmp.", ::getpid(), ".", rd());
  w->vocab_size_ = vocab_size;
  w->dtype_ = DtypeForVocab(vocab_size);
  w->fd_ = ::open(w->tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (w->fd_ < 0) return absl::InternalError("token file: create " + w->tmp_ + ": " + std::strerror(errno));
  // The header is written last, once num_tokens is known.
  KP_RETURN_IF_ERROR(WriteAll(w->fd_, std::string(kTokenFileHeaderSize, '\0'), w->tmp_));
  return w;
}

TokenFileWriter::~TokenFileWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

absl::Status TokenFileWriter::Append(std::span<const uint32_t> tokens) {
  if (fd_ < 0) return absl::FailedPreconditionError("token file " + path_ + ": writer already finished");
  const uint32_t width = Width(dtype_);
  buf_.resize(tokens.size() * width);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const uint32_t t = tokens[i];
    if (t >= vocab_size_) {
      return absl::InvalidArgumentError(absl::StrCat("token file ", path_, ": token ", t, " at position ",
                                                     num_tokens_ + i, " is >= vocab_size ", vocab_size_));
    }
    if (width == 2) {
      const uint16_t v = static_cast<uint16_t>(t);
      std::memcpy(buf_.data() + 2 * i, &v, 2);
    } else {
      std::memcpy(buf_.data() + 4 * i, &t, 4);
    }
  }
  KP_RETURN_IF_ERROR(WriteAll(fd_, buf_, tmp_));
  num_tokens_ += tokens.size();
  return absl::OkStatus();
}

absl::Status TokenFileWriter::Finish() {
  if (fd_ < 0) return absl::FailedPreconditionError("token file " + path_ + ": writer already finished");
  std::string h(kTokenFileHeaderSize, '\0');
  std::memcpy(h.data(), kMagic, 8);
  Put<uint32_t>(h, 8, kVersion);
  Put<uint32_t>(h, 12, static_cast<uint32_t>(dtype_));
  Put<uint32_t>(h, 16, vocab_size_);
  Put<uint32_t>(h, 20, static_cast<uint32_t>(kTokenFileHeaderSize));
  Put<uint64_t>(h, 24, num_tokens_);
  Put<uint32_t>(h, kCrcOffset, Crc(reinterpret_cast<const uint8_t*>(h.data()), kCrcOffset));
  if (::pwrite(fd_, h.data(), h.size(), 0) != static_cast<ssize_t>(h.size())) {
    return absl::InternalError("token file: write header " + tmp_ + ": " + std::strerror(errno));
  }
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    ::unlink(tmp_.c_str());
    return absl::InternalError("token file: close " + tmp_ + ": " + std::strerror(errno));
  }
  absl::Status s = CommitFile(tmp_, path_);
  if (!s.ok()) ::unlink(tmp_.c_str());
  return s;
}

absl::Status WriteTokenFile(const std::string& path, std::span<const uint32_t> tokens,
                            uint32_t vocab_size) {
  KP_ASSIGN_OR_RETURN(std::unique_ptr<TokenFileWriter> w, TokenFileWriter::Create(path, vocab_size));
  constexpr size_t kChunk = 1 << 20;
  for (size_t i = 0; i < tokens.size(); i += kChunk) {
    KP_RETURN_IF_ERROR(w->Append(tokens.subspan(i, std::min(kChunk, tokens.size() - i))));
  }
  return w->Finish();
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
