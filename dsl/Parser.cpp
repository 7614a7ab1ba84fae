#include "Parser.h"

#include "Keywords.h"
#include "Lexer.h"

namespace dattn::dsl {
namespace {

class Parser {
public:
  Parser(const std::string &text, DiagnosticEngine &diags)
      : toks_(lex(text)), diags_(diags) {}

  FileNode parseFile() {
    FileNode file;
    while (!at(Tok::End)) {
      if (isKeyword("attention")) {
        AttentionNode a;
        if (parseAttention(a))
          file.attentions.push_back(std::move(a));
        continue;
      }
      const Token &t = cur();
      if (t.kind == Tok::Invalid)
        error(t, t.text);
      else if (t.kind == Tok::Ident)
        error(t, "expected 'attention' at the top level, found '" + t.text + "'" +
                     suggestion(t.text, {"attention"}));
      else
        error(t, std::string("expected 'attention' at the top level, found ") +
                     describe(t.kind));
      skipToNextAttention();
    }
    return file;
  }

private:
  // --- token access ---------------------------------------------------------
  const Token &cur() const { return toks_[pos_]; }
  bool at(Tok k) const { return cur().kind == k; }
  bool isKeyword(const char *kw) const { return at(Tok::Ident) && cur().text == kw; }
  const Token &advance() {
    const Token &t = toks_[pos_];
    if (pos_ + 1 < toks_.size())
      ++pos_;
    return t;
  }
  SourceLoc locOf(const Token &t) const { return diags_.loc(t.line, t.col); }

  void error(const Token &t, const std::string &msg) { diags_.error(t.line, t.col, msg); }

  /// Consumes a token of kind `k` or reports "expected <what>".
  bool expect(Tok k, const std::string &what) {
    if (at(k)) {
      advance();
      return true;
    }
    const Token &t = cur();
    if (t.kind == Tok::Invalid)
      error(t, t.text);
    else
      error(t, "expected " + what + ", found " +
                   (t.kind == Tok::Ident ? "'" + t.text + "'" : describe(t.kind)));
    return false;
  }

  // --- recovery -------------------------------------------------------------
  void skipToNextAttention() {
    int depth = 0;
    while (!at(Tok::End)) {
      if (depth == 0 && isKeyword("attention"))
        return;
      if (at(Tok::LBrace))
        ++depth;
      if (at(Tok::RBrace) && depth > 0)
        --depth;
      advance();
    }
  }

  /// After an error inside an attention body: skip to the start of the next
  /// item, which is a name that begins a later line, or just past a ';', or
  /// the '}' that closes the attention (not consumed).
  void skipToNextItem(int errorLine) {
    int depth = 0;
    while (!at(Tok::End)) {
      const Token &t = cur();
      if (depth == 0) {
        if (t.kind == Tok::RBrace)
          return;
        if (t.kind == Tok::Semi) {
          advance();
          return;
        }
        if (t.kind == Tok::Ident && t.line > errorLine &&
            (isSettingKey(t.text) || t.text == "branch" || t.text == "attention"))
          return;
      }
      if (t.kind == Tok::LBrace)
        ++depth;
      if (t.kind == Tok::RBrace)
        --depth;
      advance();
    }
  }

  /// Inside a branch body after an error: skip past the branch's '}'.
  void skipPastBranchBody() {
    int depth = 0;
    while (!at(Tok::End)) {
      if (at(Tok::LBrace))
        ++depth;
      if (at(Tok::RBrace)) {
        if (depth == 0) {
          advance();
          return;
        }
        --depth;
      }
      // A new item keyword at the start of a line means the '}' is missing.
      if (depth == 0 && at(Tok::Ident) &&
          (cur().text == "branch" || cur().text == "attention" || isSettingKey(cur().text)))
        return;
      advance();
    }
  }

  // --- grammar --------------------------------------------------------------
  bool parseAttention(AttentionNode &a) {
    a.loc = locOf(advance()); // 'attention'
    if (!at(Tok::Ident)) {
      expect(Tok::Ident, "a name after 'attention' (e.g. 'attention longnet {')");
      skipToNextAttention();
      return false;
    }
    a.name = advance().text;
    if (!expect(Tok::LBrace, "'{' to open attention '" + a.name + "'")) {
      skipToNextAttention();
      return false;
    }
    while (!at(Tok::RBrace)) {
      if (at(Tok::End)) {
        error(cur(), "missing '}' to close attention '" + a.name + "' (opened at line " +
                         std::to_string(a.loc.line) + ")");
        return true;
      }
      if (isKeyword("attention")) {
        error(cur(), "missing '}' to close attention '" + a.name + "' (opened at line " +
                         std::to_string(a.loc.line) + ")");
        return true;
      }
      int line = cur().line;
      if (!parseItem(a))
        skipToNextItem(line);
    }
    advance(); // '}'
    return true;
  }

  bool parseItem(AttentionNode &a) {
    const Token &t = cur();
    if (t.kind == Tok::Semi) { // stray separators are harmless
      advance();
      return true;
    }
    if (t.kind != Tok::Ident) {
      if (t.kind == Tok::Invalid)
        error(t, t.text);
      else
        error(t, std::string("expected a setting or 'branch', found ") + describe(t.kind));
      advance();
      return false;
    }
    if (t.text == "branch") {
      BranchNode b;
      if (!parseBranch(b))
        return true; // parseBranch recovered on its own
      a.branches.push_back(std::move(b));
      return true;
    }
    if (!isSettingKey(t.text)) {
      std::vector<std::string> known = settingKeys();
      known.push_back("branch");
      error(t, "unknown setting '" + t.text + "'" + suggestion(t.text, known));
      advance();
      return false;
    }
    SettingNode s;
    s.loc = locOf(t);
    s.key = advance().text;
    if (!expect(Tok::Equal, "'=' after '" + s.key + "'"))
      return false;
    if (!parseValue(s.value))
      return false;
    if (at(Tok::Semi))
      advance();
    a.settings.push_back(std::move(s));
    return true;
  }

  bool parseBranch(BranchNode &b) {
    b.loc = locOf(advance()); // 'branch'
    int line = b.loc.line;
    if (isKeyword("heads")) {
      advance();
      b.hasHeads = true;
      if (!parseHeads(b)) {
        skipToNextItem(line);
        if (at(Tok::LBrace)) {
          advance();
          skipPastBranchBody();
        }
        return false;
      }
    } else if (at(Tok::Ident)) {
      error(cur(), "expected 'heads' or '{' after 'branch', found '" + cur().text + "'" +
                       suggestion(cur().text, {"heads"}));
      skipToNextItem(line);
      return false;
    }
    if (!expect(Tok::LBrace, "'{' to open the branch")) {
      skipToNextItem(line);
      return false;
    }
    if (at(Tok::RBrace)) {
      error(cur(), "a branch needs at least one pattern, e.g. "
                   "'dilated(segment = 2048, dilation = 1)'");
      advance();
      return false;
    }
    for (;;) {
      PatternNode p;
      if (!parsePattern(p)) {
        skipPastBranchBody();
        return false;
      }
      b.terms.push_back(std::move(p));
      if (at(Tok::Pipe)) {
        advance();
        continue;
      }
      if (at(Tok::RBrace)) {
        advance();
        return true;
      }
      if (at(Tok::Ident))
        error(cur(), "expected '|' between patterns or '}' to close the branch, found '" +
                         cur().text + "'");
      else
        expect(Tok::RBrace, "'|' between patterns or '}' to close the branch");
      skipPastBranchBody();
      return false;
    }
  }

  bool parseHeads(BranchNode &b) {
    for (;;) {
      if (!at(Tok::Int)) {
        expect(Tok::Int, "a head index or range like '0..3' after 'heads'");
        return false;
      }
      HeadRange r;
      r.loc = locOf(cur());
      r.first = r.last = advance().intValue;
      if (at(Tok::DotDot)) {
        advance();
        if (!at(Tok::Int)) {
          expect(Tok::Int, "the last head of the range after '..'");
          return false;
        }
        r.last = advance().intValue;
      }
      b.heads.push_back(r);
      if (!at(Tok::Comma))
        return true;
      advance();
    }
  }

  bool parsePattern(PatternNode &p) {
    if (!at(Tok::Ident)) {
      expect(Tok::Ident, "a pattern (" + joinedPatternNames() + ")");
      return false;
    }
    p.loc = locOf(cur());
    p.name = advance().text;
    if (!at(Tok::LParen))
      return true;
    advance();
    if (at(Tok::RParen)) {
      advance();
      return true;
    }
    for (;;) {
      Arg a;
      if (!at(Tok::Ident)) {
        expect(Tok::Ident, "an argument name in '" + p.name + "(...)'");
        return false;
      }
      a.loc = locOf(cur());
      a.name = advance().text;
      if (!expect(Tok::Equal, "'=' after argument '" + a.name + "'"))
        return false;
      if (!parseValue(a.value))
        return false;
      p.args.push_back(std::move(a));
      if (at(Tok::Comma)) {
        advance();
        continue;
      }
      return expect(Tok::RParen, "',' or ')' in '" + p.name + "(...)'");
    }
  }

  bool parseValue(Value &v, int depth = 0) {
    const Token &t = cur();
    v.loc = locOf(t);
    switch (t.kind) {
    case Tok::Int:
      v.kind = Value::Kind::Int;
      v.intValue = t.intValue;
      v.floatValue = t.floatValue;
      advance();
      return true;
    case Tok::Float:
      v.kind = Value::Kind::Float;
      v.floatValue = t.floatValue;
      advance();
      return true;
    case Tok::Ident:
      v.kind = Value::Kind::Name;
      v.name = t.text;
      advance();
      return true;
    case Tok::LBracket: {
      if (depth > 0) {
        error(t, "lists do not nest");
        return false;
      }
      v.kind = Value::Kind::List;
      advance();
      if (at(Tok::RBracket)) {
        advance();
        return true;
      }
      for (;;) {
        Value item;
        if (!parseValue(item, depth + 1))
          return false;
        v.items.push_back(std::move(item));
        if (at(Tok::Comma)) {
          advance();
          continue;
        }
        return expect(Tok::RBracket, "',' or ']' in the list");
      }
    }
    case Tok::Invalid:
      error(t, t.text);
      return false;
    default:
      error(t, std::string("expected a value, found ") + describe(t.kind));
      return false;
    }
  }

  std::vector<Token> toks_;
  size_t pos_ = 0;
  DiagnosticEngine &diags_;
};

} // namespace

FileNode parseFile(const std::string &text, DiagnosticEngine &diags) {
  return Parser(text, diags).parseFile();
}

} // namespace dattn::dsl
