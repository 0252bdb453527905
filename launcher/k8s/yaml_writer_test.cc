#include "launcher/k8s/yaml_writer.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <random>

namespace kp::launcher {
namespace {

using Json = nlohmann::ordered_json;

// Compares a parsed YAML node with the JSON it was written from, including
// that strings stayed strings (quoted or block: yaml-cpp tags them "!").
void ExpectSame(const Json& json, const YAML::Node& yaml, const std::string& path) {
  if (json.is_object()) {
    ASSERT_TRUE(yaml.IsMap()) << path;
    ASSERT_EQ(yaml.size(), json.size()) << path;
    auto it = yaml.begin();
    for (auto j = json.begin(); j != json.end(); ++j, ++it) {
      EXPECT_EQ(it->first.as<std::string>(), j.key()) << path << " (key order)";
      ExpectSame(j.value(), it->second, path + "." + j.key());
    }
  } else if (json.is_array()) {
    ASSERT_TRUE(yaml.IsSequence()) << path;
    ASSERT_EQ(yaml.size(), json.size()) << path;
    for (size_t i = 0; i < json.size(); ++i) {
      ExpectSame(json[i], yaml[i], path + "[" + std::to_string(i) + "]");
    }
  } else if (json.is_string()) {
    ASSERT_TRUE(yaml.IsScalar()) << path;
    EXPECT_EQ(yaml.Tag(), "!") << path << " was not written as a string";
    EXPECT_EQ(yaml.as<std::string>(), json.get<std::string>()) << path;
  } else if (json.is_boolean()) {
    EXPECT_EQ(yaml.Tag(), "?") << path;
    EXPECT_EQ(yaml.as<bool>(), json.get<bool>()) << path;
  } else if (json.is_number_integer()) {
    EXPECT_EQ(yaml.as<int64_t>(), json.get<int64_t>()) << path;
  } else if (json.is_number()) {
    EXPECT_DOUBLE_EQ(yaml.as<double>(), json.get<double>()) << path;
  }
}

void RoundTrip(const Json& json) {
  std::string text = ToYaml(json);
  YAML::Node parsed = YAML::Load(text);
  ExpectSame(json, parsed, "$");
  if (::testing::Test::HasFailure()) ADD_FAILURE() << "YAML was:\n" << text;
}

TEST(YamlWriter, TrickyScalarsStayStrings) {
  RoundTrip(Json{{"a", "0"},
                 {"b", "true"},
                 {"c", "1.10"},
                 {"d", "null"},
                 {"e", ""},
                 {"f", "- x"},
                 {"g", "a: b"},
                 {"h", "#not a comment"},
                 {"i", " lead"},
                 {"j", "tab\there"},
                 {"k", "quote\"s and \\ backslash"},
                 {"l", "ünïcödé"},
                 {"true", "key that looks like a bool"},
                 {"8080", "numeric key"},
                 {"n", 42},
                 {"o", -7},
                 {"p", 2.5},
                 {"q", false}});
}

TEST(YamlWriter, MultiLineTextIsALiteralBlock) {
  Json doc = {{"data", {{"job.yaml", "model:\n  d_model: 128\n# comment\n\nsteps: 5\n"}}}};
  std::string text = ToYaml(doc);
  EXPECT_NE(text.find("job.yaml: |\n"), std::string::npos) << text;
  RoundTrip(doc);
  // Text a block cannot carry exactly falls back to quoting.
  RoundTrip(Json{{"x", "trailing space \nline"},
                 {"y", "two newlines at the end\n\n"},
                 {"z", "no newline at the end\nsecond"},
                 {"w", "\nleading newline"},
                 {"v", "  indented first\nline"}});
}

TEST(YamlWriter, NestedContainers) {
  RoundTrip(Json{{"list", Json::array({Json{{"name", "a"}, {"args", Json::array({"1", "2"})}},
                                       Json::array({1, 2}), Json::object(), Json::array(), "s"})},
                 {"empty_map", Json::object()},
                 {"empty_list", Json::array()},
                 {"deep", {{"a", {{"b", {{"c", Json::array({Json{{"d", 1}, {"e", "f"}}})}}}}}}}});
}

TEST(YamlWriter, RandomDocumentsRoundTrip) {
  std::mt19937 rng(3);
  const std::string alphabet = "ab: -#\n\"'\\{}[]0123.";
  auto random_string = [&] {
    std::string s;
    int n = static_cast<int>(rng() % 12);
    for (int i = 0; i < n; ++i) s += alphabet[rng() % alphabet.size()];
    return s;
  };
  std::function<Json(int)> random_json = [&](int depth) -> Json {
    int kind = static_cast<int>(rng() % (depth > 3 ? 3 : 5));
    if (kind == 0) return random_string();
    if (kind == 1) return static_cast<int64_t>(rng() % 1000) - 500;
    if (kind == 2) return (rng() % 2) == 0;
    Json out = kind == 3 ? Json::object() : Json::array();
    int n = static_cast<int>(rng() % 4);
    for (int i = 0; i < n; ++i) {
      if (kind == 3) {
        out["k" + std::to_string(i) + random_string()] = random_json(depth + 1);
      } else {
        out.push_back(random_json(depth + 1));
      }
    }
    return out;
  };
  for (int i = 0; i < 200; ++i) {
    Json doc = {{"root", random_json(0)}};
    RoundTrip(doc);
    if (HasFailure()) break;
  }
}

}  // namespace
}  // namespace kp::launcher
