#include "Lexer.h"

#include <cctype>
#include <cerrno>
#include <cstdlib>

namespace dattn::dsl {

const char *describe(Tok t) {
  switch (t) {
  case Tok::Ident: return "a name";
  case Tok::Int: return "an integer";
  case Tok::Float: return "a number";
  case Tok::LBrace: return "'{'";
  case Tok::RBrace: return "'}'";
  case Tok::LParen: return "'('";
  case Tok::RParen: return "')'";
  case Tok::LBracket: return "'['";
  case Tok::RBracket: return "']'";
  case Tok::Equal: return "'='";
  case Tok::Comma: return "','";
  case Tok::Semi: return "';'";
  case Tok::Pipe: return "'|'";
  case Tok::DotDot: return "'..'";
  case Tok::End: return "end of file";
  case Tok::Invalid: return "an invalid token";
  }
  return "a token";
}

namespace {

// Integers larger than this are rejected by the lexer: no spec quantity
// (heads, segment lengths, seeds) needs more, and it keeps all later
// arithmetic (products of two such values) inside int64.
constexpr int64_t kMaxInt = int64_t(1) << 40;

class Lexer {
public:
  explicit Lexer(const std::string &text) : s_(text) {}

  std::vector<Token> run() {
    std::vector<Token> out;
    for (;;) {
      skipSpaceAndComments();
      Token t;
      t.line = line_;
      t.col = col_;
      if (pos_ >= s_.size()) {
        t.kind = Tok::End;
        out.push_back(t);
        return out;
      }
      char c = s_[pos_];
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        lexIdent(t);
      } else if (std::isdigit(static_cast<unsigned char>(c)) ||
                 (c == '-' && pos_ + 1 < s_.size() &&
                  std::isdigit(static_cast<unsigned char>(s_[pos_ + 1])))) {
        lexNumber(t);
      } else if (c == '.' && peek(1) == '.') {
        t.kind = Tok::DotDot;
        t.text = "..";
        advance(2);
      } else {
        lexPunct(t, c);
      }
      out.push_back(std::move(t));
    }
  }

private:
  char peek(size_t k) const { return pos_ + k < s_.size() ? s_[pos_ + k] : '\0'; }

  void advance(size_t n = 1) {
    for (size_t k = 0; k < n && pos_ < s_.size(); ++k) {
      if (s_[pos_] == '\n') {
        ++line_;
        col_ = 1;
      } else {
        ++col_;
      }
      ++pos_;
    }
  }

  void skipSpaceAndComments() {
    while (pos_ < s_.size()) {
      char c = s_[pos_];
      if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
        advance();
      } else if (c == '#' || (c == '/' && peek(1) == '/')) {
        while (pos_ < s_.size() && s_[pos_] != '\n')
          advance();
      } else {
        return;
      }
    }
  }

  void lexIdent(Token &t) {
    size_t start = pos_;
    while (pos_ < s_.size() &&
           (std::isalnum(static_cast<unsigned char>(s_[pos_])) || s_[pos_] == '_'))
      advance();
    t.kind = Tok::Ident;
    t.text = s_.substr(start, pos_ - start);
  }

  void lexNumber(Token &t) {
    size_t start = pos_;
    if (s_[pos_] == '-')
      advance();
    while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_])))
      advance();
    bool isFloat = false;
    // `0..3` is a range: a '.' followed by another '.' ends the integer.
    if (peek(0) == '.' && peek(1) != '.') {
      isFloat = true;
      advance();
      while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_])))
        advance();
    }
    if (peek(0) == 'e' || peek(0) == 'E') {
      size_t k = 1;
      if (peek(k) == '+' || peek(k) == '-')
        ++k;
      if (std::isdigit(static_cast<unsigned char>(peek(k)))) {
        isFloat = true;
        advance(k);
        while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_])))
          advance();
      }
    }
    t.text = s_.substr(start, pos_ - start);
    // A number glued to letters (`12abc`) is a typo, not two tokens.
    if (pos_ < s_.size() &&
        (std::isalpha(static_cast<unsigned char>(s_[pos_])) || s_[pos_] == '_')) {
      while (pos_ < s_.size() &&
             (std::isalnum(static_cast<unsigned char>(s_[pos_])) || s_[pos_] == '_'))
        advance();
      t.kind = Tok::Invalid;
      t.text = "malformed number '" + s_.substr(start, pos_ - start) + "'";
      return;
    }
    errno = 0;
    if (isFloat) {
      char *end = nullptr;
      t.floatValue = std::strtod(t.text.c_str(), &end);
      if (errno == ERANGE) {
        t.kind = Tok::Invalid;
        t.text = "number '" + t.text + "' is out of range";
        return;
      }
      t.kind = Tok::Float;
      return;
    }
    char *end = nullptr;
    long long v = std::strtoll(t.text.c_str(), &end, 10);
    if (errno == ERANGE || v > kMaxInt || v < -kMaxInt) {
      t.kind = Tok::Invalid;
      t.text = "integer '" + t.text + "' is too large (the limit is 2^40)";
      return;
    }
    t.kind = Tok::Int;
    t.intValue = v;
    t.floatValue = static_cast<double>(v);
  }

  void lexPunct(Token &t, char c) {
    static const struct { char c; Tok k; } table[] = {
        {'{', Tok::LBrace},   {'}', Tok::RBrace}, {'(', Tok::LParen},
        {')', Tok::RParen},   {'[', Tok::LBracket}, {']', Tok::RBracket},
        {'=', Tok::Equal},    {',', Tok::Comma},  {';', Tok::Semi},
        {'|', Tok::Pipe},
    };
    for (const auto &e : table) {
      if (e.c == c) {
        t.kind = e.k;
        t.text = std::string(1, c);
        advance();
        return;
      }
    }
    t.kind = Tok::Invalid;
    unsigned char u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f)
      t.text = std::string("unexpected character '") + c + "'";
    else
      t.text = "unexpected byte 0x" + std::string(1, "0123456789abcdef"[u >> 4]) +
               std::string(1, "0123456789abcdef"[u & 15]);
    advance();
  }

  const std::string &s_;
  size_t pos_ = 0;
  int line_ = 1, col_ = 1;
};

} // namespace

std::vector<Token> lex(const std::string &text) { return Lexer(text).run(); }

} // namespace dattn::dsl
