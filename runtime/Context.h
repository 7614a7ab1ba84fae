// runtime: the CUDA context a call runs in. Every entry point that touches
// the GPU makes its attention's context current for the call and restores
// the caller's afterwards, so one thread can drive several GPUs.
#pragma once

namespace dattn::rt {

class ContextScope {
public:
  /// Pushes `context` (a CUcontext); throws Error if the driver refuses.
  explicit ContextScope(void *context);
  ~ContextScope();
  ContextScope(const ContextScope &) = delete;
  ContextScope &operator=(const ContextScope &) = delete;
};

} // namespace dattn::rt
