// Steady-state allocations of the pipeline: slices and relays allocate no
// batch-sized buffer per batch beyond the payloads of the messages they send.
//
// Counting: this binary replaces malloc (and friends), which both operator
// new and Eigen's aligned allocator call, and counts every allocation of at
// least `threshold` bytes. Two runs that differ only in the number of
// training batches (20 and 40) are counted end to end; their difference / 20
// is the per-batch figure, free of start-up and shutdown costs.
#include <atomic>
#include <cstddef>
#include <cstdlib>

#include "fixture.hpp"

extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void __libc_free(void*);
}

namespace {

std::atomic<bool> counting{false};
std::atomic<std::size_t> large_allocations{0};
constexpr std::size_t threshold = 1024;

void note(std::size_t n) {
  if (n >= threshold && counting.load(std::memory_order_relaxed))
    large_allocations.fetch_add(1, std::memory_order_relaxed);
}

} // namespace

extern "C" {

void* malloc(std::size_t n) {
  note(n);
  return __libc_malloc(n);
}

void* calloc(std::size_t k, std::size_t n) {
  note(k * n);
  return __libc_calloc(k, n);
}

void* realloc(void* p, std::size_t n) {
  note(n);
  return __libc_realloc(p, n);
}

void free(void* p) {
  __libc_free(p);
}

void* aligned_alloc(std::size_t a, std::size_t n) {
  note(n);
  return __libc_memalign(a, n);
}

void* memalign(std::size_t a, std::size_t n) {
  note(n);
  return __libc_memalign(a, n);
}

int posix_memalign(void** out, std::size_t a, std::size_t n) {
  note(n);
  void* p = __libc_memalign(a, n);
  if (p == nullptr)
    return 12; // ENOMEM
  *out = p;
  return 0;
}

} // extern "C"

namespace actor_tests {
namespace {

class Allocations : public ActorTest {
protected:
  /// Large allocations of a whole run with `batches` training batches.
  std::size_t count_run(std::size_t batches, std::size_t slices, std::size_t in_flight) {
    nt::run_config cfg = base_config(out_dir("run" + std::to_string(batches)));
    // The real model, so that Eigen's GEMMs have their real sizes. Every
    // payload is at least 64 rows x 5 columns x 4 bytes > 1 KiB.
    cfg.model.layers = {784, 256, 128, 10};
    cfg.training.batch_size = 64;
    cfg.topology.slices = {slices};
    cfg.topology.max_in_flight = in_flight;
    auto data = synthetic_splits(batches * 64, 64, 784, 10, 0.3f);
    large_allocations = 0;
    counting = true;
    const nt::run_result r = run(cfg, data);
    counting = false;
    EXPECT_TRUE(r.ok);
    EXPECT_EQ(r.samples, batches * 64);
    return large_allocations.load();
  }

  /// Batch-sized buffers per training batch with L layers of P slices
  /// (P > 1). Message payloads: the worker's input X; every slice's output H;
  /// the gathered H that relays 1..L-1 broadcast; the P column blocks of the
  /// loss gradient; every partial dX of swarms 2..L and the P blocks each
  /// relay 1..L-1 sends back. Not sent as such: the loss relay's gathered
  /// logits and its full (P - Y) / B before the split into blocks.
  static std::size_t payloads_per_batch(std::size_t L, std::size_t P) {
    return 1 + L * P + L + 1 + P + (L - 1) * P + (L - 1) * P;
  }
};

TEST_F(Allocations, CountingSeesEigenAndNew) {
  counting = true;
  large_allocations = 0;
  {
    nt::matrix m(64, 64);
    m.setZero();
  }
  {
    std::vector<char> v(4096);
    v[0] = 1;
  }
  counting = false;
  EXPECT_EQ(large_allocations.load(), 2u);
}

TEST_F(Allocations, SlicesAndRelaysAllocateOnlyTheProtocolsBatchBuffers) {
  for (std::size_t in_flight : {1u, 2u}) {
    const std::size_t a = count_run(20, 2, in_flight);
    const std::size_t b = count_run(40, 2, in_flight);
    ASSERT_GE(b, a);
    const double per_batch = static_cast<double>(b - a) / 20.0;
    const auto expected = static_cast<double>(payloads_per_batch(3, 2));
    std::printf("max_in_flight %zu: %.2f allocations >= %zu bytes per batch; %g batch buffers\n",
                in_flight, per_batch, threshold, expected);
    EXPECT_LE(per_batch, expected) << "max_in_flight " << in_flight;
  }
}

} // namespace
} // namespace actor_tests
