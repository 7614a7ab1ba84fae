// dattn from another project: parse a spec, compile it for GPU 0, run the
// forward and backward passes on device buffers, and print the error of O,
// LSE and the gradients against the CPU reference.
//
//   dattn_example SPEC_FILE [--seq N]
// Exit status: 0 within tolerance, 1 an error or out of tolerance, 77 no GPU.
#include <dattn/dsl.h>
#include <dattn/error.h>
#include <dattn/host.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

std::vector<float> randomValues(size_t count, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(count);
  for (float &x : v)
    x = normal(rng);
  return v;
}

/// A device copy of host values in the spec's dtype; `rounded` gets the
/// values as the GPU sees them (for the reference).
std::unique_ptr<dattn::DeviceBuffer> upload(const std::vector<float> &values, dattn::DType t,
                                            std::vector<float> &rounded) {
  std::vector<char> bytes = dattn::encode(values.data(), values.size(), t);
  rounded.resize(values.size());
  dattn::decode(bytes.data(), values.size(), t, rounded.data());
  auto buf = std::make_unique<dattn::DeviceBuffer>(bytes.size());
  buf->upload(bytes.data(), bytes.size());
  return buf;
}

std::vector<float> download(const dattn::DeviceBuffer &buf, size_t count, dattn::DType t) {
  std::vector<char> bytes(buf.bytes());
  buf.download(bytes.data(), bytes.size());
  std::vector<float> values(count);
  dattn::decode(bytes.data(), count, t, values.data());
  return values;
}

int run(int argc, char **argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: dattn_example SPEC_FILE [--seq N]\n");
    return 1;
  }
  int64_t n = 1024;
  for (int a = 2; a + 1 < argc; ++a)
    if (std::strcmp(argv[a], "--seq") == 0)
      n = std::atoll(argv[++a]);
  const dattn::AttentionSpec spec = dattn::loadSpecFile(argv[1]).select("");
  if (spec.needsBlockMask()) {
    std::fprintf(stderr, "this example does not make block masks; pick another spec\n");
    return 1;
  }
  const dattn::SystemInfo sys = dattn::querySystem();
  if (sys.devices.empty()) {
    std::printf("no GPU: %s\n", sys.driverError.empty() ? "the driver sees none"
                                                        : sys.driverError.c_str());
    return 77;
  }

  dattn::Runtime runtime(0);
  std::unique_ptr<dattn::CompiledAttention> attn = runtime.compile(spec);
  const int64_t B = 1, H = spec.heads, Hk = spec.kvHeads, D = spec.headDim;
  const dattn::DType t = spec.dtype;
  std::vector<float> q, k, v, dout;
  auto qd = upload(randomValues(B * n * H * D, 1), t, q);
  auto kd = upload(randomValues(B * n * Hk * D, 2), t, k);
  auto vd = upload(randomValues(B * n * Hk * D, 3), t, v);
  auto gd = upload(randomValues(B * n * H * D, 4), t, dout);
  dattn::DeviceBuffer out(qd->bytes()), lse(B * H * n * 4), dq(qd->bytes()), dk(kd->bytes()),
      dv(vd->bytes());
  // Plan, then run: the caller owns the workspace.
  const dattn::WorkspaceSizes sizes = attn->workspaceSizes(B, n);
  dattn::DeviceBuffer workspace(std::max<int64_t>(16, std::max(sizes.forward, sizes.backward)));

  dattn::ForwardArgs f;
  f.q = dattn::TensorDesc::contiguous(qd->data(), t, {B, n, H, D});
  f.k = dattn::TensorDesc::contiguous(kd->data(), t, {B, n, Hk, D});
  f.v = dattn::TensorDesc::contiguous(vd->data(), t, {B, n, Hk, D});
  f.out = dattn::TensorDesc::contiguous(out.data(), t, {B, n, H, D});
  f.lse = dattn::TensorDesc::contiguous(lse.data(), dattn::DType::F32, {B, H, n});
  f.workspace = workspace.workspace();
  attn->forward(f);

  dattn::BackwardArgs b;
  b.q = f.q, b.k = f.k, b.v = f.v, b.out = f.out, b.lse = f.lse;
  b.dout = dattn::TensorDesc::contiguous(gd->data(), t, {B, n, H, D});
  b.dq = dattn::TensorDesc::contiguous(dq.data(), t, {B, n, H, D});
  b.dk = dattn::TensorDesc::contiguous(dk.data(), t, {B, n, Hk, D});
  b.dv = dattn::TensorDesc::contiguous(dv.data(), t, {B, n, Hk, D});
  b.workspace = workspace.workspace();
  attn->backward(b);
  dattn::synchronize("the example's forward and backward");

  std::vector<float> o = download(out, q.size(), t), l(B * H * n);
  lse.download(l.data(), l.size() * 4);
  std::vector<float> refO(o.size()), refL(l.size());
  dattn::referenceForward(spec, B, n, q.data(), k.data(), v.data(), nullptr, refO.data(),
                          refL.data());
  const dattn::Comparison c =
      dattn::compareWithReference(spec, B, n, o.data(), l.data(), refO.data(), refL.data());
  const double tol = dattn::toleranceFor(t);
  bool ok = c.within(tol);
  std::printf("%s on %s, N = %lld: O rel. error %.2e (worst row %.2e), max |LSE error| %.2e\n",
              spec.name.c_str(), runtime.device().name.c_str(), static_cast<long long>(n),
              c.relError, c.maxRowError, c.maxLseError);

  std::vector<float> rq(q.size()), rk(k.size()), rv(v.size());
  dattn::referenceBackward(spec, B, n, q.data(), k.data(), v.data(), dout.data(), nullptr,
                           rq.data(), rk.data(), rv.data());
  const std::vector<float> gq = download(dq, q.size(), t), gk = download(dk, k.size(), t),
                           gv = download(dv, v.size(), t);
  for (auto [name, got, want] : {std::tuple{"dq", &gq, &rq}, std::tuple{"dk", &gk, &rk},
                                 std::tuple{"dv", &gv, &rv}}) {
    size_t nans = 0;
    const double rel = dattn::relativeError(*got, *want, &nans);
    ok = ok && nans == 0 && rel < 2 * tol;
    std::printf("  %s rel. error %.2e\n", name, rel);
  }
  std::printf("%s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}

} // namespace

int main(int argc, char **argv) {
  try {
    return run(argc, argv);
  } catch (const dattn::Error &e) {
    std::fprintf(stderr, "dattn_example: %s\n", e.what());
    return 1;
  }
}
