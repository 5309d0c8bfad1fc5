#include "nettorrent/model.hpp"

#include <algorithm>

#include "nettorrent/error.hpp"
#include "nettorrent/loss.hpp"

namespace nettorrent {

slice_geometry slice_of(const model_config& m, std::size_t layer, std::size_t parts,
                        std::size_t s) {
  if (layer + 1 >= m.layers.size())
    throw error("model has no layer " + std::to_string(layer));
  slice_geometry g;
  g.layer = layer;
  g.fan_in = m.layers[layer];
  g.fan_out = m.layers[layer + 1];
  g.cols = split_columns(g.fan_out, parts).at(s);
  g.act = layer + 2 == m.layers.size() ? activation::identity : m.hidden;
  return g;
}

std::vector<slice_geometry> model_geometry(const model_config& m) {
  std::vector<slice_geometry> out;
  for (std::size_t l = 0; l + 1 < m.layers.size(); ++l)
    out.push_back(slice_of(m, l, 1, 0));
  return out;
}

evaluation evaluate_model(const std::vector<slice_geometry>& geometry,
                          const std::vector<dense_params>& params, const image_set& set,
                          const std::vector<std::uint32_t>* idx, std::size_t batch) {
  evaluation ev;
  ev.classes = geometry.back().fan_out;
  ev.confusion.assign(ev.classes * ev.classes, 0);
  std::vector<std::uint32_t> all;
  if (idx == nullptr) {
    all.resize(set.size());
    for (std::size_t i = 0; i < all.size(); ++i)
      all[i] = static_cast<std::uint32_t>(i);
    idx = &all;
  }
  matrix x;
  std::vector<matrix> h(geometry.size());
  std::vector<std::uint8_t> labels(batch);
  double loss_sum = 0;
  std::size_t correct = 0;
  for (std::size_t start = 0; start < idx->size(); start += batch) {
    const std::size_t n = std::min(batch, idx->size() - start);
    gather_batch(set, idx->data() + start, n, x, labels.data());
    const matrix* in = &x;
    for (std::size_t l = 0; l < geometry.size(); ++l) {
      dense_forward(*in, params[l], geometry[l].act, h[l]);
      in = &h[l];
    }
    const auto res = softmax_xent(h.back(), labels.data());
    loss_sum += res.loss_sum;
    correct += res.correct;
    for (std::size_t i = 0; i < n; ++i)
      ++ev.confusion[labels[i] * ev.classes + argmax_row(h.back(), i)];
  }
  ev.samples = idx->size();
  if (ev.samples > 0) {
    ev.loss = loss_sum / static_cast<double>(ev.samples);
    ev.accuracy = static_cast<double>(correct) / static_cast<double>(ev.samples);
  }
  return ev;
}

} // namespace nettorrent
