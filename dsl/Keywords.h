// dsl: the words of the language in one place, for the parser, the checker
// and the "did you mean" suggestions.
#pragma once

#include <string>
#include <vector>

namespace dattn::dsl {

/// Keys allowed as `key = value` inside an attention block.
const std::vector<std::string> &settingKeys();
bool isSettingKey(const std::string &s);

/// Pattern names and, per pattern, its argument names.
const std::vector<std::string> &patternNames();
/// Comma-separated pattern names, for messages.
std::string joinedPatternNames();

} // namespace dattn::dsl
