// libdattn.so is the whole archives of dattn's layers (package/CMakeLists.txt);
// this file only gives the library target a source of its own.
namespace dattn {
int packageAnchor() { return 0; }
} // namespace dattn
