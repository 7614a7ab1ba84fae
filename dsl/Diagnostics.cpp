#include "Diagnostics.h"

#include <algorithm>
#include <sstream>

namespace dattn {

std::string Diagnostic::format() const {
  std::ostringstream os;
  os << loc.file << ":" << loc.line << ":" << loc.col << ": error: " << message << "\n";
  if (!sourceLine.empty()) {
    os << "  " << sourceLine << "\n  ";
    // Keep tabs so the caret lines up under tab-indented text.
    for (int k = 1; k < loc.col && k - 1 < static_cast<int>(sourceLine.size()); ++k)
      os << (sourceLine[k - 1] == '\t' ? '\t' : ' ');
    os << "^\n";
  }
  return os.str();
}

std::string ParseResult::formatDiagnostics() const {
  std::string out;
  for (const auto &d : diagnostics)
    out += d.format();
  return out;
}

namespace dsl {

DiagnosticEngine::DiagnosticEngine(const std::string &filename, const std::string &text)
    : filename_(filename) {
  std::string line;
  for (char c : text) {
    if (c == '\n') {
      lines_.push_back(line);
      line.clear();
    } else if (c != '\r') {
      // Non-printable bytes would garble the terminal; show them as '?'.
      unsigned char u = static_cast<unsigned char>(c);
      line += (u < 0x20 && c != '\t') || u == 0x7f ? '?' : c;
    }
  }
  lines_.push_back(line);
}

void DiagnosticEngine::error(int line, int col, const std::string &message) {
  if (diags_.size() >= kMaxDiagnostics) {
    if (!truncated_) {
      truncated_ = true;
      diags_.back().message += " (further errors not shown)";
    }
    return;
  }
  Diagnostic d;
  d.loc = {filename_, line, col};
  d.message = message;
  if (line >= 1 && line <= static_cast<int>(lines_.size()))
    d.sourceLine = lines_[line - 1];
  // Very long lines (minified or binary input) are cut; past the cut the
  // caret would point at nothing, so the line is left out.
  if (d.sourceLine.size() > 200)
    d.sourceLine = col <= 200 ? d.sourceLine.substr(0, 200) + " ..." : "";
  diags_.push_back(std::move(d));
}

} // namespace dsl

static size_t editDistance(const std::string &a, const std::string &b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j)
    prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string closestMatch(const std::string &word, const std::vector<std::string> &known) {
  std::string best;
  size_t bestDist = std::max<size_t>(2, word.size() / 3) + 1;
  for (const auto &k : known) {
    size_t d = editDistance(word, k);
    if (d < bestDist) {
      bestDist = d;
      best = k;
    }
  }
  return best;
}

namespace dsl {

std::string suggestion(const std::string &word, const std::vector<std::string> &known) {
  std::string m = closestMatch(word, known);
  return m.empty() ? "" : ", did you mean '" + m + "'?";
}

} // namespace dsl
} // namespace dattn
