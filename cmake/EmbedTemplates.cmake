# Run as `cmake -DOUT=... -DROOT=... -DFILES=a;b -P EmbedTemplates.cmake`:
# writes a C++ file holding each template header (name relative to ROOT) and
# a SHA-256 of them all, so NVRTC needs no files at run time and the kernel
# cache key changes whenever any template changes; and a SHA-256 of the
# templates the tuned kernels include (all but the ring module's
# dattn/ring*.cuh, which only ring modules include and which are not
# tuned), the tuning database's key: a change to the ring's kernels leaves
# the tuned one-GPU kernels' entries valid.
set(body "")
set(all "")
set(tuned "")
foreach(f IN LISTS FILES)
  file(READ "${f}" text)
  file(RELATIVE_PATH name "${ROOT}" "${f}")
  string(APPEND body "  {\"${name}\", R\"dattn_embed(${text})dattn_embed\"},\n")
  string(APPEND all "${name}\n${text}")
  if(NOT name MATCHES "^dattn/ring")
    string(APPEND tuned "${name}\n${text}")
  endif()
endforeach()
string(SHA256 hash "${all}")
string(SHA256 tunedHash "${tuned}")
list(LENGTH FILES count)
file(WRITE "${OUT}.tmp"
"// Generated from templates/ by cmake/EmbedTemplates.cmake. Do not edit.
#include \"EmbeddedTemplates.h\"

namespace dattn::rt {

const EmbeddedFile kTemplates[] = {
${body}};
const int kNumTemplates = ${count};
const char kTemplatesHash[] = \"${hash}\";
const char kTunedTemplatesHash[] = \"${tunedHash}\";

} // namespace dattn::rt
")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
