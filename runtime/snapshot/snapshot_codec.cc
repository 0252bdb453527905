#include "runtime/snapshot/snapshot_codec.h"

#include <nlohmann/json.hpp>
#include <set>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "runtime/engine/checkpoint/safetensors.h"

namespace kp::snapshot {
namespace {

constexpr char kFormat[] = "kp-snapshot";
constexpr char kVersion[] = "1";

}  // namespace

absl::StatusOr<std::string> EncodeSnapshot(const Key& key, const ckpt::CheckpointState& state,
                                           const Parts& parts) {
  ckpt::TensorMap all;
  for (const auto& [part, tensors] : parts) {
    if (part.empty() || part.find('/') != std::string::npos) {
      return absl::InvalidArgumentError("snapshot: bad part name '" + part + "'");
    }
    for (const auto& [name, t] : tensors) all.emplace(part + "/" + name, t);
  }
  nlohmann::json s;
  s["step"] = state.step;
  s["data_position"] = state.data_position;
  s["config_hash"] = state.config_hash;
  s["save_id"] = state.save_id;
  s["rng"] = nlohmann::json::object();
  for (const auto& [k, bytes] : state.rng) s["rng"][k] = absl::Base64Escape(bytes);
  s["extra"] = state.extra;
  std::vector<std::string> names = state.part_names;
  if (names.empty()) {
    for (const auto& [part, tensors] : parts) names.push_back(part);
  }
  s["parts"] = names;
  const ckpt::Metadata meta = {
      {"format", kFormat},
      {"version", kVersion},
      {"job_id", key.job_id},
      {"rank", std::to_string(key.rank)},
      {"step", std::to_string(key.step)},
      {"generation", std::to_string(key.generation)},
      {"world_size", std::to_string(key.world_size)},
      {"state", s.dump()},
  };
  return ckpt::EncodeSafetensors(all, meta);
}

absl::StatusOr<DecodedSnapshot> DecodeSnapshot(std::string_view bytes, const std::string& name) {
  KP_ASSIGN_OR_RETURN(ckpt::SafetensorsContents c, ckpt::DecodeSafetensors(bytes, name));
  auto loss = [&](const std::string& why) { return absl::DataLossError("snapshot " + name + ": " + why); };
  auto meta = [&](const char* k) -> std::string {
    auto it = c.metadata.find(k);
    return it == c.metadata.end() ? "" : it->second;
  };
  if (meta("format") != kFormat) return loss("not a kp snapshot (format '" + meta("format") + "')");
  if (meta("version") != kVersion) return loss("unsupported version '" + meta("version") + "'");
  DecodedSnapshot out;
  out.checkpoint.dir = name;
  ckpt::CheckpointState& st = out.checkpoint.state;
  try {
    out.key.job_id = meta("job_id");
    out.key.rank = std::stoi(meta("rank"));
    out.key.step = std::stoll(meta("step"));
    out.key.generation = std::stoll(meta("generation"));
    out.key.world_size = std::stoi(meta("world_size"));
    nlohmann::json j = nlohmann::json::parse(meta("state"));
    st.step = j.at("step").get<int64_t>();
    st.data_position = j.at("data_position").get<int64_t>();
    st.config_hash = j.at("config_hash").get<std::string>();
    st.save_id = j.value("save_id", "");
    for (const auto& [k, v] : j.at("rng").items()) {
      std::string raw;
      if (!absl::Base64Unescape(v.get<std::string>(), &raw)) return loss("rng '" + k + "' is not base64");
      st.rng[k] = std::move(raw);
    }
    st.extra = j.at("extra").get<std::map<std::string, std::string>>();
    st.part_names = j.at("parts").get<std::vector<std::string>>();
  } catch (const std::exception& e) {
    return loss(std::string("bad metadata: ") + e.what());
  }
  if (st.step != out.key.step) {
    return loss(absl::StrCat("state step ", st.step, " differs from the key's step ", out.key.step));
  }
  for (auto& [tname, t] : c.tensors) {
    const size_t slash = tname.find('/');
    if (slash == std::string::npos) return loss("tensor '" + tname + "' names no part");
    out.checkpoint.parts[tname.substr(0, slash)].emplace(tname.substr(slash + 1), std::move(t));
  }
  const std::set<std::string> listed(st.part_names.begin(), st.part_names.end());
  // A listed part may be empty (an optimizer before its first step).
  for (const auto& part : listed) out.checkpoint.parts[part];
  if (!listed.count("model") || out.checkpoint.parts["model"].empty()) return loss("no model part");
  return out;
}

}  // namespace kp::snapshot
