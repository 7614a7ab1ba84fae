# Run as `cmake -DOUT=... -DROOT=... -DFILES=a;b -P EmbedTemplates.cmake`:
# writes a C++ file holding each template header (name relative to ROOT) and
# a SHA-256 of them all, so NVRTC needs no files at run time and the kernel
# cache key changes whenever any template changes.
set(body "")
set(all "")
foreach(f IN LISTS FILES)
  file(READ "${f}" text)
  file(RELATIVE_PATH name "${ROOT}" "${f}")
  string(APPEND body "  {\"${name}\", R\"dattn_embed(${text})dattn_embed\"},\n")
  string(APPEND all "${name}\n${text}")
endforeach()
string(SHA256 hash "${all}")
list(LENGTH FILES count)
file(WRITE "${OUT}.tmp"
"// Generated from templates/ by cmake/EmbedTemplates.cmake. Do not edit.
#include \"EmbeddedTemplates.h\"

namespace dattn::rt {

const EmbeddedFile kTemplates[] = {
${body}};
const int kNumTemplates = ${count};
const char kTemplatesHash[] = \"${hash}\";

} // namespace dattn::rt
")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
