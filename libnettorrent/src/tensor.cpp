#include "nettorrent/tensor.hpp"

#include <pmmintrin.h>
#include <xmmintrin.h>

namespace nettorrent {

void prepare_math_thread() {
  _MM_SET_FLUSH_ZERO_MODE(_MM_FLUSH_ZERO_ON);
  _MM_SET_DENORMALS_ZERO_MODE(_MM_DENORMALS_ZERO_ON);
  Eigen::setNbThreads(1);
}

bool flush_to_zero_enabled() {
  return _MM_GET_FLUSH_ZERO_MODE() == _MM_FLUSH_ZERO_ON
         && _MM_GET_DENORMALS_ZERO_MODE() == _MM_DENORMALS_ZERO_ON;
}

} // namespace nettorrent
