#include "runtime/engine/checkpoint/safetensors.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/common/files.h"

namespace kp::ckpt {
namespace {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");

// The Rust reference implementation refuses headers over 100 MB; so do we
// (a corrupt length must not make us allocate terabytes).
constexpr uint64_t kMaxHeaderSize = 100'000'000;

struct DtypeInfo {
  const char* name;
  at::ScalarType type;
  int size;
};

constexpr DtypeInfo kDtypes[] = {
    {"F64", at::kDouble, 8},          {"F32", at::kFloat, 4},
    {"F16", at::kHalf, 2},            {"BF16", at::kBFloat16, 2},
    {"I64", at::kLong, 8},            {"I32", at::kInt, 4},
    {"I16", at::kShort, 2},           {"I8", at::kChar, 1},
    {"U8", at::kByte, 1},             {"BOOL", at::kBool, 1},
    {"F8_E4M3", at::kFloat8_e4m3fn, 1}, {"F8_E5M2", at::kFloat8_e5m2, 1},
};

const DtypeInfo* ByType(at::ScalarType t) {
  for (const auto& d : kDtypes) {
    if (d.type == t) return &d;
  }
  return nullptr;
}

const DtypeInfo* ByName(const std::string& n) {
  for (const auto& d : kDtypes) {
    if (n == d.name) return &d;
  }
  return nullptr;
}

absl::Status WriteAll(int fd, const void* data, size_t n, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(absl::StrCat("write ", path, ": ", std::strerror(errno)));
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return absl::OkStatus();
}

absl::Status ReadAt(int fd, void* data, size_t n, uint64_t offset, const std::string& path) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    ssize_t r = ::pread(fd, p, n, static_cast<off_t>(offset));
    if (r < 0) {
      if (errno == EINTR) continue;
      return absl::DataLossError(absl::StrCat("safetensors ", path, ": read: ", std::strerror(errno)));
    }
    if (r == 0) return absl::DataLossError(absl::StrCat("safetensors ", path, ": truncated while reading"));
    p += r;
    n -= static_cast<size_t>(r);
    offset += static_cast<uint64_t>(r);
  }
  return absl::OkStatus();
}

struct Entry {
  std::string name;
  const DtypeInfo* dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;  // relative to the data section
};

struct Header {
  std::vector<Entry> entries;
  Metadata metadata;
  uint64_t data_start = 0;
};

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// Reads n bytes at an offset of the file or image (ReadAt over a file).
using ReadFn = std::function<absl::Status(void* data, size_t n, uint64_t offset)>;

absl::StatusOr<Header> ParseHeader(const ReadFn& read, uint64_t file_size, const std::string& path) {
  auto loss = [&](const std::string& why) {
    return absl::DataLossError("safetensors " + path + ": " + why);
  };
  if (file_size < 8) return loss(absl::StrCat("truncated: ", file_size, " bytes, no header length"));
  uint64_t n = 0;
  KP_RETURN_IF_ERROR(read(&n, 8, 0));
  if (n > kMaxHeaderSize) return loss(absl::StrCat("header length ", n, " is not sane (max ", kMaxHeaderSize, ")"));
  if (n > file_size - 8) {
    return loss(absl::StrCat("truncated: header length ", n, " but the file has ", file_size, " bytes"));
  }
  std::string text(n, '\0');
  KP_RETURN_IF_ERROR(read(text.data(), n, 8));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return loss("header is not valid JSON");
  if (!j.is_object()) return loss("header is not a JSON object");
  Header h;
  h.data_start = 8 + n;
  const uint64_t data_size = file_size - h.data_start;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    const nlohmann::json& v = it.value();
    if (key == "__metadata__") {
      if (!v.is_object()) return loss("__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) return loss("__metadata__ value of '" + m.key() + "' is not a string");
        h.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    auto bad = [&](const std::string& why) { return loss("tensor '" + key + "': " + why); };
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets")) {
      return bad("needs dtype, shape and data_offsets");
    }
    Entry e;
    e.name = key;
    if (!v["dtype"].is_string()) return bad("dtype is not a string");
    e.dtype = ByName(v["dtype"].get<std::string>());
    if (e.dtype == nullptr) return bad("unknown dtype " + v["dtype"].dump());
    if (!v["shape"].is_array()) return bad("shape is not an array");
    unsigned __int128 numel = 1;
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) return bad("shape has a non-integer or negative entry " + d.dump());
      const uint64_t dim = d.get<uint64_t>();
      if (dim > (uint64_t{1} << 62)) return bad("dimension too large");
      e.shape.push_back(static_cast<int64_t>(dim));
      numel *= dim;
      if (numel > (static_cast<unsigned __int128>(1) << 64)) return bad("shape too large");
    }
    const auto& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
      return bad("data_offsets is not [begin, end]");
    }
    e.begin = off[0].get<uint64_t>();
    e.end = off[1].get<uint64_t>();
    if (e.begin > e.end) return bad("data_offsets begin > end");
    if (e.end > data_size) {
      return bad(absl::StrCat("truncated: data ends at ", e.end, " but the file holds ", data_size,
                              " data bytes"));
    }
    if (numel * static_cast<unsigned>(e.dtype->size) != e.end - e.begin) {
      return bad(absl::StrCat("size ", e.end - e.begin, " bytes does not match ", e.dtype->name, " x ",
                              v["shape"].dump()));
    }
    h.entries.push_back(std::move(e));
  }
  // The data section must be covered exactly: no overlaps, gaps or trailing bytes.
  std::vector<const Entry*> order;
  for (const auto& e : h.entries) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t pos = 0;
  for (const Entry* e : order) {
    if (e->begin < pos) return loss("tensor '" + e->name + "' overlaps the tensor before it");
    if (e->begin > pos) return loss(absl::StrCat("gap of ", e->begin - pos, " bytes before tensor '", e->name, "'"));
    pos = e->end;
  }
  if (pos != data_size) return loss(absl::StrCat(data_size - pos, " trailing bytes after the last tensor"));
  return h;
}

ReadFn FileReader(int fd, const std::string& path) {
  return [fd, &path](void* data, size_t n, uint64_t offset) { return ReadAt(fd, data, n, offset, path); };
}

absl::StatusOr<Header> ParseHeader(int fd, uint64_t file_size, const std::string& path) {
  return ParseHeader(FileReader(fd, path), file_size, path);
}

// The header text (padded) and the CPU tensors in data order.
struct Image {
  std::string header;
  std::vector<at::Tensor> cpu;
};

absl::StatusOr<Image> BuildImage(const TensorMap& tensors, const Metadata& metadata, const std::string& path) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  Image image;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name.empty() || name == "__metadata__") {
      return absl::InvalidArgumentError("safetensors " + path + ": bad tensor name '" + name + "'");
    }
    if (!t.defined()) return absl::InvalidArgumentError("safetensors " + path + ": tensor '" + name + "' is undefined");
    const DtypeInfo* d = ByType(t.scalar_type());
    if (d == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("safetensors ", path, ": tensor '", name,
                                                     "' has unsupported dtype ", c10::toString(t.scalar_type())));
    }
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(c.numel()) * d->size;
    header[name] = {{"dtype", d->name}, {"shape", c.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    image.cpu.push_back(std::move(c));
  }
  image.header = header.dump();
  // Pad with spaces (valid JSON) so the data section starts 8-byte aligned,
  // as the reference implementation does.
  image.header.append((8 - image.header.size() % 8) % 8, ' ');
  return image;
}

absl::StatusOr<std::pair<int, uint64_t>> OpenForRead(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) {
    const int err = errno;
    const std::string msg = "safetensors " + path + ": " + std::strerror(err);
    return err == ENOENT ? absl::NotFoundError(msg) : absl::PermissionDeniedError(msg);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return absl::InternalError("safetensors " + path + ": fstat failed");
  }
  return std::make_pair(fd, static_cast<uint64_t>(st.st_size));
}

}  // namespace

absl::Status WriteSafetensors(const std::string& path, const TensorMap& tensors, const Metadata& metadata) {
  KP_ASSIGN_OR_RETURN(Image image, BuildImage(tensors, metadata, path));
  const std::string& text = image.header;
  const std::vector<at::Tensor>& cpu = image.cpu;
  const uint64_t n = text.size();

  std::random_device rd;
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid(), ".", rd());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return absl::InternalError("safetensors: create " + tmp + ": " + std::strerror(errno));
  absl::Status s = WriteAll(fd, &n, 8, tmp);
  if (s.ok()) s = WriteAll(fd, text.data(), text.size(), tmp);
  for (const at::Tensor& c : cpu) {
    if (!s.ok()) break;
    s = WriteAll(fd, c.data_ptr(), c.numel() * c.element_size(), tmp);
  }
  if (::close(fd) != 0 && s.ok()) s = absl::InternalError("safetensors: close " + tmp + ": " + std::strerror(errno));
  if (s.ok()) s = CommitFile(tmp, path);
  if (!s.ok()) ::unlink(tmp.c_str());
  return s;
}

absl::StatusOr<SafetensorsContents> ReadSafetensors(const std::string& path) {
  KP_ASSIGN_OR_RETURN(auto opened, OpenForRead(path));
  Fd fd(opened.first);
  KP_ASSIGN_OR_RETURN(Header h, ParseHeader(fd.get(), opened.second, path));
  SafetensorsContents out;
  out.metadata = std::move(h.metadata);
  for (const Entry& e : h.entries) {
    at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(e.dtype->type));
    KP_RETURN_IF_ERROR(ReadAt(fd.get(), t.data_ptr(), e.end - e.begin, h.data_start + e.begin, path));
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

absl::Status CheckSafetensorsHeader(const std::string& path) {
  KP_ASSIGN_OR_RETURN(auto opened, OpenForRead(path));
  Fd fd(opened.first);
  return ParseHeader(fd.get(), opened.second, path).status();
}

absl::StatusOr<Metadata> ReadSafetensorsMetadata(const std::string& path) {
  KP_ASSIGN_OR_RETURN(auto opened, OpenForRead(path));
  Fd fd(opened.first);
  KP_ASSIGN_OR_RETURN(Header h, ParseHeader(fd.get(), opened.second, path));
  return std::move(h.metadata);
}

}  // namespace kp::ckpt

namespace kp::ckpt {

absl::StatusOr<std::string> EncodeSafetensors(const TensorMap& tensors, const Metadata& metadata) {
  KP_ASSIGN_OR_RETURN(Image image, BuildImage(tensors, metadata, "<memory>"));
  const uint64_t n = image.header.size();
  size_t total = 8 + n;
  for (const at::Tensor& c : image.cpu) total += c.numel() * c.element_size();
  std::string out;
  out.reserve(total);
  out.append(reinterpret_cast<const char*>(&n), 8);
  out.append(image.header);
  for (const at::Tensor& c : image.cpu) {
    out.append(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
  }
  return out;
}

absl::StatusOr<SafetensorsContents> DecodeSafetensors(std::string_view bytes, const std::string& name) {
  ReadFn read = [&](void* data, size_t n, uint64_t offset) -> absl::Status {
    if (offset > bytes.size() || n > bytes.size() - offset) {
      return absl::DataLossError(absl::StrCat("safetensors ", name, ": truncated while reading"));
    }
    std::memcpy(data, bytes.data() + offset, n);
    return absl::OkStatus();
  };
  KP_ASSIGN_OR_RETURN(Header h, ParseHeader(read, bytes.size(), name));
  SafetensorsContents out;
  out.metadata = std::move(h.metadata);
  for (const Entry& e : h.entries) {
    at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(e.dtype->type));
    KP_RETURN_IF_ERROR(read(t.data_ptr(), e.end - e.begin, h.data_start + e.begin));
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

}  // namespace kp::ckpt
