#include "runtime/agent/device_discovery.h"

#include <unistd.h>

#include <cstdio>
#include <map>
#include <sstream>

namespace kp::agent {
namespace {

std::string Trim(const std::string& s) {
  const char* ws = " \t\r\n";
  size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream in(s);
  while (std::getline(in, cur, sep)) out.push_back(cur);
  return out;
}

// nvidia-smi colours topo output when it thinks it has a terminal.
std::string StripAnsi(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\x1b' && i + 1 < s.size() && s[i + 1] == '[') {
      i += 2;
      while (i < s.size() && !(s[i] >= '@' && s[i] <= '~')) ++i;
      continue;
    }
    out += s[i];
  }
  return out;
}

absl::StatusOr<std::string> RunCommand(const std::string& cmd) {
  FILE* p = ::popen((cmd + " 2>/dev/null").c_str(), "r");
  if (p == nullptr) return absl::UnavailableError("cannot run " + cmd);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  int rc = ::pclose(p);
  if (rc != 0) return absl::UnavailableError(cmd + " failed (status " + std::to_string(rc) + ")");
  return out;
}

}  // namespace

absl::StatusOr<std::vector<v1::Device>> ParseNvidiaSmiCsv(const std::string& csv) {
  std::vector<v1::Device> out;
  int line_no = 0;
  for (const auto& raw : Split(csv, '\n')) {
    ++line_no;
    std::string line = Trim(raw);
    if (line.empty()) continue;
    auto f = Split(line, ',');
    if (f.size() < 4) {
      return absl::InvalidArgumentError("nvidia-smi line " + std::to_string(line_no) + ": expected 4 fields: " + line);
    }
    v1::Device d;
    try {
      d.set_index(std::stoi(Trim(f[0])));
      const std::string mem = Trim(f[2]);
      d.set_memory_bytes(mem == "[N/A]" ? 0 : std::stoll(mem) * 1024 * 1024);
    } catch (const std::exception&) {
      return absl::InvalidArgumentError("nvidia-smi line " + std::to_string(line_no) + ": bad number: " + line);
    }
    d.set_kind(v1::DEVICE_KIND_CUDA);
    d.set_model(Trim(f[1]));
    d.set_pci_bus_id(Trim(f[3]));
    if (f.size() >= 5) {
      const std::string cc = Trim(f[4]);
      if (!cc.empty() && cc != "[N/A]") d.set_compute_capability(cc);
    }
    out.push_back(std::move(d));
  }
  return out;
}

absl::Status ParseNvidiaSmiTopology(const std::string& topo, std::vector<v1::Device>* devices) {
  std::vector<int> columns;  // GPU index of each column, -1 for others
  std::map<int, v1::Device*> by_index;
  for (auto& d : *devices) by_index[d.index()] = &d;
  for (const auto& raw : Split(StripAnsi(topo), '\n')) {
    std::vector<std::string> cells;
    for (const auto& c : Split(raw, '\t')) cells.push_back(Trim(c));
    if (cells.empty()) continue;
    if (columns.empty()) {
      // Header: a leading empty cell, then GPU0 GPU1 ... then affinity columns.
      if (cells.size() < 2 || cells[1].rfind("GPU", 0) != 0) continue;
      for (size_t i = 1; i < cells.size(); ++i) {
        columns.push_back(cells[i].rfind("GPU", 0) == 0 ? std::atoi(cells[i].c_str() + 3) : -1);
      }
      continue;
    }
    if (cells[0].rfind("GPU", 0) != 0) continue;
    const int row = std::atoi(cells[0].c_str() + 3);
    auto it = by_index.find(row);
    if (it == by_index.end()) continue;
    it->second->clear_nvlink_peers();
    for (size_t i = 1; i < cells.size() && i - 1 < columns.size(); ++i) {
      const int col = columns[i - 1];
      if (col >= 0 && col != row && cells[i].rfind("NV", 0) == 0) it->second->add_nvlink_peers(col);
    }
  }
  if (columns.empty()) return absl::InvalidArgumentError("nvidia-smi topo -m: no GPU header line");
  return absl::OkStatus();
}

std::vector<v1::Device> CpuSlots(int n) {
  std::vector<v1::Device> out;
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  for (int i = 0; i < n; ++i) {
    v1::Device d;
    d.set_index(i);
    d.set_kind(v1::DEVICE_KIND_CPU);
    d.set_model("cpu");
    if (pages > 0 && page > 0) d.set_memory_bytes(static_cast<int64_t>(pages) * page / n);
    out.push_back(std::move(d));
  }
  return out;
}

absl::StatusOr<std::vector<v1::Device>> DiscoverDevices(int cpu_slots) {
  if (cpu_slots > 0) return CpuSlots(cpu_slots);
  auto csv = RunCommand(kNvidiaSmiQuery);
  if (!csv.ok()) csv = RunCommand(kNvidiaSmiQueryOld);
  if (!csv.ok()) {
    return absl::FailedPreconditionError("no GPUs found (" + std::string(csv.status().message()) +
                                         "); pass --cpu_slots N for CPU workers");
  }
  KP_ASSIGN_OR_RETURN(auto devices, ParseNvidiaSmiCsv(*csv));
  if (devices.empty()) return absl::FailedPreconditionError("nvidia-smi lists no GPU; pass --cpu_slots N");
  auto topo = RunCommand("nvidia-smi topo -m");
  if (topo.ok()) ParseNvidiaSmiTopology(*topo, &devices).IgnoreError();  // peers are a hint only
  return devices;
}

}  // namespace kp::agent
