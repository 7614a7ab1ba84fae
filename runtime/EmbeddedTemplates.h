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
/// The same over the templates tuned kernels include (all but
/// dattn/ring*.cuh): the tuning database's key.
extern const char kTunedTemplatesHash[];

} // namespace dattn::rt
