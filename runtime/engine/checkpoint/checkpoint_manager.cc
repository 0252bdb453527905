#include "runtime/engine/checkpoint/checkpoint_manager.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/common/files.h"
#include "runtime/engine/checkpoint/log.h"
#include "zlib.h"

namespace kp::ckpt {
namespace {

namespace fs = std::filesystem;

constexpr char kStateFile[] = "state.json";
constexpr char kStagingPrefix[] = ".staging.";
constexpr char kFormat[] = "kp-checkpoint";
constexpr int kVersion = 1;

std::string PartFile(const std::string& part) { return part + ".safetensors"; }

bool ValidPartName(const std::string& n) {
  if (n.empty() || n[0] == '.') return false;
  return std::all_of(n.begin(), n.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
}

// Parses "step_00001200" (exactly the form StepDirName writes).
bool ParseStepDir(const std::string& name, int64_t* step) {
  constexpr std::string_view kPrefix = "step_";
  if (name.size() <= kPrefix.size() || name.compare(0, kPrefix.size(), kPrefix) != 0) return false;
  int64_t v = 0;
  for (size_t i = kPrefix.size(); i < name.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(name[i])) || v > (INT64_MAX - 9) / 10) return false;
    v = v * 10 + (name[i] - '0');
  }
  *step = v;
  return true;
}

absl::Status FsyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return absl::InternalError("open " + dir + ": " + std::strerror(errno));
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return absl::InternalError("fsync " + dir + ": " + std::strerror(errno));
  return absl::OkStatus();
}

// CRC-32 (zlib's) of a whole file: state.json records one per part, so a
// part whose bytes changed after the commit (bad sector, partial copy) is
// caught at load time, not trained on.
absl::StatusOr<uint32_t> FileCrc32(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError("cannot open " + path);
  uLong crc = crc32_z(0L, Z_NULL, 0);
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const std::streamsize n = in.gcount();
    if (n > 0) crc = crc32_z(crc, reinterpret_cast<const Bytef*>(buf.data()), static_cast<z_size_t>(n));
  }
  if (in.bad()) return absl::DataLossError("read error in " + path);
  return static_cast<uint32_t>(crc);
}

int64_t EnvInt(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  const long long parsed = std::strtoll(v, &end, 10);
  return end != nullptr && *end == '\0' ? parsed : fallback;
}

// Step directories under `ckdir`, newest first.
std::vector<std::pair<int64_t, std::string>> StepDirs(const std::string& ckdir) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(ckdir, ec)) {
    int64_t step;
    if (e.is_directory(ec) && ParseStepDir(e.path().filename().string(), &step)) {
      out.emplace_back(step, e.path().string());
    }
  }
  std::sort(out.begin(), out.end(), std::greater<>());
  return out;
}

// OK when state.json parses and every part it lists is present, of the
// recorded size, with a valid safetensors header.
absl::Status CheckComplete(const std::string& dir) {
  KP_ASSIGN_OR_RETURN(CheckpointState state, CheckpointManager::LoadState(dir));
  KP_ASSIGN_OR_RETURN(std::string text, ReadFile((fs::path(dir) / kStateFile).string()));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  for (const std::string& part : state.part_names) {
    const std::string path = (fs::path(dir) / PartFile(part)).string();
    std::error_code ec;
    const auto size = fs::file_size(path, ec);
    if (ec) return absl::NotFoundError("checkpoint " + dir + ": part '" + part + "' is missing (" + path + ")");
    const auto& rec = j["parts"][part]["bytes"];
    if (rec.is_number_unsigned() && rec.get<uint64_t>() != size) {
      return absl::DataLossError(absl::StrCat("checkpoint ", dir, ": part '", part, "' has ", size,
                                              " bytes, state.json recorded ", rec.get<uint64_t>()));
    }
    KP_RETURN_IF_ERROR(CheckSafetensorsHeader(path));
  }
  return absl::OkStatus();
}

// A part counts once its file is in place (each is renamed in whole) and,
// when the save has an id, carries that id.
bool PartArrived(const std::string& path, const std::string& save_id) {
  if (!fs::exists(path)) return false;
  if (save_id.empty()) return true;
  absl::StatusOr<Metadata> meta = ReadSafetensorsMetadata(path);
  if (!meta.ok()) return false;
  auto it = meta->find("save_id");
  return it != meta->end() && it->second == save_id;
}

// DATA_LOSS when state.json recorded a CRC-32 for the part and the file's
// differs (checkpoints written before CRCs were recorded pass).
absl::Status VerifyPartCrc(const std::string& dir, const std::string& part, const std::string& path) {
  KP_ASSIGN_OR_RETURN(std::string text, ReadFile((fs::path(dir) / kStateFile).string()));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.contains("parts") || !j["parts"].contains(part)) return absl::OkStatus();
  const auto& rec = j["parts"][part];
  if (!rec.contains("crc32") || !rec["crc32"].is_number_unsigned()) return absl::OkStatus();
  KP_ASSIGN_OR_RETURN(uint32_t crc, FileCrc32(path));
  if (crc != rec["crc32"].get<uint32_t>()) {
    return absl::DataLossError(absl::StrCat("checkpoint ", dir, ": part '", part, "' (", path, ") has CRC-32 ", crc,
                                            ", state.json recorded ", rec["crc32"].get<uint32_t>(),
                                            " (the file changed after the save)"));
  }
  return absl::OkStatus();
}

}  // namespace

std::string CheckpointManager::StepDirName(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "step_%08lld", static_cast<long long>(step));
  return buf;
}

std::string CheckpointManager::CheckpointsDir(const std::string& run_dir) {
  return (fs::path(run_dir) / "checkpoints").string();
}

CheckpointManager::CheckpointManager(CheckpointOptions options)
    : options_(std::move(options)),
      test_delay_ms_(EnvInt("KP_TEST_CHECKPOINT_WRITE_DELAY_MS", 0)),
      test_delay_step_(EnvInt("KP_TEST_CHECKPOINT_WRITE_DELAY_STEP", -1)) {}

CheckpointManager::~CheckpointManager() {
  absl::Status s = Wait();
  if (!s.ok()) log::Error("checkpoint save failed: " + s.ToString());
}

absl::Status CheckpointManager::Wait() {
  if (worker_.joinable()) worker_.join();
  std::lock_guard<std::mutex> lock(mu_);
  absl::Status s = pending_status_;
  pending_status_ = absl::OkStatus();
  return s;
}

absl::Status CheckpointManager::SaveAsync(const CheckpointState& state,
                                          const std::map<std::string, TensorMap>& parts) {
  KP_RETURN_IF_ERROR(Wait());
  if (options_.run_dir.empty()) return absl::InvalidArgumentError("checkpoint: run_dir is empty");
  if (state.step < 0) return absl::InvalidArgumentError(absl::StrCat("checkpoint: negative step ", state.step));
  for (const auto& [name, tensors] : parts) {
    if (!ValidPartName(name)) {
      return absl::InvalidArgumentError("checkpoint: bad part name '" + name + "' (use [A-Za-z0-9._-])");
    }
  }
  for (const std::string& name : state.part_names) {
    if (!ValidPartName(name)) return absl::InvalidArgumentError("checkpoint: bad part name '" + name + "'");
  }
  // The snapshot: fresh contiguous host copies, so the training loop may
  // update its tensors as soon as we return.
  auto snapshot = std::make_shared<std::map<std::string, TensorMap>>();
  for (const auto& [name, tensors] : parts) {
    TensorMap& out = (*snapshot)[name];
    for (const auto& [tname, t] : tensors) {
      if (!t.defined()) {
        return absl::InvalidArgumentError("checkpoint: tensor '" + tname + "' of part '" + name + "' is undefined");
      }
      at::Tensor copy = at::empty(t.sizes(), t.options().device(at::kCPU).requires_grad(false));
      copy.copy_(t.detach());
      out.emplace(tname, std::move(copy));
    }
  }
  if (options_.capture) return options_.capture(state, std::move(*snapshot));
  worker_ = std::thread([this, state, snapshot]() {
    const int attempts = std::max(1, options_.write_attempts);
    auto backoff = options_.retry_backoff;
    absl::Status s;
    for (int attempt = 1; attempt <= attempts; ++attempt) {
      s = options_.fault_for_test ? options_.fault_for_test(state.step, attempt) : absl::OkStatus();
      if (s.ok()) s = WriteAndCommit(state, *snapshot);
      if (s.ok() || absl::IsDeadlineExceeded(s)) break;
      if (attempt < attempts) {
        log::Warn(absl::StrCat("checkpoint of step ", state.step, ": attempt ", attempt, " of ", attempts,
                               " failed (", s.ToString(), "); retrying in ", backoff.count(), " ms"));
        std::this_thread::sleep_for(backoff);
        backoff *= 2;
      } else {
        log::Error(absl::StrCat("checkpoint of step ", state.step, ": all ", attempts,
                                " attempts failed; last error: ", s.ToString()));
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
    pending_status_ = s;
  });
  return absl::OkStatus();
}

absl::Status CheckpointManager::Save(const CheckpointState& state,
                                     const std::map<std::string, TensorMap>& parts) {
  KP_RETURN_IF_ERROR(SaveAsync(state, parts));
  return Wait();
}

absl::Status CheckpointManager::WriteAndCommit(const CheckpointState& state,
                                               const std::map<std::string, TensorMap>& parts) {
  const std::string ckdir = CheckpointsDir(options_.run_dir);
  const std::string name = StepDirName(state.step);
  const std::string staging = (fs::path(ckdir) / (kStagingPrefix + name)).string();
  const std::string final_dir = (fs::path(ckdir) / name).string();
  KP_RETURN_IF_ERROR(MakeDirs(staging));
  const Metadata meta = {{"format", kFormat}, {"step", std::to_string(state.step)}, {"save_id", state.save_id}};
  for (const auto& [part, tensors] : parts) {
    Metadata m = meta;
    m["part"] = part;
    KP_RETURN_IF_ERROR(WriteSafetensors((fs::path(staging) / PartFile(part)).string(), tensors, m));
  }
  if (test_delay_ms_ > 0 && (test_delay_step_ < 0 || test_delay_step_ == state.step)) {
    log::Warn(absl::StrCat("KP_TEST_CHECKPOINT_WRITE_DELAY_MS: holding ", staging, " for ", test_delay_ms_,
                           " ms (test hook)"));
    std::this_thread::sleep_for(std::chrono::milliseconds(test_delay_ms_));
  }
  if (!options_.commit) return absl::OkStatus();

  std::vector<std::string> expected = state.part_names;
  if (expected.empty()) {
    for (const auto& [part, tensors] : parts) expected.push_back(part);
  }
  // Parts written by other ranks appear (each renamed into place whole).
  const auto deadline = std::chrono::steady_clock::now() + options_.commit_timeout;
  for (;;) {
    std::vector<std::string> missing;
    for (const auto& part : expected) {
      if (!PartArrived((fs::path(staging) / PartFile(part)).string(), state.save_id)) missing.push_back(part);
    }
    if (missing.empty()) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      std::string list;
      for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
      return absl::DeadlineExceededError(absl::StrCat("checkpoint ", name, ": parts never arrived in ",
                                                      staging, ": ", list));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }

  nlohmann::json j;
  j["format"] = kFormat;
  j["version"] = kVersion;
  j["step"] = state.step;
  j["data_position"] = state.data_position;
  j["config_hash"] = state.config_hash;
  j["save_id"] = state.save_id;
  j["rng"] = nlohmann::json::object();
  for (const auto& [k, bytes] : state.rng) j["rng"][k] = absl::Base64Escape(bytes);
  j["extra"] = state.extra;
  j["parts"] = nlohmann::json::object();
  for (const auto& part : expected) {
    const auto path = fs::path(staging) / PartFile(part);
    KP_ASSIGN_OR_RETURN(uint32_t crc, FileCrc32(path.string()));
    j["parts"][part] = {{"file", PartFile(part)},
                        {"bytes", static_cast<uint64_t>(fs::file_size(path))},
                        {"crc32", crc}};
  }
  KP_RETURN_IF_ERROR(WriteFileAtomically((fs::path(staging) / kStateFile).string(), j.dump(2) + "\n"));
  KP_RETURN_IF_ERROR(FsyncDir(staging));

  std::error_code ec;
  if (fs::exists(final_dir, ec)) {
    // Saving a step again (a resumed run): swap atomically, then drop the old.
    if (::renameat2(AT_FDCWD, staging.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) != 0) {
      return absl::InternalError("checkpoint: exchange " + staging + " with " + final_dir + ": " +
                                 std::strerror(errno));
    }
    fs::remove_all(staging, ec);
  } else if (::rename(staging.c_str(), final_dir.c_str()) != 0) {
    return absl::InternalError("checkpoint: rename " + staging + " to " + final_dir + ": " + std::strerror(errno));
  }
  KP_RETURN_IF_ERROR(FsyncDir(ckdir));
  KP_RETURN_IF_ERROR(WriteFileAtomically((fs::path(ckdir) / "LATEST").string(), name + "\n"));
  log::Info("checkpoint " + final_dir + " committed");

  // Keep the newest keep_last complete checkpoints; drop everything older,
  // and staging directories that a crash abandoned before this step.
  int complete = 0;
  for (const auto& [step, dir] : StepDirs(ckdir)) {
    if (complete >= options_.keep_last && step < state.step) {
      fs::remove_all(dir, ec);
      if (ec) log::Warn("could not delete old checkpoint " + dir + ": " + ec.message());
      continue;
    }
    if (CheckComplete(dir).ok()) ++complete;
  }
  for (const auto& e : fs::directory_iterator(ckdir, ec)) {
    const std::string n = e.path().filename().string();
    int64_t step;
    if (n.rfind(kStagingPrefix, 0) == 0 && ParseStepDir(n.substr(sizeof(kStagingPrefix) - 1), &step) &&
        step < state.step) {
      fs::remove_all(e.path(), ec);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<CheckpointState> CheckpointManager::LoadState(const std::string& dir) {
  const std::string path = (fs::path(dir) / kStateFile).string();
  if (!fs::exists(path)) return absl::NotFoundError("checkpoint " + dir + ": no " + kStateFile);
  KP_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  auto loss = [&](const std::string& why) { return absl::DataLossError("checkpoint " + path + ": " + why); };
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return loss("not a JSON object");
  if (j.value("format", "") != kFormat) return loss("format is not kp-checkpoint");
  if (!j.contains("version") || j["version"] != kVersion) return loss("unsupported version");
  CheckpointState s;
  try {
    s.step = j.at("step").get<int64_t>();
    s.data_position = j.at("data_position").get<int64_t>();
    s.config_hash = j.at("config_hash").get<std::string>();
    s.save_id = j.value("save_id", "");
    for (const auto& [k, v] : j.at("rng").items()) {
      std::string bytes;
      if (!absl::Base64Unescape(v.get<std::string>(), &bytes)) return loss("rng '" + k + "' is not base64");
      s.rng[k] = std::move(bytes);
    }
    s.extra = j.at("extra").get<std::map<std::string, std::string>>();
    for (const auto& [k, v] : j.at("parts").items()) s.part_names.push_back(k);
  } catch (const nlohmann::json::exception& e) {
    return loss(std::string("bad field: ") + e.what());
  }
  return s;
}

absl::StatusOr<std::string> CheckpointManager::LatestComplete(const std::string& run_dir) {
  const std::string ckdir = CheckpointsDir(run_dir);
  for (const auto& [step, dir] : StepDirs(ckdir)) {
    absl::Status s = CheckComplete(dir);
    if (s.ok()) return dir;
    log::Warn("skipping incomplete checkpoint " + dir + ": " + s.ToString());
  }
  return absl::NotFoundError("no complete checkpoint under " + ckdir);
}

absl::StatusOr<LoadedCheckpoint> CheckpointManager::Load(const std::string& dir,
                                                         const std::vector<std::string>& parts) {
  LoadedCheckpoint out;
  out.dir = dir;
  KP_ASSIGN_OR_RETURN(out.state, LoadState(dir));
  const std::vector<std::string>& want = parts.empty() ? out.state.part_names : parts;
  const std::set<std::string> listed(out.state.part_names.begin(), out.state.part_names.end());
  for (const std::string& part : want) {
    if (!listed.count(part)) return absl::NotFoundError("checkpoint " + dir + " has no part '" + part + "'");
    const std::string path = (fs::path(dir) / PartFile(part)).string();
    if (!fs::exists(path)) {
      return absl::DataLossError("checkpoint " + dir + ": part '" + part + "' is missing (" + path + ")");
    }
    KP_RETURN_IF_ERROR(VerifyPartCrc(dir, part, path));
    KP_ASSIGN_OR_RETURN(SafetensorsContents c, ReadSafetensors(path));
    out.parts[part] = std::move(c.tensors);
  }
  return out;
}

absl::StatusOr<LoadedCheckpoint> CheckpointManager::LoadNewestGood(const std::string& run_dir) {
  const std::string ckdir = CheckpointsDir(run_dir);
  std::vector<std::string> tried;
  for (const auto& [step, dir] : StepDirs(ckdir)) {
    absl::Status complete = CheckComplete(dir);
    if (!complete.ok()) {
      log::Warn("skipping incomplete checkpoint " + dir + ": " + complete.ToString());
      continue;
    }
    absl::StatusOr<LoadedCheckpoint> loaded = Load(dir);
    if (loaded.ok()) {
      if (!tried.empty()) {
        log::Warn("resuming from " + dir + ", older than the corrupt newer checkpoint(s): " +
                  absl::StrJoin(tried, "; "));
      }
      return loaded;
    }
    log::Error("skipping corrupt checkpoint " + dir + ": " + loaded.status().ToString());
    tried.push_back(dir + ": " + loaded.status().ToString());
  }
  if (tried.empty()) return absl::NotFoundError("no complete checkpoint under " + ckdir);
  return absl::DataLossError(absl::StrCat("no loadable checkpoint under ", ckdir, " (", tried.size(),
                                          " complete but corrupt: ", absl::StrJoin(tried, "; "), ")"));
}

}  // namespace kp::ckpt
