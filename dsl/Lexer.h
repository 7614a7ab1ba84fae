// dsl: tokens of the spec language. Newlines are whitespace; `#` and `//`
// start comments that run to the end of the line.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dattn::dsl {

enum class Tok {
  Ident, Int, Float,
  LBrace, RBrace, LParen, RParen, LBracket, RBracket,
  Equal, Comma, Semi, Pipe, DotDot,
  End,
  Invalid, ///< a character or number the language does not have; text says why
};

const char *describe(Tok t);

struct Token {
  Tok kind = Tok::End;
  std::string text; ///< the spelling (or, for Invalid, the reason)
  int line = 1, col = 1;
  int64_t intValue = 0;
  double floatValue = 0;
};

/// Splits `text` into tokens; always ends with one Tok::End.
std::vector<Token> lex(const std::string &text);

} // namespace dattn::dsl
