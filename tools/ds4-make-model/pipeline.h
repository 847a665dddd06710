// Parallel work over an index range: workers take the next index until none is left. The
// maker's items each write their own place of the file (gguf::Writer::write_tensor_at), so
// no order is needed; memory stays bounded by one item per worker.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

namespace ds4::synth {

using Bytes = std::vector<uint8_t>;

// Calls work(i) for every i in [0, n) on `threads` (0: 1) worker threads. The first
// exception thrown stops the workers taking more and is rethrown after every worker has
// been joined.
void run_parallel(size_t n, unsigned threads, const std::function<void(size_t)>& work);

}  // namespace ds4::synth
