#include "launcher/slurm/hostlist.h"

#include <charconv>
#include <sstream>

namespace kp::launcher {
namespace {

// Debian's abseil has its own string_view, which StrCat does not take from
// std::string_view.
template <typename... Parts>
std::string Cat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

bool AllDigits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

absl::StatusOr<uint64_t> ParseNumber(std::string_view digits, std::string_view whole) {
  if (!AllDigits(digits)) {
    return absl::InvalidArgumentError(
        Cat("hostlist: '", digits, "' in '", whole, "' is not a number"));
  }
  uint64_t value = 0;
  auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (ec != std::errc() || ptr != digits.data() + digits.size() || value > 0xFFFFFFFFull) {
    return absl::InvalidArgumentError(
        Cat("hostlist: '", digits, "' in '", whole, "' is out of range"));
  }
  return value;
}

std::string Padded(uint64_t value, size_t width) {
  std::string s = std::to_string(value);
  if (s.size() < width) s.insert(0, width - s.size(), '0');
  return s;
}

// "01-04,07" -> {"01","02","03","04","07"}.
absl::StatusOr<std::vector<std::string>> ExpandBracket(std::string_view body,
                                                       std::string_view whole) {
  std::vector<std::string> out;
  if (body.empty()) {
    return absl::InvalidArgumentError(Cat("hostlist: empty brackets in '", whole, "'"));
  }
  size_t start = 0;
  while (start <= body.size()) {
    size_t comma = body.find(',', start);
    std::string_view item =
        body.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    if (item.empty()) {
      return absl::InvalidArgumentError(
          Cat("hostlist: empty range in '[", body, "]' of '", whole, "'"));
    }
    size_t dash = item.find('-');
    std::string_view lo_text = item.substr(0, dash);
    std::string_view hi_text = dash == std::string_view::npos ? item : item.substr(dash + 1);
    KP_ASSIGN_OR_RETURN(uint64_t lo, ParseNumber(lo_text, whole));
    KP_ASSIGN_OR_RETURN(uint64_t hi, ParseNumber(hi_text, whole));
    if (hi < lo) {
      return absl::InvalidArgumentError(
          Cat("hostlist: range '", item, "' in '", whole, "' ends below its start"));
    }
    if (hi - lo + 1 + out.size() > kMaxHostlistHosts) {
      return absl::InvalidArgumentError(Cat("hostlist: range '", item, "' in '", whole,
                                                     "' has more than ", kMaxHostlistHosts,
                                                     " hosts"));
    }
    for (uint64_t v = lo; v <= hi; ++v) out.push_back(Padded(v, lo_text.size()));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

// One comma-free (at bracket depth 0) term such as "a[1-2]b[3-4]".
absl::Status ExpandTerm(std::string_view term, std::string_view whole,
                        std::vector<std::string>* hosts) {
  if (term.empty()) {
    return absl::InvalidArgumentError(Cat("hostlist: empty host name in '", whole, "'"));
  }
  std::vector<std::string> partial = {""};
  size_t i = 0;
  while (i < term.size()) {
    size_t open = term.find('[', i);
    std::string_view literal = term.substr(i, open == std::string_view::npos ? open : open - i);
    if (literal.find(']') != std::string_view::npos) {
      return absl::InvalidArgumentError(
          Cat("hostlist: ']' without '[' in '", term, "'"));
    }
    for (auto& p : partial) p.append(literal);
    if (open == std::string_view::npos) break;
    size_t close = term.find(']', open);
    if (close == std::string_view::npos) {
      return absl::InvalidArgumentError(Cat("hostlist: unclosed '[' in '", term, "'"));
    }
    std::string_view body = term.substr(open + 1, close - open - 1);
    if (body.find('[') != std::string_view::npos) {
      return absl::InvalidArgumentError(
          Cat("hostlist: nested '[' in '", term, "'"));
    }
    KP_ASSIGN_OR_RETURN(std::vector<std::string> values, ExpandBracket(body, term));
    if (partial.size() * values.size() + hosts->size() > kMaxHostlistHosts) {
      return absl::InvalidArgumentError(Cat("hostlist: '", term, "' expands to more than ",
                                                     kMaxHostlistHosts, " hosts"));
    }
    std::vector<std::string> next;
    next.reserve(partial.size() * values.size());
    for (const auto& p : partial) {
      for (const auto& v : values) next.push_back(p + v);
    }
    partial = std::move(next);
    i = close + 1;
  }
  for (auto& p : partial) hosts->push_back(std::move(p));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ExpandHostlist(std::string_view expression) {
  if (expression.empty()) {
    return absl::InvalidArgumentError("hostlist: empty expression");
  }
  std::vector<std::string> hosts;
  int depth = 0;
  size_t start = 0;
  for (size_t i = 0; i <= expression.size(); ++i) {
    char c = i < expression.size() ? expression[i] : ',';
    if (c == '[') ++depth;
    if (c == ']') --depth;
    if (depth < 0) {
      return absl::InvalidArgumentError(
          Cat("hostlist: ']' without '[' at offset ", i, " of '", expression, "'"));
    }
    if (c == ',' && depth == 0) {
      KP_RETURN_IF_ERROR(ExpandTerm(expression.substr(start, i - start), expression, &hosts));
      start = i + 1;
    }
  }
  if (depth != 0) {
    return absl::InvalidArgumentError(
        Cat("hostlist: unclosed '[' in '", expression, "'"));
  }
  return hosts;
}

absl::StatusOr<std::vector<int>> ExpandTasksPerNode(std::string_view expression) {
  if (expression.empty()) {
    return absl::InvalidArgumentError("SLURM_TASKS_PER_NODE: empty");
  }
  std::vector<int> counts;
  size_t start = 0;
  while (start <= expression.size()) {
    size_t comma = expression.find(',', start);
    std::string_view item = expression.substr(
        start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    std::string_view count_text = item;
    std::string_view repeat_text = "1";
    size_t paren = item.find('(');
    if (paren != std::string_view::npos) {
      if (item.size() < paren + 4 || item.substr(paren, 2) != "(x" || item.back() != ')') {
        return absl::InvalidArgumentError(Cat(
            "SLURM_TASKS_PER_NODE: '", item, "' in '", expression, "' is not COUNT(xREPEAT)"));
      }
      count_text = item.substr(0, paren);
      repeat_text = item.substr(paren + 2, item.size() - paren - 3);
    }
    if (!AllDigits(count_text) || !AllDigits(repeat_text)) {
      return absl::InvalidArgumentError(Cat("SLURM_TASKS_PER_NODE: '", item, "' in '",
                                                     expression, "' is not COUNT or COUNT(xREPEAT)"));
    }
    KP_ASSIGN_OR_RETURN(uint64_t count, ParseNumber(count_text, expression));
    KP_ASSIGN_OR_RETURN(uint64_t repeat, ParseNumber(repeat_text, expression));
    if (count == 0 || repeat == 0 || count > 1'000'000 ||
        repeat + counts.size() > kMaxHostlistHosts) {
      return absl::InvalidArgumentError(Cat("SLURM_TASKS_PER_NODE: '", item, "' in '",
                                                     expression, "' is out of range"));
    }
    counts.insert(counts.end(), repeat, static_cast<int>(count));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return counts;
}

}  // namespace kp::launcher
