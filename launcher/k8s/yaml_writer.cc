#include "launcher/k8s/yaml_writer.h"

#include <sstream>

namespace kp::launcher {
namespace {

using Json = nlohmann::ordered_json;

// A literal block holds the text exactly when every line is printable
// without tabs or trailing blanks (YAML folds neither, but editors and
// kubectl diffs mangle them) and the text ends in at most one newline.
bool LiteralBlockSafe(const std::string& s) {
  if (s.find('\n') == std::string::npos) return false;
  if (s.size() >= 2 && s.substr(s.size() - 2) == "\n\n") return false;
  if (s.front() == ' ' || s.front() == '\n') return false;
  size_t line_start = 0;
  for (size_t i = 0; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == '\n') {
      if (i > line_start && (s[i - 1] == ' ')) return false;
      line_start = i + 1;
      continue;
    }
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

void WriteScalar(const Json& v, int indent, std::ostringstream& out) {
  if (v.is_string()) {
    const std::string& s = v.get_ref<const std::string&>();
    if (LiteralBlockSafe(s)) {
      out << (s.back() == '\n' ? "|" : "|-") << "\n";
      std::string pad(indent, ' ');
      size_t start = 0;
      while (start < s.size()) {
        size_t nl = s.find('\n', start);
        if (nl == std::string::npos) nl = s.size();
        std::string line = s.substr(start, nl - start);
        out << (line.empty() ? "" : pad) << line << "\n";
        start = nl + 1;
      }
      return;
    }
  }
  out << v.dump() << "\n";
}

bool IsEmptyContainer(const Json& v) { return (v.is_object() || v.is_array()) && v.empty(); }

void Write(const Json& v, int indent, std::ostringstream& out);

// A key: plain when it is a simple Kubernetes key, else quoted.
std::string Key(const std::string& k) {
  bool plain = !k.empty();
  for (char c : k) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '/' || c == '-' ||
          c == '_')) {
      plain = false;
    }
  }
  if (plain && (k == "true" || k == "false" || k == "null" || k == "yes" || k == "no" ||
                k == "on" || k == "off" || std::isdigit(static_cast<unsigned char>(k[0])))) {
    plain = false;
  }
  return plain ? k : Json(k).dump();
}

void Write(const Json& v, int indent, std::ostringstream& out) {
  std::string pad(indent, ' ');
  if (v.is_object()) {
    for (auto it = v.begin(); it != v.end(); ++it) {
      out << pad << Key(it.key()) << ":";
      const Json& child = it.value();
      if (IsEmptyContainer(child)) {
        out << " " << (child.is_object() ? "{}" : "[]") << "\n";
      } else if (child.is_object() || child.is_array()) {
        out << "\n";
        Write(child, child.is_array() ? indent : indent + 2, out);
      } else {
        out << " ";
        WriteScalar(child, indent + 2, out);
      }
    }
  } else if (v.is_array()) {
    for (const Json& item : v) {
      if (item.is_object() && !item.empty()) {
        // "- first: x" then the rest of the map two deeper.
        std::ostringstream inner;
        Write(item, indent + 2, inner);
        std::string text = inner.str();
        out << pad << "- " << text.substr(indent + 2);
      } else if (IsEmptyContainer(item)) {
        out << pad << "- " << (item.is_object() ? "{}" : "[]") << "\n";
      } else if (item.is_array()) {
        out << pad << "-\n";
        Write(item, indent + 2, out);
      } else {
        out << pad << "- ";
        WriteScalar(item, indent + 2, out);
      }
    }
  } else {
    out << pad;
    WriteScalar(v, indent, out);
  }
}

}  // namespace

std::string ToYaml(const nlohmann::ordered_json& value) {
  std::ostringstream out;
  Write(value, 0, out);
  return out.str();
}

}  // namespace kp::launcher
