# Run as `cmake -DOUT=... -DROOT=... -DFILES=a;b -P EmbedTemplates.cmake`:
# writes a C++ file holding each template header (name relative to ROOT) and
# a SHA-256 of them all, so NVRTC needs no files at run time and the kernel
# cache key changes whenever any template changes; and, per tuned stage, a
# SHA-256 of the templates its modules include, the key of that stage's
# tuning entries. Forward modules include dattn/forward.cuh, whose closure
# leaves out dattn/backward*.cuh and dattn/ring*.cuh; backward modules add
# the backward headers; only ring modules (not tuned) include dattn/ring*.
# So a change to the backward kernels leaves the forward's entries valid,
# and a change to the ring's leaves every entry valid. The unit test
# EmbeddedTemplates.StageHashesCoverWhatEachStageIncludes checks the split
# against the headers' includes.
set(body "")
set(all "")
set(forward "")
set(backward "")
foreach(f IN LISTS FILES)
  file(READ "${f}" text)
  file(RELATIVE_PATH name "${ROOT}" "${f}")
  string(APPEND body "  {\"${name}\", R\"dattn_embed(${text})dattn_embed\"},\n")
  string(APPEND all "${name}\n${text}")
  if(NOT name MATCHES "^dattn/ring")
    string(APPEND backward "${name}\n${text}")
    if(NOT name MATCHES "^dattn/backward")
      string(APPEND forward "${name}\n${text}")
    endif()
  endif()
endforeach()
string(SHA256 hash "${all}")
string(SHA256 forwardHash "${forward}")
string(SHA256 backwardHash "${backward}")
list(LENGTH FILES count)
file(WRITE "${OUT}.tmp"
"// Generated from templates/ by cmake/EmbedTemplates.cmake. Do not edit.
#include \"EmbeddedTemplates.h\"

namespace dattn::rt {

const EmbeddedFile kTemplates[] = {
${body}};
const int kNumTemplates = ${count};
const char kTemplatesHash[] = \"${hash}\";
const char kForwardTemplatesHash[] = \"${forwardHash}\";
const char kBackwardTemplatesHash[] = \"${backwardHash}\";

} // namespace dattn::rt
")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
