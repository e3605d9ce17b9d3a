// 2-D convolutions (forward, backward-data, backward-weights) through oneDNN, as XLA FFI handlers,
// for benchmarks/onednn_conv.py. Layouts: x [N, H, W, C], w [KH, KW, C, O] (HWIO),
// y [N, OH, OW, O]; f32. With `blocked` set, oneDNN picks its own layouts (reordered from and to
// these); otherwise it computes on these layouts directly.
#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

namespace {

dnnl::engine& Engine() {
  // never destroyed: at process exit the OpenMP runtime may already be gone
  static dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

struct Geometry {
  int64_t n, h, w, c, o, kh, kw, oh, ow, stride, pt, pb, pl, pr, blocked;
  auto key(int op) const {
    return std::make_tuple(op, n, h, w, c, o, kh, kw, stride, pt, pb, pl, pr, blocked);
  }
  // the layouts the primitive is created with: the user's, or oneDNN's choice when blocked
  tag pick(tag user) const { return blocked ? tag::any : user; }
  memory::desc src_p() const { return src(pick(tag::nhwc)); }
  memory::desc dst_p() const { return dst(pick(tag::nhwc)); }
  memory::desc wei_p() const { return wei(pick(tag::hwio)); }
  memory::desc src(tag t = tag::nhwc) const { return {{n, c, h, w}, dt::f32, t}; }
  memory::desc dst(tag t = tag::nhwc) const { return {{n, o, oh, ow}, dt::f32, t}; }
  memory::desc wei(tag t = tag::hwio) const { return {{o, c, kh, kw}, dt::f32, t}; }
  memory::dims strides() const { return {stride, stride}; }
  memory::dims lpad() const { return {pt, pl}; }
  memory::dims rpad() const { return {pb, pr}; }
};

// XLA may run two convolutions at once: each call brings its own scratchpad (user mode), so that
// no primitive shares one between threads.
dnnl::primitive_attr Attr() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

dnnl::convolution_forward::primitive_desc ForwardDesc(const Geometry& g) {
  return dnnl::convolution_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
      g.src_p(), g.wei_p(), g.dst_p(), g.strides(), g.lpad(), g.rpad(), Attr());
}

struct Entry {
  dnnl::primitive prim;
  memory::desc scratch;
  // per argument: the primitive's layout (reordered from or to the user's when it differs)
  std::unordered_map<int, memory::desc> layout;
};

using Key = std::tuple<int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                       int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>;
std::mutex cache_mutex;
std::map<Key, Entry>& cache = *new std::map<Key, Entry>();

template <typename Primitive, typename Make>
Entry Lookup(const Geometry& g, int op, Make make_pd) {
  std::lock_guard<std::mutex> lock(cache_mutex);
  auto k = g.key(op);
  auto it = cache.find(k);
  if (it != cache.end()) return it->second;
  auto pd = make_pd();
  Entry e{Primitive(pd), pd.scratchpad_desc(), {}};
  for (int arg : {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST, DNNL_ARG_DIFF_SRC,
                  DNNL_ARG_DIFF_WEIGHTS, DNNL_ARG_DIFF_DST}) {
    memory::desc d = pd.query_md(dnnl::query::exec_arg_md, arg);
    if (d.get_size() > 0) e.layout[arg] = d;
  }
  cache.emplace(k, e);
  return e;
}

Geometry Make(const std::vector<int64_t>& x, const std::vector<int64_t>& w,
              const std::vector<int64_t>& y, int64_t stride, int64_t pt, int64_t pb, int64_t pl,
              int64_t pr, int64_t blocked) {
  return Geometry{x[0], x[1], x[2], x[3], w[3], w[0], w[1], y[1], y[2], stride, pt, pb, pl, pr,
                  blocked};
}

template <typename B>
std::vector<int64_t> Dims(const B& b) {
  auto d = b.dimensions();
  return std::vector<int64_t>(d.begin(), d.end());
}

ffi::Error Run(const Entry& e, std::unordered_map<int, memory> args, int out_arg) {
  thread_local auto* buffers = new std::vector<std::vector<char>>(4);
  dnnl::stream s(Engine());
  std::unordered_map<int, memory> exec;
  memory out_user;
  size_t i = 1;
  for (auto& [arg, user] : args) {
    const memory::desc& want = e.layout.at(arg);
    if (want == user.get_desc()) { exec.emplace(arg, user); continue; }
    auto& buf = (*buffers)[i++];
    if (buf.size() < want.get_size()) buf.resize(want.get_size());
    memory inner(want, Engine(), buf.data());
    if (arg == out_arg) out_user = user;
    else dnnl::reorder(user, inner).execute(s, user, inner);
    exec.emplace(arg, inner);
  }
  auto& scratch = (*buffers)[0];
  if (scratch.size() < e.scratch.get_size()) scratch.resize(e.scratch.get_size());
  exec.emplace(DNNL_ARG_SCRATCHPAD, memory(e.scratch, Engine(), scratch.data()));
  e.prim.execute(s, exec);
  if (out_user) dnnl::reorder(exec.at(out_arg), out_user).execute(s, exec.at(out_arg), out_user);
  s.wait();
  return ffi::Error::Success();
}

ffi::Error FwdImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                   ffi::ResultBuffer<ffi::F32> y, int64_t stride, int64_t pt, int64_t pb,
                   int64_t pl, int64_t pr, int64_t blocked) {
  Geometry g = Make(Dims(x), Dims(w), Dims(*y), stride, pt, pb, pl, pr, blocked);
  auto p = Lookup<dnnl::convolution_forward>(g, 0, [&] { return ForwardDesc(g); });
  return Run(p, {{DNNL_ARG_SRC, memory(g.src(), Engine(), x.typed_data())},
                 {DNNL_ARG_WEIGHTS, memory(g.wei(), Engine(), w.typed_data())},
                 {DNNL_ARG_DST, memory(g.dst(), Engine(), y->typed_data())}}, DNNL_ARG_DST);
}

ffi::Error BwdDataImpl(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> w,
                       ffi::ResultBuffer<ffi::F32> dx, int64_t stride, int64_t pt, int64_t pb,
                       int64_t pl, int64_t pr, int64_t blocked) {
  Geometry g = Make(Dims(*dx), Dims(w), Dims(dy), stride, pt, pb, pl, pr, blocked);
  auto p = Lookup<dnnl::convolution_backward_data>(g, 1, [&] {
    return dnnl::convolution_backward_data::primitive_desc(
        Engine(), dnnl::algorithm::convolution_direct, g.src_p(), g.wei_p(), g.dst_p(),
        g.strides(), g.lpad(), g.rpad(), ForwardDesc(g), Attr());
  });
  return Run(p, {{DNNL_ARG_DIFF_DST, memory(g.dst(), Engine(), dy.typed_data())},
                 {DNNL_ARG_WEIGHTS, memory(g.wei(), Engine(), w.typed_data())},
                 {DNNL_ARG_DIFF_SRC, memory(g.src(), Engine(), dx->typed_data())}},
             DNNL_ARG_DIFF_SRC);
}

ffi::Error BwdWeightsImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                          ffi::ResultBuffer<ffi::F32> dw, int64_t stride, int64_t pt, int64_t pb,
                          int64_t pl, int64_t pr, int64_t blocked) {
  Geometry g = Make(Dims(x), Dims(*dw), Dims(dy), stride, pt, pb, pl, pr, blocked);
  auto p = Lookup<dnnl::convolution_backward_weights>(g, 2, [&] {
    return dnnl::convolution_backward_weights::primitive_desc(
        Engine(), dnnl::algorithm::convolution_direct, g.src_p(), g.wei_p(), g.dst_p(),
        g.strides(), g.lpad(), g.rpad(), ForwardDesc(g), Attr());
  });
  return Run(p, {{DNNL_ARG_SRC, memory(g.src(), Engine(), x.typed_data())},
                 {DNNL_ARG_DIFF_DST, memory(g.dst(), Engine(), dy.typed_data())},
                 {DNNL_ARG_DIFF_WEIGHTS, memory(g.wei(), Engine(), dw->typed_data())}},
             DNNL_ARG_DIFF_WEIGHTS);
}

}  // namespace

#define CONV_ATTRS                                                                   \
  .Attr<int64_t>("stride").Attr<int64_t>("pad_top").Attr<int64_t>("pad_bottom")      \
      .Attr<int64_t>("pad_left").Attr<int64_t>("pad_right").Attr<int64_t>("blocked")

XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvForward, FwdImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>() CONV_ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvBackwardData, BwdDataImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>() CONV_ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvBackwardWeights, BwdWeightsImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>() CONV_ATTRS);
