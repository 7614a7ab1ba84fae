// comm: libnccl.so.2 loaded with dlopen on first use; every entry point the
// ring executor needs, resolved once.
#pragma once

#include <nccl.h>

#include <string>

namespace dattn::comm {

struct Nccl {
  decltype(&::ncclGetVersion) getVersion;
  decltype(&::ncclGetUniqueId) getUniqueId;
  decltype(&::ncclCommInitRankConfig) commInitRankConfig;
  decltype(&::ncclCommFinalize) commFinalize;
  decltype(&::ncclCommDestroy) commDestroy;
  decltype(&::ncclCommAbort) commAbort;
  decltype(&::ncclCommGetAsyncError) commGetAsyncError;
  decltype(&::ncclCommCount) commCount;
  decltype(&::ncclCommUserRank) commUserRank;
  decltype(&::ncclGroupStart) groupStart;
  decltype(&::ncclGroupEnd) groupEnd;
  decltype(&::ncclSend) send;
  decltype(&::ncclRecv) recv;
  decltype(&::ncclAllGather) allGather;
  decltype(&::ncclGetErrorString) getErrorString;
  std::string path;
};

/// Loaded once; throws Error naming the places searched.
const Nccl &nccl();

} // namespace dattn::comm

namespace dattn::comm {

/// Throws Error("<what>: <NCCL's message>") unless r is ncclSuccess or
/// ncclInProgress (a non-blocking communicator still working).
void check(ncclResult_t r, const std::string &what);

/// Polls a non-blocking communicator until its pending calls are issued:
/// ncclSuccess, an error, or ncclInProgress when `seconds` passed first.
ncclResult_t settle(ncclComm_t comm, double seconds);

/// Seconds since an arbitrary start (a monotonic clock).
double now();

} // namespace dattn::comm
