#include "launcher/job_file.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <set>

#include "runtime/common/files.h"

namespace kp::launcher {
namespace {

absl::Status Bad(const std::string& key, const std::string& why) {
  return absl::InvalidArgumentError("job file: " + key + ": " + why);
}

template <typename T>
absl::StatusOr<T> Scalar(const YAML::Node& node, const std::string& key) {
  try {
    return node.as<T>();
  } catch (const YAML::Exception& e) {
    return Bad(key, "wrong type (" + std::string(e.what()) + ")");
  }
}

template <typename Enum>
absl::StatusOr<Enum> EnumValue(const YAML::Node& node, const std::string& key, const std::string& prefix,
                               bool (*parse)(const std::string&, Enum*)) {
  KP_ASSIGN_OR_RETURN(std::string s, Scalar<std::string>(node, key));
  std::string upper = prefix;
  for (char c : s) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  Enum v;
  if (!parse(upper, &v) || upper == prefix + "UNSPECIFIED") return Bad(key, "unknown value \"" + s + "\"");
  return v;
}

}  // namespace

absl::StatusOr<v1::JobSpec> ParseJobYaml(const std::string& yaml, const std::string& base_dir) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(std::string("job file: not YAML: ") + e.what());
  }
  if (!root.IsMap()) return absl::InvalidArgumentError("job file: top level must be a mapping");
  static const std::set<std::string> kKeys = {"name", "config", "config_path", "model", "data", "dp", "cp",
                                              "cp_mode", "precision", "steps", "checkpoint", "priority",
                                              "elastic", "max_restarts", "min_dp", "cpu_fallback",
                                              "labels", "in_process_shrink"};
  v1::JobSpec spec;
  spec.set_dp(1);
  spec.set_cp(1);
  int configs = 0;
  for (const auto& kv : root) {
    const std::string key = kv.first.as<std::string>();
    const YAML::Node& v = kv.second;
    if (!kKeys.count(key)) return Bad(key, "unknown key");
    if (key == "name") {
      KP_ASSIGN_OR_RETURN(*spec.mutable_name(), Scalar<std::string>(v, key));
    } else if (key == "config") {
      ++configs;
      KP_ASSIGN_OR_RETURN(std::string path, Scalar<std::string>(v, key));
      std::string found = path;
      if (!std::filesystem::exists(found) && !base_dir.empty() && std::filesystem::path(path).is_relative()) {
        found = base_dir + "/" + path;
      }
      auto text = ReadFile(found);
      if (!text.ok()) return Bad(key, "cannot read " + path + ": " + std::string(text.status().message()));
      spec.set_config_yaml(*text);
    } else if (key == "config_path") {
      ++configs;
      KP_ASSIGN_OR_RETURN(*spec.mutable_config_path(), Scalar<std::string>(v, key));
    } else if (key == "model") {
      ++configs;
      if (!v.IsMap()) return Bad(key, "must be a mapping");
      YAML::Emitter out;
      out << v;
      spec.set_config_yaml(std::string(out.c_str()) + "\n");
    } else if (key == "data") {
      KP_ASSIGN_OR_RETURN(*spec.mutable_data_path(), Scalar<std::string>(v, key));
    } else if (key == "dp") {
      KP_ASSIGN_OR_RETURN(int x, Scalar<int>(v, key));
      spec.set_dp(x);
    } else if (key == "cp") {
      KP_ASSIGN_OR_RETURN(int x, Scalar<int>(v, key));
      spec.set_cp(x);
    } else if (key == "cp_mode") {
      KP_ASSIGN_OR_RETURN(auto m, EnumValue<v1::CpMode>(v, key, "CP_MODE_", v1::CpMode_Parse));
      spec.set_cp_mode(m);
    } else if (key == "precision") {
      KP_ASSIGN_OR_RETURN(auto p, EnumValue<v1::Precision>(v, key, "PRECISION_", v1::Precision_Parse));
      spec.set_precision(p);
    } else if (key == "steps") {
      KP_ASSIGN_OR_RETURN(int64_t x, Scalar<int64_t>(v, key));
      spec.set_steps(x);
    } else if (key == "priority") {
      KP_ASSIGN_OR_RETURN(int x, Scalar<int>(v, key));
      spec.set_priority(x);
    } else if (key == "elastic") {
      KP_ASSIGN_OR_RETURN(bool x, Scalar<bool>(v, key));
      spec.set_elastic(x);
    } else if (key == "max_restarts") {
      KP_ASSIGN_OR_RETURN(int x, Scalar<int>(v, key));
      spec.set_max_restarts(x);
    } else if (key == "min_dp") {
      KP_ASSIGN_OR_RETURN(int x, Scalar<int>(v, key));
      spec.set_min_dp(x);
    } else if (key == "in_process_shrink") {
      KP_ASSIGN_OR_RETURN(bool x, Scalar<bool>(v, key));
      spec.set_in_process_shrink(x);
    } else if (key == "cpu_fallback") {
      KP_ASSIGN_OR_RETURN(bool x, Scalar<bool>(v, key));
      spec.set_cpu_fallback(x);
    } else if (key == "checkpoint") {
      if (!v.IsMap()) return Bad(key, "must be a mapping");
      auto* c = spec.mutable_checkpoint();
      for (const auto& ckv : v) {
        const std::string k = ckv.first.as<std::string>();
        const std::string full = "checkpoint." + k;
        if (k == "dir") {
          KP_ASSIGN_OR_RETURN(*c->mutable_dir(), Scalar<std::string>(ckv.second, full));
        } else if (k == "every_steps") {
          KP_ASSIGN_OR_RETURN(int64_t x, Scalar<int64_t>(ckv.second, full));
          c->set_every_steps(x);
        } else if (k == "keep_last") {
          KP_ASSIGN_OR_RETURN(int x, Scalar<int>(ckv.second, full));
          c->set_keep_last(x);
        } else if (k == "resume") {
          KP_ASSIGN_OR_RETURN(bool x, Scalar<bool>(ckv.second, full));
          c->set_resume(x);
        } else {
          return Bad(full, "unknown key");
        }
      }
    } else if (key == "labels") {
      if (!v.IsMap()) return Bad(key, "must be a mapping");
      for (const auto& lkv : v) {
        KP_ASSIGN_OR_RETURN(std::string val, Scalar<std::string>(lkv.second, "labels." + lkv.first.as<std::string>()));
        (*spec.mutable_labels())[lkv.first.as<std::string>()] = val;
      }
    }
  }
  if (configs != 1) return Bad("config", "exactly one of config, config_path or model is required");
  return spec;
}

absl::StatusOr<v1::JobSpec> LoadJobFile(const std::string& path) {
  KP_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseJobYaml(text, std::filesystem::path(path).parent_path().string());
}

}  // namespace kp::launcher
