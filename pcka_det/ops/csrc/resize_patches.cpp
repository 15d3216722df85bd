// Fused "bilinear resize to a multiple of the patch size + cut into patches"
// for CPU tensors, and its adjoint.
//
// PCKA resizes every (B, C, H, W) map to (u*p, v*p) and lays it out as
// (C, u*v, B*p*p) rows of patches. With PyTorch ops that is an interpolate
// plus a permute copy (and two more passes backward, one a scatter), each
// over a map as large as the input. Here both directions are one separable
// pass per plane that reads or writes the patch layout directly, for a
// range of channels at a time, so callers can work in cache-sized chunks.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

namespace {

// 1-D bilinear taps of F.interpolate(mode='bilinear', align_corners=False),
// computed in the same precision PyTorch uses for this dtype.
template <typename scalar_t>
struct Taps {
  // Output o blends inputs i0[o] and i1[o] with weights 1 - w1[o], w1[o].
  std::vector<int64_t> i0, i1;
  std::vector<scalar_t> w1;
  // Outputs [o, o + len) with i0 = j, j + 1, ... and i1 = i0 + 1: along a
  // row such a run reads and writes contiguous memory, so it vectorises.
  // Clamped outputs (i1 == i0, at the edges) form runs of length 1.
  struct Run {
    int64_t o, j, len;
    bool clamped;
  };
  std::vector<Run> runs;

  Taps(int64_t in, int64_t out) : i0(out), i1(out), w1(out) {
    const scalar_t scale = static_cast<scalar_t>(in) / out;
    for (int64_t o = 0; o < out; ++o) {
      // fused multiply-add, as PyTorch's vectorised kernel computes it: a
      // separate multiply rounds differently for some outputs
      scalar_t src = std::fma(scale, o + static_cast<scalar_t>(0.5),
                              static_cast<scalar_t>(-0.5));
      if (src < 0) src = 0;
      const int64_t a = std::min(static_cast<int64_t>(src), in - 1);
      i0[o] = a;
      i1[o] = a + (a < in - 1 ? 1 : 0);
      w1[o] = std::min(std::max(src - static_cast<scalar_t>(a), scalar_t(0)),
                       scalar_t(1));
    }
    for (int64_t o = 0; o < out; ++o) {
      const bool clamped = i1[o] == i0[o];
      if (!clamped && !runs.empty() && !runs.back().clamped &&
          runs.back().j + runs.back().len == i0[o])
        ++runs.back().len;
      else
        runs.push_back({o, i0[o], 1, clamped});
    }
  }

  // out[o] = (1 - w1) in[i0] + w1 in[i1] for every output of one row.
  void resize_row(const scalar_t* in, scalar_t* out) const {
    for (const Run& r : runs) {
      const scalar_t* a = in + r.j;
      const scalar_t* w = w1.data() + r.o;
      scalar_t* o = out + r.o;
      if (r.clamped) {
        o[0] = a[0];
        continue;
      }
      for (int64_t k = 0; k < r.len; ++k) o[k] = a[k] + w[k] * (a[k + 1] - a[k]);
    }
  }

  // in = adjoint of resize_row applied to grad (one row).
  void row_adjoint(const scalar_t* __restrict__ grad,
                   scalar_t* __restrict__ in, int64_t in_len) const {
    std::fill(in, in + in_len, scalar_t(0));
    for (const Run& r : runs) {
      const scalar_t* __restrict__ g = grad + r.o;
      const scalar_t* __restrict__ w = w1.data() + r.o;
      scalar_t* __restrict__ a = in + r.j;
      if (r.clamped) {
        a[0] += g[0];
        continue;
      }
      for (int64_t k = 0; k < r.len; ++k) a[k] += (1 - w[k]) * g[k];
      for (int64_t k = 0; k < r.len; ++k) a[k + 1] += w[k] * g[k];
    }
  }

  // The adjoint as a gather: input i receives weight weights[t] of output
  // outputs[t] for t in [first[i], first[i + 1]). Zero weights (an exact
  // multiple needs no resize) are left out.
  struct Adjoint {
    std::vector<int64_t> first, outputs;
    std::vector<scalar_t> weights;
  };
  Adjoint adjoint(int64_t in) const {
    std::vector<std::vector<std::pair<int64_t, scalar_t>>> by_input(in);
    for (size_t o = 0; o < i0.size(); ++o) {
      const scalar_t w0 = i1[o] == i0[o] ? scalar_t(1) : 1 - w1[o];
      if (w0 != 0) by_input[i0[o]].emplace_back(o, w0);
      if (i1[o] != i0[o] && w1[o] != 0) by_input[i1[o]].emplace_back(o, w1[o]);
    }
    Adjoint adj;
    adj.first.push_back(0);
    for (const auto& taps : by_input) {
      for (const auto& t : taps) {
        adj.outputs.push_back(t.first);
        adj.weights.push_back(t.second);
      }
      adj.first.push_back(adj.outputs.size());
    }
    return adj;
  }
};

struct Geometry {
  int64_t B, C, H, W, p, u, v;
};

// Geometry of `map` (B, C, H, W), checking a call on channels [c0, c1)
// with the patch tensor `patches` (c1 - c0, rows >= u*v, B*p*p).
Geometry checked_geometry(const torch::Tensor& map, int64_t p, int64_t c0,
                          int64_t c1, const torch::Tensor& patches,
                          const char* map_name, const char* patches_name) {
  TORCH_CHECK(map.dim() == 4, map_name, " must be (B, C, H, W), got ",
              map.sizes());
  TORCH_CHECK(map.is_contiguous() && map.device().is_cpu(), map_name,
              " must be a contiguous CPU tensor");
  TORCH_CHECK(p >= 1, "patch size must be >= 1, got ", p);
  const int64_t H = map.size(2), W = map.size(3);
  const Geometry g{map.size(0), map.size(1), H, W, p, (H + p - 1) / p,
                   (W + p - 1) / p};
  TORCH_CHECK(0 <= c0 && c0 < c1 && c1 <= g.C, "bad channel range [", c0,
              ", ", c1, ") for ", g.C, " channels");
  TORCH_CHECK(patches.dim() == 3 && patches.size(0) == c1 - c0 &&
                  patches.size(1) >= g.u * g.v &&
                  patches.size(2) == g.B * g.p * g.p,
              patches_name, " must be (", c1 - c0, ", >= ", g.u * g.v, ", ",
              g.B * g.p * g.p, "), got ", patches.sizes());
  TORCH_CHECK(patches.device().is_cpu() &&
                  patches.scalar_type() == map.scalar_type(),
              patches_name, " must be a CPU tensor of ", map_name, "'s dtype");
  return g;
}

template <typename scalar_t, int64_t P>
void forward_kernel(const scalar_t* in, const Geometry& g, int64_t c0,
                    int64_t c1, scalar_t* out, int64_t s_ch, int64_t s_row) {
  const int64_t p = P ? P : g.p;  // a constant P unrolls the segment loops
  const int64_t U = g.u * p, V = g.v * p, pp = p * p;
  const Taps<scalar_t> ty(g.H, U), tx(g.W, V);
  at::parallel_for(0, (c1 - c0) * g.B, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> rows(g.H * V);  // the plane resized along W
    for (int64_t job = begin; job < end; ++job) {
      const int64_t c = job / g.B, b = job % g.B;
      const scalar_t* plane = in + (b * g.C + c0 + c) * g.H * g.W;
      for (int64_t y = 0; y < g.H; ++y)
        tx.resize_row(plane + y * g.W, rows.data() + y * V);
      scalar_t* oc = out + c * s_ch + b * pp;
      for (int64_t y = 0; y < U; ++y) {
        const scalar_t* __restrict__ r0 = rows.data() + ty.i0[y] * V;
        const scalar_t* __restrict__ r1 = rows.data() + ty.i1[y] * V;
        const scalar_t w1 = ty.w1[y], w0 = 1 - w1;
        scalar_t* o = oc + (y / p) * g.v * s_row + (y % p) * p;
        for (int64_t pv = 0; pv < g.v; ++pv) {
          scalar_t* __restrict__ op = o + pv * s_row;
          const int64_t x0 = pv * p;
          for (int64_t k = 0; k < p; ++k)
            op[k] = w0 * r0[x0 + k] + w1 * r1[x0 + k];
        }
      }
    }
  });
}

template <typename scalar_t, int64_t P>
void backward_kernel(const scalar_t* grad, int64_t s_ch, int64_t s_row,
                     const Geometry& g, int64_t c0, int64_t c1,
                     scalar_t* gin) {
  const int64_t p = P ? P : g.p;  // a constant P unrolls the segment loops
  const int64_t U = g.u * p, V = g.v * p, pp = p * p;
  const Taps<scalar_t> ty(g.H, U), tx(g.W, V);
  const auto adj_y = ty.adjoint(g.H);
  at::parallel_for(0, (c1 - c0) * g.B, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> rows(g.H * V);  // the gradient of `rows` forward
    for (int64_t job = begin; job < end; ++job) {
      const int64_t c = job / g.B, b = job % g.B;
      const scalar_t* gc = grad + c * s_ch + b * pp;
      // each row of `rows` gathers the few output rows it was blended into,
      // reading their patch segments (p contiguous values) in place
      for (int64_t h = 0; h < g.H; ++h) {
        scalar_t* __restrict__ r = rows.data() + h * V;
        const int64_t t0 = adj_y.first[h], t1 = adj_y.first[h + 1];
        if (t0 == t1) std::fill(r, r + V, scalar_t(0));
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t y = adj_y.outputs[t];
          const scalar_t w = adj_y.weights[t];
          const scalar_t* gy = gc + (y / p) * g.v * s_row + (y % p) * p;
          for (int64_t pv = 0; pv < g.v; ++pv) {
            const scalar_t* __restrict__ src = gy + pv * s_row;
            scalar_t* __restrict__ dst = r + pv * p;
            if (t == t0)
              for (int64_t k = 0; k < p; ++k) dst[k] = w * src[k];
            else
              for (int64_t k = 0; k < p; ++k) dst[k] += w * src[k];
          }
        }
      }
      scalar_t* plane = gin + (b * g.C + c0 + c) * g.H * g.W;
      for (int64_t y = 0; y < g.H; ++y)
        tx.row_adjoint(rows.data() + y * V, plane + y * g.W, g.W);
    }
  });
}

}  // namespace

// Writes the patches of channels [c0, c1) of feat (B, C, H, W) into rows
// [0, u*v) of out (c1 - c0, rows, B*p*p); out may be a view whose last
// dimension is contiguous.
void resize_patches_forward(const torch::Tensor& feat, int64_t p, int64_t c0,
                            int64_t c1, torch::Tensor out) {
  const Geometry g = checked_geometry(feat, p, c0, c1, out, "feat", "out");
  TORCH_CHECK(out.stride(2) == 1, "out must be contiguous in its last dim");
  AT_DISPATCH_FLOATING_TYPES(feat.scalar_type(), "resize_patches_forward", [&] {
    (g.p == 16 ? forward_kernel<scalar_t, 16> : forward_kernel<scalar_t, 0>)(
        feat.data_ptr<scalar_t>(), g, c0, c1, out.data_ptr<scalar_t>(),
        out.stride(0), out.stride(1));
  });
}

// Adjoint of resize_patches_forward: overwrites channels [c0, c1) of
// grad_in (B, C, H, W) with the gradient for grad (c1 - c0, rows, B*p*p).
void resize_patches_backward(const torch::Tensor& grad, int64_t p, int64_t c0,
                             int64_t c1, torch::Tensor grad_in) {
  const Geometry g =
      checked_geometry(grad_in, p, c0, c1, grad, "grad_in", "grad");
  TORCH_CHECK(grad.stride(2) == 1, "grad must be contiguous in its last dim");
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "resize_patches_backward", [&] {
    (g.p == 16 ? backward_kernel<scalar_t, 16> : backward_kernel<scalar_t, 0>)(
        grad.data_ptr<scalar_t>(), grad.stride(0), grad.stride(1), g, c0, c1,
        grad_in.data_ptr<scalar_t>());
  });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("resize_patches_forward", &resize_patches_forward,
        "Resize channels [c0, c1) to multiples of p and cut into patches");
  m.def("resize_patches_backward", &resize_patches_backward,
        "Adjoint of resize_patches_forward");
}
