#include "tests/fault_tolerance/ft_cluster.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <regex>

#include <nlohmann/json.hpp>

namespace kp::ft {

std::string TempDir(const std::string& name) {
  static std::atomic<int> counter{0};
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string dir = std::string(tmp != nullptr ? tmp : "/tmp") + "/" + name + "-" + std::to_string(::getpid()) +
                    "-" + std::to_string(counter++);
  std::filesystem::create_directories(dir);
  return dir;
}

std::string Runfile(const std::string& path) { return std::filesystem::absolute(path).string(); }

std::string BinaryPath(const std::string& runfile) {
  namespace fs = std::filesystem;
  const std::string name = fs::path(runfile).filename().string();
  if (const char* dir = std::getenv("KP_BIN_DIR"); dir != nullptr && *dir != '\0') {
    return (fs::path(dir) / name).string();
  }
  const std::string in_runfiles = Runfile(runfile);
  std::error_code ec;
  if (fs::exists(in_runfiles, ec)) return in_runfiles;
  const fs::path beside = fs::read_symlink("/proc/self/exe", ec).parent_path() / name;
  if (!ec && fs::exists(beside, ec)) return beside.string();
  return in_runfiles;
}

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

Daemon::Daemon(std::vector<std::string> argv, std::string log, std::vector<std::string> env)
    : argv_(std::move(argv)), log_(std::move(log)), env_(std::move(env)) {}

Daemon::~Daemon() {
  if (handle_ >= 0 && !Stop(SIGTERM, 10000)) Stop(SIGKILL, 5000);
}

absl::Status Daemon::Start() {
  agent::ProcessSpec spec;
  spec.argv = argv_;
  spec.stdout_path = log_;
  spec.stderr_path = log_;
  spec.env = env_;
  KP_ASSIGN_OR_RETURN(handle_, launcher_.Start(spec));
  return absl::OkStatus();
}

void Daemon::Signal(int sig) {
  if (handle_ >= 0) launcher_.Signal(handle_, sig);
}

std::optional<int> Daemon::Stop(int sig, int wait_ms) {
  if (handle_ < 0) return std::nullopt;
  launcher_.Signal(handle_, sig);
  for (int waited = 0; waited <= wait_ms; waited += 10) {
    if (auto code = launcher_.Poll(handle_)) {
      handle_ = -1;
      return code;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return std::nullopt;
}

Cluster::Cluster(ClusterOptions options) : options_(std::move(options)), dir_(TempDir("ft")) {}

Cluster::~Cluster() {
  agents_.clear();  // agents first: they stop their workers
  coordinator_.reset();
}

absl::Status Cluster::Start() {
  std::ofstream(dir_ + "/token") << kToken << "\n";
  std::filesystem::create_directories(dir_ + "/checkpoints");
  address_ = "127.0.0.1:" + std::to_string(FreePort());
  coordinator_argv_ = {BinaryPath("runtime/coordinator/kp-coordinator"), "--listen", address_, "--db",
                       dir_ + "/state.db", "--token_file", dir_ + "/token", "--metrics_port", "-1",
                       "--heartbeat_interval_ms", std::to_string(options_.heartbeat_interval_ms),
                       "--heartbeat_timeout_ms", std::to_string(options_.heartbeat_timeout_ms),
                       "--checkpoint_root", dir_ + "/checkpoints"};
  for (const auto& a : options_.extra_coordinator_args) coordinator_argv_.push_back(a);
  coordinator_ = std::make_unique<Daemon>(coordinator_argv_, dir_ + "/coordinator.log");
  KP_RETURN_IF_ERROR(coordinator_->Start());
  KP_ASSIGN_OR_RETURN(client_, launcher::CoordinatorClient::Connect({address_, kToken, "", 5000, true}));
  bool up = false;
  for (int i = 0; i < 200 && !up; ++i) {
    up = client_->List().ok();
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!up) return absl::UnavailableError("kp-coordinator did not come up; see " + coordinator_->log());
  for (int i = 0; i < options_.agents; ++i) {
    std::vector<std::string> argv = {BinaryPath("runtime/agent/kp-agent"),
                                     "--coordinator",
                                     address_,
                                     "--token_file",
                                     dir_ + "/token",
                                     "--agent_id",
                                     "node-" + std::to_string(i),
                                     "--worker_binary",
                                     BinaryPath("runtime/worker/kp-train"),
                                     "--run_root",
                                     run_root(),
                                     "--checkpoint_root",
                                     dir_ + "/checkpoints",
                                     "--stop_grace_ms",
                                     std::to_string(options_.stop_grace_ms),
                                     // In-memory snapshots (peer_snapshot_test) stay on loopback too.
                                     "--snapshot_listen",
                                     "127.0.0.1:0"};
    if (options_.slots_per_agent > 0) {
      argv.push_back("--cpu_slots");
      argv.push_back(std::to_string(options_.slots_per_agent));
    }
    for (const auto& a : options_.extra_worker_args) {
      argv.push_back("--worker_arg=" + a);
    }
    agent_argv_.push_back(argv);
    agents_.push_back(
        std::make_unique<Daemon>(argv, dir_ + "/agent-" + std::to_string(i) + ".log", options_.agent_env));
    KP_RETURN_IF_ERROR(agents_.back()->Start());
  }
  // Every agent registered with its slots.
  for (int i = 0; i < 200; ++i) {
    auto agents = client_->ListAgents();
    if (agents.ok() && static_cast<int>(agents->size()) == options_.agents) return absl::OkStatus();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return absl::UnavailableError("agents did not register; see " + dir_ + "/agent-*.log");
}

absl::Status Cluster::RestartAgent(int i) {
  agents_[i] =
      std::make_unique<Daemon>(agent_argv_[i], dir_ + "/agent-" + std::to_string(i) + ".log", options_.agent_env);
  return agents_[i]->Start();
}

absl::Status Cluster::RestartCoordinator() {
  coordinator_ = std::make_unique<Daemon>(coordinator_argv_, dir_ + "/coordinator.log");
  KP_RETURN_IF_ERROR(coordinator_->Start());
  for (int i = 0; i < 200; ++i) {
    if (client_->List().ok()) return absl::OkStatus();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return absl::UnavailableError("kp-coordinator did not come back; see " + coordinator_->log());
}

std::optional<int> FindWorkerPid(const std::string& run_dir, int64_t generation, int rank) {
  const std::string rendezvous = run_dir + "/rendezvous/g" + std::to_string(generation);
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0]))) continue;
    std::ifstream in(entry.path() / "cmdline", std::ios::binary);
    std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::string> args;
    std::stringstream ss(raw);
    for (std::string a; std::getline(ss, a, '\0');) args.push_back(a);
    bool is_rank = false, is_gen = false;
    for (size_t i = 0; i + 1 < args.size(); ++i) {
      if (args[i] == "--rank" && args[i + 1] == std::to_string(rank)) is_rank = true;
      if (args[i] == "--rendezvous" && args[i + 1] == rendezvous) is_gen = true;
    }
    if (is_rank && is_gen) return std::stoi(name);
  }
  return std::nullopt;
}

RecoveryTimes TimeRecovery(Cluster& c, const std::string& job_id, const std::string& run_dir,
                           std::chrono::steady_clock::time_point fault, std::chrono::seconds limit) {
  using Steady = std::chrono::steady_clock;
  RecoveryTimes t;
  const std::string g2_metrics = run_dir + "/metrics/g2.rank0.jsonl";
  while (Steady::now() - fault < limit) {
    auto s = c.client().Get(job_id);
    if (t.detect_s < 0 && s.ok() && (s->generation() > 1 || s->state() != v1::JOB_STATE_RUNNING)) {
      t.detect_s = std::chrono::duration<double>(Steady::now() - fault).count();
    }
    if (!ReadLosses(g2_metrics).empty()) {
      t.resume_s = std::chrono::duration<double>(Steady::now() - fault).count();
      break;
    }
    if (s.ok() && s->state() == v1::JOB_STATE_FAILED) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return t;
}

std::map<int64_t, double> ReadLosses(const std::string& metrics_jsonl) {
  std::map<int64_t, double> out;
  std::ifstream in(metrics_jsonl);
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.contains("step") || !j.contains("loss") || !j["loss"].is_number()) continue;
    out[j["step"].get<int64_t>()] = j["loss"].get<double>();
  }
  return out;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace kp::ft

namespace kp::ft {

v1::JobStatus WaitFor(Cluster& c, const std::string& id, int timeout_s,
                      const std::function<bool(const v1::JobStatus&)>& done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  v1::JobStatus st;
  while (std::chrono::steady_clock::now() < deadline) {
    auto s = c.client().Get(id);
    if (s.ok()) {
      st = *s;
      if (done(st)) return st;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return st;
}

bool Ended(const v1::JobStatus& s) {
  return s.state() == v1::JOB_STATE_COMPLETED || s.state() == v1::JOB_STATE_FAILED ||
         s.state() == v1::JOB_STATE_CANCELLED;
}

std::string RunDir(Cluster& c, const v1::JobStatus& job) {
  return c.run_root() + "/" + job.spec().name() + "-" + job.job_id();
}

std::string Logs(Cluster& c, const std::string& run_dir) {
  std::string out = "coordinator:\n" + ReadFile(c.coordinator().log());
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(c.dir(), ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("agent-", 0) == 0) out += "\n" + name + ":\n" + ReadFile(e.path().string());
  }
  for (const auto& e : std::filesystem::directory_iterator(run_dir + "/logs", ec)) {
    out += "\n--- " + e.path().filename().string() + ":\n" + ReadFile(e.path().string());
  }
  return out;
}

bool WaitForStep(const std::string& run_dir, int64_t generation, int64_t step, int timeout_s) {
  const std::string metrics = run_dir + "/metrics/g" + std::to_string(generation) + ".rank0.jsonl";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  while (std::chrono::steady_clock::now() < deadline) {
    auto losses = ReadLosses(metrics);
    if (!losses.empty() && losses.rbegin()->first >= step) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

Lineage ReadLineage(const std::string& run_dir, int64_t generations) {
  Lineage out;
  std::vector<std::map<int64_t, double>> gens;
  for (int64_t g = 1; g <= generations; ++g) {
    gens.push_back(ReadLosses(run_dir + "/metrics/g" + std::to_string(g) + ".rank0.jsonl"));
    if (g == 1) continue;
    const std::string tag = run_dir + "/logs/g" + std::to_string(g) + ".rank0";
    const std::string log = ReadFile(tag + ".out") + ReadFile(tag + ".err");
    std::smatch m;
    if (!std::regex_search(log, m, std::regex("resumed from \\S+ at step (\\d+)"))) {
      out.error = "generation " + std::to_string(g) + " did not resume from a checkpoint:\n" + log;
      return out;
    }
    out.resumed_at.push_back(std::stoll(m[1]));
  }
  for (size_t i = 0; i < gens.size(); ++i) {
    const int64_t until = i < out.resumed_at.size() ? out.resumed_at[i] : INT64_MAX;
    for (const auto& [s, loss] : gens[i]) {
      if (s < until) out.losses[s] = loss;
    }
  }
  return out;
}

SampleCount CountSamples(const Lineage& lineage, int64_t steps, int64_t global_batch) {
  std::vector<int> uses(steps * global_batch, 0);
  for (const auto& [s, loss] : lineage.losses) {
    for (int64_t g = s * global_batch; g < (s + 1) * global_batch && g < static_cast<int64_t>(uses.size()); ++g) {
      ++uses[g];
    }
  }
  SampleCount c;
  for (int u : uses) {
    c.lost += u == 0;
    c.repeated += u > 1;
  }
  return c;
}

std::map<std::string, std::vector<float>> ReadF32Tensors(const std::string& path) {
  std::map<std::string, std::vector<float>> out;
  std::ifstream in(path, std::ios::binary);
  uint64_t header_len = 0;
  if (!in.read(reinterpret_cast<char*>(&header_len), 8) || header_len > (64u << 20)) return {};
  std::string header(header_len, '\0');
  if (!in.read(header.data(), static_cast<std::streamsize>(header_len))) return {};
  auto j = nlohmann::json::parse(header, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return {};
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__" || !it->is_object() || it->value("dtype", "") != "F32") continue;
    const auto& off = (*it)["data_offsets"];
    const uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
    if (e < b || e > data.size() || (e - b) % 4 != 0) return {};
    std::vector<float> v((e - b) / 4);
    std::memcpy(v.data(), data.data() + b, e - b);
    out[it.key()] = std::move(v);
  }
  return out;
}

}  // namespace kp::ft
