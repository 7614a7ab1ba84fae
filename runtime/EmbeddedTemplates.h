// runtime: the template headers, compiled into the library (see
// cmake/EmbedTemplates.cmake) and handed to NVRTC as in-memory headers.
#pragma once

namespace dattn::rt {

struct EmbeddedFile {
  const char *name; ///< include name, e.g. "dattn/forward.cuh"
  const char *text;
};

extern const EmbeddedFile kTemplates[];
extern const int kNumTemplates;
extern const char kTemplatesHash[]; ///< SHA-256 over names and contents
/// The same over the templates each tuned stage's modules include, the key
/// of its tuning entries: the forward's (all but dattn/backward*.cuh and
/// dattn/ring*.cuh) and the backward's (all but dattn/ring*.cuh).
extern const char kForwardTemplatesHash[];
extern const char kBackwardTemplatesHash[];

} // namespace dattn::rt
